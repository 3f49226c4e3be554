"""The §3 linear-Gaussian model: closed forms against Bayes' rule, scipy,
Monte Carlo, and Thm 1.1 (log p(x) = ELBO + KL(q ‖ p(z|x)))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax.core import distributions as dist
from vae_jax.core import linear_gaussian as lg

pytestmark = pytest.mark.usefixtures("x64")

D = 3


def _model(seed, d=D, scalar=False):
  enc, dec = lg.init_params(jax.random.key(seed), d)
  if scalar:  # the paper's scalar a, b, t, c, v, s
    enc = {k: v[0] for k, v in enc.items()}
    dec = {k: v[0] for k, v in dec.items()}
  return enc, dec


def _data(seed, mu, sigma, n):
  """x ~ N(μ, σ² I) from numpy (lg.sample_data is tested on its own below;
  numpy avoids compiling a new random program for every shape)."""
  rng = np.random.default_rng(seed)
  mu = np.asarray(mu)
  return jnp.asarray(mu + sigma * rng.normal(size=(n,) + mu.shape))


def _exact_posterior_encoder(dec):
  """Encoder parameters with q_φ(z|x) = p_θ(z|x): a = c/(c²+s²), b = −a v,
  t² = s²/(c²+s²)."""
  c, v, log_s = dec["c"], dec["v"], dec["log_s"]
  var = c**2 + jnp.exp(2 * log_s)
  a = c / var
  return {"a": a, "b": -a * v, "log_t": log_s - 0.5 * jnp.log(var)}


def _diag(v):
  return v[..., :, None] * jnp.eye(v.shape[-1])


def _thm_1_1_gap(enc, dec, x):
  """KL(q_φ(z|x) ‖ p_θ(z|x)) by Thm 1.3 on full (diagonal) matrices."""
  q_mean, q_log_var = lg.encoder_apply(enc, x)
  post = lg.exact_posterior(dec, x)
  return dist.kl_mvn(q_mean, _diag(jnp.exp(q_log_var)), post.mean,
                     _diag(jnp.exp(post.log_var)))


@pytest.mark.parametrize("scalar", [False, True])
def test_thm_1_1_log_marginal_is_elbo_plus_posterior_kl(scalar):
  for seed in range(4):
    enc, dec = _model(seed, scalar=scalar)
    x = _data(100 + seed, jnp.zeros(D), 1.5, 5)
    gap = lg.log_marginal(dec, x) - lg.exact_elbo(enc, dec, x)
    kl = _thm_1_1_gap(enc, dec, x)
    assert gap.shape == kl.shape == (5,)
    np.testing.assert_allclose(gap, kl, rtol=1e-6, atol=1e-12)
    # ELBO ≤ log p(x), strictly for a random encoder.
    assert np.all(gap > 1e-6)


def test_elbo_equals_log_marginal_at_the_exact_posterior():
  x = _data(0, jnp.array([0.5, -1.0, 2.0]), 1.3, 6)
  for seed in range(3):  # random decoders, encoder set to p(z|x)
    _, dec = _model(seed)
    enc = _exact_posterior_encoder(dec)
    np.testing.assert_allclose(lg.exact_elbo(enc, dec, x),
                               lg.log_marginal(dec, x), rtol=1e-12)
    # Perturbing the encoder opens a gap.
    enc["b"] = enc["b"] + 0.1
    assert np.all(lg.log_marginal(dec, x) - lg.exact_elbo(enc, dec, x) > 1e-4)
  for s in (0.1, 0.7, 1.2):  # every member of the optimal family
    enc, dec = lg.optimal_params(jnp.array([0.5, -1.0, 2.0]), 1.3, s)
    np.testing.assert_allclose(lg.exact_elbo(enc, dec, x),
                               lg.log_marginal(dec, x), rtol=1e-12)


@pytest.mark.parametrize("scalar", [False, True])
def test_log_marginal_matches_scipy(scalar):
  _, dec = _model(7, scalar=scalar)
  x = np.random.default_rng(0).normal(size=(4, D))
  c, v, s = (np.broadcast_to(np.asarray(dec[k]), (D,))
             for k in ("c", "v", "log_s"))
  cov = np.diag(c**2 + np.exp(2 * s))
  np.testing.assert_allclose(lg.log_marginal(dec, jnp.array(x)),
                             stats.multivariate_normal(v, cov).logpdf(x),
                             rtol=1e-12)


def test_exact_posterior_is_gaussian_conditioning_of_the_joint():
  """Bayes' rule by brute force: condition the joint N([z; x]) on x."""
  _, dec = _model(3)
  c, v, log_s = (np.asarray(dec[k]) for k in ("c", "v", "log_s"))
  cmat = np.diag(c)
  # z ~ N(0, I), x = C z + v + s ε  ⇒  Cov[z, x] = C, Cov[x] = C Cᵀ + S².
  s_zz, s_zx = np.eye(D), cmat
  s_xx = cmat @ cmat.T + np.diag(np.exp(2 * log_s))
  gain = s_zx @ np.linalg.inv(s_xx)
  post_cov = s_zz - gain @ s_zx.T
  x = np.random.default_rng(1).normal(size=(5, D))
  post_mean = (x - v) @ gain.T
  ours = lg.exact_posterior(dec, jnp.array(x))
  np.testing.assert_allclose(ours.mean, post_mean, rtol=1e-12)
  np.testing.assert_allclose(np.exp(ours.log_var),
                             np.broadcast_to(np.diag(post_cov), (5, D)),
                             rtol=1e-12)
  np.testing.assert_allclose(post_cov, np.diag(np.diag(post_cov)), atol=1e-15)


