"""Gradient-estimator variance benchmark; the experiment CLI runs it.

For every setting (model, state, M or K, latent dimension, σ_dec) and every
estimator of `vae_jax.core.estimators`, R independent gradient estimates of the
batch-mean bound on a fixed batch are drawn in one vmapped computation, all
estimators on the same keys (`paired.joint_replicate_moments`), and reduced
to per-parameter variances, SNRs (mean and quantiles over parameters), bias
with its standard error where the true gradient is known, and paired tests
against a reference estimator of the same bound. Statistics
are kept apart for the encoder φ ("enc_" columns) and the decoder θ ("dec_").
The command line is experiments/gradient_variance.py.

Models: the §3 linear-Gaussian model (the exact ELBO gradient is
`jax.grad` of the closed-form ELBO; states "init" and "optimum", q = exact
posterior) and an MLP VAE on real data (digits offline; states "init" and
"trained", trained here with Adam or restored from `config.checkpoint_dir`).

Modules, in the order a run uses them:
  schema        sweep, model and state names; the CSV columns
  validation    ConfigError and validate_config
  settings      Setting, derive_key and the linear-Gaussian settings
  vae_settings  VAE data, model building, training or restoring (VaeFactory)
  paired        every estimator on shared keys; paired differences
  evaluate      Evaluator: every estimator on one setting → rows
  sweeps        run_sweeps: the configured grids of settings and M / K
  rows          results.csv writing and reading series out of rows
  plots         the PNGs
  summary       summary.md: notes, findings and tables
  pipeline      run: all of the above for one config and workdir
"""

from vae_jax.gradient_variance.pipeline import run
from vae_jax.gradient_variance.schema import COLUMNS
from vae_jax.gradient_variance.vae_settings import build_vae
from vae_jax.gradient_variance.validation import ConfigError, validate_config

__all__ = ["COLUMNS", "ConfigError", "build_vae", "run", "validate_config"]
