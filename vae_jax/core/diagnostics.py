"""Summaries of a trained VAE that papers report: bits/dim and active units."""

import math

import jax.numpy as jnp


def bits_per_dim(nll_nats, num_dims, dequantization_nats=0.0):
  """Converts a negative log-likelihood in nats per example to bits/dim.

  Args:
    nll_nats: [...] −log p(x) (or −ELBO) in nats per example.
    num_dims: D, the number of observed dimensions.
    dequantization_nats: added before converting. For a continuous density on
      8-bit data scaled to [0, 1) with uniform noise of width 1/256, pass
      D·ln 256 so the result is a discrete bits/dim; 0 for binary data.

  Returns:
    [...] bits per dimension: (nll + dequantization) / (D ln 2).
  """
  return (nll_nats + dequantization_nats) / (num_dims * math.log(2.0))


def dequantization_nats_8bit(num_dims):
  """D ln 256: the nats that turn a [0,1)-scaled density into 8-bit bits/dim."""
  return num_dims * math.log(256.0)


def latent_activity(posterior_means):
  """Cov_x(E_q[z_j]) per latent dimension (Burda et al. 2015).

  Args:
    posterior_means: [N, L], E_q[z|x] for N examples.

  Returns:
    [L] variance across examples of each latent's posterior mean.
  """
  return jnp.var(posterior_means, axis=0)


def active_units(posterior_means, threshold=0.01):
  """Number of latent dimensions with Cov_x(E_q[z_j]) > threshold."""
  return jnp.sum(latent_activity(posterior_means) > threshold)
