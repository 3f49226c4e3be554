"""The anomaly protocol: DeLong's covariance, the baselines, and a tiny
protocol end to end.

DeLong against a brute-force pairwise count (exact, with ties), and by Monte
Carlo against the closed-form Mann–Whitney variance of an exponential
model; the paired test's size under a true null. Baselines against scipy
densities and an eigendecomposition written out here. The protocol on
2 held-out digits × 2 seeds of a few steps each.
"""

import csv
import math
import os
import types
import zlib

import numpy as np
import pytest
from scipy import stats
from sklearn import covariance as sk_covariance
from sklearn import metrics as sk_metrics

from configs import breast_cancer as breast_cancer_config
from configs import digits_anomaly as digits_anomaly_config
from vae_jax import data as data_lib
from vae_jax.applications import anomaly_baselines as baselines
from vae_jax.applications import anomaly_protocol as protocol
from vae_jax.applications import common
from vae_jax.applications import metrics
from tiny_runs import shrink, train

# ------------------------------------------------------------ DeLong


def _brute_force_delong(score_sets, y):
  """Placement values from the n₊ × n₋ pairwise matrix ψ (ties ½)."""
  v10, v01 = [], []
  for s in score_sets:
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10.append(psi.mean(axis=1))
    v01.append(psi.mean(axis=0))
  v10, v01 = np.array(v10), np.array(v01)
  cov = np.cov(v10) / y.sum() + np.cov(v01) / (~y).sum()
  return v10.mean(axis=1), cov


def test_delong_covariance_matches_pairwise_count_with_ties():
  rng = np.random.default_rng(0)
  y = rng.random(40) < 0.3
  latent = rng.normal(size=40) + 1.2 * y
  # Integer scores: many ties, within and across classes.
  sets = np.stack([np.round(latent + rng.normal(size=40)),
                   np.round(2 * latent + rng.normal(size=40)),
                   rng.integers(0, 3, 40).astype(float)])
  aucs, cov = metrics.delong_covariance(sets, y)
  want_aucs, want_cov = _brute_force_delong(sets, y)
  np.testing.assert_allclose(aucs, want_aucs, rtol=0, atol=1e-12)
  np.testing.assert_allclose(cov, want_cov, rtol=1e-10, atol=1e-15)
  for s, a in zip(sets, aucs):
    assert a == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)
  test = metrics.delong_test(sets[0], sets[1], y)
  var = want_cov[0, 0] + want_cov[1, 1] - 2 * want_cov[0, 1]
  assert test["se"] == pytest.approx(math.sqrt(var), rel=1e-10)
  assert test["p"] == pytest.approx(
      2 * stats.norm.sf(abs(aucs[0] - aucs[1]) / math.sqrt(var)), rel=1e-9)


def test_delong_variance_by_monte_carlo_against_mann_whitney_closed_form():
  # Positives X ~ Exp(rate 1), negatives Y ~ Exp(rate 2): A = P(X > Y) = 2/3,
  # Q1 = P(X1 > Y, X2 > Y) = 1/2, Q2 = P(X > Y1, X > Y2) = 8/15 (integrals
  # of exponentials). Var AUC = [A(1−A) + (m−1)(Q1−A²) + (n−1)(Q2−A²)]/mn;
  # DeLong's estimate has expectation
  # [(m−1)(Q1−A²) + (n−1)(Q2−A²) + 2A − Q1 − Q2]/mn (derived from the
  # placement values' moments), slightly above the variance.
  a, q1, q2 = 2 / 3, 1 / 2, 8 / 15
  m, n, reps = 20, 30, 3000
  true_var = (a * (1 - a) + (m - 1) * (q1 - a * a)
              + (n - 1) * (q2 - a * a)) / (m * n)
  expected_delong = ((m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)
                     + 2 * a - q1 - q2) / (m * n)
  rng = np.random.default_rng(1)
  y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
  aucs, estimates = np.empty(reps), np.empty(reps)
  for r in range(reps):
    s = np.r_[rng.exponential(1.0, m), rng.exponential(0.5, n)]
    auc, cov = metrics.delong_covariance(s, y)
    aucs[r], estimates[r] = auc[0], cov[0, 0]
  assert aucs.mean() == pytest.approx(a, abs=4 * math.sqrt(true_var / reps))
  # SE of a sample variance: √((μ₄ − σ⁴)/R), with μ₄ from the sample.
  centred = aucs - aucs.mean()
  var_se = math.sqrt((np.mean(centred ** 4) - np.var(aucs) ** 2) / reps)
  assert np.var(aucs, ddof=1) == pytest.approx(true_var, abs=4 * var_se)
  assert estimates.mean() == pytest.approx(
      expected_delong, abs=4 * estimates.std(ddof=1) / math.sqrt(reps))


