"""Synthetic data of paper §3: x ~ N(μ, σ² I) in R^d.

The linear-Gaussian VAE has a closed-form log p(x) and posterior for this
data, so runs on it can be checked against the exact optimum.
"""

from __future__ import annotations

import numpy as np

from vae_jax.data.base import ArraySource, DataError, Dataset
from vae_jax.data.preprocess import config_value

_DEFAULTS = {"dim": 4, "mu": 1.0, "sigma": 2.0, "num_train": 4096,
             "num_test": 1024}


def linear_gaussian_params(config) -> dict:
  """The data distribution's parameters from `config.linear_gaussian`.

  Returns:
    {"dim": d, "mu": float64 [d], "sigma": σ > 0, "num_train", "num_test"};
    a scalar mu is broadcast to every dimension.
  """
  sub = config_value(config, "linear_gaussian", {})
  p = {k: config_value(sub, k, v) for k, v in _DEFAULTS.items()}
  dim = int(p["dim"])
  if dim < 1:
    raise DataError(f"linear_gaussian.dim must be >= 1, got {dim}")
  mu = np.asarray(p["mu"], np.float64)
  if mu.ndim == 0:
    mu = np.full(dim, float(mu))
  elif mu.shape != (dim,):
    raise DataError(f"linear_gaussian.mu has shape {mu.shape}, dim is {dim}")
  sigma = float(p["sigma"])
  if not sigma > 0:
    raise DataError(f"linear_gaussian.sigma must be > 0, got {sigma}")
  num_train, num_test = int(p["num_train"]), int(p["num_test"])
  if num_train < 1 or num_test < 1:
    raise DataError("linear_gaussian.num_train and num_test must be >= 1")
  return {"dim": dim, "mu": mu, "sigma": sigma, "num_train": num_train,
          "num_test": num_test}


def load_linear_gaussian(config) -> Dataset:
  """Draws train [num_train, d] and test [num_test, d] from N(μ, σ² I).

  The draw is a function of `config.data_seed` and the parameters only;
  train and test are independent (disjoint parts of one random stream).
  Values are raw (not standardized): the closed forms are in these units.
  """
  p = linear_gaussian_params(config)
  rng = np.random.default_rng(int(config_value(config, "data_seed", 0)))
  draw = lambda n: (p["mu"] + p["sigma"] * rng.standard_normal(
      (n, p["dim"]))).astype(np.float32)
  train, test = draw(p["num_train"]), draw(p["num_test"])
  return Dataset(name="linear_gaussian", event_shape=(p["dim"],),
                 train=ArraySource(train), test=ArraySource(test),
                 train_labels=None, test_labels=None, kind="continuous",
                 levels=None, standardization=None)
