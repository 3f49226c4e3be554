"""Gradient estimators of the ELBO and of the importance-weighted bound (§5).

Every estimator is a pure function

    estimator(params, key, x, *, model, num_samples) -> grads

returning one stochastic estimate of the gradient of the batch-mean bound,
(1/B) Σ_i ELBO(x_i) (or L_K), in nats per example, as a pytree shaped like
`params`. It is the ascent direction: add it to the parameters to improve the
bound. `params` is a dict whose "encoder" entry holds the variational
parameters φ; every other entry ("decoder", "log_sigma_dec", ...) is a
generative parameter θ.

`model` is anything with two methods (`vae_jax.vae.VAE` has them, and
`LinearGaussianModel` below adapts the §3 model):

    model.posterior(params, x)          -> DiagGaussian q_φ(z|x), fields [B, L]
    model.log_likelihood_fn(params, x)  -> (z [B, L] -> log p_θ(x|z) [B])

Notation: f(z) = log p_θ(x, z) − log q_φ(z|x) = log p_θ(x|z) + log p(z) −
log q_φ(z|x) is the "learning signal"; ELBO = E_q[f]; L_K =
E[log (1/K) Σ_k exp f(z_k)].

| name                | bound | φ-gradient                                    |
|---------------------|-------|-----------------------------------------------|
| reparam_analytic_kl | ELBO  | pathwise, z = μ + σ ε; KL in closed form       |
| reparam_mc_kl       | ELBO  | pathwise; the KL by Monte Carlo (eq 1 form)    |
| score_function      | ELBO  | REINFORCE: (f − 1) ∇φ log q (eq 8–9 completed) |
| score_function_loo  | ELBO  | REINFORCE, leave-one-out baseline, M ≥ 2       |
| stl                 | ELBO  | sticking the landing (Roeder et al. 2017)      |
| iwae_reparam        | L_K   | pathwise gradient of L_K (Burda et al. 2015)   |
| iwae_stl            | L_K   | STL applied to L_K: biased for K > 1           |
| iwae_dreg           | L_K   | doubly reparameterized (Tucker et al. 2019)    |

The θ-gradient is E_q[∇θ log p_θ(x, z)] (eq 6–7) for every ELBO estimator
(z does not depend on θ), and Σ_k w̃_k ∇θ log p_θ(x, z_k) for every L_K one.

Replicates: `replicate_gradients` stacks R estimates; `replicate_moments`
keeps only their running mean and sum of squared deviations, so R = 10⁴
replicates of a large network fit in memory. Both `vmap` over PRNG keys
inside chunks of `chunk_size` and scan over the chunks (`lax.map` /
`lax.scan`): under `jax.jit`, R replicates are one compiled program, never a
Python loop. On CPU, chunks of 10 (the default of `replicate_moments`) are
the fastest form for an MNIST-sized VAE, 1.1–1.2× the scan over single
replicates (chunk_size = 1); chunks of 100 are no faster than the scan; see
experiments/bench_replicates.py for the figures and what bounds them.
"""

import dataclasses
import functools
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from vae_jax.core import linear_gaussian

from vae_jax.core import objectives
from vae_jax.core.distributions import (DiagGaussian,
                                        diag_gaussian_log_prob_standardized,
                                        std_normal_log_prob)
from vae_jax.core.gradient_stats import (combine_tree_moments, concat_tree_moments,
                                   empty_tree_moments,
                                   tree_moments_from_samples)

ENCODER_KEY = "encoder"
Params = Any
Estimator = Callable[..., Params]


class Model(Protocol):
  """What an estimator needs to know about a latent-variable model."""

  def posterior(self, params, x) -> DiagGaussian:
    ...

  def log_likelihood_fn(self, params, x) -> Callable[[jax.Array], jax.Array]:
    ...


@dataclasses.dataclass(frozen=True)
class LinearGaussianModel:
  """The §3 linear-Gaussian model behind the `Model` interface.

  params = {"encoder": {"a", "b", "log_t"}, "decoder": {"c", "v", "log_s"}},
  leaves of shape [d] (or scalars), as `linear_gaussian.init_params` and
  `linear_gaussian.optimal_params` return them. x: [B, d].
  """

  def posterior(self, params, x):
    return DiagGaussian(*linear_gaussian.encoder_apply(params["encoder"], x))

  def log_likelihood_fn(self, params, x):
    return functools.partial(linear_gaussian.log_likelihood, params["decoder"],
                             x)

  def exact_elbo(self, params, x):
    """Closed-form ELBO per example [B], nats."""
    return linear_gaussian.exact_elbo(params["encoder"], params["decoder"], x)