def test_paired_delong_test_holds_its_size_and_finds_a_real_difference():
  # Two noisy readings of one latent: equal AUROCs (null true), strongly
  # correlated, so an unpaired test would be far too conservative.
  rng = np.random.default_rng(2)
  m, n, reps = 40, 60, 1000
  y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
  diffs, variances, p_null, p_paired, p_unpaired = [], [], [], [], []
  for _ in range(reps):
    latent = rng.normal(size=m + n) + 1.0 * y
    a = latent + 0.5 * rng.normal(size=m + n)
    b = latent + 0.5 * rng.normal(size=m + n)
    c = latent + 1.5 * rng.normal(size=m + n)  # a worse score
    test = metrics.delong_test(a, b, y)
    diffs.append(test["difference"])
    variances.append(test["se"] ** 2)
    p_null.append(test["p"])
    p_paired.append(metrics.delong_test(a, c, y)["p"])
    # The same z without the covariance term: an unpaired comparison.
    aucs, cov = metrics.delong_covariance([a, c], y)
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1])
    p_unpaired.append(math.erfc(abs(z) / math.sqrt(2)))
  diffs, variances = np.array(diffs), np.array(variances)
  # DeLong's variance of the paired difference vs the Monte Carlo one.
  var_se = np.var(diffs) * math.sqrt(2 / reps)
  assert variances.mean() == pytest.approx(np.var(diffs), abs=4 * var_se)
  size = np.mean(np.array(p_null) < 0.05)
  assert abs(size - 0.05) < 4 * math.sqrt(0.05 * 0.95 / reps)
  # Against a worse score, pairing more than doubles the power (0.32 vs
  # 0.14 at this seed): the covariance of the two AUROCs is large.
  power = np.mean(np.array(p_paired) < 0.05)
  power_unpaired = np.mean(np.array(p_unpaired) < 0.05)
  assert power > 1.5 * power_unpaired and power_unpaired > 0.05


def test_delong_test_of_a_score_against_itself():
  y = np.array([0, 1, 0, 1, 1, 0], bool)
  s = np.array([0.1, 0.9, 0.3, 0.2, 0.8, 0.4])
  test = metrics.delong_test(s, s, y)
  assert (test["difference"], test["se"], test["p"]) == (0.0, 0.0, 1.0)


# ------------------------------------------------------------ baselines


def test_gaussian_baseline_is_the_ledoit_wolf_gaussian_density():
  rng = np.random.default_rng(3)
  train_x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 3.0
  test_x = rng.normal(size=(30, 5)) * 2.0
  cov = sk_covariance.ledoit_wolf(train_x)[0]
  want = -stats.multivariate_normal(train_x.mean(0), cov).logpdf(test_x)
  np.testing.assert_allclose(baselines.gaussian_nll(train_x, test_x), want,
                             rtol=1e-10)


