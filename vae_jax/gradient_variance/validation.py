"""Checking a gradient-variance config before any work is done."""

import os

from vae_jax.core import estimators as est_lib
from vae_jax.gradient_variance.schema import (LINEAR_STATES, MODELS, SWEEPS,
                                              VAE_STATES)


class ConfigError(ValueError):
  """A config problem, reported as one line before any work."""


def validate_config(config):
  """Checks the whole config; raises ConfigError with one line."""
  def need(ok, message):
    if not ok:
      raise ConfigError(message)

  need(set(config.models) <= set(MODELS) and config.models,
       f"models must be a non-empty subset of {MODELS}, got {config.models}")
  need(set(config.sweeps) <= set(SWEEPS) and config.sweeps,
       f"sweeps must be a non-empty subset of {SWEEPS}, got {config.sweeps}")
  for name in config.elbo_estimators:
    need(name in est_lib.ELBO_ESTIMATORS,
         f"elbo_estimators: {name!r} is not one of "
         f"{tuple(est_lib.ELBO_ESTIMATORS)}")
  for name in config.iwae_estimators:
    need(name in est_lib.IWAE_ESTIMATORS,
         f"iwae_estimators: {name!r} is not one of "
         f"{tuple(est_lib.IWAE_ESTIMATORS)}")
  for field in ("num_samples_grid", "iwae_k_grid"):
    grid = tuple(config[field])
    need(grid and all(isinstance(m, int) and m >= 1 for m in grid)
         and list(grid) == sorted(set(grid)),
         f"{field} must be increasing positive integers, got {grid}")
  need(config.base_num_samples >= 1, "base_num_samples must be >= 1")
  need(config.snr_fit_min_k >= 1, "snr_fit_min_k must be >= 1")
  need(config.chunk_size >= 1, "chunk_size must be >= 1")
  need(config.latent_dim_draws >= 1, "latent_dim_draws must be >= 1")
  need(config.max_chunk_evals >= 1, "max_chunk_evals must be >= 1")
  lin = config.linear
  need(set(lin.states) <= set(LINEAR_STATES) and lin.states,
       f"linear.states must be a subset of {LINEAR_STATES}")
  need(lin.data_sigma > 0 and lin.batch_size >= 1 and lin.iwae_batch_size >= 1,
       "linear: data_sigma > 0 and batch sizes >= 1 required")
  need(lin.near_optimum_noise >= 0, "linear.near_optimum_noise must be >= 0")
  sigmas = (lin.sigma_dec,) + tuple(lin.sigma_decs)
  need(all(s > 0 for s in sigmas), "linear: sigma_dec values must be > 0")
  if {"optimum", "near_optimum"} & set(lin.states):
    need(all(s < lin.data_sigma for s in sigmas),
         f"linear: every sigma_dec must be < data_sigma={lin.data_sigma} for "
         f"the optimum (c² + s² = σ²) to exist, got {sigmas}")
  need(all(d >= 1 for d in (lin.latent_dim,) + tuple(lin.latent_dims)),
       "linear: latent dims must be >= 1")
  vae = config.vae
  need(set(vae.states) <= set(VAE_STATES) and vae.states,
       f"vae.states must be a subset of {VAE_STATES}")
  need(vae.likelihood in ("gaussian", "bernoulli"),
       f"vae.likelihood must be gaussian or bernoulli, got {vae.likelihood!r}")
  need(all(s > 0 for s in (vae.sigma_dec,) + tuple(vae.sigma_decs)),
       "vae: sigma_dec values must be > 0")
  need(vae.batch_size >= 1 and vae.iwae_batch_size >= 1 and
       vae.train_steps >= 0,
       "vae: batch sizes >= 1 and train_steps >= 0 required")
  need(vae.train_estimator in est_lib.ESTIMATORS,
       f"vae.train_estimator {vae.train_estimator!r} is not one of "
       f"{sorted(est_lib.ESTIMATORS)}")
  need(vae.train_num_samples >= est_lib.MIN_SAMPLES[vae.train_estimator],
       f"vae.train_num_samples too small for {vae.train_estimator}")
  for name, part in (("linear", lin), ("vae", vae)):
    need(2 <= part.min_replicates <= part.num_replicates,
         f"{name}: need 2 <= min_replicates <= num_replicates")
    need(part.max_sample_evals >= 1 and part.iwae_max_sample_evals >= 1,
         f"{name}: max_sample_evals and iwae_max_sample_evals must be >= 1")
  if config.checkpoint_dir is not None:
    need(os.path.isdir(config.checkpoint_dir),
         f"checkpoint_dir {config.checkpoint_dir!r} is not a directory")
