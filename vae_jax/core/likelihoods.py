"""Decoder likelihoods log p_θ(x|z) in nats, with every constant kept (§6.5).

The paper drops −(D/2) log(2πσ_dec²) for optimization; we keep it so that
ELBOs at different σ_dec can be compared. Each function sums over the last
`event_ndims` axes of x: 1 for vectors [.., D], 3 for images [.., H, W, C].
"""

import jax
import jax.numpy as jnp

from vae_jax.core.distributions import LOG_2PI


def _sum_event(values, event_ndims):
  if event_ndims == 0:
    return values
  return jnp.sum(values, axis=tuple(range(-event_ndims, 0)))


def _event_size(x, event_ndims):
  size = 1
  for n in x.shape[x.ndim - event_ndims:]:
    size *= n
  return size


def gaussian_log_likelihood(x, mean, log_sigma, event_ndims=1):
  """log N(x | mean, σ² I) with σ = exp(log_sigma), summed over the event.

  Args:
    x, mean: [..., *event].
    log_sigma: log σ_dec; a scalar (fixed or one learned scale) or an array
      broadcastable to the event (a learned scale per dimension).
    event_ndims: number of trailing axes of x forming one observation.

  Returns:
    [...] nats: −‖x − mean‖²/(2σ²) − Σ_dims log σ − (D/2) log 2π.
  """
  log_sigma = jnp.broadcast_to(log_sigma, jnp.broadcast_shapes(
      jnp.shape(log_sigma), x.shape))
  sq = jnp.square(x - mean) * jnp.exp(-2.0 * log_sigma)
  return -0.5 * _sum_event(sq + 2.0 * log_sigma + LOG_2PI, event_ndims)


def optimal_sigma_sq(x, mean, event_ndims=1, min_sigma_sq=1e-6):
  """Closed-form maximizer of the Gaussian likelihood over one shared σ²:
  σ*² = mean squared error over the event (Rybkin et al. 2021).

  Args:
    x, mean: [..., *event].
    min_sigma_sq: floor, so a perfect reconstruction does not give log 0.

  Returns:
    [...] σ*² per example.
  """
  mse = _sum_event(jnp.square(x - mean), event_ndims) / _event_size(
      x, event_ndims)
  return jnp.maximum(mse, min_sigma_sq)


def calibrated_gaussian_log_likelihood(x, mean, event_ndims=1,
                                       min_sigma_sq=1e-6, sigma_sq=None):
  """Gaussian log-likelihood at the optimal σ_dec² = MSE ("calibrated decoder").

  Substituting σ*² into the Gaussian gives −(D/2)(log(2π σ*²) + 1).

  Args:
    x, mean: [..., *event].
    sigma_sq: optional precomputed σ*² broadcastable to [...], e.g. one value
      shared by a whole batch; by default it is `optimal_sigma_sq` per example.

  Returns:
    [...] nats.
  """
  if sigma_sq is None:
    sigma_sq = optimal_sigma_sq(x, mean, event_ndims, min_sigma_sq)
  log_sigma = 0.5 * jnp.log(sigma_sq)
  log_sigma = jnp.reshape(log_sigma, jnp.shape(log_sigma) + (1,) * event_ndims)
  return gaussian_log_likelihood(x, mean, log_sigma, event_ndims)


def bernoulli_log_likelihood(x, logits, event_ndims=1):
  """log Bernoulli(x | sigmoid(logits)), stable for any |logit|.

  Written as −[x softplus(−l) + (1 − x) softplus(l)]: no exp overflows and
  no large terms cancel, so logits of ±1e4 stay exact in float32.

  Args:
    x: [..., *event] in {0, 1} (values in [0, 1] give the cross-entropy).
    logits: [..., *event].

  Returns:
    [...] nats.
  """
  ll = -(x * jax.nn.softplus(-logits) + (1.0 - x) * jax.nn.softplus(logits))
  return _sum_event(ll, event_ndims)
