r"""Gradient-estimator variance: score function, reparameterization and more.

    python -m experiments.gradient_variance --workdir=/tmp/gv
    python -m experiments.gradient_variance \
        --config=configs/gradient_variance.py:quick --workdir=/tmp/gv_quick

Without --config it runs configs/gradient_variance.py (the offline default).

The benchmark itself (settings, estimators, statistics, outputs) lives in
`vae_jax.gradient_variance`; this is its command line.

Writes to --workdir:
  results.csv            one row per setting and estimator
  summary.md             the claims, each with its measured numbers, and tables
  variance_vs_M.png      trace of the covariance vs M, log-log
  snr_vs_K.png           encoder and decoder SNR vs K (median and 10th–90th
                         percentile over parameters), log-log
  variance_vs_latent_dim.png   per-parameter variance vs latent dimension
  variance_vs_sigma_dec.png    trace of the covariance vs σ_dec
"""

import os

from absl import flags

from vae_jax import cli
from vae_jax import gradient_variance as gv

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "gradient_variance.py")

_CONFIG = cli.define_config_file(
    "config", _DEFAULT_CONFIG,
    "configs/gradient_variance.py, optionally :quick / :mnist.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  if _WORKDIR.value is None:
    cli.fail("--workdir is required")
  try:
    gv.validate_config(_CONFIG.value)
  except gv.ConfigError as e:
    cli.fail(f"config: {e}")
  try:
    gv.run(_CONFIG.value, _WORKDIR.value)
  except Exception as e:  # pylint: disable=broad-except
    # Missing data or checkpoints are the user's to fix: one line, no trace.
    if type(e).__name__ in ("ConfigError", "DataError", "CheckpointError"):
      cli.fail(str(e))
    raise
  print(open(os.path.join(_WORKDIR.value, "summary.md")).read())
  print(f"outputs: {_WORKDIR.value} (summary.md, results.csv, *.png)")


if __name__ == "__main__":
  cli.run(main)
