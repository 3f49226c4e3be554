"""Discretized likelihoods over the intensity levels: proper distributions,
edge bins, agreement with brute-force float64 scipy/numpy, float32 stability.

Convention under test: x = k / (L − 1) for levels k ∈ {0..L−1}; level k owns
[x − h, x + h], h = 1/(2(L − 1)), the first and last bins reaching ±∞.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vae_jax.core import likelihoods as lik
from vae_jax.data.base import image_dataset
from vae_jax.training.evaluate import dequantization_nats

L = 256
LEVELS = np.arange(L)
GRID = LEVELS / (L - 1)
H = 0.5 / (L - 1)

# (mean, σ) in [0, 1] units: inside and outside the data range, bins much
# wider and much narrower than σ (σ = 1000 is the midpoint-rule branch).
CASES = [(0.5, 0.1), (0.0, 0.01), (1.0, 0.003), (0.3, 1.0), (-0.7, 0.05),
         (1.8, 0.2), (0.42, 1000.0), (0.5, 0.03)]


def _bin_edges(levels=LEVELS, num_levels=L):
  h = 0.5 / (num_levels - 1)
  x = levels / (num_levels - 1)
  lo, hi = x - h, x + h
  lo = np.where(levels == 0, -np.inf, lo)
  hi = np.where(levels == num_levels - 1, np.inf, hi)
  return x, lo, hi


def _ref_gaussian(mean, sigma):
  """log P(k) by CDF differences in float64 (upper tails by sf, so a bin far
  above the mean does not subtract two numbers near 1)."""
  x, lo, hi = _bin_edges()
  below = stats.norm.cdf(hi, mean, sigma) - stats.norm.cdf(lo, mean, sigma)
  above = stats.norm.sf(lo, mean, sigma) - stats.norm.sf(hi, mean, sigma)
  with np.errstate(divide="ignore"):
    return np.log(np.where(x > mean, above, below))


def _ref_logistic(mean, scale, levels=LEVELS, num_levels=L):
  x, lo, hi = _bin_edges(levels, num_levels)
  a, b = (lo - mean) / scale, (hi - mean) / scale
  below = special.expit(b) - special.expit(a)
  above = special.expit(-a) - special.expit(-b)
  with np.errstate(divide="ignore"):
    return np.log(np.where(x > mean, above, below))


def _ours_gaussian(mean, sigma, dtype):
  return np.asarray(lik.discretized_gaussian_log_prob(
      jnp.asarray(GRID, dtype), jnp.asarray(mean, dtype),
      jnp.log(jnp.asarray(sigma, dtype))), np.float64)


@pytest.mark.parametrize("mean, sigma", CASES)
def test_discretized_gaussian_float64_matches_scipy_and_sums_to_one(
    x64, mean, sigma):
  ours = _ours_gaussian(mean, sigma, jnp.float64)
  ref = _ref_gaussian(mean, sigma)
  ok = ref > -600   # where float64 CDF differences still resolve P
  np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-9, atol=1e-9)
  assert np.all(np.isfinite(ours)) and np.all(ours <= 0)
  np.testing.assert_allclose(special.logsumexp(ours), 0.0, atol=1e-12)


@pytest.mark.parametrize("mean, sigma", CASES)
def test_discretized_gaussian_float32_is_accurate(mean, sigma):
  ours = _ours_gaussian(mean, sigma, jnp.float32)
  assert np.all(np.isfinite(ours))
  # Compare at the float32 inputs: with σ = 0.003 an ulp of x moves the
  # standardized centre by 2e-5, which is conditioning, not the algorithm.
  m32, s32 = float(np.float32(mean)), float(np.exp(np.log(np.float32(sigma))))
  ref = _ref_gaussian(m32, s32)
  ok = ref > -600
  tol = 1e-5 if sigma >= 0.01 else 1e-4
  rel = np.abs(ours[ok] - ref[ok]) / np.maximum(1.0, np.abs(ref[ok]))
  assert rel.max() < tol
  np.testing.assert_allclose(special.logsumexp(ours), 0.0, atol=1e-5)


def test_discretized_gaussian_edge_bins_reach_infinity(x64):
  mean, sigma = 0.2, 0.15
  ours = _ours_gaussian(mean, sigma, jnp.float64)
  np.testing.assert_allclose(ours[0], stats.norm.logcdf(H, mean, sigma),
                             rtol=1e-12)
  np.testing.assert_allclose(ours[-1], stats.norm.logsf(1 - H, mean, sigma),
                             rtol=1e-12)
  # A mean far outside [0, 1] puts (almost) all mass in the nearest edge bin,
  # which must stay finite (a clipped open bin would not).
  far_above = _ours_gaussian(5.0, 0.1, jnp.float64)
  far_below = _ours_gaussian(-5.0, 0.1, jnp.float64)
  assert abs(far_above[-1]) < 1e-12 and abs(far_below[0]) < 1e-12
  np.testing.assert_allclose(far_above[0], stats.norm.logcdf(H, 5.0, 0.1),
                             rtol=1e-9)


def test_discretized_gaussian_float32_far_tails_and_gradients_are_finite():
  # The far-tail bins: log P of order −1e5, where 1 − Φ rounds to 0 in
  # float32 and a naive log(Φ(b) − Φ(a)) is −inf.
  x = jnp.asarray(GRID, jnp.float32)
  for mean, log_sigma in [(0.5, -7.0), (-3.0, -5.0), (4.0, -4.0), (0.5, 6.0),
                          (0.5, jnp.log(H * 2 / 0.1))]:   # Δ at the switch
    fn = lambda m, s: lik.discretized_gaussian_log_prob(x, m, s)
    value = fn(jnp.float32(mean), jnp.float32(log_sigma))
    grads = jax.jacfwd(fn, (0, 1))(jnp.float32(mean), jnp.float32(log_sigma))
    assert np.all(np.isfinite(value))
    assert all(np.all(np.isfinite(g)) for g in grads)
  # Far-tail values against scipy's log Φ in float64 (P itself underflows):
  # the edge bin, and an interior bin log Φ(b) + log(1 − Φ(a)/Φ(b)).
  sigma = float(np.exp(np.float32(-7.0)))
  ours = _ours_gaussian(0.5, sigma, jnp.float32)
  np.testing.assert_allclose(ours[0], stats.norm.logcdf(H, 0.5, sigma),
                             rtol=1e-6)
  log_a, log_b = (stats.norm.logcdf(GRID[10] + d, 0.5, sigma) for d in (-H, H))
  np.testing.assert_allclose(ours[10], log_b + np.log1p(-np.exp(log_a - log_b)),
                             rtol=1e-6)


@pytest.mark.parametrize("offset,log_sigma", [
    (0.4, -6.0), (0.1, -9.0), (0.4, -9.0), (-0.4, -9.0), (0.45, -11.0)])
def test_discretized_gaussian_far_tail_gradients_match_float64(offset,
                                                               log_sigma):
  """A level 160 to 27,000 standard deviations from the mean: float32
  gradients against the closed form in float64,
    ∂ log P/∂μ = −(φ(b) − φ(a)) / (σ P),  ∂ log P/∂ log σ = −(b φ(b) − a φ(a)) / P,
  with every ratio taken in log space. jax's own log Φ derivative,
  exp(log φ − log Φ) in float32, was 7% off at 3,240 SD and 70% at 10⁴."""
  k = 128
  x32 = np.float32(k) / np.float32(L - 1)
  mean32, log_sigma32 = np.float32(x32 + offset), np.float32(log_sigma)
  x, mean = float(x32), float(mean32)
  sigma = math.exp(float(log_sigma32))
  a, b = (x - H - mean) / sigma, (x + H - mean) / sigma
  if a > 0:  # above the mean: the mirrored upper tail, same formula
    a, b = -b, -a
    sign = -1.0
  else:
    sign = 1.0
  log_p = stats.norm.logcdf(b) + np.log1p(-np.exp(stats.norm.logcdf(a) -
                                                  stats.norm.logcdf(b)))
  ratio_b = np.exp(stats.norm.logpdf(b) - log_p)
  ratio_a = np.exp(stats.norm.logpdf(a) - log_p)
  want_mean = -sign * (ratio_b - ratio_a) / sigma
  want_log_sigma = -(b * ratio_b - a * ratio_a)
  grad = jax.grad(lambda m, s: lik.discretized_gaussian_log_prob(
      jnp.float32(x32), m, s), (0, 1))(jnp.float32(mean32),
                                       jnp.float32(log_sigma32))
  assert abs(b) > 150
  np.testing.assert_allclose(float(grad[0]), want_mean, rtol=1e-5)
  np.testing.assert_allclose(float(grad[1]), want_log_sigma, rtol=1e-5)


@pytest.mark.parametrize("name", ["gaussian", "logistic"])
def test_reverse_mode_gradients_are_finite_at_wide_scales(name):
  """At log-scales of 11 and more every bin's Φ(b) − Φ(a) is tiny, so
  log(1 − e^a) meets a ≈ 0, where log1p(−exp(a)) has an infinite
  derivative; jnp.where once passed it on to the gradient as NaN (with
  finite values). Reverse mode, as training differentiates."""
  fn = {"gaussian": lik.discretized_gaussian_log_prob,
        "logistic": lik.discretized_logistic_log_prob}[name]
  x = jnp.asarray(GRID, jnp.float32)
  total = lambda m, s: jnp.sum(fn(x, m, s))
  for log_scale in (11.0, 12.0, 16.0, 19.5):
    for mean in (-50.0, 0.1234, 0.5, 3.0):
      args = jnp.float32(mean), jnp.float32(log_scale)
      value, grads = jax.value_and_grad(total, (0, 1))(*args)
      assert np.isfinite(value)
      assert all(np.isfinite(g) for g in grads), (log_scale, mean, grads)
  # With σ ≫ the grid, an interior level has mass ≈ 2h·density ∝ 1/σ
  # (d log P / d log σ → −1) and each edge bin ≈ ½ (→ 0): the gradient with
  # respect to log σ tends to −(number of interior levels) = −254.
  _, (_, d_log_scale) = jax.value_and_grad(total, (0, 1))(
      jnp.float32(0.5), jnp.float32(12.0))
  np.testing.assert_allclose(d_log_scale, -(x.size - 2), rtol=1e-3)


def test_discretized_gaussian_switch_is_continuous(x64):
  # Both sides of the midpoint/exact switch (bin width Δ = 0.1 σ) agree
  # with scipy, so the branch does not show as a jump in the likelihood.
  width = 2 * H
  for sigma in (width / 0.1 * (1 - 1e-6), width / 0.1 * (1 + 1e-6)):
    ours = _ours_gaussian(0.5, sigma, jnp.float32)
    ref = _ref_gaussian(0.5, sigma)
    np.testing.assert_allclose(ours, ref, rtol=2e-6)


def test_discretized_gaussian_per_channel_and_per_pixel_sigma(x64):
  rng = np.random.default_rng(0)
  levels = rng.integers(0, L, size=(4, 2, 2, 3))
  x = levels / (L - 1)
  mean = rng.uniform(-0.1, 1.1, size=x.shape)
  for log_sigma in (rng.normal(-2, 0.5, size=3),
                    rng.normal(-2, 0.5, size=(2, 2, 3))):
    ours = lik.discretized_gaussian_log_likelihood(
        jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_sigma), 3)
    sigma = np.broadcast_to(np.exp(log_sigma), x.shape)
    _, lo, hi = _bin_edges(levels)
    p = np.where(x > mean,
                 stats.norm.sf(lo, mean, sigma) - stats.norm.sf(hi, mean, sigma),
                 stats.norm.cdf(hi, mean, sigma) - stats.norm.cdf(lo, mean, sigma))
    np.testing.assert_allclose(ours, np.log(p).sum((1, 2, 3)), rtol=1e-10)


@pytest.mark.parametrize("mean, scale", CASES)
def test_discretized_logistic_matches_numpy_and_sums_to_one(mean, scale):
  ours = np.asarray(lik.discretized_logistic_log_prob(
      jnp.asarray(GRID, jnp.float32), jnp.float32(mean),
      jnp.log(jnp.float32(scale))), np.float64)
  ref = _ref_logistic(float(np.float32(mean)),
                      float(np.exp(np.log(np.float32(scale)))))
  ok = np.isfinite(ref)
  assert np.all(np.isfinite(ours))
  rel = np.abs(ours[ok] - ref[ok]) / np.maximum(1.0, np.abs(ref[ok]))
  assert rel.max() < 1e-5
  np.testing.assert_allclose(special.logsumexp(ours), 0.0, atol=1e-5)
  # Edge bins: P(0) = σ((h − μ)/s), P(L − 1) = σ((μ − 1 + h)/s).
  s = float(np.exp(np.log(np.float32(scale))))
  np.testing.assert_allclose(
      ours[[0, -1]], [np.log(special.expit((H - mean) / s)),
                      np.log(special.expit((mean - 1 + H) / s))],
      rtol=1e-5, atol=1e-6)


# ---- the PixelCNN++ mixture --------------------------------------------------

def _ref_mixture(levels, params, num_levels):
  """Brute force in float64: Σ_k π_k Π_c P_k(x_c | x_<c), one pixel per row.

  levels: [N, C] ints; params: [N, K(1 + 2C + C(C−1)/2)].
  """
  n, channels = levels.shape
  k = params.shape[1] // (1 + 2 * channels + channels * (channels - 1) // 2)
  weights = special.softmax(params[:, :k], axis=1)
  rest = params[:, k:].reshape(n, -1, k)
  means, log_scales = rest[:, :channels], np.maximum(
      rest[:, channels:2 * channels], -7.0)
  coeffs = np.tanh(rest[:, 2 * channels:])
  x = levels / (num_levels - 1)
  total = np.zeros(n)
  for j in range(k):
    prob, pair = np.ones(n), 0
    for c in range(channels):
      m = means[:, c, j].copy()
      for i in range(c):
        m += coeffs[:, pair, j] * x[:, i]
        pair += 1
      prob *= np.exp(_ref_logistic(m, np.exp(log_scales[:, c, j]),
                                   levels[:, c], num_levels))
    total += weights[:, j] * prob
  return np.log(total)


def _random_params(rng, n, channels, k):
  p = lik.logistic_mixture_num_params(channels, k)
  params = rng.normal(size=(n, p))
  means = slice(k, k + channels * k)
  params[:, means] = rng.uniform(-0.2, 1.2, size=(n, channels * k))
  scales = slice(k + channels * k, k + 2 * channels * k)
  params[:, scales] = rng.uniform(-8.0, 0.0, size=(n, channels * k))
  return params


def test_logistic_mixture_matches_brute_force_float64():
  rng = np.random.default_rng(1)
  n, channels, k = 64, 3, 4
  params = _random_params(rng, n, channels, k)
  levels = rng.integers(0, L, size=(n, channels))
  levels[:4] = [[0, 0, 0], [255, 255, 255], [0, 255, 128], [255, 0, 1]]
  ours = lik.discretized_logistic_mixture_log_likelihood(
      jnp.asarray(levels / (L - 1), jnp.float32),
      jnp.asarray(params, jnp.float32), event_ndims=1)
  ref = _ref_mixture(levels, params.astype(np.float32).astype(np.float64), L)
  ok = ref > -80   # float64 CDF differences of e^−80 are still exact here
  assert ok.sum() > n // 2
  np.testing.assert_allclose(np.asarray(ours)[ok], ref[ok], rtol=2e-5,
                             atol=2e-5)
  assert np.all(np.isfinite(np.asarray(ours)))


def test_logistic_mixture_is_a_distribution_over_all_colours():
  # Every one of the 8³ colours of an 8-level RGB pixel: the channel
  # coupling must keep the joint normalized.
  rng = np.random.default_rng(2)
  num_levels, k = 8, 3
  params = _random_params(rng, 1, 3, k)
  colours = np.stack(np.meshgrid(*[np.arange(num_levels)] * 3,
                                 indexing="ij"), -1).reshape(-1, 3)
  logp = lik.discretized_logistic_mixture_log_likelihood(
      jnp.asarray(colours / (num_levels - 1), jnp.float32),
      jnp.asarray(np.repeat(params, len(colours), 0), jnp.float32), 1,
      num_levels)
  np.testing.assert_allclose(special.logsumexp(np.asarray(logp, np.float64)),
                             0.0, atol=1e-5)


def test_logistic_mixture_256_levels_marginals_and_grey_sum():
  rng = np.random.default_rng(3)
  k = 2
  params = _random_params(rng, 1, 3, k)
  # Σ over all 256² (G, B) of P(R, G, B) is the mixture's marginal of R.
  gb = np.stack(np.meshgrid(LEVELS, LEVELS, indexing="ij"), -1).reshape(-1, 2)
  for red in (0, 77, 255):
    colours = np.concatenate([np.full((len(gb), 1), red), gb], 1)
    logp = lik.discretized_logistic_mixture_log_likelihood(
        jnp.asarray(colours / (L - 1), jnp.float32),
        jnp.asarray(np.repeat(params, len(colours), 0), jnp.float32), 1)
    p32 = params.astype(np.float32).astype(np.float64)
    weights = special.softmax(p32[0, :k])
    rest = p32[0, k:].reshape(-1, k)
    marginal = sum(weights[j] * np.exp(_ref_logistic(
        rest[0, j], np.exp(max(rest[3, j], -7.0)), np.array([red]))[0])
                   for j in range(k))
    np.testing.assert_allclose(special.logsumexp(np.asarray(logp, np.float64)),
                               np.log(marginal), atol=2e-5)
  # One channel (grey vectors): the 256 levels sum to 1.
  grey = _random_params(rng, 1, 1, 5)
  logp = lik.discretized_logistic_mixture_log_likelihood(
      jnp.asarray(GRID[:, None], jnp.float32),
      jnp.asarray(np.repeat(grey, L, 0), jnp.float32), 1)
  np.testing.assert_allclose(special.logsumexp(np.asarray(logp, np.float64)),
                             0.0, atol=1e-5)


def test_logistic_mixture_sums_over_pixels_and_has_finite_gradients():
  rng = np.random.default_rng(4)
  k = 2
  params = _random_params(rng, 2 * 3 * 2, 3, k).reshape(2, 3, 2, -1)
  params[0, 0, 0, k + 3 * k:k + 6 * k] = -30.0  # log-scales at the floor
  levels = rng.integers(0, L, size=(2, 3, 2, 3))
  x = jnp.asarray(levels / (L - 1), jnp.float32)
  fn = lambda p: lik.discretized_logistic_mixture_log_likelihood(x, p, 3)
  ours = fn(jnp.asarray(params, jnp.float32))
  assert ours.shape == (2,) and np.all(np.isfinite(ours))
  # Image 1 (no floored scales): the sum over its 3×2 pixels.
  ref = _ref_mixture(levels[1].reshape(-1, 3),
                     params[1].reshape(6, -1).astype(np.float32)
                     .astype(np.float64), L).sum()
  np.testing.assert_allclose(ours[1], ref, rtol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(fn(p)))(jnp.asarray(params, jnp.float32))
  assert np.all(np.isfinite(grads))
  # The floored log-scales get no gradient (PixelCNN++'s max(·, −7)).
  assert np.all(grads[0, 0, 0, k + 3 * k:k + 6 * k] == 0)


def test_logistic_mixture_mean_is_the_component_average():
  rng = np.random.default_rng(5)
  k = 3
  params = _random_params(rng, 5, 3, k)
  params[:, k + 6 * k:] = 0.0   # no coupling: means are Σ_k π_k μ_ck
  ours = lik.discretized_logistic_mixture_mean(jnp.asarray(params), 3)
  weights = special.softmax(params[:, :k], axis=1)
  means = params[:, k:k + 3 * k].reshape(5, 3, k)
  ref = np.clip(np.einsum("nk,nck->nc", weights, means), 0, 1)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


# ---- bits/dim -----------------------------------------------------------------

def test_bits_per_dim_needs_no_dequantization_constant_when_discretized():
  pixels = np.zeros((4, 2, 2, 3), np.uint8)
  data = image_dataset("toy", pixels, pixels, None, None, levels=256,
                       event_shape=(2, 2, 3))
  for likelihood in ("discretized_gaussian", "discretized_logistic_mixture"):
    assert dequantization_nats(data, "none", likelihood) == 0.0
    assert dequantization_nats(data, "dequantize", likelihood) is None
  assert dequantization_nats(data, "dequantize", "gaussian") == pytest.approx(
      12 * math.log(256))
  assert dequantization_nats(data, "none", "gaussian") is None


def test_a_gaussian_density_on_binary_values_has_no_bits_per_dim():
  """A Gaussian decoder on binarized or binary data is a density, not a
  mass: its −log p can be negative, so no bits/dim (it was reported as
  such, with 0 nats added). Bernoulli and discretized masses keep 0."""
  pixels = np.zeros((4, 6), np.uint8)
  grey = image_dataset("grey", pixels, pixels, None, None, levels=256,
                       event_shape=(6,))
  binary = image_dataset("binary", pixels, pixels, None, None, levels=None,
                         event_shape=(6,))
  for data, transform in ((grey, "dynamic_binarize"), (binary, "none")):
    assert dequantization_nats(data, transform, "gaussian") is None
    assert dequantization_nats(data, transform, "bernoulli") == 0.0
    assert dequantization_nats(data, transform,
                               "discretized_gaussian") == 0.0


# ---- sampling -----------------------------------------------------------------

def _frequencies_match(draws, log_probs, num_draws):
  """Empirical frequency of every outcome within 5 standard errors of its
  probability (Bonferroni over the outcomes at this size), and the
  probabilities a distribution."""
  p = np.exp(np.asarray(log_probs, np.float64))
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-4)
  se = np.sqrt(p * (1 - p) / num_draws)
  assert np.all(np.abs(draws - p) <= 5 * se + 1e-12), np.abs(draws - p) / se


@pytest.mark.parametrize("mean, log_sigma", [(0.3, -1.5), (0.9, -0.5),
                                             (-0.2, -2.0)])
def test_discretized_gaussian_draws_follow_its_mass(mean, log_sigma):
  """5 levels, 100,000 draws: each level's frequency against
  exp(discretized_gaussian_log_prob); the edge bins get the tails."""
  levels, n = 5, 100_000
  grid = jnp.arange(levels, dtype=jnp.float32) / (levels - 1)
  x = lik.sample_discretized_gaussian(
      jax.random.key(0), jnp.full((n,), mean, jnp.float32),
      jnp.float32(log_sigma), levels)
  k = np.rint(np.asarray(x) * (levels - 1)).astype(int)
  np.testing.assert_array_equal(np.asarray(x), np.asarray(grid)[k])
  freq = np.bincount(k, minlength=levels) / n
  _frequencies_match(freq, lik.discretized_gaussian_log_prob(
      grid, jnp.float32(mean), jnp.float32(log_sigma), levels), n)


def test_logistic_mixture_draws_follow_its_mass_over_all_colours():
  """RGB, 4 levels (64 colours), 2 components with coupled channels:
  frequencies of 100,000 draws of one pixel against exp of the
  likelihood of every colour."""
  levels, n, channels = 4, 100_000, 3
  params = jnp.asarray(np.random.default_rng(0).normal(
      0.0, 0.8, lik.logistic_mixture_num_params(channels, 2)), jnp.float32)
  x = lik.sample_discretized_logistic_mixture(
      jax.random.key(1), jnp.broadcast_to(params, (n,) + params.shape),
      channels, levels)
  k = np.rint(np.asarray(x) * (levels - 1)).astype(int)       # [n, 3]
  code = (k[:, 0] * levels + k[:, 1]) * levels + k[:, 2]
  freq = np.bincount(code, minlength=levels**3) / n
  colours = np.stack(np.meshgrid(*[np.arange(levels)] * 3, indexing="ij"),
                     -1).reshape(-1, 3) / (levels - 1)
  log_p = lik.discretized_logistic_mixture_log_likelihood(
      jnp.asarray(colours, jnp.float32)[:, None, :],
      jnp.broadcast_to(params, (len(colours), 1) + params.shape), 2, levels)
  _frequencies_match(freq, log_p, n)


def test_grey_logistic_mixture_draws_follow_its_mass():
  """One channel (no coupling coefficients), 6 levels, 3 components."""
  levels, n = 6, 100_000
  params = jnp.asarray([2.0, -1.0, 0.5, 0.1, 0.5, 0.95, -2.0, -1.5, -2.5],
                       jnp.float32)
  x = lik.sample_discretized_logistic_mixture(
      jax.random.key(2), jnp.broadcast_to(params, (n, 9)), 1, levels)
  k = np.rint(np.asarray(x[:, 0]) * (levels - 1)).astype(int)
  grid = jnp.arange(levels, dtype=jnp.float32)[:, None, None] / (levels - 1)
  log_p = lik.discretized_logistic_mixture_log_likelihood(
      grid, jnp.broadcast_to(params, (levels, 1, 9)), 2, levels)
  _frequencies_match(np.bincount(k, minlength=levels) / n, log_p, n)