def linear_gaussian_params(enc, dec):
  """Packs `linear_gaussian` (encoder, decoder) dicts into one params pytree."""
  return {ENCODER_KEY: enc, "decoder": dec}


def exact_gradient(params, x, model=LinearGaussianModel()):
  """The exact gradient of the batch-mean ELBO on the §3 model.

  `jax.grad` of the closed-form ELBO: no sampling, so it is the ground truth
  that every unbiased ELBO estimator must match in expectation.

  Args:
    params: linear-Gaussian params pytree.
    x: [B, d].

  Returns:
    Pytree like params, nats per example.
  """
  return jax.grad(lambda p: jnp.mean(model.exact_elbo(p, x)))(params)


# --------------------------------------------------------------------------
# Parameter bookkeeping: φ is params["encoder"], θ is everything else.


def split_params(tree):
  """(φ part, θ part) of a params-shaped pytree: (tree["encoder"], rest)."""
  return tree[ENCODER_KEY], {k: v for k, v in tree.items() if k != ENCODER_KEY}


def flatten_split(tree):
  """Flattens a params-shaped pytree to (φ vector [P_φ], θ vector [P_θ])."""
  phi, theta = split_params(tree)
  return ravel_pytree(phi)[0], ravel_pytree(theta)[0]


def _merge(phi_from, theta_from):
  """φ entries of `phi_from` with the θ entries of `theta_from`."""
  return {k: (phi_from[k] if k == ENCODER_KEY else theta_from[k])
          for k in theta_from}


def _log_weights(params, key, x, model, num_samples, freeze_q=False):
  """Per-sample f(z_m) = log p(x|z) + log p(z) − log q(z|x), [M, B].

  z = μ + σ ε is reparameterized, so gradients flow through it. log q is
  computed from the standardized point u = (z − μ)/σ, whose value is ε
  exactly (z − μ in float32 rounds away σ ε when σ ≪ |μ|).

  Args:
    freeze_q: evaluate log q with stop-gradded (μ, log σ²), which drops the
      score term ∂ log q/∂φ at fixed z and keeps only the path through z:
      u = ε + (z − z̄)/σ̄ (bars: stop-gradient), so ∂u/∂z = 1/σ and
      ∂ log q/∂z = −ε/σ, exactly.
  """
  posterior = model.posterior(params, x)
  z, eps = objectives.reparam_with_noise(key, posterior, num_samples)
  log_var = posterior.log_var
  if freeze_q:
    log_var = jax.lax.stop_gradient(log_var)
    u = eps + (z - jax.lax.stop_gradient(z)) * jnp.exp(-0.5 * log_var)
  else:
    u = eps  # (z − μ)/σ = ε identically: the same total derivative.
  log_lik = jax.vmap(model.log_likelihood_fn(params, x))(z)
  return log_lik + std_normal_log_prob(z) - (
      diag_gaussian_log_prob_standardized(u, log_var))


# --------------------------------------------------------------------------
# ELBO estimators (M samples per example, averaged).


def reparam_analytic_kl(params, key, x, *, model, num_samples):
  """Pathwise gradient of E_q[log p(x|z)] − KL(q‖p(z)), KL in closed form.

  The form of eq 3 with z = μ + σ ⊙ ε (eq 11, §5.4): only the reconstruction
  term is sampled, so the KL contributes no variance.
  """
  def objective(p):
    terms = objectives.elbo(key, model.posterior(p, x),
                            model.log_likelihood_fn(p, x), num_samples,
                            analytic_kl=True)
    return jnp.mean(terms.elbo)

  return jax.grad(objective)(params)


def reparam_mc_kl(params, key, x, *, model, num_samples):
  """Pathwise gradient of the pure Monte Carlo ELBO, mean_m f(z_m) (eq 1)."""
  def objective(p):
    return jnp.mean(_log_weights(p, key, x, model, num_samples))

  return jax.grad(objective)(params)


