"""The configured sweeps: which settings and which M (or K) to evaluate."""

import functools
import time

from absl import logging

from vae_jax.core import estimators as est_lib
from vae_jax.gradient_variance.settings import linear_setting


def _elbo_names(config, num_samples):
  return [n for n in config.elbo_estimators
          if num_samples >= est_lib.MIN_SAMPLES[n]]


def run_sweeps(config, evaluator, vae_factory):
  """All rows of the configured sweeps, logging progress with an ETA.

  The ETA is the mean time of the evaluations so far times those left; the
  first of each shape includes its compilation, so early ETAs run high.
  """
  jobs = list(_jobs(config, vae_factory))
  rows = []
  start = time.perf_counter()
  for i, (label, setting, sweep, names, num_samples) in enumerate(jobs):
    rows += evaluator.run(setting(), sweep, names, num_samples)
    elapsed = time.perf_counter() - start
    logging.info("gradient variance: %d/%d evaluations done (%s) in %.0f s; "
                 "ETA %.0f s", i + 1, len(jobs), label, elapsed,
                 elapsed / (i + 1) * (len(jobs) - i - 1))
  return rows


def _jobs(config, vae_factory):
  """(label, setting thunk, sweep, estimator names, M or K) in row order.

  A setting is built when its first evaluation runs and shared by the
  evaluations that name the same one (a trained VAE is trained once).
  """
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

  for model_kind, make_setting in settings_by_model.items():
    make = _memoized(make_setting)
    states = (tuple(config.linear.states) if model_kind == "linear"
              else vae_factory.states())
    if "num_samples" in config.sweeps:
      for state in states:
        for m in config.num_samples_grid:
          yield (f"{model_kind} {state} M={m}", functools.partial(make, state),
                 "num_samples", _elbo_names(config, m), m)
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
            yield (f"{model_kind} {state} d={d} draw {draw}",
                   functools.partial(make, state, d=d, draw=draw),
                   "latent_dim", _elbo_names(config, m), m)
    if "sigma_dec" in config.sweeps:
      sigmas = (config.linear.sigma_decs if model_kind == "linear"
                else config.vae.sigma_decs)
      for state in sweep_states:
        for s in sigmas:
          yield (f"{model_kind} {state} σ_dec={s}",
                 functools.partial(make, state, s=s), "sigma_dec",
                 _elbo_names(config, m), m)
    if "iwae_k" in config.sweeps:
      iwae_batch = (config.linear.iwae_batch_size if model_kind == "linear"
                    else config.vae.iwae_batch_size)
      for state in states:
        for k in config.iwae_k_grid:
          yield (f"{model_kind} {state} K={k}",
                 functools.partial(make, state, batch=iwae_batch), "iwae_k",
                 tuple(config.iwae_estimators), k)


def _memoized(make):
  """make(*args, **kwargs), built once per distinct arguments."""
  cache = {}

  def cached(*args, **kwargs):
    key = (args, tuple(sorted(kwargs.items())))
    if key not in cache:
      cache[key] = make(*args, **kwargs)
    return cache[key]

  return cached
