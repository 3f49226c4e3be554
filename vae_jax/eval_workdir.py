"""Evaluate a trained (or interrupted) run again, without training.

  python -m vae_jax.eval_workdir --workdir=runs/mnist_idx --iwae_samples=5000
  python -m vae_jax.eval_workdir --workdir=runs/sweep/points/3 --split=train

Restores the newest readable checkpoint of the workdir, rebuilds its model
and data from its config.json, and evaluates with the settings given here
(K of L_K, chunk size, batch size, split). The result goes to
<workdir>/evaluations/step<step>_<split>_K<K>_chunk<C>_batch<B>.json and is
printed; nothing the run wrote (config.json, final_metrics.json,
metrics.jsonl, checkpoints) is changed.
"""

import json
import os

from absl import flags
from absl import logging

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A runner workdir.",
                               required=True)
_IWAE_SAMPLES = flags.DEFINE_integer(
    "iwae_samples", None, "K of L_K; default the run's final_iwae_samples.")
_CHUNK = flags.DEFINE_integer(
    "iwae_chunk_size", None, "Samples per L_K chunk (memory); default the "
    "run's iwae_chunk_size.")
_BATCH = flags.DEFINE_integer(
    "eval_batch_size", None, "Examples per batch; default the run's.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"],
                           "The split to evaluate.")


def evaluation_path(workdir, step, split, config):
  name = (f"step{step}_{split}_K{config.final_iwae_samples}_chunk"
          f"{config.iwae_chunk_size}_batch{config.eval_batch_size}.json")
  return os.path.join(workdir, "evaluations", name)


def _settings(config):
  """The run's config with this command's evaluation settings."""
  config = config.copy_and_resolve_references()
  for field, flag in (("final_iwae_samples", _IWAE_SAMPLES),
                      ("iwae_chunk_size", _CHUNK),
                      ("eval_batch_size", _BATCH)):
    if flag.value is not None:
      if flag.value <= 0:
        cli.fail(f"--{flag.name}={flag.value} must be > 0")
      config[field] = flag.value
  k, chunk = config.final_iwae_samples, config.iwae_chunk_size
  if k > chunk and k % chunk:
    cli.fail(f"K={k} is not a multiple of the chunk size {chunk}")
  return config


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from vae_jax.training import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import loop  # pylint: disable=g-import-not-at-top
  from vae_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from vae_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  workdir = _WORKDIR.value
  config_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if not os.path.isfile(config_path):
    cli.fail(f"{workdir} holds no {workdir_lib.CONFIG_FILE}: not a runner "
             f"workdir")
  try:
    with open(config_path) as f:
      saved = json.load(f)
  except ValueError as e:
    cli.fail(f"{config_path} is unreadable ({e})")
  # Fields added after the run was made take their defaults.
  from vae_jax import config_base  # pylint: disable=g-import-not-at-top
  config = config_base.base_config()
  config.unlock()
  config.update(ml_collections.ConfigDict(saved))
  config = _settings(config)
  if config.eval_batch_size % jax.device_count():
    cli.fail(f"--eval_batch_size={config.eval_batch_size} is not divisible "
             f"by the {jax.device_count()} devices")
  try:
    dataset = data_lib.get_dataset(config)
  except data_lib.DataError as e:
    cli.fail(str(e))
  if not os.path.isdir(checkpointing.checkpoint_dir(workdir)):
    cli.fail(f"{workdir} holds no checkpoints to evaluate")
  mesh = sharding.make_mesh()
  model = step_lib.build_model(config, dataset.event_shape)
  optimizer = step_lib.make_optimizer(config)
  template = step_lib.init_state(model, optimizer, config.seed)
  repl = sharding.replicated(mesh)
  abstract = checkpointing.abstract_state(template, repl)
  manager = checkpointing.make_manager(workdir, config.keep_checkpoints)
  try:
    restored = checkpointing.restore_latest(manager, abstract)
  except checkpointing.CheckpointError as e:
    cli.fail(str(e))
  finally:
    manager.close()
  if restored is None:
    cli.fail(f"{workdir} holds no checkpoints to evaluate")
  step, state, _ = restored
  params = state["params"]
  eval_fn = eval_lib.make_eval_fn(model, config.final_iwae_samples,
                                  config.iwae_chunk_size, mesh)
  scalars, kl_per_dim = eval_lib.evaluate(model, params, dataset, config,
                                          eval_fn, loop.eval_key(config),
                                          split=_SPLIT.value)
  result = dict(scalars, step=step, split=_SPLIT.value,
                iwae_samples=config.final_iwae_samples,
                iwae_chunk_size=config.iwae_chunk_size,
                eval_batch_size=config.eval_batch_size,
                kl_per_dim=kl_per_dim.tolist())
  path = evaluation_path(workdir, step, _SPLIT.value, config)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items()
                      if k != "kl_per_dim"}, indent=2))
    print(f"written to {path}")
  logging.info("evaluated step %d of %s", step, workdir)


if __name__ == "__main__":
  cli.run(main, config_flag=None)