def test_ppca_baseline_is_the_tipping_bishop_density():
  rng = np.random.default_rng(4)
  train_x = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 6)) + \
      0.3 * rng.normal(size=(300, 6))
  test_x = rng.normal(size=(20, 6))
  # Maximum-likelihood PPCA: C = U_L (Λ_L − σ² I) U_Lᵀ + σ² I, σ² the mean
  # of the discarded eigenvalues of the sample covariance.
  lam, u = np.linalg.eigh(np.cov(train_x, rowvar=False))
  lam, u = lam[::-1], u[:, ::-1]
  sigma_sq = lam[2:].mean()
  c = u[:, :2] @ np.diag(lam[:2] - sigma_sq) @ u[:, :2].T + \
      sigma_sq * np.eye(6)
  want = -stats.multivariate_normal(train_x.mean(0), c).logpdf(test_x)
  np.testing.assert_allclose(baselines.ppca_nll(train_x, test_x, 2), want,
                             rtol=1e-8)


def test_deflate_code_length():
  rng = np.random.default_rng(5)
  x = np.stack([np.zeros(64), (rng.random(64) < 0.5).astype(float)])
  bits = baselines.deflate_bits(x, levels=2)
  for row, b in zip(x.astype(np.uint8), bits):
    # zlib's stream = 2-byte header + the raw DEFLATE stream + 4-byte Adler.
    assert b == 8 * (len(zlib.compress(row.tobytes(), 9)) - 6)
  assert bits[0] < bits[1]  # a blank image is simpler than noise
  np.testing.assert_allclose(
      baselines.complexity_corrected([math.log(2) * 100.0], bits[:1]),
      100.0 - bits[:1])


# ------------------------------------------------------------ protocol


def test_continuous_data_gets_no_compressor_score():
  # A code length of real numbers needs a bin width that would dominate it.
  config = breast_cancer_config.get_config()
  fake = types.SimpleNamespace(config=config,
                               dataset=data_lib.get_dataset(config))
  assert protocol.complexity_levels(fake) is None
  assert list(protocol.score_names(fake)) == ["neg_elbo", "nll_iwae",
                                              "gaussian", "ppca"]
  config = digits_anomaly_config.get_config()
  fake = types.SimpleNamespace(config=config,
                               dataset=data_lib.get_dataset(config))
  assert protocol.complexity_levels(fake) == 2
  assert list(protocol.score_names(fake)) == [
      "neg_elbo", "nll_iwae", "gaussian", "gaussian_grey", "ppca",
      "complexity"]
  config.transform = "none"  # the 17 grey levels as they are
  assert protocol.complexity_levels(fake) == 17
  assert "gaussian_grey" not in protocol.score_names(fake)


def _read_csv(path):
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def _jobs():
  jobs = []
  for cls in (0, 1):
    for seed in (0, 1):
      c = shrink(digits_anomaly_config.get_config(
          f"holdout_class={cls},seed={seed}"), steps=6, images=0)
      jobs.append(protocol.Job(f"digits/class{cls}_seed{seed}", c))
  return jobs


@pytest.fixture(scope="module")
def tiny_protocol(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("protocol"))
  jobs = _jobs()
  trained = []
  records = protocol.run_protocol(
      jobs, root, lambda job, wd: trained.append(train(job.config, wd)),
      elbo_samples=2, iwae_samples=8, log=lambda _: None)
  assert len(trained) == len(jobs)
  return root, jobs, records


