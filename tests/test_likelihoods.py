"""Decoder likelihoods (paper §6.5) against scipy and float64 references, and
the unit conversions of diagnostics.py (bits/dim, active units)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special, stats

from vae_jax.core import diagnostics
from vae_jax.core import likelihoods as lik

pytestmark = pytest.mark.usefixtures("x64")


def test_gaussian_scalar_sigma_matches_scipy():
  rng = np.random.default_rng(0)
  x, mean = rng.normal(size=(2, 4, 6))
  ours = lik.gaussian_log_likelihood(jnp.array(x), jnp.array(mean), 0.3)
  assert ours.shape == (4,)
  ref = stats.norm.logpdf(x, mean, np.exp(0.3)).sum(-1)
  np.testing.assert_allclose(ours, ref, rtol=1e-12)
  # A learned scalar (a 0-d array) is the same thing.
  np.testing.assert_allclose(
      lik.gaussian_log_likelihood(jnp.array(x), jnp.array(mean),
                                  jnp.array(0.3)), ref, rtol=1e-12)


def test_gaussian_per_dim_sigma_matches_scipy():
  rng = np.random.default_rng(1)
  x, mean = rng.normal(size=(2, 4, 6))
  log_sigma = rng.normal(size=6)
  ours = lik.gaussian_log_likelihood(jnp.array(x), jnp.array(mean),
                                     jnp.array(log_sigma))
  ref = stats.norm.logpdf(x, mean, np.exp(log_sigma)).sum(-1)
  np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_gaussian_keeps_the_normalizing_constant():
  """At x = mean, log N = −Σ log σ − (D/2) log 2π: the term the paper drops."""
  d = 10
  ours = lik.gaussian_log_likelihood(jnp.zeros(d), jnp.zeros(d),
                                     math.log(0.1))
  np.testing.assert_allclose(ours, -d * math.log(0.1) - 0.5 * d * math.log(
      2 * math.pi), rtol=1e-12)


def test_gaussian_image_event_matches_scipy():
  rng = np.random.default_rng(2)
  x, mean = rng.uniform(size=(2, 2, 5, 4, 3))  # [B, H, W, C]
  for log_sigma in (np.float64(-1.2), rng.normal(size=3)):  # one, per channel
    ours = lik.gaussian_log_likelihood(jnp.array(x), jnp.array(mean),
                                       jnp.array(log_sigma), event_ndims=3)
    assert ours.shape == (2,)
    ref = stats.norm.logpdf(x, mean, np.exp(log_sigma)).sum((1, 2, 3))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_gaussian_broadcasts_decoder_samples_against_one_batch():
  """mean: [M, B, D] (one decoding per sample of z), x: [B, D] -> [M, B]."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 6))
  mean = rng.normal(size=(3, 4, 6))
  ours = lik.gaussian_log_likelihood(jnp.array(x), jnp.array(mean), -0.5)
  assert ours.shape == (3, 4)
  ref = stats.norm.logpdf(x[None], mean, np.exp(-0.5)).sum(-1)
  np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("shape,event_ndims", [((3, 10), 1),
                                               ((2, 4, 4, 3), 3)])
def test_calibrated_gaussian_is_gaussian_at_sigma_sqrt_mse(shape, event_ndims):
  rng = np.random.default_rng(4)
  x = rng.normal(size=shape)
  mean = x + rng.normal(scale=0.3, size=shape)
  axes = tuple(range(-event_ndims, 0))
  d = int(np.prod(shape[-event_ndims:]))
  mse = np.mean(np.square(x - mean), axis=axes)
  np.testing.assert_allclose(
      lik.optimal_sigma_sq(jnp.array(x), jnp.array(mean), event_ndims), mse,
      rtol=1e-12)
  ours = lik.calibrated_gaussian_log_likelihood(jnp.array(x), jnp.array(mean),
                                                event_ndims)
  assert ours.shape == shape[:1]
  sigma = np.sqrt(mse).reshape(mse.shape + (1,) * event_ndims)
  np.testing.assert_allclose(ours, stats.norm.logpdf(x, mean, sigma).sum(axes),
                             rtol=1e-12)
  # The closed form −(D/2)(log 2π σ*² + 1).
  np.testing.assert_allclose(ours, -0.5 * d * (np.log(2 * np.pi * mse) + 1),
                             rtol=1e-12)