def _score_function(params, key, x, model, num_samples, leave_one_out):
  """Shared body of the two REINFORCE estimators (see `score_function`)."""
  if leave_one_out and num_samples < 2:
    raise ValueError("the leave-one-out baseline needs num_samples >= 2, got "
                     f"{num_samples}")

  def surrogate(p):
    posterior = model.posterior(p, x)
    # z drawn, then held fixed: nothing flows through the sampling path.
    z, eps = jax.lax.stop_gradient(
        objectives.reparam_with_noise(key, posterior, num_samples))
    # log q(z) at this fixed z as a function of φ, through u = (z − μ)/σ with
    # z − μ written as σ̄ ε − (μ − μ̄) (bars: stop-gradient), the same
    # function of μ and σ since z = μ̄ + σ̄ ε; its value is ε and its
    # derivatives are exact, where z − μ in float32 loses σ ε when σ ≪ |μ|.
    mean, log_var = posterior
    sigma_eps = jax.lax.stop_gradient(jnp.exp(0.5 * log_var)) * eps
    u = (sigma_eps - (mean - jax.lax.stop_gradient(mean))) * jnp.exp(
        -0.5 * log_var)
    log_q = diag_gaussian_log_prob_standardized(u, log_var)
    log_lik = jax.vmap(model.log_likelihood_fn(p, x))(z)
    f = log_lik + std_normal_log_prob(z) - log_q  # [M, B]
    signal = f
    if leave_one_out:
      # b_m = mean of the other M − 1 signals: independent of z_m, so
      # E[b_m ∇ log q(z_m)] = E[b_m] E[∇ log q] = 0 and the estimator stays
      # unbiased.
      signal = f - (jnp.sum(f, axis=0, keepdims=True) - f) / (num_samples - 1)
    # ∇φ: −∇φ log q (eq 9) + signal ∇φ log q (the score term);
    # ∇θ: ∇θ log p_θ(x, z) (eq 6–7), since log q and z do not depend on θ.
    return jnp.mean(f + jax.lax.stop_gradient(signal) * log_q)

  return jax.grad(surrogate)(params)


def score_function(params, key, x, *, model, num_samples):
  """Score-function (REINFORCE) gradient, eq 8–9 completed.

  With z_m ~ q_φ held fixed, ∇φ E_q[f_φ(z)] = E_q[f ∇φ log q] + E_q[∇φ f], and
  ∇φ f = −∇φ log q_φ(z|x). Eq 8–9 keep only the second term, whose expectation
  is zero (the score has mean zero), so alone it is a biased estimator of the
  zero vector; the first term carries the whole gradient. Together:

    ĝ_φ = (1/M) Σ_m (f(z_m) − 1) ∇φ log q_φ(z_m|x),
    ĝ_θ = (1/M) Σ_m ∇θ log p_θ(x, z_m)                          (eq 7).

  Unbiased for any M ≥ 1; no baseline, so its variance grows with |f|.
  """
  return _score_function(params, key, x, model, num_samples, False)


def score_function_loo(params, key, x, *, model, num_samples):
  """REINFORCE with a leave-one-out baseline (control variate), M ≥ 2.

    ĝ_φ = (1/M) Σ_m (f_m − b_m − 1) ∇φ log q(z_m|x),
    b_m = (1/(M−1)) Σ_{j≠m} f_j,

  the "REINFORCE leave-one-out" baseline of Kool et al. (2019), also the
  VIMCO idea applied to the ELBO. Each b_m uses only the other samples, so it
  is independent of z_m and the estimator stays unbiased, while f_m − b_m
  removes the large common offset of f (≈ the ELBO, hundreds of nats on
  images) that dominates the plain estimator's variance. ĝ_θ is eq 7.

  Raises:
    ValueError: num_samples < 2 (one sample has no other samples to average).
  """
  return _score_function(params, key, x, model, num_samples, True)


def stl(params, key, x, *, model, num_samples):
  """Sticking the landing (Roeder, Wu & Duvenaud 2017), the path derivative.

  The pathwise gradient of mean_m f(z_m) splits into the path term
  ∂f/∂z ∂z/∂φ and the score term −∂ log q_φ(z|x)/∂φ at fixed z, whose mean is
  zero. STL drops the score term by evaluating log q with stop-gradded
  (μ, log σ²):

    ĝ_φ = (1/M) Σ_m ∇z [log p(x, z) − log q_φ̄(z|x)]|_{z_m} ∂z_m/∂φ.

  Unbiased for the ELBO. When q equals the exact posterior, log p(x, z) −
  log q(z|x) = log p(x) for every z, so ∇z f = 0 and ĝ_φ = 0 for every
  sample: zero variance at the optimum. ĝ_θ is the usual eq 7.
  """
  def objective(p):
    return jnp.mean(_log_weights(p, key, x, model, num_samples, freeze_q=True))

  return jax.grad(objective)(params)


