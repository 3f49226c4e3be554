"""The experiment runner: one run, or a sweep, from one config.

  python -m vae_jax.main --config=configs/default.py --workdir=runs/digits
  python -m vae_jax.main --config=configs/celeba.py:sigma_dec=0.1 --config.latent_dim=64
  python -m vae_jax.main --config=configs/sweep.py          # a σ_dec × L grid

Without --config it runs configs/default.py (offline digits). A runner
config trains one model; a sweep config (one with `base` and `grid`) trains
its grid, vmapping the points that share a program. Without --workdir a run
writes under ./runs/<config name>, and under
./runs/<config name>/<overrides> when a parameter string or --config.*
flags change the config, so two variants never share a workdir. Rerunning
the same command resumes; a workdir holding another experiment is refused
with one line and left as it was.
"""

import hashlib
import json
import os
import re
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from vae_jax import cli

# configs/ ships with a checkout, not with the installed package: without
# it there is no default, and main asks for --config.
_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "default.py")

_CONFIG = cli.define_config_file(
    "config", _DEFAULT_CONFIG if os.path.isfile(_DEFAULT_CONFIG) else None,
    "Config file, optionally with a parameter string: "
    "configs/celeba.py:sigma_dec=0.1", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory; default ./runs/<config name>[/"
    "<overrides>].")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs off TPU/SLURM: "
    "host:port of process 0 (or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process runs: how many processes (or "
    "JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-process runs: this process's id in [0, "
    "num_processes) (or JAX_PROCESS_ID).")


def config_overrides(argv, config_path):
  """The changes a command makes to its config file's defaults, as text.

  Args:
    argv: the command line (sys.argv).
    config_path: the --config value, with its parameter string if any.

  Returns:
    "a=1,b=2": the parameter string's items, then each config flag in
    command-line order (--config.f=v, --config.f v, -config.f=v; a boolean
    --config.f or --noconfig.f as f=True, f=False); "" when there are none.
  """
  items = []
  if ":" in config_path:
    items.extend(i.strip() for i in config_path.split(":", 1)[1].split(",")
                 if i.strip())
  args = list(argv[1:])
  for i, arg in enumerate(args):
    match = re.match(r"--?(no)?config\.(.+)", arg)
    if not match:
      continue
    negated, name_value = match.groups()
    if negated:
      name_value = f"{name_value}=False"
    elif "=" not in name_value:
      following = args[i + 1] if i + 1 < len(args) else "-"
      name_value = (f"{name_value}=True" if following.startswith("-") else
                    f"{name_value}={following}")
    items.append(name_value)
  return ",".join(items)


def default_workdir(config_path, overrides=""):
  """./runs/<config file name>[/<overrides>].

  e.g. runs/celeba/sigma_dec=0.8,latent_dim=64 for
  --config=configs/celeba.py:sigma_dec=0.8 --config.latent_dim=64.
  """
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  workdir = os.path.join("runs", name)
  if overrides:
    safe = "".join(ch if ch.isalnum() or ch in "=,.-_+" else "_"
                   for ch in overrides)
    if len(safe) > _MAX_NAME:
      # Folder names stop at 255 bytes: keep a readable head and a hash of
      # the whole, so that different overrides still get different folders.
      digest = hashlib.sha256(overrides.encode()).hexdigest()[:16]
      safe = f"{safe[:_MAX_NAME - 17]}-{digest}"
    workdir = os.path.join(workdir, safe)
  return workdir


_MAX_NAME = 200


def _run_one(config, workdir):
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from vae_jax.training import config_validation  # pylint: disable=g-import-not-at-top
  from vae_jax.training import loop  # pylint: disable=g-import-not-at-top
  from vae_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  try:
    config_validation.validate(config, jax.device_count(),
                               jax.process_count())
    workdir_lib.check(config, workdir)
    dataset = data_lib.get_dataset(config)
  except (config_validation.ConfigError, workdir_lib.WorkdirError,
          data_lib.DataError) as e:
    cli.fail(str(e))
  logging.info("workdir %s, %d devices (%s), %d processes", workdir,
               jax.device_count(), jax.devices()[0].platform,
               jax.process_count())
  try:
    final = loop.train_and_evaluate(config, workdir, dataset)
  except (FloatingPointError, checkpointing.CheckpointError,
          workdir_lib.WorkdirError, data_lib.DataError) as e:
    cli.fail(str(e))
  if jax.process_index() == 0:
    printable = {k: v for k, v in final.items() if k != "kl_per_dim"}
    print(json.dumps(printable, indent=2))
    print(f"outputs: {workdir} (final_metrics.json, metrics.jsonl, "
          f"tensorboard/, images/, checkpoints/)")


def run_sweep_command(config, workdir):
  """Validates a sweep config, loads its data, runs it, prints the table."""
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax import sweep  # pylint: disable=g-import-not-at-top
  from vae_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from vae_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  try:
    points = sweep.validate(config, jax.device_count(), jax.process_count())
    start, end = sweep.index_range(config, len(points))
    sweep.check_workdir(config, points, workdir)
    # Load every dataset the range needs before any work: a missing one
    # fails in seconds, before the workdir is touched.
    keys = {}
    for p in points[start:end]:
      keys.setdefault(sweep.data_key(p.config), p.config)
    datasets = {k: data_lib.get_dataset(c) for k, c in keys.items()}
  except (sweep.SweepError, workdir_lib.WorkdirError,
          data_lib.DataError) as e:
    cli.fail(str(e))
  logging.info("sweep of %d points, running %d..%d, workdir %s, %d devices "
               "(%s)", len(points), start, end - 1, workdir,
               jax.device_count(), jax.devices()[0].platform)
  try:
    rows = sweep.run_sweep(
        config, workdir,
        load_dataset=lambda c: datasets[sweep.data_key(c)])
  except (FloatingPointError, checkpointing.CheckpointError,
          workdir_lib.WorkdirError, data_lib.DataError,
          sweep.SweepError) as e:
    cli.fail(str(e))
  if jax.process_index() == 0:
    print(sweep.format_table(rows))
    print(f"{len(rows)} of {len(points)} points done; outputs: {workdir} "
          f"(results.csv, *.png, points/<i>/)")


def main(argv):
  cli.reject_extra_args(argv)
  if _CONFIG.value is None:
    cli.fail(f"no --config given, and the default {_DEFAULT_CONFIG} is "
             "missing (configs/ comes with a checkout of vae_jax): pass "
             "--config=PATH/TO/configs/default.py")
  cli.quiet_library_logs()
  # Imports after flag parsing keep `--help` fast and let jax see XLA_FLAGS.
  from vae_jax.sweep import grid  # pylint: disable=g-import-not-at-top
  from vae_jax.training import sharding  # pylint: disable=g-import-not-at-top

  try:
    sharding.maybe_initialize_distributed(_COORDINATOR.value,
                                          _NUM_PROCESSES.value,
                                          _PROCESS_ID.value)
  except sharding.DistributedError as e:
    cli.fail(str(e))
  config = _CONFIG.value
  config_path = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or default_workdir(
      config_path, config_overrides(sys.argv, _config_argument()))
  logging.info("config %s", config_path)
  if grid.is_sweep_config(config):
    run_sweep_command(config, workdir)
  else:
    _run_one(config, workdir)


def _config_argument():
  """The --config value as given (with its parameter string)."""
  for i, arg in enumerate(sys.argv[1:], start=1):
    if arg.startswith("--config="):
      return arg[len("--config="):]
    if arg == "--config" and i + 1 < len(sys.argv):
      return sys.argv[i + 1]
  return _DEFAULT_CONFIG


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
