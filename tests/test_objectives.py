"""encode / reparam / elbo / IWAE (paper §4–6) on the linear-Gaussian model,
where log p(x), the posterior and the ELBO are known in closed form.

Statistical checks use fixed seeds and a tolerance of 4 standard errors
estimated from the same samples; each also checks that its standard error is
small enough for the comparison to mean something.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.core import distributions as dist
from vae_jax.core import linear_gaussian as lg
from vae_jax.core import objectives as obj

pytestmark = pytest.mark.usefixtures("x64")

D = 3


def _key(seed):
  """Key for the statistical tests. Any key works with the core; the "rbg"
  generator's programs compile about 0.4 s faster each than the default
  threefry's on CPU, which keeps this file fast. The composition tests (and
  tests/test_core_multidevice.py) use the default generator."""
  return jax.random.key(seed, impl="rbg")


def _model(seed=0, batch=4, d=D):
  enc, dec = lg.init_params(jax.random.key(seed), d)
  x = np.random.default_rng(seed).normal(scale=1.5, size=(batch, d))
  return enc, dec, jnp.asarray(x)


def _exact_posterior_encoder(dec, db=0.0, dlog_t=0.0):
  """Encoder parameters with q = p_θ(z|x), shifted by (db, dlog_t)."""
  c, v, log_s = dec["c"], dec["v"], dec["log_s"]
  var = c**2 + jnp.exp(2 * log_s)
  a = c / var
  return {"a": a, "b": -a * v + db,
          "log_t": log_s - 0.5 * jnp.log(var) + dlog_t}


def _decoder(dec, x):
  return lambda z: lg.log_likelihood(dec, x, z)


# Jitted entry points, defined once so that tests with the same shapes share
# one compilation (a plain call compiles every primitive separately, about a
# second per new shape). test_plain_and_jit_give_the_same_numbers checks that
# jit changes no number.
@functools.partial(jax.jit, static_argnames=("num_samples",))
def _bounds(key, enc, dec, x, num_samples):
  """Every estimator on the same key, hence on the same samples."""
  q = obj.encode(lg.encoder_apply, enc, x)
  loglik = _decoder(dec, x)
  return {
      "analytic": obj.elbo(key, q, loglik, num_samples, analytic_kl=True),
      "mc": obj.elbo(key, q, loglik, num_samples, analytic_kl=False),
      "terms": obj.sample_terms(key, q, loglik, num_samples),
      "iwae": obj.iwae_bound(key, q, loglik, num_samples),
  }


_LADDER = (1, 10, 100, 1000)


@jax.jit
def _iwae_ladder(key, enc, dec, x):
  """{K: L_K} for K in _LADDER, independent samples (fold_in(key, i)) per K."""
  q = obj.encode(lg.encoder_apply, enc, x)
  return {k: obj.iwae_bound(jax.random.fold_in(key, i), q, _decoder(dec, x), k)
          for i, k in enumerate(_LADDER)}


@functools.partial(jax.jit, static_argnames=("num_samples", "chunk_size"))
def _iwae_chunked(key, enc, dec, x, num_samples, chunk_size):
  q = obj.encode(lg.encoder_apply, enc, x)
  return obj.iwae_bound_chunked(key, q, _decoder(dec, x), num_samples,
                                chunk_size)


def _se(samples, axis=0):
  n = samples.shape[axis]
  return np.std(samples, axis=axis, ddof=1) / np.sqrt(n)


# --- encode and reparam ----------------------------------------------------


def test_encode_accepts_a_pair_or_a_concatenated_output():
  enc, _, x = _model()
  q = obj.encode(lg.encoder_apply, enc, x)
  mean, log_var = lg.encoder_apply(enc, x)
  np.testing.assert_array_equal(q.mean, mean)
  np.testing.assert_array_equal(q.log_var, log_var)
  q2 = obj.encode(lambda p, xx: jnp.concatenate(lg.encoder_apply(p, xx), -1),
                  enc, x)
  np.testing.assert_array_equal(q2.mean, mean)
  np.testing.assert_array_equal(q2.log_var, log_var)


def test_reparam_shape_contract():
  key = jax.random.key(0)

  def shape(num_samples, dtype=jnp.float64):
    q = dist.DiagGaussian(jnp.zeros((5, 2), dtype), jnp.zeros((5, 2), dtype))
    return jax.eval_shape(lambda k: obj.reparam(k, q, num_samples), key)

  assert shape(None).shape == (5, 2)
  assert shape(7).shape == (7, 5, 2)
  assert shape(1).shape == (1, 5, 2)
  assert shape(None).dtype == jnp.float64
  assert shape(3, jnp.float32).dtype == jnp.float32


def test_reparam_samples_have_the_posterior_mean_and_covariance():
  rng = np.random.default_rng(0)
  mean, log_var = rng.normal(size=(2, 2, 3))  # [B, L]
  m = 100_000
  z = np.asarray(obj.reparam(_key(1), dist.DiagGaussian(
      jnp.array(mean), jnp.array(log_var)), m)).reshape(m, 6)
  mean, var = mean.reshape(6), np.exp(log_var).reshape(6)
  # Mean: SE σ/√M. Variance: SE σ²√(2/M) for a Gaussian.
  np.testing.assert_array_less(np.abs(z.mean(0) - mean), 4 * np.sqrt(var / m))
  np.testing.assert_array_less(np.abs(z.var(0, ddof=1) - var),
                               4 * var * np.sqrt(2 / m))
  # Independent coordinates: each correlation has SE ≈ 1/√M.
  corr = np.corrcoef(z, rowvar=False)
  off_diagonal = corr[~np.eye(6, dtype=bool)]
  np.testing.assert_array_less(np.abs(off_diagonal), 4 / np.sqrt(m))


def test_reparam_gradient_of_a_quadratic_is_the_analytic_gradient():
  """f(z) = zᵀAz + bᵀz, z ~ N(μ, diag σ²):  E f = μᵀAμ + Σ_j A_jj σ_j² + bᵀμ,
  so ∇_μ E f = (A + Aᵀ)μ + b and ∂E f/∂ log σ_j² = A_jj σ_j² (§5.3–5.4)."""
  rng = np.random.default_rng(2)
  l, m = 3, 100_000
  a_mat, b_vec = jnp.array(rng.normal(size=(l, l))), jnp.array(
      rng.normal(size=l))
  mean, log_var = jnp.array(rng.normal(size=l)), jnp.array(rng.normal(size=l))
  key = _key(3)

  def per_sample_f(mean, log_var):  # -> [M]
    z = obj.reparam(key, dist.DiagGaussian(mean, log_var), m)
    return jnp.einsum("mi,ij,mj->m", z, a_mat, z) + z @ b_vec

  # Per-sample gradients [M, L] by forward mode, to get standard errors.
  jac_mean, jac_log_var = jax.jacfwd(per_sample_f, argnums=(0, 1))(mean,
                                                                   log_var)
  grad_mean, grad_log_var = jax.grad(
      lambda mu, lv: jnp.mean(per_sample_f(mu, lv)), argnums=(0, 1))(mean,
                                                                     log_var)
  np.testing.assert_allclose(grad_mean, jac_mean.mean(0), rtol=1e-10)
  np.testing.assert_allclose(grad_log_var, jac_log_var.mean(0), rtol=1e-10)

  exact_mean = (a_mat + a_mat.T) @ mean + b_vec
  exact_log_var = jnp.diag(a_mat) * jnp.exp(log_var)
  se_mean, se_log_var = _se(np.asarray(jac_mean)), _se(np.asarray(jac_log_var))
  np.testing.assert_array_less(np.abs(grad_mean - exact_mean), 4 * se_mean)
  np.testing.assert_array_less(np.abs(grad_log_var - exact_log_var),
                               4 * se_log_var)
  assert np.all(4 * se_mean < 0.1) and np.all(4 * se_log_var < 0.1)


# --- the ELBO: Thm 1.1 and Thm 1.2 -------------------------------------------

M_LARGE = 20_000


def test_elbo_forms_agree_with_each_other_and_the_closed_form():
  """Thm 1.2: E_q[log p(x|z)] − KL(q‖p(z)) (analytic KL) and the pure Monte
  Carlo form of eq 1 have the same expectation, the closed-form ELBO of §3."""
  enc, dec, x = _model(batch=8)
  out = _bounds(_key(4), enc, dec, x, M_LARGE)
  analytic, monte_carlo, terms = out["analytic"], out["mc"], out["terms"]
  q = obj.encode(lg.encoder_apply, enc, x)
  exact = np.asarray(lg.exact_elbo(enc, dec, x))
  assert analytic.elbo.shape == monte_carlo.elbo.shape == (8,)

  # Bookkeeping: elbo = reconstruction − kl, built from sample_terms.
  for terms_out in (analytic, monte_carlo):
    np.testing.assert_allclose(terms_out.elbo,
                               terms_out.reconstruction - terms_out.kl,
                               rtol=1e-12)
  np.testing.assert_allclose(analytic.reconstruction,
                             np.mean(terms.log_likelihood, 0), rtol=1e-12)
  np.testing.assert_allclose(monte_carlo.elbo, np.mean(terms.log_weights, 0),
                             rtol=1e-12)
  np.testing.assert_allclose(analytic.kl,
                             dist.kl_diag_to_std_normal(q.mean, q.log_var),
                             rtol=1e-12)

  se_analytic = _se(np.asarray(terms.log_likelihood))
  se_mc = _se(np.asarray(terms.log_weights))
  se_kl = _se(np.asarray(terms.log_posterior - terms.log_prior))
  np.testing.assert_array_less(np.abs(analytic.elbo - exact), 4 * se_analytic)
  np.testing.assert_array_less(np.abs(monte_carlo.elbo - exact), 4 * se_mc)
  # On the same samples the two forms differ only by the KL estimate.
  np.testing.assert_array_less(np.abs(analytic.elbo - monte_carlo.elbo),
                               4 * se_kl)
  np.testing.assert_array_less(np.abs(monte_carlo.kl - analytic.kl), 4 * se_kl)
  # Power: the noise is small next to the Thm 1.1 gap log p(x) − ELBO.
  gap = np.asarray(lg.log_marginal(dec, x)) - exact
  assert np.all(4 * se_mc < 0.1 * gap)


def test_elbo_is_below_log_marginal_and_tight_at_the_exact_posterior():
  enc, dec, x = _model(seed=5, batch=8)
  log_px = np.asarray(lg.log_marginal(dec, x))
  terms = _bounds(_key(6), enc, dec, x, M_LARGE)["terms"]
  estimate = np.mean(terms.log_weights, 0)
  se = _se(np.asarray(terms.log_weights))
  # Thm 1.1: the gap is KL(q ‖ p(z|x)) > 0, here far beyond the noise.
  assert np.all(estimate < log_px - 4 * se)

  # At q = p(z|x) every log-weight log p(x,z) − log q(z|x) equals log p(x),
  # so the pure Monte Carlo ELBO has zero variance.
  out = _bounds(_key(6), _exact_posterior_encoder(dec), dec, x, 100)
  np.testing.assert_allclose(out["terms"].log_weights,
                             np.broadcast_to(log_px, (100, 8)), rtol=1e-12)
  np.testing.assert_allclose(out["mc"].elbo, log_px, rtol=1e-12)


def test_reparam_elbo_gradient_is_unbiased_for_the_exact_gradient():
  """§5.4: ∇ of the M-sample Monte Carlo ELBO is unbiased for ∇ ELBO; the
  exact gradient is jax.grad of the closed form. R independent replicates."""
  enc, dec, x = _model(seed=7, batch=2)
  params = (enc, dec)
  exact = jax.grad(lambda p: lg.exact_elbo(*p, x).sum())(params)

  def estimate(key, p):  # both forms of the ELBO, summed over the batch
    q = obj.encode(lg.encoder_apply, p[0], x)
    return {form: obj.elbo(key, q, _decoder(p[1], x), 100,
                           analytic_kl=form == "analytic").elbo.sum()
            for form in ("analytic", "mc")}

  keys = jax.random.split(_key(8), 500)
  grads = jax.jit(jax.vmap(jax.jacrev(estimate, argnums=1),
                           in_axes=(0, None)))(keys, params)
  for form in ("analytic", "mc"):
    for g, e in zip(jax.tree.leaves(grads[form]), jax.tree.leaves(exact)):
      g = np.asarray(g)
      se = _se(g)
      np.testing.assert_array_less(np.abs(g.mean(0) - e), 4 * se + 1e-12)
      assert np.all(4 * se < 0.2 * np.maximum(np.abs(e), 1.0))


# --- the importance-weighted bound -----------------------------------------


def test_iwae_with_one_sample_is_the_monte_carlo_elbo():
  enc, dec, x = _model(batch=8)
  for seed in range(3):
    out = _bounds(_key(seed), enc, dec, x, 1)
    np.testing.assert_allclose(out["iwae"], out["mc"].elbo, rtol=1e-12)


def test_iwae_bound_rises_with_k():
  """L_1 ≤ L_10 ≤ L_100 ≤ L_1000 ≤ log p(x), each step beyond 4 SE of the
  batch mean of the per-example increments (independent samples per K)."""
  _, dec, x = _model(batch=256)
  # A too-narrow, shifted encoder: L_K converges slowly, so every step shows.
  enc = _exact_posterior_encoder(dec, db=0.8, dlog_t=-0.3)
  log_px = lg.log_marginal(dec, x)
  bounds = _iwae_ladder(_key(10), enc, dec, x)
  for k_small, k_big in zip(_LADDER[:-1], _LADDER[1:]):
    rise = np.asarray(bounds[k_big] - bounds[k_small])
    assert rise.mean() > 4 * _se(rise), (k_small, k_big, rise.mean())
  gap = np.asarray(log_px - bounds[1000])
  assert gap.mean() > -4 * _se(gap)  # still a lower bound
  # E L_1 is the ELBO.
  l1_minus_elbo = np.asarray(bounds[1] - lg.exact_elbo(enc, dec, x))
  assert abs(l1_minus_elbo.mean()) < 4 * _se(l1_minus_elbo)


def test_iwae_bound_approaches_log_marginal():
  _, dec, x = _model(batch=256)
  enc = _exact_posterior_encoder(dec, db=0.5, dlog_t=0.5)  # over-dispersed q
  log_px = lg.log_marginal(dec, x)
  bounds = _iwae_ladder(_key(20), enc, dec, x)
  gap_1, gap_1000 = (np.asarray(log_px - bounds[k]) for k in (1, 1000))
  assert gap_1.mean() > 1.0  # the ELBO is far from log p(x) ...
  assert abs(gap_1000.mean()) < 0.02  # ... L_1000 is within 0.02 nats,
  assert gap_1000.mean() > -4 * _se(gap_1000)  # and not above it.


def test_iwae_at_the_exact_posterior_is_log_marginal():
  _, dec, x = _model(batch=8)
  enc = _exact_posterior_encoder(dec)
  log_px = lg.log_marginal(dec, x)
  key = _key(0)
  out = _bounds(key, enc, dec, x, 100)
  assert float(np.max(np.std(out["terms"].log_weights, axis=0))) < 1e-12
  np.testing.assert_allclose(out["iwae"], log_px, rtol=1e-12)
  np.testing.assert_allclose(_bounds(key, enc, dec, x, 1)["iwae"], log_px,
                             rtol=1e-12)
  np.testing.assert_allclose(_iwae_chunked(key, enc, dec, x, 100, 20), log_px,
                             rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 20, 30, 50, 100])
def test_iwae_chunked_equals_iwae_bound_on_the_same_key(chunk):
  """Chunk i draws samples i·c ... of the same stream as iwae_bound, so the
  values agree to float64 rounding for any chunk size, dividing K or not.
  (Default threefry keys: an "rbg" key's vmapped draws depend on the batch.)"""
  enc, dec, x = _model(batch=8)
  key, k = jax.random.key(3), 100
  np.testing.assert_allclose(_iwae_chunked(key, enc, dec, x, k, chunk),
                             _bounds(key, enc, dec, x, k)["iwae"], rtol=1e-12)
  # A different key gives a different value: the check can fail.
  assert not np.allclose(_iwae_chunked(jax.random.key(4), enc, dec, x, k, chunk),
                         _bounds(key, enc, dec, x, k)["iwae"], rtol=1e-6)


def test_iwae_chunked_memory_does_not_jump_when_k_is_two_chunks():
  """K = 2c once compiled to two same-shape chunks side by side (a one-step
  scan that XLA inlines), with 16x the temporary memory of K = 3c. Memory
  is XLA's own figure for the compiled program, not a timing."""
  from vae_jax.models.networks import make_networks  # pylint: disable=g-import-not-at-top
  from vae_jax.models.vae import VAE  # pylint: disable=g-import-not-at-top
  encoder, decoder = make_networks("mlp", 8, (64,), hidden=(32,))
  model = VAE(encoder, decoder, (64,), 8, "bernoulli")
  params = model.init(jax.random.key(0))
  x = jnp.zeros((32, 64), jnp.float32)

  def temp_bytes(k):
    f = jax.jit(functools.partial(model.iwae, num_samples=k, chunk_size=50))
    compiled = f.lower(params, jax.random.key(1), x).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(100) <= 1.5 * temp_bytes(150)


def test_sample_m_does_not_depend_on_how_many_are_drawn_with_it():
  enc, _, x = _model()
  q = obj.encode(lg.encoder_apply, enc, x)
  key = jax.random.key(5)
  z7 = obj.reparam(key, q, 7)
  np.testing.assert_array_equal(obj.reparam(key, q, 3), z7[:3])
  np.testing.assert_array_equal(obj.reparam(key, q, 4, first_sample=3), z7[3:])
  eps = (z7 - q.mean) * jnp.exp(-0.5 * q.log_var)
  np.testing.assert_allclose(
      eps[5], jax.random.normal(jax.random.fold_in(key, 5), q.mean.shape),
      rtol=1e-12)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_in_chunks_equals_the_elbo_decoded_at_once(analytic_kl):
  enc, dec, x = _model(batch=5)
  q = obj.encode(lg.encoder_apply, enc, x)
  key = jax.random.key(6)
  f = jax.jit(lambda c: obj.elbo(key, q, _decoder(dec, x), 12, analytic_kl,
                                 chunk_size=c), static_argnums=0)
  whole = f(None)
  for chunk in (1, 5, 12):  # 5 leaves a partial last chunk
    for got, want in zip(f(chunk), whole):
      np.testing.assert_allclose(got, want, rtol=1e-12)


# --- composition: plain call, jit, vmap -------------------------------------


def _core_calls(enc, dec, x, key, chunked=True):
  q = obj.encode(lg.encoder_apply, enc, x)
  loglik = _decoder(dec, x)
  out = {
      "elbo_analytic": obj.elbo(key, q, loglik, 16, analytic_kl=True).elbo,
      "elbo_mc": obj.elbo(key, q, loglik, 16, analytic_kl=False).elbo,
      "iwae": obj.iwae_bound(key, q, loglik, 16),
      "kl": dist.kl_diag_to_std_normal(q.mean, q.log_var),
  }
  if chunked:
    out["iwae_chunked"] = obj.iwae_bound_chunked(key, q, loglik, 16, 4)
  return out


def test_plain_and_jit_give_the_same_numbers():
  enc, dec, x = _model(batch=8)
  key = jax.random.key(0)
  # iwae_bound_chunked is left out: its lax.scan is compiled even in a plain
  # call, and the vmap test below covers it under jit.
  plain = _core_calls(enc, dec, x, key, chunked=False)
  jitted = jax.jit(_core_calls, static_argnames="chunked")(enc, dec, x, key,
                                                           chunked=False)
  for name in plain:
    assert plain[name].shape == (8,), name
    np.testing.assert_allclose(jitted[name], plain[name], rtol=1e-12,
                               err_msg=name)


def test_float32_in_float32_out():
  enc, dec, x = jax.tree.map(lambda a: a.astype(jnp.float32), _model(batch=8))
  out = jax.eval_shape(_core_calls, enc, dec, x, jax.random.key(0))
  for name, value in out.items():
    assert value.shape == (8,) and value.dtype == jnp.float32, name


def test_vmap_over_examples_matches_per_example_calls():
  """vmap with one key per example gives what separate single-example calls
  (a batch of 1) give."""
  enc, dec, x = _model(batch=5)
  keys = jax.random.split(jax.random.key(0), 5)

  @jax.jit
  def one(key, x1):  # x1: [D] -> dict of scalars
    return {k: v[0] for k, v in _core_calls(enc, dec, x1[None], key).items()}

  vmapped = jax.jit(jax.vmap(one))(keys, x)
  for i in range(5):
    single = one(keys[i], x[i])
    for name in single:
      np.testing.assert_allclose(vmapped[name][i], single[name], rtol=1e-12,
                                 err_msg=name)


def test_vmap_matches_batched_for_deterministic_quantities():
  """Without sampling noise, per-example vmapped and batched calls agree;
  at the exact posterior even L_K and the Monte Carlo ELBO are noiseless."""
  enc, dec, x = _model(batch=5)
  exact_enc = _exact_posterior_encoder(dec)
  key = jax.random.key(0)

  def deterministic(xb):  # xb: [B, D] -> dict of [B]
    q = obj.encode(lg.encoder_apply, enc, xb)
    post = lg.exact_posterior(dec, xb)
    q_exact = obj.encode(lg.encoder_apply, exact_enc, xb)
    return {
        "kl": dist.kl_diag_to_std_normal(q.mean, q.log_var),
        "kl_to_posterior": dist.kl_diag_gaussians(q.mean, q.log_var,
                                                  post.mean, post.log_var),
        "log_q": dist.diag_gaussian_log_prob(xb, q.mean, q.log_var),
        "exact_elbo": lg.exact_elbo(enc, dec, xb),
        "log_px": lg.log_marginal(dec, xb),
        "iwae_exact": obj.iwae_bound(key, q_exact, _decoder(dec, xb), 8),
        "elbo_exact": obj.elbo(key, q_exact, _decoder(dec, xb), 8,
                               analytic_kl=False).elbo,
    }

  batched = jax.jit(deterministic)(x)
  vmapped = jax.jit(jax.vmap(lambda x1: {k: v[0] for k, v in deterministic(
      x1[None]).items()}))(x)
  for name in batched:
    assert batched[name].shape == (5,), name
    np.testing.assert_allclose(vmapped[name], batched[name], rtol=1e-12,
                               err_msg=name)
  for name in ("iwae_exact", "elbo_exact"):
    np.testing.assert_allclose(batched[name], batched["log_px"], rtol=1e-12)
  np.testing.assert_allclose(batched["exact_elbo"] + batched["kl_to_posterior"],
                             batched["log_px"], rtol=1e-12)


def test_log_q_of_a_sample_is_exact_when_sigma_is_far_below_the_mean():
  """log q(z|x) at z = μ + σ ε comes from ε: in float32, z − μ keeps only
  the digits of σ ε above ulp(μ) = 3.1e-5 at μ = 300, the size of σ ε
  itself at log σ² = −20, so the difference form is off by nats. The value
  and the derivative in log σ² (−½ per dimension: (z − μ)/σ = ε does not
  move) must match float64 computed from the same ε."""
  B, L, M = 4, 3, 5
  mean = jnp.full((B, L), 300.0, jnp.float32)
  log_var = jnp.full((B, L), -20.0, jnp.float32)
  key = jax.random.key(11)
  eps = np.asarray(obj.sample_noise(key, jnp.arange(M), (B, L)), np.float64)
  want = -0.5 * np.sum(eps**2 - 20.0 + np.log(2 * np.pi), axis=-1)

  def log_q(log_var):
    posterior = dist.DiagGaussian(mean, log_var)
    terms = obj.sample_terms(key, posterior, lambda z: jnp.zeros(B), M)
    return terms.log_posterior

  got = log_q(log_var)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
  # The difference form on the same z, for contrast: far off.
  z = obj.reparam(key, dist.DiagGaussian(mean, log_var), M)
  naive = dist.diag_gaussian_log_prob(z, mean, log_var)
  assert np.max(np.abs(np.asarray(naive) - want)) > 0.1
  grad = jax.grad(lambda lv: jnp.sum(log_q(lv)))(log_var)
  np.testing.assert_allclose(np.asarray(grad), np.full((B, L), -0.5 * M),
                             rtol=1e-6)