def test_calibrated_gaussian_is_the_maximum_over_sigma():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 20))
  mean = x + rng.normal(scale=0.5, size=(3, 20))
  best = lik.calibrated_gaussian_log_likelihood(jnp.array(x), jnp.array(mean))
  mse = np.mean(np.square(x - mean), -1)
  # Log-spaced grid of σ around √MSE; index 100 is exactly √MSE.
  factors = np.exp(np.linspace(-1.0, 1.0, 201))
  log_sigma = 0.5 * np.log(mse)[None, :, None] + np.log(factors)[:, None,
                                                                 None]
  grid = lik.gaussian_log_likelihood(jnp.array(x)[None], jnp.array(mean)[None],
                                     jnp.array(log_sigma))  # [201, 3]
  assert np.all(grid <= np.asarray(best)[None] + 1e-12)
  np.testing.assert_array_equal(np.argmax(grid, axis=0), [100] * 3)
  np.testing.assert_allclose(grid[100], best, rtol=1e-12)
  # Strictly lower away from the optimum.
  assert np.all(grid[np.array([90, 110])] < np.asarray(best)[None] - 1e-4)


def test_calibrated_gaussian_shared_sigma_and_floor():
  rng = np.random.default_rng(6)
  x, mean = rng.normal(size=(2, 3, 8))
  shared = lik.calibrated_gaussian_log_likelihood(
      jnp.array(x), jnp.array(mean), sigma_sq=0.25)
  np.testing.assert_allclose(
      shared, stats.norm.logpdf(x, mean, 0.5).sum(-1), rtol=1e-12)
  # A perfect reconstruction uses the floor σ² = 1e-6 and stays finite.
  perfect = lik.calibrated_gaussian_log_likelihood(jnp.array(x), jnp.array(x))
  np.testing.assert_allclose(perfect, -4 * np.log(2 * np.pi * 1e-6),
                             rtol=1e-12)


def _bernoulli_reference(x, logits):
  """float64: log σ(l) = −log(1 + e^{−l}), log(1 − σ(l)) = −log(1 + e^{l})."""
  return np.where(x == 1, -np.logaddexp(0.0, -logits),
                  -np.logaddexp(0.0, logits))


_LOGITS = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4])


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-6),
                                        (jnp.float64, 1e-14)])
def test_bernoulli_is_exact_at_extreme_logits(dtype, rtol):
  logits = np.concatenate([_LOGITS, _LOGITS])
  x = np.concatenate([np.zeros(7), np.ones(7)])
  ours = lik.bernoulli_log_likelihood(jnp.array(x, dtype),
                                      jnp.array(logits, dtype), event_ndims=0)
  assert ours.dtype == dtype
  assert np.all(np.isfinite(ours))
  ref = _bernoulli_reference(x, logits)
  np.testing.assert_allclose(ours, ref, rtol=rtol, atol=0)
  # d/dl log p = x − σ(l) = σ(−l) if x = 1 else −σ(l), finite everywhere;
  # the reference is written without the cancellation in x − σ(l).
  grad = jax.grad(lambda l: lik.bernoulli_log_likelihood(
      jnp.array(x, dtype), l, event_ndims=0).sum())(jnp.array(logits, dtype))
  assert np.all(np.isfinite(grad))
  ref_grad = np.where(x == 1, special.expit(-logits), -special.expit(logits))
  np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=0)


