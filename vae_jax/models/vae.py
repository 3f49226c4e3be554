"""A VAE = encoder network + decoder network + likelihood, wired to the core.

Parameters are one pytree {"encoder": ..., "decoder": ..., and, for a
Gaussian decoder scale, "log_sigma_dec": [], [C] or [*event]}; every method is
a pure function of it, so it can be jitted, vmapped over a sweep, or
differentiated per replicate.

Likelihoods:
  bernoulli                     binary x; the decoder gives logits.
  gaussian                      the paper's N(f(z), σ_dec² I) density (§6.5),
                                on dequantized or continuous data.
  discretized_gaussian          N(f(z), σ_dec²) integrated over the bins of
                                the num_levels intensity levels: a
                                probability mass on x = k / (num_levels − 1).
  discretized_logistic_mixture  PixelCNN++'s mixture of num_mixtures
                                discretized logistics per pixel; the decoder
                                gives its P parameters per pixel.
The discretized ones model integer images given as x = k / (num_levels − 1)
(transform 'none'); their −log P / (D ln 2) is bits/dim as published.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.core import likelihoods
from vae_jax.core import objectives
from vae_jax.models import networks

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_gaussian",
               "discretized_logistic_mixture")
DISCRETIZED_LIKELIHOODS = ("discretized_gaussian",
                           "discretized_logistic_mixture")
SIGMA_DEC_MODES = ("fixed", "learned", "learned_per_channel",
                   "learned_per_dim", "optimal")
# Likelihoods that have a σ_dec; the discretized Gaussian has no closed-form
# optimal σ, so "optimal" is for the continuous one only.
SIGMA_LIKELIHOODS = ("gaussian", "discretized_gaussian")


def uses_sigma_dec(likelihood, sigma_dec_mode):
  """Whether the configured σ_dec enters the model: a (discretized)
  Gaussian decoder whose σ_dec is not set from the MSE ('optimal')."""
  return likelihood in SIGMA_LIKELIHOODS and sigma_dec_mode != "optimal"


@dataclasses.dataclass(frozen=True)
class VAE:
  """Networks and likelihood of a VAE.

  Attributes:
    encoder: Linen module, x [B, *event] -> (mean, log_var) [B, L].
    decoder: Linen module, z [B, L] -> [B, *decoder_shape] (logits,
      Gaussian mean, or mixture parameters; see `decoder_shape`).
    event_shape: shape of one observation.
    latent_dim: L.
    likelihood: one of LIKELIHOODS (see the module docstring).
    sigma_dec_mode: Gaussian and discretized Gaussian. "fixed": σ_dec =
      sigma_dec; "learned": one scalar, initialized at sigma_dec;
      "learned_per_channel": one per channel of [H, W, C] images;
      "learned_per_dim": one per observed dimension; "optimal" (continuous
      Gaussian only): σ_dec² = MSE of the batch for each sample, the
      calibrated decoder of Rybkin et al. (2021).
    sigma_dec: the initial value of params["log_sigma_dec"] = log σ_dec;
      with mode "fixed" it stays there (no gradient flows to it). In units
      of x (for images, of [0, 1] intensity).
    num_levels: discretized likelihoods: intensity levels of the data.
    num_mixtures: discretized_logistic_mixture: components per pixel.
  """

  encoder: nn.Module
  decoder: nn.Module
  event_shape: Sequence[int]
  latent_dim: int
  likelihood: str = "bernoulli"
  sigma_dec_mode: str = "fixed"
  sigma_dec: float = 1.0
  num_levels: int = 256
  num_mixtures: int = 5

  def __post_init__(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f"likelihood {self.likelihood!r} is not one of "
                       f"{LIKELIHOODS}")
    if self.likelihood == "discretized_gaussian" and (
        self.sigma_dec_mode == "optimal"):
      raise ValueError("sigma_dec_mode='optimal' has a closed form for the "
                       "continuous Gaussian only")
    if self.sigma_dec_mode == "learned_per_channel" and self.event_ndims != 3:
      raise ValueError(f"sigma_dec_mode='learned_per_channel' needs [H, W, C] "
                       f"data, got event_shape={tuple(self.event_shape)}")

  @property
  def event_ndims(self):
    return len(self.event_shape)

  @property
  def _pixel_shape_and_channels(self):
    """Mixture layout: [H, W] and C for images, [D] and 1 for vectors."""
    if self.event_ndims == 3:
      return tuple(self.event_shape[:-1]), self.event_shape[-1]
    return tuple(self.event_shape), 1

  @property
  def decoder_shape(self):
    """Shape of the decoder's output per example: event_shape, or for the
    logistic mixture [*pixels, P] with P parameters per pixel."""
    if self.likelihood != "discretized_logistic_mixture":
      return tuple(self.event_shape)
    pixels, channels = self._pixel_shape_and_channels
    return pixels + (likelihoods.logistic_mixture_num_params(
        channels, self.num_mixtures),)

  @property
  def _has_sigma(self):
    return uses_sigma_dec(self.likelihood, self.sigma_dec_mode)

  def _sigma_shape(self):
    if self.sigma_dec_mode == "learned_per_dim":
      return tuple(self.event_shape)
    if self.sigma_dec_mode == "learned_per_channel":
      return (self.event_shape[-1],)
    return ()

  def init(self, key):
    """Returns the parameter pytree."""
    k_enc, k_dec = jax.random.split(key)
    x = jnp.zeros((1,) + tuple(self.event_shape))
    z = jnp.zeros((1, self.latent_dim))
    params = {"encoder": self.encoder.init(k_enc, x),
              "decoder": self.decoder.init(k_dec, z)}
    out_shape = jax.eval_shape(self.decoder.apply, params["decoder"], z).shape
    if tuple(out_shape[1:]) != self.decoder_shape:
      raise ValueError(f"the decoder gives {tuple(out_shape[1:])} per example; "
                       f"likelihood {self.likelihood!r} needs "
                       f"{self.decoder_shape} (build it with build_vae)")
    if self._has_sigma:
      # A fixed σ_dec lives in the pytree too (its gradient is stopped), so
      # a vmapped sweep can give every grid point its own value.
      params["log_sigma_dec"] = jnp.full(self._sigma_shape(),
                                         jnp.log(self.sigma_dec), jnp.float32)
    return params

  def posterior(self, params, x):
    """q_φ(z|x) for x [B, *event]: DiagGaussian [B, L]."""
    return objectives.encode(self.encoder.apply, params["encoder"], x)

  def decode(self, params, z):
    """Decoder output [B, *decoder_shape], float32 whatever the compute
    dtype: logits (Bernoulli), mean (Gaussians) or mixture parameters."""
    return self.decoder.apply(params["decoder"], z).astype(jnp.float32)

  def decoder_mean(self, params, z):
    """E[x|z] [B, *event] for images and plots: Bernoulli probabilities
    (never raw logits); for the discretized likelihoods, the mean of the
    continuous distribution clipped to [0, 1] (the edge bins' clipping is
    ignored)."""
    out = self.decode(params, z)
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(out)
    if self.likelihood == "discretized_gaussian":
      return jnp.clip(out, 0.0, 1.0)
    if self.likelihood == "discretized_logistic_mixture":
      _, channels = self._pixel_shape_and_channels
      mean = likelihoods.discretized_logistic_mixture_mean(out, channels)
      return mean.reshape(out.shape[:1] + tuple(self.event_shape))
    return out

  def sample_observations(self, params, key, z):
    """x ~ p_θ(x|z) for z [N, L]: [N, *event].

    Bernoulli: binary values with the decoder's probabilities. Gaussian:
    mean + σ_dec ⊙ ε. Discretized likelihoods: levels k / (num_levels − 1),
    drawn from the mass itself (`likelihoods.sample_discretized_*`).

    Raises:
      ValueError: a Gaussian with sigma_dec_mode 'optimal', which has no
        σ_dec of its own (`applications.common.load_trained` fixes one).
    """
    out = self.decode(params, z)
    if self.likelihood == "bernoulli":
      return jax.random.bernoulli(key, jax.nn.sigmoid(out)).astype(out.dtype)
    if self.likelihood == "discretized_logistic_mixture":
      _, channels = self._pixel_shape_and_channels
      x = likelihoods.sample_discretized_logistic_mixture(
          key, out, channels, self.num_levels)
      return x.reshape(out.shape[:1] + tuple(self.event_shape))
    log_sigma = self.log_sigma_dec(params)
    if log_sigma is None:
      raise ValueError("sigma_dec_mode 'optimal' has no σ_dec of its own")
    if self.likelihood == "discretized_gaussian":
      return likelihoods.sample_discretized_gaussian(key, out, log_sigma,
                                                     self.num_levels)
    return out + jnp.exp(log_sigma) * jax.random.normal(key, out.shape,
                                                        out.dtype)

  def log_sigma_dec(self, params):
    """log σ_dec: [], [C] or [*event]; None without a σ_dec parameter."""
    if not self._has_sigma:
      return None
    if self.sigma_dec_mode == "fixed":
      return jax.lax.stop_gradient(params["log_sigma_dec"])
    return params["log_sigma_dec"]

  def log_likelihood_fn(self, params, x, mask=None, sigma_sq=None):
    """The closure z [B, L] -> log p_θ(x|z) [B] in nats, constants included.

    Args:
      mask: optional [B], 1 for real rows and 0 for padding; only the
        "optimal" σ_dec uses it, so padded rows do not enter the batch MSE.
      sigma_sq: "optimal" σ_dec only: a fixed σ² [] for scoring (the
        training split's MSE, see `evaluate`), so that an example's score
        depends on nothing else in its batch. None: the batch MSE of each
        sample, the training objective of Rybkin et al. (2021).
    """

    def log_likelihood(z):
      out = self.decode(params, z)
      if self.likelihood == "bernoulli":
        return likelihoods.bernoulli_log_likelihood(x, out, self.event_ndims)
      if self.likelihood == "discretized_gaussian":
        return likelihoods.discretized_gaussian_log_likelihood(
            x, out, self.log_sigma_dec(params), self.event_ndims,
            self.num_levels)
      if self.likelihood == "discretized_logistic_mixture":
        # Vectors are D one-channel pixels: x [B, D, 1].
        xc = x if self.event_ndims == 3 else x[..., None]
        return likelihoods.discretized_logistic_mixture_log_likelihood(
            xc, out, xc.ndim - 1, self.num_levels)
      if self.sigma_dec_mode == "optimal" and sigma_sq is not None:
        return likelihoods.calibrated_gaussian_log_likelihood(
            x, out, self.event_ndims, sigma_sq=sigma_sq)
      if self.sigma_dec_mode == "optimal":
        # One σ² for the batch (Rybkin et al.): the MSE over examples and dims.
        sq = jnp.square(x - out).reshape(x.shape[0], -1)
        if mask is None:
          mse = jnp.mean(sq)
        else:
          mse = jnp.sum(sq * mask[:, None]) / (jnp.sum(mask) * sq.shape[1])
        return likelihoods.calibrated_gaussian_log_likelihood(
            x, out, self.event_ndims, sigma_sq=jnp.maximum(mse, 1e-6))
      return likelihoods.gaussian_log_likelihood(
          x, out, self.log_sigma_dec(params), self.event_ndims)

    return log_likelihood

  def elbo(self, params, key, x, num_samples=1, analytic_kl=True, mask=None,
           sigma_sq=None):
    """ElboTerms [B] in nats (see `vae_jax.elbo`); mask and sigma_sq as
    log_likelihood_fn."""
    return objectives.elbo(key, self.posterior(params, x),
                           self.log_likelihood_fn(params, x, mask, sigma_sq),
                           num_samples, analytic_kl)

  def iwae(self, params, key, x, num_samples, chunk_size=None, mask=None,
           sigma_sq=None):
    """L_K [B] in nats, chunked when chunk_size is given."""
    posterior = self.posterior(params, x)
    fn = self.log_likelihood_fn(params, x, mask, sigma_sq)
    if chunk_size is None or chunk_size >= num_samples:
      return objectives.iwae_bound(key, posterior, fn, num_samples)
    return objectives.iwae_bound_chunked(key, posterior, fn, num_samples,
                                         chunk_size)

  def sample_prior(self, params, key, num, temperature=1.0):
    """Decoder means at z ~ N(0, temperature² I): [num, *event]."""
    z = temperature * jax.random.normal(key, (num, self.latent_dim))
    return self.decoder_mean(params, z)

  def squared_error(self, params, key, x):
    """Σ_d (x_d − E[x_d|z])² per example at z ~ q(z|x): [B]."""
    z = objectives.reparam(key, self.posterior(params, x))
    err = jnp.square(x - self.decoder_mean(params, z))
    return jnp.sum(err.reshape((err.shape[0], -1)), axis=1)

  def reconstruct(self, params, x):
    """Decoder means at the posterior means: [B, *event]."""
    return self.decoder_mean(params, self.posterior(params, x).mean)



def build_vae(config, event_shape):
  """The VAE a runner config describes, for data of `event_shape`.

  Reads architecture, latent_dim, hidden, channels, activation, likelihood,
  sigma_dec_mode, sigma_dec, num_levels, num_mixtures and compute_dtype
  (fields of vae_jax/config_base.py); the decoder is built to give what the
  likelihood needs per example.
  """
  shape_only = VAE(None, None, tuple(event_shape), config.latent_dim,
                   config.likelihood, config.sigma_dec_mode,
                   float(config.sigma_dec), int(config.num_levels),
                   int(config.num_mixtures))
  encoder, decoder = networks.make_networks(
      config.architecture, config.latent_dim, tuple(event_shape),
      hidden=tuple(config.hidden), channels=tuple(config.channels),
      activation=config.activation, decoder_shape=shape_only.decoder_shape,
      compute_dtype=config.compute_dtype)
  return dataclasses.replace(shape_only, encoder=encoder, decoder=decoder)
