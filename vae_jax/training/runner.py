"""The training loop: train, evaluate, checkpoint, resume, draw.

`train_and_evaluate(config, workdir, dataset)` is everything `main` runs
after validation. It resumes from the newest readable checkpoint in
`workdir`, so a preempted job restarted with the same command continues.
"""

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vae_jax.training import checkpointing
from vae_jax import data as data_lib
from vae_jax.training import evaluate as eval_lib
from vae_jax.training import images
from vae_jax.core import linear_gaussian
from vae_jax.training import sharding
from vae_jax.training import step as train_lib
from vae_jax.training.metric_writers import MetricWriter


def default_workdir(config_path):
  """./runs/<config file name>, e.g. runs/celeba for configs/celeba.py:..."""
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", name)


def _format_eta(seconds):
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _shard_state(state, mesh):
  return jax.device_put(state, sharding.replicated(mesh))


def _abstract_state(state, mesh):
  repl = sharding.replicated(mesh)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.asarray(x).dtype,
                                     sharding=repl), state)


def _meta(config, iterator, dataset):
  return {"data_iterator": checkpointing.encode_iterator_state(
      iterator.get_state()),
          "config": json.loads(config.to_json()),
          "standardization": _jsonable(dataset.standardization)}


def _jsonable(tree):
  if tree is None:
    return None
  return {k: np.asarray(v).tolist() for k, v in tree.items()}


def _check_finite(step_metrics, config, first_step):
  """Raises FloatingPointError naming the first non-finite step (policy stop)."""
  finite = np.asarray([bool(m["finite"]) for m in step_metrics])
  if config.nan_policy == "stop" and not finite.all():
    bad = first_step + int(np.argmin(finite))
    raise FloatingPointError(
        f"non-finite loss or gradient at step {bad}; the update was not "
        f"applied and no checkpoint was written after it (set "
        f"config.nan_policy='skip' to drop such updates and go on)")
  return int((~finite).sum())


def _save_images(model, params, dataset, config, workdir, step, key):
  shape = images.image_shape_for(dataset.event_shape)
  n = min(config.num_image_examples, len(dataset.test))
  if shape is None or n == 0:
    return
  out_dir = os.path.join(workdir, "images")
  os.makedirs(out_dir, exist_ok=True)
  x = next(iter(data_lib.eval_batches(dataset, "test", n, config.transform,
                                      seed=config.seed))).x
  recon = jax.device_get(model.reconstruct(params, jnp.asarray(x)))
  images.save_pairs(os.path.join(out_dir, f"reconstructions_{step:08d}.png"),
                    x, recon, shape)
  samples = jax.device_get(model.sample_prior(params, key, n))
  images.save_png(os.path.join(out_dir, f"samples_{step:08d}.png"),
                  images.grid(samples, shape))


def linear_gaussian_report(params, config, dataset):
  """Learned §3 parameters beside the closed-form optimum, in nats.

  The optimum family: v = μ, c² + s² = σ², q = the exact posterior; its
  expected ELBO is −(d/2)(log 2πσ² + 1).
  """
  lg = config.linear_gaussian
  enc = params["encoder"]["params"]
  dec = {"c": params["decoder"]["params"]["c"],
         "v": params["decoder"]["params"]["v"],
         "log_s": params["log_sigma_dec"]}
  enc = {"a": enc["a"], "b": enc["b"], "log_t": enc["log_t"]}
  x = jnp.stack([dataset.test[i] for i in range(len(dataset.test))])
  mu = jnp.full((lg.dim,), lg.mu)
  posterior_at = lambda xx: linear_gaussian.exact_posterior(dec, xx)
  post = posterior_at(x)
  c2s2 = jnp.square(dec["c"]) + jnp.exp(2 * dec["log_s"])
  report = {
      "learned": {k: np.asarray(v).tolist() for k, v in
                  {**enc, **dec}.items()},
      "c^2+s^2 (optimum: sigma^2)": np.asarray(c2s2).tolist(),
      "sigma^2": lg.sigma**2, "mu": lg.mu,
      "encoder mean slope a vs exact c/(c^2+s^2)":
          [np.asarray(enc["a"]).tolist(),
           np.asarray(dec["c"] / c2s2).tolist()],
      "test exact log p(x)": float(jnp.mean(
          linear_gaussian.log_marginal(dec, x))),
      "test exact ELBO": float(jnp.mean(
          linear_gaussian.exact_elbo(enc, dec, x))),
      "expected log p(x) at learned params": float(
          linear_gaussian.expected_log_marginal(dec, mu, lg.sigma)),
      "optimum expected log p(x) = ELBO": float(
          linear_gaussian.optimal_expected_elbo(lg.dim, lg.sigma)),
      "test mean |posterior mean error|": float(jnp.mean(jnp.abs(
          post.mean - (enc["a"] * x + enc["b"])))),
  }
  return report


# Fields that fix the parameters' shapes or the meaning of a checkpoint: a
# run may resume another's checkpoints only if these agree.
RESUME_FIELDS = ("dataset", "architecture", "latent_dim", "hidden", "channels",
                 "likelihood", "sigma_dec_mode", "grad_clip_norm",
                 "image_size", "crop_size", "seed")


