"""Settings (model, state, fixed batch) and the §3 linear-Gaussian ones."""

import dataclasses
import math
import zlib
from typing import Any, Optional

import jax
import jax.numpy as jnp

from vae_jax.core import estimators as est_lib
from vae_jax.core import linear_gaussian


@dataclasses.dataclass
class Setting:
  """One model state on one batch; every estimator is run on it."""

  model_kind: str  # "linear" | "vae"
  dataset: str
  state: str
  latent_dim: int
  sigma_dec: float  # NaN for a Bernoulli decoder
  model: Any
  params: Any
  x: jax.Array  # [B, *event]
  exact: bool  # the ELBO gradient is known in closed form
  budget: Any  # the config block with num_replicates, max_sample_evals, ...
  init_draw: Optional[int] = None  # which of several initializations, if any

  def init_draw_label(self):
    return "" if self.init_draw is None else self.init_draw

  def tag(self):
    # Draw 0 is the base draw: its rows are shared with the other sweeps.
    return (f"{self.model_kind}|{self.dataset}|{self.state}|{self.latent_dim}|"
            f"{self.sigma_dec}|{tuple(self.x.shape)}|{self.init_draw or 0}")


def derive_key(seed, *parts):
  """A key derived from a description, so a row does not depend on order."""
  text = "|".join(str(p) for p in parts)
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(text.encode()))


LINEAR_MODEL = est_lib.LinearGaussianModel()


def nesting_dim(config):
  """The d of the one draw every linear setting takes its first d dims from."""
  lin = config.linear
  return max((lin.latent_dim,) + tuple(lin.latent_dims))


def linear_setting(config, state, latent_dim, sigma_dec, batch_size=None,
                   init_draw=None):
  """§3 model with d = latent_dim at `state`, decoder noise s = sigma_dec.

  Every random quantity (data, initialization, near-optimum noise) is drawn
  once at d = `nesting_dim(config)` and cut to the first `latent_dim`
  dimensions, so the models of the latent_dim sweep are nested: the d = 4
  model is the first 4 dimensions of the d = 64 one (the §3 model factorizes
  over dimensions). Redrawing per d would confound d with the draw.

  The batch is the first `batch_size` (default linear.batch_size) of one
  fixed draw, so the ELBO and K sweeps share their first examples.

  init_draw: None (or 0) for the base draw; 1, 2, ... for the further draws
  (data, initialization and noise) that the latent_dim sweep averages over.
  """
  lin = config.linear
  batch_size = lin.batch_size if batch_size is None else batch_size
  nest = nesting_dim(config)
  if latent_dim > nest:
    raise ValueError(f"latent_dim {latent_dim} > nesting dimension {nest}")
  extra = (init_draw,) if init_draw else ()
  cut = lambda tree: jax.tree.map(lambda v: v[..., :latent_dim], tree)
  mu = lin.data_mu * jnp.ones((latent_dim,))
  x = linear_gaussian.sample_data(
      derive_key(config.seed, "linear-data", *extra), lin.data_mu * jnp.ones((nest,)),
      lin.data_sigma, max(lin.batch_size, lin.iwae_batch_size))
  x = x[:batch_size, :latent_dim]
  if state in ("optimum", "near_optimum"):
    enc, dec = linear_gaussian.optimal_params(mu, lin.data_sigma, sigma_dec)
    if state == "near_optimum":
      # A stand-in for a trained model: the optimum plus small noise, so q is
      # close to, but not exactly, the posterior.
      leaves, tree = jax.tree.flatten((enc, dec))
      keys = jax.random.split(derive_key(config.seed, "near-optimum", *extra),
                              len(leaves))
      leaves = [v + lin.near_optimum_noise *
                jax.random.normal(k, (nest,))[:latent_dim]
                for v, k in zip(leaves, keys)]
      enc, dec = jax.tree.unflatten(tree, leaves)
  else:
    enc, dec = cut(linear_gaussian.init_params(
        derive_key(config.seed, "linear-init", *extra), nest, lin.init_scale))
    dec = dict(dec, log_s=jnp.full((latent_dim,), math.log(sigma_dec),
                                   jnp.float32))
  return Setting("linear", "synthetic_gaussian", state, latent_dim,
                 float(sigma_dec), LINEAR_MODEL,
                 est_lib.linear_gaussian_params(enc, dec), x, True, lin,
                 init_draw)