# --------------------------------------------------------------------------
# Importance-weighted bound estimators (K samples inside one log-mean-exp).


def iwae_reparam(params, key, x, *, model, num_samples):
  """Pathwise gradient of L_K = log (1/K) Σ_k w_k, K = num_samples.

  ∇L_K = Σ_k w̃_k ∇ log w_k with w̃_k = w_k / Σ_j w_j. For φ this includes the
  score term of log q; Rainforth et al. (2018) show its signal-to-noise ratio
  falls as O(1/√K).
  """
  def objective(p):
    return jnp.mean(objectives.log_mean_exp(
        _log_weights(p, key, x, model, num_samples), axis=0))

  return jax.grad(objective)(params)


def iwae_stl(params, key, x, *, model, num_samples):
  """STL applied to L_K: log q with stop-gradded parameters inside L_K.

    ĝ_φ = Σ_k w̃_k ∇z log w_k ∂z_k/∂φ.

  The dropped score term Σ_k w̃_k ∂ log q(z_k)/∂φ has mean zero only for
  K = 1 (where w̃ = 1); for K > 1 the weights correlate with the score, so
  this estimator is biased (Tucker et al. 2019, §3). Kept as the biased
  reference of the benchmark.
  """
  def objective(p):
    return jnp.mean(objectives.log_mean_exp(
        _log_weights(p, key, x, model, num_samples, freeze_q=True), axis=0))

  return jax.grad(objective)(params)


def iwae_dreg(params, key, x, *, model, num_samples):
  """Doubly reparameterized gradient of L_K (Tucker et al. 2019, DReG).

  Reparameterizing the score term of ∇φ L_K a second time turns it into a
  path term and gives, unbiasedly,

    ĝ_φ = Σ_k w̃_k² ∇z log w_k ∂z_k/∂φ      (log q with φ held fixed),
    ĝ_θ = Σ_k w̃_k ∇θ log p_θ(x, z_k)       (the usual IWAE θ-gradient).

  Both are vector–Jacobian products of the same per-sample log-weights
  log w [K, B] (log q frozen, z reparameterized), with cotangents w̃² and w̃:
  one forward pass, two backward passes. At the exact posterior every
  ∇z log w_k = 0, so ĝ_φ = 0 for every sample.
  """
  batch = x.shape[0]
  log_w, vjp = jax.vjp(
      lambda p: _log_weights(p, key, x, model, num_samples, freeze_q=True),
      params)
  w = jax.nn.softmax(log_w, axis=0)  # w̃_k per example, [K, B]
  (grads_theta,) = vjp(w / batch)
  (grads_phi,) = vjp(jnp.square(w) / batch)
  return _merge(grads_phi, grads_theta)


ELBO_ESTIMATORS = {
    "reparam_analytic_kl": reparam_analytic_kl,
    "reparam_mc_kl": reparam_mc_kl,
    "score_function": score_function,
    "score_function_loo": score_function_loo,
    "stl": stl,
}
IWAE_ESTIMATORS = {
    "iwae_reparam": iwae_reparam,
    "iwae_stl": iwae_stl,
    "iwae_dreg": iwae_dreg,
}
ESTIMATORS = {**ELBO_ESTIMATORS, **IWAE_ESTIMATORS}
# Estimators whose expectation is the gradient of the bound they target.
UNBIASED = frozenset(ESTIMATORS) - {"iwae_stl"}
# Smallest M (or K) each estimator accepts.
MIN_SAMPLES = {name: 1 for name in ESTIMATORS} | {"score_function_loo": 2}


def get_estimator(name, model, num_samples):
  """The estimator `name` with model and M (or K) bound: (params, key, x) -> g.

  Raises:
    ValueError: unknown name, or num_samples below the estimator's minimum.
  """
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; choose from "
                     f"{sorted(ESTIMATORS)}")
  if num_samples < MIN_SAMPLES[name]:
    raise ValueError(f"{name} needs num_samples >= {MIN_SAMPLES[name]}, got "
                     f"{num_samples}")
  return functools.partial(ESTIMATORS[name], model=model,
                           num_samples=num_samples)