def test_expected_log_marginal_matches_monte_carlo():
  _, dec = _model(4)
  mu, sigma, n = jnp.array([0.3, -0.2, 1.0]), 1.4, 200_000
  x = _data(5, mu, sigma, n)
  values = np.asarray(lg.log_marginal(dec, x))
  se = values.std(ddof=1) / np.sqrt(n)
  exact = float(lg.expected_log_marginal(dec, mu, sigma))
  assert abs(values.mean() - exact) < 4 * se, (values.mean(), exact, se)
  assert 4 * se < 0.01 * abs(exact)  # the check resolves 1%


def _expected_exact_elbo(enc, dec, mu, sigma):
  """E_{x~N(μ,σ²I)} ELBO(x), exactly: the ELBO is a sum of per-dimension
  quadratics in x_j, and E g(x_j) = ½[g(μ_j + σ) + g(μ_j − σ)] for any
  quadratic g (two-point Gauss–Hermite rule)."""
  return 0.5 * (lg.exact_elbo(enc, dec, mu + sigma) +
                lg.exact_elbo(enc, dec, mu - sigma))


def test_optimal_params_reach_the_optimal_expected_elbo():
  mu, sigma = jnp.array([0.5, -1.0, 2.0]), 1.3
  optimum = float(lg.optimal_expected_elbo(D, sigma))
  for s in (0.05, 0.6, 1.25):
    enc, dec = lg.optimal_params(mu, sigma, s)
    np.testing.assert_allclose(_expected_exact_elbo(enc, dec, mu, sigma),
                               optimum, rtol=1e-12)
    np.testing.assert_allclose(lg.expected_log_marginal(dec, mu, sigma),
                               optimum, rtol=1e-12)
  # Any perturbation of the parameters lowers the expected ELBO.
  enc, dec = lg.optimal_params(mu, sigma, 0.6)
  for params, name in ((enc, "a"), (enc, "b"), (enc, "log_t"), (dec, "c"),
                       (dec, "v"), (dec, "log_s")):
    for step in (-0.05, 0.05):
      old = params[name]
      params[name] = old + step
      assert float(_expected_exact_elbo(enc, dec, mu, sigma)) < optimum - 1e-5
      params[name] = old
  # The Gauss–Hermite helper is itself right: compare with Monte Carlo.
  x = _data(9, mu, sigma, 100_000)
  enc_r, dec_r = _model(9)
  values = np.asarray(lg.exact_elbo(enc_r, dec_r, x))
  se = values.std(ddof=1) / np.sqrt(len(values))
  assert abs(values.mean() - float(_expected_exact_elbo(
      enc_r, dec_r, mu, sigma))) < 4 * se


def test_optimal_params_tend_to_the_trivial_solution():
  mu, sigma = jnp.array([0.5, -1.0, 2.0]), 1.3
  x = _data(1, mu, sigma, 8)
  enc, dec = lg.optimal_params(mu, sigma, 1e-6)
  mean, log_var = lg.encoder_apply(enc, x)
  np.testing.assert_allclose(mean, lg.trivial_encode(x, mu, sigma), atol=1e-9)
  np.testing.assert_allclose(np.exp(0.5 * log_var), 1e-6 / sigma, rtol=1e-9)
  np.testing.assert_allclose(lg.decoder_mean(dec, mean),
                             lg.trivial_decode(mean, mu, sigma), atol=1e-9)


def test_trivial_encode_and_decode_invert_each_other():
  mu, sigma = jnp.array([0.5, -1.0, 2.0]), 1.3
  x = _data(2, mu, sigma, 50_000)
  z = lg.trivial_encode(x, mu, sigma)
  np.testing.assert_allclose(lg.trivial_decode(z, mu, sigma), x, rtol=1e-12,
                             atol=1e-12)
  np.testing.assert_allclose(lg.trivial_encode(lg.trivial_decode(z, mu, sigma),
                                               mu, sigma), z, atol=1e-12)
  # It maps the data distribution onto the prior N(0, I): 4-SE moment checks.
  n = x.shape[0]
  np.testing.assert_array_less(np.abs(z.mean(0)), 4 / np.sqrt(n))
  np.testing.assert_array_less(np.abs(z.var(0) - 1), 4 * np.sqrt(2 / n))


def test_init_params_and_sample_data_shapes():
  enc, dec = lg.init_params(jax.random.key(0), 5)
  assert set(enc) == {"a", "b", "log_t"} and set(dec) == {"c", "v", "log_s"}
  assert all(v.shape == (5,) for v in (*enc.values(), *dec.values()))
  x = lg.sample_data(jax.random.key(1), jnp.arange(5.0), 2.0, 20_000)
  assert x.shape == (20_000, 5)
  # Moments of N(μ, σ² I) within 4 standard errors.
  n = x.shape[0]
  np.testing.assert_array_less(np.abs(x.mean(0) - np.arange(5.0)),
                               4 * 2.0 / np.sqrt(n))
  np.testing.assert_array_less(np.abs(x.var(0) - 4.0), 4 * 4.0 * np.sqrt(2 / n))
  x = x[:7]
  mean, log_var = lg.encoder_apply(enc, x)
  assert mean.shape == log_var.shape == (7, 5)
  assert lg.exact_elbo(enc, dec, x).shape == (7,)
