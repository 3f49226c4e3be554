"""A VAE = encoder network + decoder network + likelihood, wired to the core.

Parameters are one pytree {"encoder": ..., "decoder": ..., and, for a learned
σ_dec, "log_sigma_dec": [] or [*event]}; every method is a pure function of
it, so it can be jitted, vmapped over a sweep, or differentiated per replicate.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.core import likelihoods

from vae_jax.core import objectives

LIKELIHOODS = ("bernoulli", "gaussian")
SIGMA_DEC_MODES = ("fixed", "learned", "learned_per_dim", "optimal")


@dataclasses.dataclass(frozen=True)
class VAE:
  """Networks and likelihood of a VAE.

  Attributes:
    encoder: Linen module, x [B, *event] -> (mean, log_var) [B, L].
    decoder: Linen module, z [B, L] -> [B, *event] (logits or Gaussian mean).
    event_shape: shape of one observation.
    latent_dim: L.
    likelihood: "bernoulli" (decoder gives logits) or "gaussian".
    sigma_dec_mode: Gaussian only. "fixed": σ_dec = sigma_dec;
      "learned": one scalar, initialized at sigma_dec; "learned_per_dim": one
      per observed dimension; "optimal": σ_dec² = MSE of the batch for each
      sample, the calibrated decoder of Rybkin et al. (2021).
    sigma_dec: the initial value of params["log_sigma_dec"] = log σ_dec;
      with mode "fixed" it stays there (no gradient flows to it).
  """

  encoder: nn.Module
  decoder: nn.Module
  event_shape: Sequence[int]
  latent_dim: int
  likelihood: str = "bernoulli"
  sigma_dec_mode: str = "fixed"
  sigma_dec: float = 1.0

  @property
  def event_ndims(self):
    return len(self.event_shape)

  def init(self, key):
    """Returns the parameter pytree."""
    k_enc, k_dec = jax.random.split(key)
    x = jnp.zeros((1,) + tuple(self.event_shape))
    z = jnp.zeros((1, self.latent_dim))
    params = {"encoder": self.encoder.init(k_enc, x),
              "decoder": self.decoder.init(k_dec, z)}
    if self.likelihood == "gaussian" and self.sigma_dec_mode != "optimal":
      # A fixed σ_dec lives in the pytree too (its gradient is stopped), so
      # a vmapped sweep can give every grid point its own value.
      shape = tuple(self.event_shape) if (
          self.sigma_dec_mode == "learned_per_dim") else ()
      params["log_sigma_dec"] = jnp.full(shape, jnp.log(self.sigma_dec),
                                         jnp.float32)
    return params

  def posterior(self, params, x):
    """q_φ(z|x) for x [B, *event]: DiagGaussian [B, L]."""
    return objectives.encode(self.encoder.apply, params["encoder"], x)

  def decode(self, params, z):
    """Decoder output [B, *event]: logits (Bernoulli) or mean (Gaussian)."""
    return self.decoder.apply(params["decoder"], z)

  def decoder_mean(self, params, z):
    """E[x|z] [B, *event]: probabilities for Bernoulli, never raw logits."""
    out = self.decode(params, z)
    return jax.nn.sigmoid(out) if self.likelihood == "bernoulli" else out

  def log_sigma_dec(self, params):
    """log σ_dec: [] or [*event]; None for Bernoulli or the optimal mode."""
    if self.likelihood != "gaussian" or self.sigma_dec_mode == "optimal":
      return None
    if self.sigma_dec_mode == "fixed":
      return jax.lax.stop_gradient(params["log_sigma_dec"])
    return params["log_sigma_dec"]

  def log_likelihood_fn(self, params, x, mask=None):
    """The closure z [B, L] -> log p_θ(x|z) [B] in nats, constants included.

    Args:
      mask: optional [B], 1 for real rows and 0 for padding; only the
        "optimal" σ_dec uses it, so padded rows do not enter the batch MSE.
    """

    def log_likelihood(z):
      out = self.decode(params, z)
      if self.likelihood == "bernoulli":
        return likelihoods.bernoulli_log_likelihood(x, out, self.event_ndims)
      if self.sigma_dec_mode == "optimal":
        # One σ² for the batch (Rybkin et al.): the MSE over examples and dims.
        sq = jnp.square(x - out).reshape(x.shape[0], -1)
        if mask is None:
          mse = jnp.mean(sq)
        else:
          mse = jnp.sum(sq * mask[:, None]) / (jnp.sum(mask) * sq.shape[1])
        sigma_sq = jnp.maximum(mse, 1e-6)
        return likelihoods.calibrated_gaussian_log_likelihood(
            x, out, self.event_ndims, sigma_sq=sigma_sq)
      return likelihoods.gaussian_log_likelihood(
          x, out, self.log_sigma_dec(params), self.event_ndims)

    return log_likelihood

  def elbo(self, params, key, x, num_samples=1, analytic_kl=True, mask=None):
    """ElboTerms [B] in nats (see `vae_jax.elbo`); mask as log_likelihood_fn."""
    return objectives.elbo(key, self.posterior(params, x),
                           self.log_likelihood_fn(params, x, mask),
                           num_samples, analytic_kl)

  def iwae(self, params, key, x, num_samples, chunk_size=None, mask=None):
    """L_K [B] in nats, chunked when chunk_size is given."""
    posterior = self.posterior(params, x)
    fn = self.log_likelihood_fn(params, x, mask)
    if chunk_size is None or chunk_size >= num_samples:
      return objectives.iwae_bound(key, posterior, fn, num_samples)
    return objectives.iwae_bound_chunked(key, posterior, fn, num_samples,
                                         chunk_size)

  def sample_prior(self, params, key, num, temperature=1.0):
    """Decoder means at z ~ N(0, temperature² I): [num, *event]."""
    z = temperature * jax.random.normal(key, (num, self.latent_dim))
    return self.decoder_mean(params, z)

  def reconstruct(self, params, x):
    """Decoder means at the posterior means: [B, *event]."""
    return self.decoder_mean(params, self.posterior(params, x).mean)

