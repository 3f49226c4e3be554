"""Gaussian densities and KLs (paper §6.3–6.4) against independent float64
references: numpy with explicit inverses and slogdet, scipy.stats, and a
large-sample Monte Carlo estimate with a tolerance of 4 standard errors."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from scipy import stats

from vae_jax.core import distributions as dist

# One compilation per shape instead of one per eager primitive: keeps it fast.
_kl_mvn = jax.jit(dist.kl_mvn)

pytestmark = pytest.mark.usefixtures("x64")


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.3 * np.eye(d)


def _numpy_kl(m0, s0, m1, s1):
  """Thm 1.3 written literally: explicit inverse and slogdet."""
  d = m0.shape[-1]
  s1_inv = np.linalg.inv(s1)
  diff = m1 - m0
  _, logdet0 = np.linalg.slogdet(s0)
  _, logdet1 = np.linalg.slogdet(s1)
  return 0.5 * (np.trace(s1_inv @ s0) - d + diff @ s1_inv @ diff
                + logdet1 - logdet0)


def test_kl_diag_to_std_normal_equals_kl_mvn_on_diagonal_matrices():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(5, 4))
  log_var = rng.normal(size=(5, 4))
  ours = dist.kl_diag_to_std_normal(jnp.array(mean), jnp.array(log_var))
  full = _kl_mvn(jnp.array(mean), jnp.array(_diag(np.exp(log_var))),
                     jnp.zeros(4), jnp.eye(4))
  assert ours.shape == (5,)
  np.testing.assert_allclose(ours, full, rtol=1e-12)
  per_dim = dist.kl_diag_to_std_normal_per_dim(jnp.array(mean),
                                               jnp.array(log_var))
  assert per_dim.shape == (5, 4)
  np.testing.assert_allclose(per_dim.sum(-1), ours, rtol=1e-12)
  # Each per-dimension term is itself a 1-d Gaussian KL.
  np.testing.assert_allclose(
      per_dim,
      _kl_mvn(jnp.array(mean)[..., None], jnp.exp(log_var)[..., None,
                                                               None],
                  jnp.zeros((5, 4, 1)), jnp.ones((5, 4, 1, 1))),
      rtol=1e-12)


def _diag(v):
  return v[..., :, None] * np.eye(v.shape[-1])


def test_kl_diag_gaussians_equals_kl_mvn_on_diagonal_matrices():
  rng = np.random.default_rng(1)
  m0, lv0, m1, lv1 = rng.normal(size=(4, 6, 3))
  ours = dist.kl_diag_gaussians(*map(jnp.array, (m0, lv0, m1, lv1)))
  full = _kl_mvn(jnp.array(m0), jnp.array(_diag(np.exp(lv0))),
                     jnp.array(m1), jnp.array(_diag(np.exp(lv1))))
  np.testing.assert_allclose(ours, full, rtol=1e-12)


def test_kl_mvn_matches_explicit_inverse_and_slogdet():
  rng = np.random.default_rng(2)
  for d in (1, 2, 5):
    m0, m1 = rng.normal(size=(2, d))
    s0, s1 = _random_spd(rng, d), _random_spd(rng, d)
    ours = _kl_mvn(*map(jnp.array, (m0, s0, m1, s1)))
    np.testing.assert_allclose(ours, _numpy_kl(m0, s0, m1, s1), rtol=1e-10)


def test_kl_mvn_broadcasts_over_batch_axes():
  rng = np.random.default_rng(3)
  d = 3
  m0 = rng.normal(size=(4, d))
  s0 = np.stack([_random_spd(rng, d) for _ in range(4)])
  m1, s1 = rng.normal(size=d), _random_spd(rng, d)
  ours = _kl_mvn(*map(jnp.array, (m0, s0, m1, s1)))
  assert ours.shape == (4,)
  ref = [_numpy_kl(m0[i], s0[i], m1, s1) for i in range(4)]
  np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_kl_mvn_matches_monte_carlo():
  """KL(q‖p) = E_q[log q − log p], estimated from 200k samples of q."""
  rng = np.random.default_rng(4)
  d, n = 3, 200_000
  m0, m1 = rng.normal(size=(2, d))
  s0, s1 = _random_spd(rng, d), _random_spd(rng, d)
  q = stats.multivariate_normal(m0, s0)
  p = stats.multivariate_normal(m1, s1)
  z = q.rvs(size=n, random_state=rng)
  log_ratio = q.logpdf(z) - p.logpdf(z)
  se = log_ratio.std(ddof=1) / np.sqrt(n)
  ours = float(_kl_mvn(*map(jnp.array, (m0, s0, m1, s1))))
  assert abs(log_ratio.mean() - ours) < 4 * se, (log_ratio.mean(), ours, se)
  # The test has power: the estimate resolves the KL to better than 1%.
  assert 4 * se < 0.01 * ours


def test_kl_is_positive_and_zero_only_at_equality():
  rng = np.random.default_rng(5)
  d = 4
  for _ in range(20):
    m0, m1 = rng.normal(size=(2, d))
    s0, s1 = _random_spd(rng, d), _random_spd(rng, d)
    assert float(_kl_mvn(*map(jnp.array, (m0, s0, m1, s1)))) > 0
    same = float(_kl_mvn(*map(jnp.array, (m0, s0, m0, s0))))
    assert abs(same) < 1e-12
    # A small mean shift δ gives KL = ½ δᵀ Σ⁻¹ δ, far above rounding error.
    delta = 1e-3 * rng.normal(size=d)
    shifted = float(_kl_mvn(*map(jnp.array, (m0, s0, m0 + delta, s0))))
    expected = 0.5 * delta @ np.linalg.solve(s0, delta)
    assert shifted > 1e-9
    np.testing.assert_allclose(shifted, expected, rtol=1e-6)
    # A small covariance change is also detected.
    scaled = float(_kl_mvn(*map(jnp.array, (m0, s0, m0, 1.01 * s0))))
    assert scaled > 1e-6

  mean = jnp.array(rng.normal(size=(3, d)))
  log_var = jnp.array(rng.normal(size=(3, d)))
  assert np.all(dist.kl_diag_to_std_normal(mean, log_var) > 0)
  np.testing.assert_array_less(
      np.abs(dist.kl_diag_to_std_normal(jnp.zeros(d), jnp.zeros(d))), 1e-12)
  np.testing.assert_array_less(
      np.abs(dist.kl_diag_gaussians(mean, log_var, mean, log_var)), 1e-12)
  assert np.all(dist.kl_diag_gaussians(mean, log_var, mean + 1e-3,
                                       log_var) > 1e-9)


def test_kl_diag_to_std_normal_is_accurate_near_unit_variance_in_float32():
  """σ² − 1 − log σ² ≈ (log σ²)²/2 cancels badly; expm1 keeps it accurate."""
  log_var = np.array([1e-4, -1e-4, 1e-3, 3e-2], np.float64)
  ref = 0.5 * (np.expm1(log_var) - log_var)  # float64 reference
  ours = dist.kl_diag_to_std_normal_per_dim(
      jnp.zeros(4, jnp.float32), jnp.array(log_var, jnp.float32))
  assert ours.dtype == jnp.float32
  # A naive exp(l) − 1 − l in float32 is off by ~100% at l = 1e-4.
  np.testing.assert_allclose(ours, ref, rtol=1e-2)


def test_mvn_log_prob_matches_scipy():
  rng = np.random.default_rng(6)
  d = 4
  mean, cov = rng.normal(size=d), _random_spd(rng, d)
  x = rng.normal(size=(7, d))
  ours = dist.mvn_log_prob(jnp.array(x), jnp.array(mean), jnp.array(cov))
  assert ours.shape == (7,)
  np.testing.assert_allclose(
      ours, stats.multivariate_normal(mean, cov).logpdf(x), rtol=1e-12)


def test_diag_gaussian_log_prob_matches_scipy():
  rng = np.random.default_rng(7)
  mean, log_var = rng.normal(size=(2, 5, 3))
  z = rng.normal(size=(4, 5, 3))  # a sample axis in front of the batch
  ours = dist.diag_gaussian_log_prob(*map(jnp.array, (z, mean, log_var)))
  assert ours.shape == (4, 5)
  ref = np.array([[stats.multivariate_normal(mean[b], np.diag(
      np.exp(log_var[b]))).logpdf(z[m, b]) for b in range(5)]
                  for m in range(4)])
  np.testing.assert_allclose(ours, ref, rtol=1e-12)
  np.testing.assert_allclose(
      dist.std_normal_log_prob(jnp.array(z)),
      stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z), rtol=1e-12)


def test_paper_isotropic_kl_formula_needs_d_in_the_log_term():
  """§6.4 prints ½[σ²d − d + ‖μ‖² − 2 log σ] for q = N(μ, σ² I).

  Typo in the paper: log det(σ² I) = 2 d log σ, so the last term must be
  −2 d log σ. The corrected formula equals ours for an isotropic σ; the printed
  one is off by exactly (d − 1) log σ and is right only for d = 1.
  """
  rng = np.random.default_rng(8)
  for d in (1, 2, 7):
    mu = rng.normal(size=d)
    sigma = 1.7
    corrected = 0.5 * (sigma**2 * d - d + mu @ mu - 2 * d * np.log(sigma))
    printed = 0.5 * (sigma**2 * d - d + mu @ mu - 2 * np.log(sigma))
    ours = float(dist.kl_diag_to_std_normal(
        jnp.array(mu), jnp.full(d, 2 * np.log(sigma))))
    np.testing.assert_allclose(ours, corrected, rtol=1e-12)
    np.testing.assert_allclose(printed - ours, (d - 1) * np.log(sigma),
                               atol=1e-12)


# Broadcasting. Each case names the batch shape of every argument; the
# reference loops over the broadcast batch in float64 numpy (explicit inverse
# and slogdet), so a solve that mixes batch elements cannot agree with it.
# B = 3 = d is the case where a mis-broadcast gives wrong values silently;
# B = 4 ≠ d is where it used to raise.
_D = 3


def _numpy_mvn_log_prob(x, mean, cov):
  d = x.shape[-1]
  diff = x - mean
  _, logdet = np.linalg.slogdet(cov)
  return -0.5 * (diff @ np.linalg.inv(cov) @ diff + logdet
                 + d * np.log(2 * np.pi))


def _random_args(rng, batch_shapes, d, kinds):
  """One argument per (batch shape, kind): kind "v" [..., d], "m" [..., d, d]."""
  args = []
  for shape, kind in zip(batch_shapes, kinds):
    if kind == "v":
      args.append(rng.normal(size=tuple(shape) + (d,)))
    else:
      flat = [_random_spd(rng, d) for _ in range(int(np.prod(shape)))]
      args.append(np.array(flat).reshape(tuple(shape) + (d, d)))
  return args


def _loop_reference(fn, args, kinds):
  """fn on every element of the broadcast batch, float64 numpy."""
  batch = np.broadcast_shapes(*[a.shape[:-1] if k == "v" else a.shape[:-2]
                                for a, k in zip(args, kinds)])
  out = np.empty(batch)
  for idx in np.ndindex(*batch):
    parts = []
    for a, k in zip(args, kinds):
      event = 1 if k == "v" else 2
      a = np.broadcast_to(a, batch + a.shape[a.ndim - event:])
      parts.append(a[idx])
    out[idx] = fn(*parts)
  return out


_MVN_CASES = {  # batch shapes of (x, mean, cov), and d when not _D
    "x": ((_D,), (), ()),
    "x_B_ne_d": ((4,), (), ()),
    "mean": ((), (_D,), ()),
    "cov": ((), (), (_D,)),
    "cov_B_ne_d": ((), (), (4,)),
    "x_size1_cov": ((1,), (1,), (4,)),
    "x_and_cov": ((_D,), (), (_D,)),
    "outer_x_by_cov": ((4, 1), (), (_D,)),
    "outer_mean_by_cov": ((), (_D, 1), (1, 4)),
    # d = 1: the reported case, where the quadratic term summed over B.
    "cov_d1": ((), (), (_D,), 1),
    "x_size1_cov_d1": ((1,), (1,), (4,), 1),
    "mean_d1": ((), (4,), (), 1),
}


@pytest.mark.parametrize("case", sorted(_MVN_CASES))
def test_mvn_log_prob_broadcasts_every_argument(case):
  rng = np.random.default_rng(9)
  kinds = ("v", "v", "m")
  shapes, d = _MVN_CASES[case][:3], (_MVN_CASES[case][3:] or (_D,))[0]
  args = _random_args(rng, shapes, d, kinds)
  ours = np.asarray(dist.mvn_log_prob(*map(jnp.array, args)))
  ref = _loop_reference(_numpy_mvn_log_prob, args, kinds)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_mvn_log_prob_does_not_sum_over_a_covariance_batch():
  """The reported case: x [1], mean [1], cov [B, 1, 1] is B log-densities."""
  variances = np.array([1.0, 2.0, 3.0])
  ours = dist.mvn_log_prob(jnp.ones(1), jnp.zeros(1),
                           jnp.array(variances[:, None, None]))
  np.testing.assert_allclose(
      ours, stats.norm(0, np.sqrt(variances)).logpdf(1.0), rtol=1e-12)


_KL_CASES = {  # batch shapes of (mean0, cov0, mean1, cov1)
    "mean0": ((_D,), (), (), ()),
    "cov0": ((), (_D,), (), ()),
    "mean1": ((), (), (_D,), ()),
    "cov1": ((), (), (), (_D,)),
    "cov1_B_ne_d": ((), (), (), (4,)),
    "cov0_B_ne_d": ((), (4,), (), ()),
    # The reported case: batched means and cov1, one cov0.
    "means_and_cov1": ((_D,), (), (_D,), (_D,)),
    "means_and_cov1_B_ne_d": ((4,), (), (4,), (4,)),
    "means_and_cov0": ((_D,), (_D,), (_D,), ()),
    "both_covs": ((), (_D,), (), (_D,)),
    "outer_q_by_p": ((4, 1), (4, 1), (1, _D), (1, _D)),
    "outer_cov0_by_cov1": ((), (_D, 1), (), (4,)),
    "cov1_d1": ((), (), (), (_D,), 1),
    "means_and_cov1_d1": ((4,), (), (4,), (4,), 1),
}


@pytest.mark.parametrize("case", sorted(_KL_CASES))
def test_kl_mvn_broadcasts_every_argument(case):
  rng = np.random.default_rng(10)
  kinds = ("v", "m", "v", "m")
  shapes, d = _KL_CASES[case][:4], (_KL_CASES[case][4:] or (_D,))[0]
  args = _random_args(rng, shapes, d, kinds)
  ours = np.asarray(_kl_mvn(*map(jnp.array, args)))
  ref = _loop_reference(_numpy_kl, args, kinds)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=1e-10)
  assert np.all(ours > 0)


def test_mismatched_event_sizes_raise():
  with pytest.raises(ValueError, match="event sizes"):
    dist.kl_mvn(jnp.zeros(3), jnp.eye(3), jnp.zeros(2), jnp.eye(2))
  with pytest.raises(ValueError, match="event sizes"):
    dist.mvn_log_prob(jnp.zeros(3), jnp.zeros(3), jnp.eye(2))
