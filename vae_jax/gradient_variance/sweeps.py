"""The configured sweeps: which settings and which M (or K) to evaluate."""

from vae_jax.core import estimators as est_lib
from vae_jax.gradient_variance.settings import linear_setting


def _elbo_names(config, num_samples):
  return [n for n in config.elbo_estimators
          if num_samples >= est_lib.MIN_SAMPLES[n]]


def run_sweeps(config, evaluator, vae_factory):
  """All rows of the configured sweeps."""
  rows = []
  settings_by_model = {}
  if "linear" in config.models:
    lin = config.linear
    settings_by_model["linear"] = (
        lambda state, d=None, s=None, batch=None, draw=None: linear_setting(
            config, state, lin.latent_dim if d is None else d,
            lin.sigma_dec if s is None else s, batch, draw))
  if "vae" in config.models:
    settings_by_model["vae"] = (
        lambda state, d=None, s=None, batch=None, draw=None:
        vae_factory.setting(state, d, s, batch, draw))

  for model_kind, make in settings_by_model.items():
    states = (tuple(config.linear.states) if model_kind == "linear"
              else vae_factory.states())
    if "num_samples" in config.sweeps:
      for state in states:
        setting = make(state)
        for m in config.num_samples_grid:
          rows += evaluator.run(setting, "num_samples",
                                _elbo_names(config, m), m)
    # Latent dimension and σ_dec: every linear state; the VAE at
    # initialization only (a trained VAE per value would need its own run).
    sweep_states = states if model_kind == "linear" else ("init",)
    m = config.base_num_samples
    if "latent_dim" in config.sweeps:
      dims = (config.linear.latent_dims if model_kind == "linear"
              else config.vae.latent_dims)
      # Several draws per d, averaged in the plot and the summary; the
      # linear settings of one draw are also nested (cut from one draw).
      for state in sweep_states:
        for d in dims:
          for draw in range(config.latent_dim_draws):
            rows += evaluator.run(make(state, d=d, draw=draw), "latent_dim",
                                  _elbo_names(config, m), m)
    if "sigma_dec" in config.sweeps:
      sigmas = (config.linear.sigma_decs if model_kind == "linear"
                else config.vae.sigma_decs)
      for state in sweep_states:
        for s in sigmas:
          rows += evaluator.run(make(state, s=s), "sigma_dec",
                                _elbo_names(config, m), m)
    if "iwae_k" in config.sweeps:
      iwae_batch = (config.linear.iwae_batch_size if model_kind == "linear"
                    else config.vae.iwae_batch_size)
      for state in states:
        setting = make(state, batch=iwae_batch)
        for k in config.iwae_k_grid:
          rows += evaluator.run(setting, "iwae_k", config.iwae_estimators, k)
  return rows
