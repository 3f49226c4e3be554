"""Gradient estimators against the closed forms of the §3 linear-Gaussian model.

Every statistical check uses a fixed seed and a tolerance from the standard
error, and each has a counterpart showing the same check rejects a wrong
answer (a biased estimator, a wrong variance), so none can pass vacuously.

Ground truth for the importance-weighted bound at the exact posterior:
when q(z|x) = p_θ(z|x), every weight w_k = p(x, z_k)/q(z_k|x) equals p_θ(x),
so L_K = log p_θ(x) for every draw and every K. (i) φ: L_K ≤ log p_θ(x) for
every φ with equality here, so φ maximizes E[L_K] and ∇φ E[L_K] = 0 =
∇φ ELBO. (ii) θ: ∇θ L_K = Σ_k w̃_k ∇θ log p_θ(x, z_k) with w̃_k = 1/K, whose
expectation E_q[∇θ log p_θ(x, z)] is ∇θ ELBO at fixed φ. Hence
∇E[L_K] = ∇ELBO there, which `exact_gradient` gives in closed form.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.core import estimators as E
from vae_jax.core import gradient_stats as S
from vae_jax.core import linear_gaussian as lg
from vae_jax.core import objectives
from vae_jax.core.distributions import diag_gaussian_log_prob, std_normal_log_prob

D, BATCH = 3, 4
MU = jnp.array([0.5, -1.0, 2.0])
SIGMA = 1.3
# Bonferroni-style bound for |z| over ~20 parameters: P(max |z| > 4.5) ≈ 1e-4.
Z_MAX = 4.5


def _x():
  return lg.sample_data(jax.random.PRNGKey(1), MU, SIGMA, BATCH)


def _init_params():
  enc, dec = lg.init_params(jax.random.PRNGKey(0), D)
  return E.linear_gaussian_params(enc, dec)


def _posterior_params():
  """A decoder away from the data optimum and q = its exact posterior."""
  enc, dec = lg.optimal_params(MU, SIGMA, 0.6)
  dec = dict(dec, v=dec["v"] + 0.3, c=1.2 * dec["c"])
  c, v, s2 = dec["c"], dec["v"], jnp.exp(2 * dec["log_s"])
  enc = {"a": c / (c**2 + s2), "b": -c * v / (c**2 + s2),
         "log_t": 0.5 * jnp.log(s2 / (c**2 + s2))}
  return E.linear_gaussian_params(enc, dec)


MODEL = E.LinearGaussianModel()


@functools.lru_cache(maxsize=None)
def _moments(name, state, num_samples, num_replicates, seed=3, chunk=1000):
  params = _init_params() if state == "init" else _posterior_params()
  estimator = E.get_estimator(name, MODEL, num_samples)
  fn = jax.jit(functools.partial(E.replicate_moments, estimator,
                                 num_replicates=num_replicates,
                                 chunk_size=chunk))
  return fn(params, jax.random.PRNGKey(seed), _x())


@functools.lru_cache(maxsize=None)
def _truth(state):
  params = _init_params() if state == "init" else _posterior_params()
  return jax.jit(lambda p, x: E.flatten_split(E.exact_gradient(p, x)))(
      params, _x())


def _max_abs_z(moments, truth, atol=0.0):
  return float(jnp.max(jnp.abs(S.bias_z_scores(moments, truth, atol))))


def _two_sample_z(a, b):
  se = jnp.sqrt(a.variance / a.count + b.variance / b.count)
  return (a.mean - b.mean) / se


# ---------------------------------------------------------------------------
# Closed forms.


def test_exact_posterior_fixture_is_the_posterior():
  params, x = _posterior_params(), _x()
  q = MODEL.posterior(params, x)
  p = lg.exact_posterior(params["decoder"], x)
  np.testing.assert_allclose(q.mean, p.mean, atol=1e-5)
  np.testing.assert_allclose(q.log_var, p.log_var, atol=1e-5)


@pytest.mark.parametrize("name", S.PATHWISE_CLOSED_FORM)
def test_closed_form_mean_is_the_exact_gradient(name):
  # The mean A + C of the quadratic-in-ε derivation must equal jax.grad of
  # the closed-form ELBO: checks the derivation itself.
  params, x = _init_params(), _x()
  mean, _ = jax.jit(S.linear_gaussian_gradient_moments,
                    static_argnums=(2, 3))(params, x, name, 3)
  exact = jax.jit(E.exact_gradient)(params, x)
  for got, want in zip(jax.tree.leaves(mean), jax.tree.leaves(exact)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", S.PATHWISE_CLOSED_FORM)
def test_pathwise_variance_matches_closed_form(name):
  params, x, m = _init_params(), _x(), 3
  reps = jax.jit(lambda p, k: E.replicate_gradients(
      E.get_estimator(name, MODEL, m), p, k, x, 4000, 1000))(
          params, jax.random.PRNGKey(2))
  samples = jnp.concatenate(jax.vmap(E.flatten_split)(reps), axis=1)
  empirical = jnp.var(samples, axis=0, ddof=1)
  se = S.variance_standard_error(samples)
  _, var = S.linear_gaussian_gradient_moments(params, x, name, m)
  closed = jnp.concatenate(E.flatten_split(var))
  assert float(jnp.max(jnp.abs(empirical - closed) / se)) < Z_MAX
  # The check can fail: the closed form for the wrong M is rejected.
  _, wrong = S.linear_gaussian_gradient_moments(params, x, name, m + 1)
  wrong = jnp.concatenate(E.flatten_split(wrong))
  assert float(jnp.max(jnp.abs(empirical - wrong) / se)) > 2 * Z_MAX


def test_stl_and_dreg_have_zero_encoder_variance_at_the_exact_posterior():
  params, x = _posterior_params(), _x()
  _, var = S.linear_gaussian_gradient_moments(params, x, "stl", 5)
  encoder_var = jnp.concatenate(jax.tree.leaves(var["encoder"]))
  assert float(jnp.max(encoder_var)) < 1e-10
  for name in ("stl", "iwae_dreg", "iwae_stl"):
    enc, _ = _moments(name, "posterior", 5, 1000)
    assert float(jnp.sum(enc.variance)) < 1e-9, name
    assert float(jnp.max(jnp.abs(enc.mean))) < 1e-4, name
  # ... while the analytic-KL pathwise estimator's is far from zero, in
  # closed form and measured.
  _, var = S.linear_gaussian_gradient_moments(params, x,
                                              "reparam_analytic_kl", 5)
  closed = float(sum(jnp.sum(v) for v in jax.tree.leaves(var["encoder"])))
  enc, _ = _moments("reparam_analytic_kl", "posterior", 5, 1000)
  assert closed > 0.1
  np.testing.assert_allclose(float(jnp.sum(enc.variance)), closed, rtol=0.2)


# ---------------------------------------------------------------------------
# Unbiasedness.


@pytest.mark.parametrize("name", sorted(E.ELBO_ESTIMATORS))
def test_elbo_estimators_are_unbiased(name):
  enc, dec = _moments(name, "init", 3, 20_000)
  truth_phi, truth_theta = _truth("init")
  assert _max_abs_z(enc, truth_phi) < Z_MAX
  assert _max_abs_z(dec, truth_theta) < Z_MAX


def test_unbiasedness_check_rejects_the_papers_eq9_alone():
  """Eq 8–9 taken literally, −(1/M) Σ ∇φ log q, has mean zero: biased."""
  def eq9(params, key, x, *, model, num_samples):
    def surrogate(p):
      q = model.posterior(p, x)
      z = jax.lax.stop_gradient(objectives.reparam(key, q, num_samples))
      log_q = diag_gaussian_log_prob(z, q.mean, q.log_var)
      log_joint = (jax.vmap(model.log_likelihood_fn(p, x))(z) +
                   std_normal_log_prob(z))
      return jnp.mean(log_joint - log_q)
    return jax.grad(surrogate)(params)

  estimator = functools.partial(eq9, model=MODEL, num_samples=3)
  enc, _ = jax.jit(functools.partial(
      E.replicate_moments, estimator, num_replicates=4000,
      chunk_size=1000))(_init_params(), jax.random.PRNGKey(3), _x())
  assert _max_abs_z(enc, _truth("init")[0]) > 10 * Z_MAX


@pytest.mark.parametrize("name", sorted(E.IWAE_ESTIMATORS))
def test_iwae_estimators_are_unbiased_at_the_exact_posterior(name):
  # ∇E[L_K] = ∇ELBO at q = p(z|x) (module docstring). STL and DReG have
  # zero φ-variance there, so round-off sets the tolerance.
  enc, dec = _moments(name, "posterior", 5, 4000)
  truth_phi, truth_theta = _truth("posterior")
  assert _max_abs_z(enc, truth_phi, atol=1e-5) < Z_MAX
  assert _max_abs_z(dec, truth_theta) < Z_MAX


def test_dreg_matches_iwae_reparam_and_iwae_stl_is_biased():
  """Away from the posterior, with K = 10: DReG and the pathwise L_K gradient
  agree (both unbiased), STL on L_K does not (Tucker et al. 2019, §3)."""
  k, r = 10, 4000
  reparam_enc, reparam_dec = _moments("iwae_reparam", "init", k, r)
  dreg_enc, dreg_dec = _moments("iwae_dreg", "init", k, r, seed=4)
  stl_enc, stl_dec = _moments("iwae_stl", "init", k, r, seed=5)
  assert float(jnp.max(jnp.abs(_two_sample_z(dreg_enc, reparam_enc)))) < Z_MAX
  assert float(jnp.max(jnp.abs(_two_sample_z(dreg_dec, reparam_dec)))) < Z_MAX
  assert float(jnp.max(jnp.abs(_two_sample_z(stl_enc, reparam_enc)))) > 20
  # Its θ-gradient is the usual one (log q does not depend on θ).
  assert float(jnp.max(jnp.abs(_two_sample_z(stl_dec, reparam_dec)))) < Z_MAX
  # And DReG has lower encoder variance than the pathwise estimator.
  assert (float(jnp.sum(dreg_enc.variance)) <
          float(jnp.sum(reparam_enc.variance)))


def test_iwae_estimators_reduce_to_elbo_estimators_at_k1():
  params, x, key = _init_params(), _x(), jax.random.PRNGKey(7)
  pairs = (("iwae_reparam", "reparam_mc_kl"), ("iwae_stl", "stl"),
           ("iwae_dreg", "stl"))
  for iwae, elbo in pairs:
    got = jax.jit(E.get_estimator(iwae, MODEL, 1))(params, key, x)
    want = jax.jit(E.get_estimator(elbo, MODEL, 1))(params, key, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_variance_ordering_on_the_linear_model():
  # The score function is far noisier than the pathwise estimator, and the
  # leave-one-out baseline removes much of the gap.
  trace = lambda n: float(jnp.sum(_moments(n, "init", 3, 20_000)[0].variance))
  reparam, sf, loo = (trace("reparam_analytic_kl"), trace("score_function"),
                      trace("score_function_loo"))
  assert sf > 10 * reparam
  assert reparam < loo < sf / 2


# ---------------------------------------------------------------------------
# Machinery: replicates, moments, the VAE, statistics.


def test_replicate_moments_match_replicate_gradients():
  params, x, key = _init_params(), _x(), jax.random.PRNGKey(9)
  estimator = E.get_estimator("score_function_loo", MODEL, 2)
  reps = jax.jit(lambda p, k: E.replicate_gradients(
      estimator, p, k, x, 250, chunk_size=64))(params, key)
  phi, theta = jax.vmap(E.flatten_split)(reps)
  for chunk in (64, 250):  # 64 leaves a ragged last chunk of 58
    enc, dec = jax.jit(lambda p, k, c=chunk: E.replicate_moments(
        estimator, p, k, x, 250, c))(params, key)
    for moments, samples in ((enc, phi), (dec, theta)):
      assert float(moments.count) == 250
      np.testing.assert_allclose(moments.mean, samples.mean(0), rtol=1e-4,
                                 atol=1e-5)
      np.testing.assert_allclose(moments.variance, samples.var(0, ddof=1),
                                 rtol=1e-3)
  # Replicates are independent draws, not copies.
  assert float(jnp.min(jnp.var(phi, axis=0))) > 0


def test_argument_checks():
  with pytest.raises(ValueError, match="num_samples >= 2"):
    E.get_estimator("score_function_loo", MODEL, 1)
  with pytest.raises(ValueError, match="unknown estimator"):
    E.get_estimator("nope", MODEL, 1)
  with pytest.raises(ValueError, match="num_replicates"):
    E.replicate_gradients(E.get_estimator("stl", MODEL, 1), _init_params(),
                          jax.random.PRNGKey(0), _x(), 1)


def test_estimators_run_on_a_flax_vae_with_learned_sigma():
  from vae_jax.models.networks import make_networks  # pylint: disable=g-import-not-at-top
  from vae_jax.models.vae import VAE  # pylint: disable=g-import-not-at-top
  enc, dec = make_networks("mlp", 2, (5,), hidden=(4,))
  vae = VAE(enc, dec, (5,), 2, "gaussian", "learned", 0.5)
  params = vae.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 5))
  # One compiled program for all estimators (compiling each is slower).
  all_grads = jax.jit(lambda p, k: {
      name: E.get_estimator(name, vae, 4)(p, k, x) for name in E.ESTIMATORS})(
          params, jax.random.PRNGKey(2))
  for name, grads in all_grads.items():
    assert jax.tree.structure(grads) == jax.tree.structure(params), name
    phi, theta = E.flatten_split(grads)
    assert phi.size == E.flatten_split(params)[0].size
    assert bool(jnp.all(jnp.isfinite(phi)) & jnp.all(jnp.isfinite(theta)))
    # σ_dec is a θ parameter and gets a gradient.
    assert float(jnp.abs(grads["log_sigma_dec"])) > 0, name
  # The analytic-KL pathwise gradient is the gradient of vae.elbo.
  key = jax.random.PRNGKey(3)
  want = jax.jit(jax.grad(lambda p: jnp.mean(vae.elbo(p, key, x, 4).elbo)))(
      params)
  got = jax.jit(E.get_estimator("reparam_analytic_kl", vae, 4))(params, key, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_moment_merging_and_variance_standard_error():
  rng = np.random.default_rng(0)
  samples = jnp.asarray(rng.normal(3.0, 2.0, size=(3000, 4)), jnp.float32)
  merged = S.combine_moments(S.moments_from_samples(samples[:1000]),
                             S.moments_from_samples(samples[1000:]))
  whole = S.moments_from_samples(samples)
  np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-5)
  np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-4)
  # Gaussian draws: SE(s²) = σ² √(2/(n − 1)).
  np.testing.assert_allclose(S.variance_standard_error(samples),
                             4.0 * np.sqrt(2 / 2999), rtol=0.1)


def test_snr_summaries_and_slope():
  moments = S.Moments(jnp.asarray(100.0), jnp.array([1.0, -3.0, 0.0]),
                      jnp.array([99.0, 99.0 * 4, 0.0]))  # std 1, 2, 0
  mean_of_ratios, ratio_of_means = S.snr(moments)
  assert float(mean_of_ratios) == pytest.approx((1 / 1 + 3 / 2) / 2)
  assert float(ratio_of_means) == pytest.approx((4 / 3) / (3 / 3))
  stats = S.summarize(moments, truth=jnp.array([1.0, -3.0, 0.0]))
  assert stats["bias_norm"] == 0 and stats["bias_max_abs_z"] == 0
  assert stats["var_trace"] == pytest.approx(5.0)
  # With zero signal the plain SNR sits at its noise floor √(2/(πR)); the
  # debiased SNR does not, and it recovers a known signal of 0.5.
  rng = np.random.default_rng(1)
  noise = S.moments_from_samples(jnp.asarray(rng.normal(size=(4000, 300)),
                                             jnp.float32))
  floor = S.snr_noise_floor(4000)
  assert float(S.snr(noise)[0]) == pytest.approx(floor, rel=0.15)
  assert float(S.snr_debiased(noise)) < floor / 2
  signal = S.moments_from_samples(jnp.asarray(
      rng.normal(0.5, 1.0, size=(4000, 300)), jnp.float32))
  assert float(S.snr_debiased(signal)) == pytest.approx(0.5, abs=0.02)
  m = np.array([1.0, 10.0, 100.0, 1000.0])
  slope, se = S.loglog_slope(m, 3.0 / m)
  assert slope == pytest.approx(-1.0, abs=1e-5) and se < 1e-4


@pytest.mark.parametrize("rows", [1, 2, 7, 10, 33])
def test_sum_rows_and_moments_match_float64_numpy(rows):
  """The halving sum covers every row exactly once, for odd and even R."""
  rng = np.random.default_rng(rows)
  a = rng.normal(5.0, 2.0, size=(rows, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(S.sum_rows(jnp.asarray(a)),
                             a.astype(np.float64).sum(axis=0), rtol=1e-5)
  flat = a.reshape(rows, -1).astype(np.float64)
  moments = jax.jit(S.moments_from_samples)(jnp.asarray(a.reshape(rows, -1)))
  assert float(moments.count) == rows
  np.testing.assert_allclose(moments.mean, flat.mean(axis=0), rtol=1e-5)
  np.testing.assert_allclose(moments.m2, ((flat - flat.mean(0))**2).sum(0),
                             rtol=2e-4, atol=1e-5)


def test_encoder_gradients_are_exact_when_sigma_is_far_below_the_mean():
  """At μ = 300, σ = e^-10 = 4.5e-5 (float32 ulp of 300: 3.1e-5), z − μ
  rounds σ ε away, and a log q written with it gives STL's ∇z log q = −ε/σ
  and the score ∂ log q/∂μ = ε/σ off by tens of percent. Computed from ε
  they match float64 closed forms on the same ε:
    STL:   mean_{m,b} g_z ∂z/∂φ, g_z = c(x − cz − v)/s² − z + ε/σ,
    score: mean_{m,b} (f − 1) ∂ log q/∂φ, with ∂ log q/∂μ = ε/σ and
           ∂ log q/∂ log t = ε² − 1,
  ∂μ/∂a = x, ∂μ/∂b = 1, ∂z/∂log t = σ ε (a, b, log t per dimension)."""
  M = 5
  ones = jnp.ones(D, jnp.float32)
  params = E.linear_gaussian_params(
      {"a": 0.01 * ones, "b": 300.0 * ones, "log_t": -10.0 * ones},
      {"c": 0.02 * ones, "v": 0.1 * ones, "log_s": 0.0 * ones})
  x = np.asarray(_x(), np.float64)
  key = jax.random.PRNGKey(5)
  eps = np.asarray(objectives.sample_noise(key, jnp.arange(M), x.shape),
                   np.float64)
  t, c, v = np.exp(-10.0), 0.02, 0.1
  mu = 0.01 * x + 300.0
  z = mu + t * eps
  log_2pi = np.log(2 * np.pi)

  def per_param(g_mu, g_log_t):  # [M, B, D] each -> encoder gradient
    return {"a": np.mean(g_mu * x, axis=(0, 1)), "b": np.mean(g_mu,
                                                              axis=(0, 1)),
            "log_t": np.mean(g_log_t, axis=(0, 1))}

  g_z = c * (x - c * z - v) - z + eps / t
  want_stl = per_param(g_z, g_z * t * eps)
  log_lik = -0.5 * np.sum((x - c * z - v)**2 + log_2pi, axis=-1)
  log_q = -0.5 * np.sum(eps**2 - 20.0 + log_2pi, axis=-1)
  f = (log_lik - 0.5 * np.sum(z**2 + log_2pi, axis=-1) - log_q)[..., None]
  want_score = per_param((f - 1) * eps / t, (f - 1) * (eps**2 - 1))

  for name, want in (("stl", want_stl), ("score_function", want_score)):
    got = E.ESTIMATORS[name](params, key, jnp.asarray(x, jnp.float32),
                             model=MODEL, num_samples=M)["encoder"]
    for k in want:
      np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=2e-4,
                                 atol=1e-3 * np.max(np.abs(want[k])),
                                 err_msg=f"{name}/{k}")