def test_bernoulli_sums_over_the_event():
  rng = np.random.default_rng(7)
  x = (rng.uniform(size=(2, 4, 4, 1)) > 0.5).astype(np.float64)
  logits = rng.normal(scale=5.0, size=(2, 4, 4, 1))
  ours = lik.bernoulli_log_likelihood(jnp.array(x), jnp.array(logits),
                                      event_ndims=3)
  ref = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum((1, 2, 3))
  np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_bits_per_dim():
  d = 784
  # −ELBO of D ln 2 nats is one bit per dimension.
  np.testing.assert_allclose(diagnostics.bits_per_dim(d * math.log(2), d), 1.0,
                             rtol=1e-12)
  nll = jnp.array([0.0, 100.0, 543.2])
  np.testing.assert_allclose(diagnostics.bits_per_dim(nll, d),
                             np.array(nll) / (d * np.log(2)), rtol=1e-12)
  # A uniform density on [0, 1)^D (0 nats) is 8 bits/dim on 8-bit data.
  deq = diagnostics.dequantization_nats_8bit(d)
  np.testing.assert_allclose(deq, d * np.log(256), rtol=1e-12)
  np.testing.assert_allclose(diagnostics.bits_per_dim(0.0, d, deq), 8.0,
                             rtol=1e-12)


def test_active_units_on_constructed_posterior_means():
  n = 1000
  signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # variance exactly 1
  stds = np.array([1.0, 0.5, np.sqrt(0.02), np.sqrt(0.005), 0.0])
  means = 3.0 + signs[:, None] * stds[None, :]  # offsets do not count
  activity = diagnostics.latent_activity(jnp.array(means))
  np.testing.assert_allclose(activity, stds**2, rtol=1e-10, atol=1e-15)
  assert int(diagnostics.active_units(jnp.array(means))) == 3
  assert int(diagnostics.active_units(jnp.array(means), threshold=0.001)) == 4
  assert int(diagnostics.active_units(jnp.array(means), threshold=0.5)) == 1


def test_bernoulli_soft_targets_and_both_derivatives():
  """x in [0, 1] gives the cross-entropy −[x softplus(−l) + (1 − x)
  softplus(l)]; d/dl = x − σ(l) (also at l = 0, where max and |·| have no
  derivative), d/dx = l; jvp, vjp and finite differences agree."""
  rng = np.random.default_rng(8)
  x = rng.uniform(size=(3, 9))
  logits = rng.normal(scale=4.0, size=(3, 9))
  logits[0, :3] = 0.0
  x[1, :2] = [0.0, 1.0]
  ours = lik.bernoulli_log_likelihood(jnp.array(x), jnp.array(logits),
                                      event_ndims=0)
  ref = -(x * np.logaddexp(0.0, -logits) + (1 - x) * np.logaddexp(0.0,
                                                                   logits))
  np.testing.assert_allclose(ours, ref, rtol=1e-13)
  f = lambda x, l: lik.bernoulli_log_likelihood(x, l, event_ndims=0).sum()
  gx, gl = jax.grad(f, argnums=(0, 1))(jnp.array(x), jnp.array(logits))
  np.testing.assert_allclose(gl, x - special.expit(logits), rtol=1e-13,
                             atol=1e-16)
  np.testing.assert_allclose(gx, logits, rtol=1e-15)
  np.testing.assert_allclose(gl[0, :3], x[0, :3] - 0.5, rtol=1e-15)
  away = jnp.array(np.where(logits == 0.0, 0.7, logits))
  check_grads(
      lambda x, l: lik.bernoulli_log_likelihood(x, l, event_ndims=1),
      (jnp.array(x), away), order=2, modes=("fwd", "rev"))


def test_bernoulli_broadcasts_decoder_samples_against_one_batch():
  """logits [M, B, D] against x [B, D] -> [M, B]; the gradient w.r.t. the
  logits of sample m is x − σ(l_m)."""
  rng = np.random.default_rng(9)
  x = (rng.uniform(size=(4, 6)) < 0.5).astype(np.float64)
  logits = rng.normal(scale=3.0, size=(3, 4, 6))
  ours = lik.bernoulli_log_likelihood(jnp.array(x), jnp.array(logits))
  assert ours.shape == (3, 4)
  ref = _bernoulli_reference(np.broadcast_to(x, logits.shape), logits)
  np.testing.assert_allclose(ours, ref.sum(-1), rtol=1e-13)
  grad = jax.grad(lambda l: lik.bernoulli_log_likelihood(
      jnp.array(x), l).sum())(jnp.array(logits))
  np.testing.assert_allclose(grad, x - special.expit(logits), rtol=1e-12,
                             atol=1e-16)
