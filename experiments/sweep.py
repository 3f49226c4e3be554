r"""A σ_dec × latent_dim × seed sweep: one command, one table, a few plots.

    python -m experiments.sweep --config=configs/sweep.py --workdir=runs/sweep
    python -m experiments.sweep --config=configs/sweep.py:quick --workdir=/tmp/s
    # split across machines, then merge the parts' CSVs:
    python -m experiments.sweep --config=configs/sweep.py --workdir=runs/a \
        --config.start_index=0 --config.end_index=24
    python -m experiments.sweep --config=configs/sweep.py --workdir=runs/b \
        --config.start_index=24
    python -m experiments.sweep --merge=runs/a,runs/b --workdir=runs/sweep

Points that differ only in σ_dec, seed (and a state-held learning rate)
train together as one vmapped, jitted step; other shapes run one group
after another (`vae_jax.sweep.run`). Rerunning the same command resumes: groups
from their checkpoints, finished points are never retrained.

Writes to --workdir: results.csv (one row per point: config values, test
ELBO, reconstruction, KL = rate, NLL = −L_K, active units, σ_dec learned or
optimal, steps, wall time), rate_distortion.png, elbo_nll_vs_sigma_dec.png,
active_units_vs_latent_dim.png, samples.png, and points/<i>/ (a runner
workdir per point, with its own samples and reconstructions).
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vae_jax import cli

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "sweep.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Sweep config: configs/sweep.py, optionally "
    ":quick or :mnist.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output folder; default ./runs/sweep.")
_MERGE = flags.DEFINE_list(
    "merge", None, "Comma-separated workdirs (or results.csv files) of parts "
    "of one sweep: merge their tables into --workdir and plot; no training.")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  # Imports after flag parsing keep --help fast and let jax see XLA_FLAGS.
  # pylint: disable=g-import-not-at-top
  import jax
  from vae_jax.training import checkpointing
  from vae_jax.training import sharding
  from vae_jax.sweep import run as sweep
  from vae_jax import data as data_lib
  # pylint: enable=g-import-not-at-top

  workdir = _WORKDIR.value or os.path.join("runs", "sweep")
  if _MERGE.value:
    try:
      rows, missing = sweep.write_merged(_MERGE.value, workdir)
    except sweep.SweepError as e:
      cli.fail(str(e))
    print(f"merged {len(rows)} points into {workdir}/results.csv"
          + (f"; missing points: {sweep.format_ranges(missing)}" if missing
             else ""))
    return

  sharding.maybe_initialize_distributed()
  config = _CONFIG.value
  try:
    points = sweep.validate(config, jax.device_count(), jax.process_count())
    start, end = sweep.index_range(config, len(points))
    # Load every dataset the range needs before any work: a missing one
    # fails in seconds, before the workdir is touched.
    keys = {}
    for p in points[start:end]:
      keys.setdefault(sweep.data_key(p.config), p.config)
    datasets = {k: data_lib.get_dataset(c) for k, c in keys.items()}
  except (sweep.SweepError, data_lib.DataError) as e:
    cli.fail(str(e))
  logging.info("sweep of %d points, running %d..%d, workdir %s, %d devices "
               "(%s)", len(points), start, end - 1, workdir,
               jax.device_count(), jax.devices()[0].platform)
  try:
    rows = sweep.run_sweep(
        config, workdir,
        load_dataset=lambda c: datasets[sweep.data_key(c)])
  except (FloatingPointError, checkpointing.CheckpointError,
          data_lib.DataError, sweep.SweepError) as e:
    cli.fail(str(e))
  if jax.process_index() == 0:
    print(f"{len(rows)} of {len(points)} points done; table: "
          f"{os.path.join(workdir, 'results.csv')}")
    print(sweep.format_table(rows))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