def test_protocol_scores_are_paired_and_labelled(tiny_protocol):
  root, jobs, records = tiny_protocol
  for job, record in zip(jobs, records):
    wd = os.path.join(root, job.name)
    cols = _read_csv(os.path.join(wd, "anomaly_protocol", "scores.csv"))
    y = cols["is_anomaly"] > 0
    want_class = job.config.holdout_class
    np.testing.assert_array_equal(y, cols["label"] == want_class)
    assert record["anomaly_class"] == want_class
    trained = common.load_trained(wd)
    # The training split holds no anomaly.
    assert not np.any(trained.dataset.train_labels == want_class)
    test_x = common.split_inputs(trained, "test")
    train_x = common.split_inputs(trained, "train")
    np.testing.assert_allclose(cols["gaussian"],
                               baselines.gaussian_nll(train_x, test_x),
                               rtol=1e-9)
    # The grey-level Gaussian: fitted to the stored 0..16 intensities / 16.
    grey = {split: trained.dataset.split(split) for split in ("train", "test")}
    grey = {k: np.stack([v[i] for i in range(len(v))]) for k, v in grey.items()}
    assert grey["test"].shape == test_x.shape
    assert len(np.unique(grey["test"])) == 17
    np.testing.assert_allclose(
        cols["gaussian_grey"],
        baselines.gaussian_nll(grey["train"], grey["test"]), rtol=1e-9)
    # The compressor saw the same binary test vectors the VAE scored.
    assert set(np.unique(test_x)) <= {0.0, 1.0}
    np.testing.assert_allclose(
        cols["complexity"],
        cols["nll_iwae"] / math.log(2) - baselines.deflate_bits(test_x),
        rtol=1e-9)
    for name, auc in record["auroc"].items():
      s = cols[name]
      pairwise = np.mean((s[y][:, None] > s[~y][None, :])
                         + 0.5 * (s[y][:, None] == s[~y][None, :]))
      assert auc == pytest.approx(pairwise, abs=1e-12)
    for name, t in record["delong"].items():
      assert t["difference"] == pytest.approx(
          record["auroc"]["nll_iwae"] - record["auroc"][name], abs=1e-12)


def test_protocol_table_reports_mean_and_sd_over_seeds(tiny_protocol):
  _, _, records = tiny_protocol
  rows = protocol.aggregate(records)
  assert [(r["dataset"], r["anomaly_class"], r["seeds"]) for r in rows] == [
      ("digits", 0, [0, 1]), ("digits", 1, [0, 1])]
  for row in rows:
    group = [r for r in records if r["dataset"] == "digits"
             and r["anomaly_class"] == row["anomaly_class"]]
    v = np.array([r["auroc"]["nll_iwae"] for r in group])
    assert row["auroc"]["nll_iwae"] == pytest.approx(
        (v.mean(), abs(v[0] - v[1]) / math.sqrt(2)), abs=1e-12)
  table = protocol.format_table(rows, records)
  mean, sd = rows[1]["auroc"]["ppca"]
  assert "| digit 1 |" in table and f"{mean:.3f} ± {sd:.3f}" in table
  assert "K = 8" in table and "M = 2" in table


def test_protocol_does_not_retrain_finished_runs(tiny_protocol):
  root, jobs, records = tiny_protocol

  def refuse(job, workdir):
    raise AssertionError(f"retrained {job.name}")

  again = protocol.run_protocol(jobs[:1], root, refuse, elbo_samples=2,
                                iwae_samples=8, log=lambda _: None)
  # Same Monte Carlo seed, same model: the same record.
  assert again[0]["auroc"] == records[0]["auroc"]


def test_failures_name_chance_level_and_significant_losses():
  names = {"nll_iwae": "−L_K", "gaussian": "Gaussian"}
  row = dict(dataset="digits", anomaly_name="digit 1", score_names=names,
             seeds=[0, 1, 2],
             auroc={"nll_iwae": (0.45, 0.02), "gaussian": (0.75, 0.01)},
             delong={"gaussian": {"difference": -0.3, "better": 0,
                                  "worse": 2}})
  assert protocol.failures([row]) == [
      "digits digit 1: −L_K AUROC 0.450 ± 0.020, near or below chance",
      "digits digit 1: Gaussian beats −L_K significantly in 2 of 3 seeds "
      "(ΔAUROC -0.300)"]
  row["delong"]["gaussian"]["worse"] = 1  # one seed of three: not flagged
  row["auroc"]["nll_iwae"] = (0.61, 0.02)
  assert protocol.failures([row]) == []
