"""Flax Linen encoder and decoder networks.

An encoder maps x [B, *event] to (mean, log_var) [B, L]; a decoder maps
z [B, L] to the likelihood's parameters [B, *event] (Bernoulli logits or the
Gaussian mean). Both are plain Linen modules, so `module.apply(params, ...)`
is a pure function of a parameter pytree: what `vae_jax.encode`, vmapped
sweeps and per-replicate gradients need.

Mixed precision: `dtype` is the compute dtype of the hidden layers (e.g.
jnp.bfloat16); parameters are always float32 (Flax's `param_dtype`), so
gradients and the optimizer state are float32 too. The output heads (the
encoder's mean and log-variance, the decoder's last layer) compute in
float32 and every module returns float32: a bfloat16 output would carry only
8 significant bits, a spacing of 2⁻⁸ ≈ 1/256 near 1 — as coarse as the 8-bit
levels the discretized likelihoods resolve, and as coarse as the posterior's
log-variance needs to be fine.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu,
               "elu": nn.elu, "softplus": nn.softplus}


class MLPEncoder(nn.Module):
  """x [B, *event] -> flatten -> hidden layers -> (mean, log_var) [B, L]."""

  latent_dim: int
  hidden: Sequence[int] = (200, 200)
  activation: str = "tanh"
  dtype: Any = jnp.float32  # compute dtype of the hidden layers

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = ACTIVATIONS[self.activation](nn.Dense(width, dtype=self.dtype)(h))
    return _gaussian_heads(h, self.latent_dim)


class MLPDecoder(nn.Module):
  """z [B, L] -> hidden layers -> [B, *event_shape] likelihood parameters."""

  event_shape: Sequence[int]
  hidden: Sequence[int] = (200, 200)
  activation: str = "tanh"
  dtype: Any = jnp.float32  # compute dtype of the hidden layers

  @nn.compact
  def __call__(self, z):
    h = z
    for width in self.hidden:
      h = ACTIVATIONS[self.activation](nn.Dense(width, dtype=self.dtype)(h))
    size = 1
    for n in self.event_shape:
      size *= n
    out = nn.Dense(size, dtype=jnp.float32, name="out")(h)
    return out.reshape(z.shape[:-1] + tuple(self.event_shape))


class ConvEncoder(nn.Module):
  """Stride-2 conv stack (each halves H and W) -> dense -> (mean, log_var).

  x: [B, H, W, C] with H, W divisible by 2**len(channels).
  """

  latent_dim: int
  channels: Sequence[int] = (32, 64, 128, 256)
  activation: str = "gelu"
  dtype: Any = jnp.float32  # compute dtype of the conv layers

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    h = x
    for ch in self.channels:
      h = act(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME",
                      dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], -1)
    return _gaussian_heads(h, self.latent_dim)


class ConvDecoder(nn.Module):
  """z [B, L] -> dense to a small feature map -> stride-2 transposed convs.

  Mirrors ConvEncoder: the output is [B, H, W, C] = event_shape.
  """

  event_shape: Sequence[int]
  channels: Sequence[int] = (256, 128, 64, 32)
  activation: str = "gelu"
  dtype: Any = jnp.float32  # compute dtype of all but the last layer

  @nn.compact
  def __call__(self, z):
    act = ACTIVATIONS[self.activation]
    height, width, out_channels = self.event_shape
    scale = 2 ** len(self.channels)
    h0, w0 = height // scale, width // scale
    h = act(nn.Dense(h0 * w0 * self.channels[0], dtype=self.dtype)(z))
    h = h.reshape(z.shape[0], h0, w0, self.channels[0])
    for ch in self.channels[1:]:
      h = act(nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME",
                               dtype=self.dtype)(h))
    return nn.ConvTranspose(out_channels, (4, 4), strides=(2, 2),
                            padding="SAME", dtype=jnp.float32)(h)


def _gaussian_heads(h, latent_dim):
  """(mean, log_var) [B, L], computed and returned in float32."""
  mean = nn.Dense(latent_dim, dtype=jnp.float32, name="mean")(h)
  log_var = nn.Dense(latent_dim, dtype=jnp.float32, name="log_var")(h)
  return mean, log_var


def _near_one(key, shape):
  """Slopes start near the identity map, so early gradients are informative."""
  return 1.0 + 0.1 * jax.random.normal(key, shape)


class LinearEncoder(nn.Module):
  """§3 encoder q(z|x) = N(a ⊙ x + b, diag t²); a, b, log t are [d] vectors."""

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    a = self.param("a", _near_one, (d,))
    b = self.param("b", nn.initializers.zeros, (d,))
    log_t = self.param("log_t", nn.initializers.zeros, (d,))
    mean = a * x + b
    return mean, jnp.broadcast_to(2.0 * log_t, mean.shape)


class LinearDecoder(nn.Module):
  """§3 decoder mean c ⊙ z + v; its noise s is the likelihood's σ_dec."""

  @nn.compact
  def __call__(self, z):
    d = z.shape[-1]
    c = self.param("c", _near_one, (d,))
    v = self.param("v", nn.initializers.zeros, (d,))
    return c * z + v


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_networks(architecture, latent_dim, event_shape, hidden=(200, 200),
                  channels=(32, 64, 128, 256), activation="tanh",
                  decoder_shape=None, compute_dtype="float32"):
  """Builds (encoder, decoder) modules.

  Args:
    architecture: "mlp", "conv", or "linear" (§3; needs latent_dim = D).
    latent_dim: L.
    event_shape: shape of one observation, e.g. (784,) or (64, 64, 3).
    hidden: MLP widths (the decoder uses them reversed).
    channels: conv channels of the encoder (the decoder uses them reversed).
    activation: a key of ACTIVATIONS.
    decoder_shape: shape of the decoder's output per example when it is not
      event_shape, e.g. (64, 64, P) for P mixture parameters per pixel.
    compute_dtype: a key of COMPUTE_DTYPES, the dtype of the hidden layers'
      computation (parameters and outputs stay float32). The §3 linear
      model has no hidden layers and ignores it.

  Returns:
    (encoder, decoder) Linen modules.
  """
  decoder_shape = tuple(event_shape if decoder_shape is None else decoder_shape)
  dtype = COMPUTE_DTYPES[compute_dtype]
  if architecture == "mlp":
    return (MLPEncoder(latent_dim, tuple(hidden), activation, dtype),
            MLPDecoder(decoder_shape, tuple(reversed(hidden)), activation,
                       dtype))
  if architecture == "conv":
    if len(event_shape) != 3:
      raise ValueError(f"conv architecture needs [H, W, C] data, got "
                       f"event_shape={tuple(event_shape)}")
    return (ConvEncoder(latent_dim, tuple(channels), activation, dtype),
            ConvDecoder(decoder_shape, tuple(reversed(channels)),
                        activation, dtype))
  if architecture == "linear":
    return LinearEncoder(), LinearDecoder()
  raise ValueError(f"unknown architecture {architecture!r}: use 'mlp', 'conv' or 'linear'")
