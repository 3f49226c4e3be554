r"""A σ_dec × latent_dim × seed sweep: an alias of `python -m vae_jax.main`
with configs/sweep.py as its default config, plus merging of split sweeps.

    python -m experiments.sweep --workdir=runs/sweep      # = vae_jax.main --config=configs/sweep.py
    python -m experiments.sweep --config=configs/sweep.py:quick --workdir=/tmp/s
    # split across machines, then merge the parts' CSVs:
    python -m experiments.sweep --workdir=runs/a --config.start_index=0 --config.end_index=24
    python -m experiments.sweep --workdir=runs/b --config.start_index=24
    python -m experiments.sweep --merge=runs/a,runs/b --workdir=runs/sweep
"""

import os
import sys

from absl import flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "sweep.py")
# vae_jax.main's --config defaults to the runner's config and is parsed when
# it is defined (at import): a sweep's default goes on the command line first.
if not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
  sys.argv.insert(1, f"--config={_DEFAULT_CONFIG}")

# pylint: disable=g-import-not-at-top,wrong-import-position
from vae_jax import cli
from vae_jax import main as runner_main
# pylint: enable=g-import-not-at-top,wrong-import-position
_MERGE = flags.DEFINE_list(
    "merge", None, "Comma-separated workdirs (or results.csv files) of parts "
    "of one sweep: merge their tables into --workdir and plot; no training.")


def main(argv):
  if not _MERGE.value:
    return runner_main.main(argv)
  cli.reject_extra_args(argv)
  from vae_jax import sweep  # pylint: disable=g-import-not-at-top
  workdir = flags.FLAGS.workdir or os.path.join("runs", "sweep")
  try:
    rows, missing = sweep.write_merged(_MERGE.value, workdir)
  except sweep.SweepError as e:
    cli.fail(str(e))
  except OSError as e:  # e.g. a --workdir under a folder one cannot write
    cli.fail(f"merging into {workdir} failed: {e}")
  print(f"merged {len(rows)} points into {workdir}/results.csv"
        + (f"; missing points: {sweep.format_ranges(missing)}" if missing
           else ""))


if __name__ == "__main__":
  cli.run(main)
