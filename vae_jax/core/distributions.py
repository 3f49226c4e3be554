"""Gaussian densities and KL divergences (paper §6.3–6.4), in nats.

Every function is pure, jnp-only, and acts on the trailing event axis: leading
axes are batch axes, so the functions compose under `vmap`, `jit` and `grad`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

LOG_2PI = 1.8378770664093453  # log(2π)


class DiagGaussian(NamedTuple):
  """N(mean, diag(exp(log_var))). Both fields: [..., d]."""

  mean: jax.Array
  log_var: jax.Array


def diag_gaussian_log_prob(z, mean, log_var):
  """log N(z | mean, diag(exp(log_var))) with its normalizing constant.

  Args:
    z, mean, log_var: [..., d], broadcastable.

  Returns:
    [...] log-density in nats, summed over the event axis d.
  """
  sq = jnp.square(z - mean) * jnp.exp(-log_var)
  return -0.5 * jnp.sum(sq + log_var + LOG_2PI, axis=-1)


def std_normal_log_prob(z):
  """log N(z | 0, I) in nats. z: [..., d] -> [...]."""
  return -0.5 * jnp.sum(jnp.square(z) + LOG_2PI, axis=-1)


def mvn_log_prob(x, mean, cov):
  """log N(x | mean, cov) for a full covariance, via its Cholesky factor.

  Args:
    x, mean: [..., d].
    cov: [..., d, d], symmetric positive definite.

  Returns:
    [...] log-density in nats.
  """
  chol = jnp.linalg.cholesky(cov)
  diff = (x - mean)[..., None]
  white = jax.scipy.linalg.solve_triangular(chol, diff, lower=True)[..., 0]
  half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
  d = x.shape[-1]
  return -0.5 * jnp.sum(jnp.square(white), -1) - half_logdet - 0.5 * d * LOG_2PI


def kl_mvn(mean0, cov0, mean1, cov1):
  """KL(N(mean0, cov0) ‖ N(mean1, cov1)), Thm 1.3, without forming inverses.

  With L1 = chol(cov1), L0 = chol(cov0):
    Tr(Σ1⁻¹Σ0)            = ‖L1⁻¹ L0‖²_F
    (μ1−μ0)ᵀΣ1⁻¹(μ1−μ0)   = ‖L1⁻¹(μ1−μ0)‖²
    log det Σ1 / det Σ0   = 2 Σ log diag L1 − 2 Σ log diag L0

  Args:
    mean0, mean1: [..., d].
    cov0, cov1: [..., d, d], symmetric positive definite.

  Returns:
    [...] KL in nats.
  """
  d = mean0.shape[-1]
  chol0 = jnp.linalg.cholesky(cov0)
  chol1 = jnp.linalg.cholesky(cov1)
  solve = lambda b: jax.scipy.linalg.solve_triangular(chol1, b, lower=True)
  trace = jnp.sum(jnp.square(solve(chol0)), axis=(-2, -1))
  maha = jnp.sum(jnp.square(solve((mean1 - mean0)[..., None])[..., 0]), -1)
  logdet1 = 2 * jnp.sum(jnp.log(jnp.diagonal(chol1, axis1=-2, axis2=-1)), -1)
  logdet0 = 2 * jnp.sum(jnp.log(jnp.diagonal(chol0, axis1=-2, axis2=-1)), -1)
  return 0.5 * (trace - d + maha + logdet1 - logdet0)


def kl_diag_to_std_normal_per_dim(mean, log_var):
  """Per-dimension KL(N(μ_j, σ_j²) ‖ N(0, 1)) = ½(σ_j² + μ_j² − 1 − log σ_j²).

  Args:
    mean, log_var: [..., d].

  Returns:
    [..., d] in nats; sums to `kl_diag_to_std_normal`. Used for "KL per
    latent dimension" and active-unit diagnostics.
  """
  # expm1 keeps the σ² − 1 − log σ² cancellation accurate near σ² = 1.
  return 0.5 * (jnp.expm1(log_var) - log_var + jnp.square(mean))


def kl_diag_to_std_normal(mean, log_var):
  """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²).

  This is §6.4 done per dimension. The paper's "σ²d − d + ‖μ‖² − 2 log σ"
  is the isotropic case with the factor d missing from the log term.

  Args:
    mean, log_var: [..., d].

  Returns:
    [...] KL in nats.
  """
  return jnp.sum(kl_diag_to_std_normal_per_dim(mean, log_var), axis=-1)


def kl_diag_gaussians(mean0, log_var0, mean1, log_var1):
  """KL(N(μ0, diag σ0²) ‖ N(μ1, diag σ1²)), [..., d] -> [...] nats."""
  ratio = jnp.exp(log_var0 - log_var1)
  maha = jnp.square(mean1 - mean0) * jnp.exp(-log_var1)
  return 0.5 * jnp.sum(ratio + maha - 1.0 - (log_var0 - log_var1), axis=-1)
