"""encode, reparam, elbo and the importance-weighted bound (paper §4–6).

Conventions:
  * A posterior q(z|x) is a `DiagGaussian(mean, log_var)` with fields [B, L].
  * A decoder enters as `log_likelihood(z) -> [B]`: log p_θ(x|z) in nats for
    the batch x it closes over, z: [B, L]. Any network fits, including the
    linear decoder of §3; `elbo` vmaps it over the sample axis.
  * Samples carry a leading axis M: z is [M, B, L].
  * Everything returns per-example values; reduce at the call site.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax.core.distributions import (DiagGaussian,
                                        diag_gaussian_log_prob_standardized,
                                        kl_diag_to_std_normal,
                                        std_normal_log_prob)

LogLikelihoodFn = Callable[[jax.Array], jax.Array]


class ElboTerms(NamedTuple):
  """Per-example ELBO = reconstruction − kl, each [B], in nats."""

  elbo: jax.Array
  reconstruction: jax.Array  # E_q[log p_θ(x|z)]
  kl: jax.Array  # KL(q_φ(z|x) ‖ p(z)), analytic or its Monte Carlo estimate


def encode(encoder_apply, params, x):
  """Runs an encoder network and returns q_φ(z|x) (§6.1).

  Args:
    encoder_apply: `(params, x) -> (mean, log_var)`, or `-> h` with
      h: [B, 2L] holding mean and log-variance side by side.
    params: the encoder's parameter pytree.
    x: [B, ...] a batch of inputs.

  Returns:
    DiagGaussian with mean, log_var: [B, L]. The log-variance
    parameterization keeps σ² > 0 without constraints.
  """
  out = encoder_apply(params, x)
  if isinstance(out, (tuple, list)):
    mean, log_var = out
  else:
    mean, log_var = jnp.split(out, 2, axis=-1)
  return DiagGaussian(mean, log_var)


def sample_noise(key, indices, shape, dtype=jnp.float32):
  """ε_m ~ N(0, I) of `shape` for each sample index m, drawn from fold_in(key, m).

  Sample m's noise depends on m alone, not on how many samples are drawn
  with it or in which chunk, so a bound evaluated in chunks sees exactly the
  samples of the unchunked one. (This holds for JAX's default threefry
  keys; the vmapped draws of "rbg" keys depend on the batch of keys.)

  Args:
    key: PRNG key.
    indices: int [n] sample indices.
    shape: shape of one sample's noise, e.g. [B, L].

  Returns:
    [n, *shape].
  """
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, indices)
  return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def reparam(key, posterior, num_samples=None, first_sample=0):
  """z = μ + σ ⊙ ε, ε ~ N(0, I) (eq 11): differentiable in μ and log σ².

  Args:
    key: PRNG key.
    posterior: DiagGaussian with fields [B, L] (any shape works).
    num_samples: M. None draws one sample without a sample axis.
    first_sample: index of the first of the M samples: samples
      first_sample, ..., first_sample + M − 1 of the stream `key` defines
      (sample m from fold_in(key, m), see `sample_noise`).

  Returns:
    z: [M, B, L], or [B, L] when num_samples is None.
  """
  return reparam_with_noise(key, posterior, num_samples, first_sample)[0]


def reparam_with_noise(key, posterior, num_samples=None, first_sample=0):
  """`reparam`'s z and the noise ε it was drawn from, same shapes.

  ε is (z − μ)/σ exactly; densities of q at z are best computed from it
  (`diag_gaussian_log_prob_standardized`), not from z − μ.
  """
  mean, log_var = posterior
  if num_samples is None:
    eps = jax.random.normal(key, mean.shape, mean.dtype)
  else:
    eps = sample_noise(key, first_sample + jnp.arange(num_samples),
                       mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps, eps


class SampleTerms(NamedTuple):
  """Per-sample terms of log w = log p(x|z) + log p(z) − log q(z|x), [M, B]."""

  z: jax.Array  # [M, B, L]
  log_likelihood: jax.Array
  log_prior: jax.Array
  log_posterior: jax.Array

  @property
  def log_weights(self):
    return self.log_likelihood + self.log_prior - self.log_posterior


def sample_terms(key, posterior, log_likelihood, num_samples, chunk_size=None,
                 first_sample=0):
  """Draws M reparameterized samples and evaluates every density on them.

  `elbo` and `iwae_bound` both build on this, so the same key gives both
  bounds on the same samples, chunked or not.

  Args:
    chunk_size: samples per decoder call. None decodes all M at once (one
      vmapped call, memory M × B × D); otherwise `lax.map` decodes
      chunk_size samples at a time, the same samples and values with memory
      chunk_size × B × D.
    first_sample: see `reparam`.
  """
  z, eps = reparam_with_noise(key, posterior, num_samples, first_sample)
  if num_samples == 1:
    # The same value, without vmap: vmapped over a size-1 axis, XLA:CPU
    # copied the decoder's output gradient transposed for the
    # weight-gradient products (loss and gradient took 1.07-1.09x as long).
    log_lik = log_likelihood(z[0])[None]
  elif chunk_size is None or chunk_size >= num_samples:
    log_lik = jax.vmap(log_likelihood)(z)
  else:
    log_lik = jax.lax.map(log_likelihood, z, batch_size=chunk_size)
  return SampleTerms(
      z=z,
      log_likelihood=log_lik,
      log_prior=std_normal_log_prob(z),
      # From ε, not z − μ: exact when σ ≪ |μ|; the same value and, since
      # (z − μ)/σ = ε identically, the same total derivative.
      log_posterior=diag_gaussian_log_prob_standardized(eps,
                                                        posterior.log_var),
  )


# Samples per decoder call of `elbo`: at M = 64 (MNIST MLP, batch 100, CPU)
# decoding all M at once took 0.646× t_enc + M·t_dec, chunks of 8 0.567×
# (experiments/bench_iwae.py, README; an earlier run: 0.648×, 0.605×): the
# chunk's activations stay in cache, and memory is that of 8 samples.
ELBO_CHUNK_SIZE = 8


def elbo(key, posterior, log_likelihood, num_samples=1, analytic_kl=True,
         chunk_size=ELBO_CHUNK_SIZE):
  """M-sample Monte Carlo ELBO per example (eq 1, eq 3, §5.5).

  analytic_kl=True:  E_q[log p(x|z)] by Monte Carlo − KL(q ‖ p(z)) in closed
                     form (Thm 1.2, eq 3; §6.4 per dimension).
  analytic_kl=False: the pure Monte Carlo form of eq 1,
                     mean_m [log p(x|z_m) + log p(z_m) − log q(z_m|x)].

  Args:
    key: PRNG key.
    posterior: q_φ(z|x), DiagGaussian [B, L].
    log_likelihood: `z [B, L] -> [B]`, log p_θ(x|z) in nats.
    num_samples: M.
    analytic_kl: which form, above.
    chunk_size: decode this many samples at a time (see `sample_terms`):
      the same samples and value, less memory; None decodes all M together.

  Returns:
    ElboTerms of [B] arrays in nats.
  """
  terms = sample_terms(key, posterior, log_likelihood, num_samples,
                       chunk_size)
  reconstruction = jnp.mean(terms.log_likelihood, axis=0)
  if analytic_kl:
    kl = kl_diag_to_std_normal(posterior.mean, posterior.log_var)
  else:
    kl = jnp.mean(terms.log_posterior - terms.log_prior, axis=0)
  return ElboTerms(reconstruction - kl, reconstruction, kl)


def log_mean_exp(log_values, axis=0):
  """log (1/K Σ_k exp(v_k)) without overflow."""
  k = log_values.shape[axis]
  return jax.nn.logsumexp(log_values, axis=axis) - jnp.log(k)


def iwae_bound(key, posterior, log_likelihood, num_samples):
  """Importance-weighted bound L_K (Burda et al. 2015), K = num_samples.

  L_K = log (1/K) Σ_k p(x, z_k) / q(z_k|x), z_k ~ q. L_1 is the ELBO;
  L_K rises with K towards log p(x).

  Returns:
    [B] nats.
  """
  terms = sample_terms(key, posterior, log_likelihood, num_samples)
  return log_mean_exp(terms.log_weights, axis=0)


def iwae_bound_chunked(key, posterior, log_likelihood, num_samples,
                       chunk_size):
  """`iwae_bound` evaluated `chunk_size` samples at a time, memory O(chunk_size).

  Chunk i draws samples i·c, ..., i·c + c − 1 of the stream `key` defines
  (sample k from fold_in(key, k)), the very samples `iwae_bound(key, ...)`
  draws, and a running logsumexp (lax.scan) combines the chunks. So the
  value equals `iwae_bound(key, posterior, log_likelihood, num_samples)` up
  to float rounding (the logsumexp is summed in another order), whatever
  chunk_size is. A last partial chunk takes the remainder when chunk_size
  does not divide K.

  Args:
    num_samples: K.
    chunk_size: samples per chunk, 1 <= chunk_size.

  Returns:
    [B] nats.
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  chunk_size = min(chunk_size, num_samples)
  num_full, rest = divmod(num_samples, chunk_size)

  def chunk_logsumexp(first, size):
    terms = sample_terms(key, posterior, log_likelihood, size,
                         first_sample=first)
    return jax.nn.logsumexp(terms.log_weights, axis=0)

  def step(running, i):
    return jnp.logaddexp(running, chunk_logsumexp(i * chunk_size,
                                                  chunk_size)), None

  # Every full chunk runs inside the scan, from a carry of −inf
  # (logaddexp(−inf, a) = a exactly). Seeding the carry with chunk 0 instead
  # left a one-step scan at K = 2c, which XLA inlines: the two same-shape
  # chunks then ran side by side and temporary memory grew 16× (252 MB
  # against 15.4 MB for K = 400, 600 at c = 200; XLA:CPU,
  # experiments/bench_iwae.py). The carry is computed from the posterior
  # mean, not a constant, so under shard_map it varies over the mesh axes
  # like the log-weights (a constant fails scan's carry type check there);
  # its dtype is theirs.
  dtype = jax.eval_shape(lambda: chunk_logsumexp(0, chunk_size)).dtype
  minus_inf = posterior.mean[..., 0].astype(dtype) * 0 - jnp.inf
  total, _ = jax.lax.scan(step, minus_inf, jnp.arange(num_full))
  if rest:
    total = jnp.logaddexp(total, chunk_logsumexp(num_full * chunk_size, rest))
  return total - jnp.log(num_samples)