# --------------------------------------------------------------------------
# Replicates: R independent estimates, vmapped over keys in chunks.


def _check_replicates(num_replicates, chunk_size):
  if num_replicates < 2:
    raise ValueError(f"num_replicates must be >= 2, got {num_replicates}")
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def replicate_gradients(estimator, params, key, x, num_replicates,
                        chunk_size=None):
  """R independent gradient estimates, stacked.

  Replicate r uses key `jax.random.split(key, R)[r]`, whatever the chunking.
  Chunks of `chunk_size` replicates are vmapped, and `lax.map` scans over
  the chunks, so the working memory is one chunk's (plus the stacked
  output). The best chunk depends on the device and the network
  (experiments/bench_replicates.py measures it).

  Args:
    estimator: `(params, key, x) -> grads`, e.g. from `get_estimator`.
    params: parameter pytree.
    key: PRNG key.
    x: [B, ...] the batch, the same for every replicate.
    num_replicates: R ≥ 2.
    chunk_size: replicates per vmapped chunk; None (or ≥ R) vmaps all R at
      once; 1 scans over replicates without vmap.

  Returns:
    Pytree like params with a leading axis R on every leaf.
  """
  _check_replicates(num_replicates, chunk_size)
  keys = jax.random.split(key, num_replicates)
  one = lambda k: estimator(params, k, x)
  if chunk_size is None or chunk_size >= num_replicates:
    return jax.vmap(one)(keys)
  if chunk_size == 1:
    return jax.lax.map(one, keys)  # a sequential scan
  return jax.lax.map(one, keys, batch_size=chunk_size)


def replicate_moments(estimator, params, key, x, num_replicates,
                      chunk_size=10):
  """Running mean and squared deviations of R estimates, split into φ and θ.

  Memory is O(chunk_size × P) whatever R is: each chunk's estimates are
  flattened, reduced to (count, mean, M2) and merged into the running totals
  with Chan et al.'s pairwise update, which stays accurate in float32 when
  |mean| ≫ std. The replicates are the same as `replicate_gradients`'s for
  the same key. Call it under `jax.jit`: the whole computation is then one
  compiled program.

  Args:
    estimator, params, key, x, num_replicates: as `replicate_gradients`.
    chunk_size: replicates per vmapped chunk (the last may be shorter);
      1 scans over single replicates without vmap (Welford's update).
      Each chunk is reduced with `gradient_stats.sum_rows`, at memory
      speed, so the chunk size trades vmap's batching against the chunk's
      working memory (chunk_size × P gradients).

  Returns:
    (encoder Moments [P_φ], decoder Moments [P_θ]), parameters in
    `ravel_pytree` order of params["encoder"] and of the rest.
  """
  _check_replicates(num_replicates, chunk_size)
  chunk_size = min(chunk_size, num_replicates)
  keys = jax.random.split(key, num_replicates)
  num_full = num_replicates // chunk_size

  # Moments are kept per parameter leaf and flattened once at the end:
  # concatenating the leaves inside the loop made XLA:CPU fuse the concat
  # into the gradient computation and run 10–100× slower.
  def chunk_moments(chunk_keys):
    if chunk_size == 1:
      # No vmap: a batch of one would still turn every weight-gradient
      # product into a batched one, for nothing.
      return tree_moments_from_samples(
          estimator(params, chunk_keys[0], x), 1)
    grads = jax.vmap(lambda k: estimator(params, k, x))(chunk_keys)
    return tree_moments_from_samples(grads, chunk_keys.shape[0])

  def step(carry, chunk_keys):
    return combine_tree_moments(carry, chunk_moments(chunk_keys)), None

  # Start from empty moments (count 0), so the scan body is the only copy of
  # the estimator in the compiled program (plus one for a ragged last chunk).
  empty = empty_tree_moments(params)
  full = keys[:num_full * chunk_size].reshape(
      (num_full, chunk_size) + keys.shape[1:])
  totals, _ = jax.lax.scan(step, empty, full)
  if num_replicates % chunk_size:
    totals = combine_tree_moments(totals,
                                  chunk_moments(keys[num_full * chunk_size:]))
  phi, theta = split_params(totals)
  return concat_tree_moments(phi), concat_tree_moments(theta)