def check_resumable(config, workdir):
  """Raises CheckpointError (one line) when `workdir` holds checkpoints of a
  run whose model differs from `config`, before anything is overwritten."""
  saved_path = os.path.join(workdir, "config.json")
  if not (os.path.isfile(saved_path) and
          os.path.isdir(checkpointing.checkpoint_dir(workdir))):
    return
  with open(saved_path) as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  changed = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
             for k in RESUME_FIELDS if saved.get(k) != current.get(k)]
  if changed:
    raise checkpointing.CheckpointError(
        f"{workdir} holds checkpoints of another model ({'; '.join(changed)});"
        f" use a new --workdir or the original settings")


def train_and_evaluate(config, workdir, dataset):
  """Trains (or resumes) and evaluates; returns the final metrics dict."""
  check_resumable(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  is_lead = jax.process_index() == 0
  if is_lead:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = sharding.make_mesh()
  model = train_lib.build_model(config, dataset.event_shape)
  optimizer = train_lib.make_optimizer(config)
  local_batch = config.batch_size // jax.process_count()
  iterator = data_lib.train_iterator(
      dataset, local_batch, config.seed, config.transform,
      shard_index=jax.process_index(), shard_count=jax.process_count())

  state = train_lib.init_state(model, optimizer, config.seed)
  manager = checkpointing.make_manager(workdir, config.keep_checkpoints)
  restored = checkpointing.restore_latest(manager,
                                          _abstract_state(state, mesh))
  if restored is None:
    state = _shard_state(state, mesh)
    logging.info("starting a new run in %s", workdir)
  else:
    step, state, meta = restored
    iterator.set_state(checkpointing.decode_iterator_state(
        meta["data_iterator"]))
    logging.info("resumed from the checkpoint at step %d in %s", step,
                 workdir)

  train_step = jax.jit(train_lib.TrainStep(model, optimizer, config),
                       donate_argnums=(0,))
  eval_key = jax.random.key(config.seed + 1)
  eval_during = eval_lib.make_eval_fn(model, config.eval_iwae_samples,
                                      config.iwae_chunk_size, mesh)
  writer = MetricWriter(workdir, enabled=is_lead)

  step = int(state["step"])
  total = config.num_train_steps
  window, window_start, t0 = [], step, time.time()
  skipped = 0
  while step < total:
    batch = sharding.global_batch(next(iterator), mesh)
    state, metrics = train_step(state, batch)
    window.append(metrics)
    step += 1
    boundary = (step % config.log_every_steps == 0 or step == total or
                step % config.checkpoint_every_steps == 0 or
                step % config.eval_every_steps == 0)
    if not boundary:
      continue
    window = jax.device_get(window)
    skipped += _check_finite(window, config, window_start + 1)
    if step % config.log_every_steps == 0 or step == total:
      elapsed = time.time() - t0
      rate = len(window) / max(elapsed, 1e-9)
      avg = {k: float(np.mean([m[k] for m in window if m["finite"]] or
                              [np.nan]))
             for k in window[0] if k != "finite"}
      avg["steps_per_sec"] = rate
      avg["skipped_updates"] = skipped
      writer.write(step, {f"train/{k}": v for k, v in avg.items()})
      logging.info("step %d/%d  loss %.3f nats  %.1f steps/s  ETA %s", step,
                   total, avg["loss"], rate,
                   _format_eta((total - step) / max(rate, 1e-9)))
    if step % config.eval_every_steps == 0 and step != total:
      scalars, _ = eval_lib.evaluate(model, state["params"], dataset, config,
                                     eval_during, eval_key)
      writer.write(step, {f"test/{k}": v for k, v in scalars.items()})
      logging.info("eval at step %d: %s", step, _format_scalars(scalars))
      if is_lead:
        _save_images(model, state["params"], dataset, config, workdir, step,
                     eval_key)
    if step % config.checkpoint_every_steps == 0 or step == total:
      checkpointing.save(manager, step, state, _meta(config, iterator,
                                                     dataset))
    window, window_start, t0 = [], step, time.time()
  manager.wait_until_finished()
  manager.close()

  final = _final_evaluation(model, state, dataset, config, workdir, mesh,
                            eval_key, writer, is_lead)
  writer.close()
  return final


def _format_scalars(scalars):
  return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in scalars.items())


def _final_evaluation(model, state, dataset, config, workdir, mesh, key,
                      writer, is_lead):
  eval_final = eval_lib.make_eval_fn(model, config.final_iwae_samples,
                                     config.iwae_chunk_size, mesh)
  scalars, kl_per_dim = eval_lib.evaluate(model, state["params"], dataset,
                                          config, eval_final, key)
  scalars["step"] = int(state["step"])
  scalars["iwae_samples"] = config.final_iwae_samples
  final = dict(scalars, kl_per_dim=kl_per_dim.tolist())
  if config.architecture == "linear":
    final["linear_gaussian"] = linear_gaussian_report(state["params"], config,
                                                      dataset)
  if is_lead:
    writer.write(scalars["step"], {f"final/{k}": v for k, v in scalars.items()})
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(final, f, indent=2)
    _save_images(model, state["params"], dataset, config, workdir,
                 scalars["step"], key)
  return final
