"""The §7 applications: exact pieces against independent computations, and
each command end to end on a tiny checkpoint.

Exact answers: AUROC against a brute-force pairwise count and scikit-learn,
its null standard error, interpolation end points (the encodings), latent
traversals, rate + distortion = −ELBO, standardization round trips and the
statistics stored with a tabular checkpoint. The tiny checkpoints (a few
optimizer steps) are trained once per module; the commands run as
subprocesses, as a user runs them.
"""

import csv
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats
from sklearn import metrics as sk_metrics

from configs import breast_cancer as breast_cancer_config
from configs import digits_anomaly as digits_anomaly_config
from configs import mnist_idx as mnist_idx_config
from configs import sweep as sweep_config
from configs import tabular as tabular_config
from vae_jax.training import checkpointing
from vae_jax import data as data_lib
from vae_jax.training import step as train_lib
from vae_jax.data import preprocess
from vae_jax.applications import anomaly
from vae_jax.applications import common
from vae_jax.applications import compression
from vae_jax.applications import generation
from vae_jax.applications import metrics
from vae_jax.core.distributions import kl_diag_to_std_normal
from vae_jax.core.objectives import reparam
from tiny_runs import shrink, train, write_tiny_mnist_idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                     f"vae_jax_test_cache_{os.getuid()}")
# Repeated compilations (runs, subprocesses) hit a persistent cache.
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def command(module, *flags):
  """Runs `python -m module flags...`; returns (returncode, stdout, stderr)."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """A 6-step digits model with digit 0 held out of training."""
  workdir = tmp_path_factory.mktemp("digits_anomaly")
  train(shrink(digits_anomaly_config.get_config(), images=0), workdir)
  return str(workdir)


@pytest.fixture(scope="module")
def digits(digits_run):
  return common.load_trained(digits_run)


def _two_clusters(path, rng):
  """A CSV: header, 4 features, a label column; class 1 far from class 0."""
  n0, n1 = 150, 40
  x0 = rng.normal([10.0, -3.0, 0.5, 200.0], [1.0, 2.0, 0.1, 30.0], (n0, 4))
  x1 = rng.normal([20.0, 9.0, 1.5, 500.0], [1.0, 2.0, 0.1, 30.0], (n1, 4))
  x = np.concatenate([x0, x1])
  y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
  with open(path, "w") as f:
    f.write("size,shape,ratio,count,label\n")
    for row, label in zip(x, y):
      f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
  return x, y


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
  """configs/tabular.py on a two-cluster CSV, class 1 held out of training."""
  root = tmp_path_factory.mktemp("tabular")
  path = str(root / "cells.csv")
  features, labels = _two_clusters(path, np.random.default_rng(0))
  config = shrink(tabular_config.get_config(
      f"tabular_path={path},label_column=label,holdout_class=1"), steps=60,
      images=0)
  workdir = root / "run"
  train(config, workdir)
  return {"workdir": str(workdir), "path": path, "features": features,
          "labels": labels, "config": config}


# ------------------------------------------------------------ AUROC, ROC


def test_auroc_of_perfect_reversed_and_constant_scorers():
  labels = np.r_[np.zeros(50, bool), np.ones(30, bool)]
  scores = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 30)]
  assert metrics.auroc(scores, labels) == 1.0
  assert metrics.auroc(-scores, labels) == 0.0
  # Every pair tied: each counts ½.
  assert metrics.auroc(np.ones(80), labels) == 0.5


def test_auroc_with_ties_matches_pairwise_count_and_sklearn():
  rng = np.random.default_rng(1)
  labels = rng.random(300) < 0.3
  # Few distinct integer scores: many ties, within and across classes.
  scores = rng.integers(0, 6, 300) + labels * rng.integers(0, 3, 300)
  pos, neg = scores[labels], scores[~labels]
  brute = (np.mean(pos[:, None] > neg[None, :])
           + 0.5 * np.mean(pos[:, None] == neg[None, :]))
  auc = metrics.auroc(scores, labels)
  assert auc == pytest.approx(brute, abs=1e-12)
  assert auc == pytest.approx(sk_metrics.roc_auc_score(labels, scores),
                              abs=1e-12)
  assert 0.5 < auc < 1.0


def test_midranks_match_scipy():
  values = np.random.default_rng(2).integers(0, 10, 200).astype(float)
  np.testing.assert_array_equal(metrics.midranks(values),
                                stats.rankdata(values, method="average"))


def test_auroc_of_random_scorer_is_one_half_within_its_standard_error():
  rng = np.random.default_rng(3)
  labels = rng.random(4000) < 0.2
  scores = rng.normal(size=4000)
  n1, n0 = int(labels.sum()), int((~labels).sum())
  null_se = math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
  # Hanley–McNeil at AUROC ½ is exactly the Mann–Whitney null SE.
  assert metrics.auroc_standard_error(0.5, n1, n0) == pytest.approx(
      null_se, rel=1e-12)
  assert abs(metrics.auroc(scores, labels) - 0.5) < 4 * null_se


def test_roc_curve_matches_sklearn_and_its_area_is_the_auroc():
  rng = np.random.default_rng(4)
  labels = rng.random(500) < 0.4
  scores = np.round(rng.normal(size=500) + labels, 1)  # with ties
  fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
  sk_fpr, sk_tpr, sk_thr = sk_metrics.roc_curve(labels, scores,
                                                drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
  np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
  np.testing.assert_array_equal(thresholds, sk_thr[1:])
  assert np.trapezoid(tpr, fpr) == pytest.approx(
      metrics.auroc(scores, labels), abs=1e-12)


def test_auroc_needs_both_classes():
  with pytest.raises(ValueError, match="both classes"):
    metrics.auroc([1.0, 2.0], [True, True])


# ------------------------------------------------------------ generation


def test_interpolation_path_is_exact_at_its_ends_and_linear():
  rng = np.random.default_rng(5)
  a, b = (jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for _ in range(2))
  path = generation.interpolation_path(a, b, 7)
  assert path.shape == (3, 7, 5)
  np.testing.assert_array_equal(path[:, 0], a)
  np.testing.assert_array_equal(path[:, -1], b)
  np.testing.assert_allclose(path[:, 3], (a + b) / 2, rtol=1e-6, atol=1e-6)


def test_interpolation_end_points_are_the_encodings(digits):
  model, params = digits.model, digits.params
  x = jnp.asarray(common.split_inputs(digits, "test", 6))
  x_a, x_b = x[:3], x[3:]
  z, decoded = generation.interpolate(model, params, x_a, x_b, 10)
  enc_a = model.posterior(params, x_a).mean
  enc_b = model.posterior(params, x_b).mean
  # Exact: XLA's CPU matmul rows do not depend on the batch size for
  # batches >= 2 (a batch of 1 takes a matrix-vector path), so 3 pairs.
  np.testing.assert_array_equal(z[:, 0], enc_a)
  np.testing.assert_array_equal(z[:, -1], enc_b)
  np.testing.assert_array_equal(decoded[:, 0], model.decoder_mean(params,
                                                                  enc_a))
  np.testing.assert_array_equal(decoded[:, -1], model.reconstruct(params,
                                                                  x_b))
  assert not np.allclose(decoded[:, 4], decoded[:, 0])


def test_traversal_moves_one_latent_over_the_given_values(digits):
  model, params = digits.model, digits.params
  x = jnp.asarray(common.split_inputs(digits, "test", 1))[0]
  values = np.linspace(-2.0, 2.0, 5)
  z, decoded = generation.traverse(model, params, x, [2, 5], values)
  mean = np.asarray(model.posterior(params, x[None]).mean[0])
  assert z.shape == (2, 5, model.latent_dim)
  assert decoded.shape == (2, 5, 64)
  for i, dim in enumerate([2, 5]):
    np.testing.assert_array_equal(z[i, :, dim], values.astype(np.float32))
    others = np.delete(np.asarray(z[i]), dim, axis=-1)
    np.testing.assert_array_equal(
        others, np.broadcast_to(np.delete(mean, dim), others.shape))


def test_traversal_dims_default_to_largest_kl(digits):
  assert generation.top_kl_dims([0.1, 3.0, 0.0, 1.5], 2) == [1, 3]
  kl = generation.kl_per_dim(digits)
  x = jnp.asarray(common.split_inputs(digits, "test"))
  posterior = digits.model.posterior(digits.params, x)
  # The per-dimension KLs add up to the analytic KL of the whole posterior.
  assert kl.sum() == pytest.approx(float(jnp.mean(kl_diag_to_std_normal(
      *posterior))), rel=1e-5)


def test_prior_draws_temperature_and_bernoulli_samples(digits):
  model, params = digits.model, digits.params
  z, means, draws = generation.prior_draws(model, params, jax.random.key(0),
                                           4, temperature=0.0)
  np.testing.assert_array_equal(z, 0.0)
  origin = model.decoder_mean(params, jnp.zeros((1, model.latent_dim)))
  np.testing.assert_allclose(means, jnp.broadcast_to(origin, means.shape),
                             rtol=1e-6)
  assert set(np.unique(np.asarray(draws))) <= {0.0, 1.0}
  z1, _, _ = generation.prior_draws(model, params, jax.random.key(0), 4000,
                                    temperature=0.5)
  assert float(jnp.std(z1)) == pytest.approx(0.5, rel=0.02)
  # Bernoulli draws at one z average to the decoder's probabilities.
  z_fixed = jnp.zeros((4000, model.latent_dim))
  x = generation.sample_observations(model, params, jax.random.key(1),
                                     z_fixed)
  p = np.asarray(origin[0])
  se = np.sqrt(p * (1 - p) / 4000) + 1e-6
  assert np.all(np.abs(np.asarray(x.mean(0)) - p) < 5 * se)


def test_gaussian_draws_have_the_decoder_scale(tabular_run):
  trained = common.load_trained(tabular_run["workdir"])
  model, params = trained.model, trained.params
  z = jnp.zeros((20000, model.latent_dim))
  x = generation.sample_observations(model, params, jax.random.key(0), z)
  sigma = np.exp(np.asarray(params["log_sigma_dec"]))
  assert sigma.shape == (4,)  # learned_per_dim
  mean = np.asarray(model.decoder_mean(params, z[:1]))[0]
  np.testing.assert_allclose(np.asarray(x.std(0)), sigma, rtol=0.03)
  np.testing.assert_allclose(np.asarray(x.mean(0)), mean,
                             atol=float(5 * sigma.max() / np.sqrt(20000)))


def test_generate_command_writes_png_grids(digits_run):
  code, out, err = command("experiments.generate", f"--workdir={digits_run}",
                           "--num_pairs=3", "--interpolation_steps=5",
                           "--num_traversal_dims=2", "--traversal_steps=4")
  assert code == 0, err
  folder = os.path.join(digits_run, "generate")
  assert "traversed latents" in out
  # interpolations.png: 3 rows of (input, 5 path points, input) and
  # traversals.png: 2 latents × 4 values, of 8×8 images with 1-pixel
  # padding, upscaled by one integer factor.
  for name, rows, cols in (("interpolations", 3, 7), ("traversals", 2, 4)):
    width, height = Image.open(os.path.join(folder, f"{name}.png")).size
    h, w = rows * 9 + 1, cols * 9 + 1
    assert width % w == 0 and width // w == height // h and height % h == 0
  for name in ("prior_means", "prior_samples", "reconstructions"):
    assert os.path.getsize(os.path.join(folder, f"{name}.png")) > 0


PNGS = ("prior_means", "prior_samples", "reconstructions", "interpolations",
        "traversals")


def test_generate_needs_no_data_set_where_it_uses_none(tmp_path):
  """With the data set removed, --inputs gives the same PNGs as the test
  split's examples did, and without --inputs the prior draws still come."""
  data_dir = tmp_path / "idx"
  data_dir.mkdir()
  write_tiny_mnist_idx(str(data_dir))
  config = shrink(mnist_idx_config.get_config(), steps=2, images=0, batch=8)
  config.idx_dir = str(data_dir)
  workdir = str(tmp_path / "run")
  train(config, workdir)
  x = common.split_inputs(common.load_trained(workdir), "test", 16)
  np.save(tmp_path / "x.npy", x.reshape(16, 28, 28))  # image-shaped is fine
  flags = ("--num_pairs=8", "--traversal_dims=0,3")

  code, _, err = command("experiments.generate", f"--workdir={workdir}",
                         f"--output_dir={tmp_path / 'with_data'}", *flags)
  assert code == 0, err
  for f in data_dir.iterdir():
    f.unlink()
  data_dir.rmdir()

  code, out, err = command("experiments.generate", f"--workdir={workdir}",
                           f"--output_dir={tmp_path / 'given'}",
                           f"--inputs={tmp_path / 'x.npy'}", *flags)
  assert code == 0, err
  for name in PNGS:
    with_data = (tmp_path / "with_data" / f"{name}.png").read_bytes()
    assert (tmp_path / "given" / f"{name}.png").read_bytes() == with_data, name
  assert "over the given examples" in out

  code, out, err = command("experiments.generate", f"--workdir={workdir}",
                           f"--output_dir={tmp_path / 'prior'}", *flags)
  assert code == 0, err
  assert "data set not loaded" in out and "--inputs" in out
  assert sorted(os.listdir(tmp_path / "prior")) == [
      "prior_means.png", "prior_samples.png", "traversals.png"]
  for name in ("prior_means", "prior_samples"):
    assert ((tmp_path / "prior" / f"{name}.png").read_bytes() ==
            (tmp_path / "with_data" / f"{name}.png").read_bytes())

  # Bad inputs: one line, exit 2, nothing written.
  np.save(tmp_path / "wrong.npy", np.zeros((3, 27, 28)))
  np.save(tmp_path / "bytes.npy", (x * 255).astype(np.uint8))
  (tmp_path / "broken.npy").write_bytes(b"not numpy")
  for arg, says in ((tmp_path / "wrong.npy", "not N examples of shape"),
                    (tmp_path / "bytes.npy", "intensities in [0, 1]"),
                    (tmp_path / "broken.npy", "not a readable .npy"),
                    (tmp_path / "missing.npy", "not a readable .npy")):
    out_dir = tmp_path / f"bad_{arg.stem}"
    code, _, err = command("experiments.generate", f"--workdir={workdir}",
                           f"--output_dir={out_dir}", f"--inputs={arg}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:")
    assert says in lines[0] and not out_dir.exists()


# ------------------------------------------------------------ compression


def test_example_bits_add_up():
  terms = {"kl": np.array([2.0, 3.0]), "reconstruction": np.array([-5.0, -1.0]),
           "iwae": np.array([-6.5, -3.5]), "elbo": np.array([-7.0, -4.0])}
  bits = compression.example_bits(terms, num_dims=4, dequantization_nats=0.0)
  ln2 = math.log(2)
  np.testing.assert_allclose(bits["rate_bits"], [2 / ln2, 3 / ln2])
  np.testing.assert_allclose(bits["distortion_bits"], [5 / ln2, 1 / ln2])
  np.testing.assert_allclose(bits["neg_elbo_bits"], -terms["elbo"] / ln2)
  np.testing.assert_allclose(bits["bits_per_dim_iwae"], [6.5 / (4 * ln2),
                                                         3.5 / (4 * ln2)])
  # Dequantized data: a density's −log p(x|z) can be negative; with the
  # D ln(levels) of the dequantization it is a code length of the integers.
  dense = dict(terms, reconstruction=np.array([8.0, 10.0]),
               elbo=np.array([6.0, 7.0]), iwae=np.array([6.5, 7.5]))
  assert np.all(compression.example_bits(dense, 4, 0.0)[
      "distortion_bits"] < 0)
  deq_nats = 4 * math.log(17)
  deq = compression.example_bits(dense, 4, dequantization_nats=deq_nats)
  np.testing.assert_allclose(deq["distortion_bits"],
                             (deq_nats - dense["reconstruction"]) / ln2)
  assert np.all(deq["distortion_bits"] > 0)
  np.testing.assert_allclose(deq["rate_bits"] + deq["distortion_bits"],
                             deq["neg_elbo_bits"])
  np.testing.assert_allclose(deq["neg_elbo_bits"],
                             (-dense["elbo"] + deq_nats) / ln2)
  np.testing.assert_allclose(deq["nll_iwae_bits"], 4 * deq["bits_per_dim_iwae"])
  np.testing.assert_allclose(deq["bits_per_dim_elbo"],
                             (-dense["elbo"] + deq_nats) / (4 * ln2))
  continuous = compression.example_bits(terms, 4, None)
  assert "bits_per_dim_iwae" not in continuous


def test_calibrated_distortion_is_a_gaussian_code_length():
  # Independently: the mean of −log2 N(x | f, σ² = MSE) over residuals with
  # that MSE, plus D log2(levels).
  rng = np.random.default_rng(7)
  residual = rng.normal(0, 0.05, (20000, 64))
  mse = float(np.mean(residual**2))
  log_density = stats.norm.logpdf(residual, 0, math.sqrt(mse)).sum(-1)
  expect = -log_density.mean() / math.log(2) + 64 * math.log2(17)
  assert compression.calibrated_distortion_bits(mse, 64, 17) == (
      pytest.approx(expect, rel=1e-9))


def test_compress_command_matches_the_runner(digits_run):
  code, out, err = command("experiments.compress", f"--workdir={digits_run}",
                           "--iwae_samples=8", "--elbo_samples=4",
                           "--refine_steps=1,0.1", "--rounds=1",
                           "--coder_samples=2")
  assert code == 0, err
  assert "bits/dim" in out
  rows = read_csv(os.path.join(digits_run, "compression", "compression.csv"))
  with open(os.path.join(digits_run, "final_metrics.json")) as f:
    final = json.load(f)
  assert len(rows) == final["num_examples"] == 297
  rate = np.array([float(r["rate_bits"]) for r in rows])
  dist = np.array([float(r["distortion_bits"]) for r in rows])
  neg_elbo = np.array([float(r["neg_elbo_bits"]) for r in rows])
  # The rate is the analytic KL, the same number the runner reports.
  assert rate.mean() == pytest.approx(final["kl"] / math.log(2), rel=1e-5)
  np.testing.assert_allclose(rate + dist, neg_elbo, rtol=1e-9)
  bpd = np.array([float(r["bits_per_dim_iwae"]) for r in rows])
  nll = np.array([float(r["nll_iwae_bits"]) for r in rows])
  np.testing.assert_allclose(bpd, nll / 64, rtol=1e-9)  # binary: no offset
  # The bits-back coder ran, decoded bit-exactly, and its parts add up to
  # what it wrote.
  assert "round trip: bit-exact" in out
  with open(os.path.join(digits_run, "compression", "bits_back.json")) as f:
    report = json.load(f)
  for part in [report["main"]] + report["refinement"]:
    assert part["achieved"] == 8 * part["bytes"]
    assert part["achieved"] == pytest.approx(sum(part[k] for k in (
        "neg_elbo", "discretization", "draw", "ans", "initial", "header")),
                                             rel=1e-9)
  assert [r["latent_step"] for r in report["refinement"]] == [1.0, 0.1]
  # −ELBO of the coder's likelihood is the model's, up to Monte Carlo error
  # (2 draws against 4, 297 images): within 2 %.
  main = report["main"]
  assert main["neg_elbo"] / 297 == pytest.approx(neg_elbo.mean(), rel=0.02)
  assert set(report["baselines"]) == {"independent_pixels", "gzip", "png"}


SWEEP_HEADER = (
    "index,latent_dim,sigma_dec_mode,sigma_dec,seed,learning_rate,elbo,"
    "reconstruction,kl,nll_iwae,bits_per_dim_elbo,bits_per_dim_iwae,"
    "active_units,sigma_dec_final,mse,steps,iwae_samples,num_examples,"
    "skipped_updates,group_size,train_time_s,eval_time_s")


def _write_sweep(path):
  """A results.csv in the layout of vae_jax/sweep (kl, reconstruction in
  nats; σ_dec empty for a learned σ_dec), and a sweep.json naming the data
  (the digits, dequantized)."""
  rows = [  # latent_dim, mode, sigma_dec, seed, kl, reconstruction, final σ,
            # mse
      (2, "fixed", 0.1, 0, 10.0, -50.0, 0.1, 0.010),
      (2, "fixed", 0.1, 1, 12.0, -54.0, 0.1, 0.012),
      (2, "fixed", 1.0, 0, 3.0, -90.0, 1.0, 0.040),
      (4, "fixed", 0.1, 0, 15.0, -40.0, 0.1, 0.008),
      (4, "fixed", 1.0, 0, float("nan"), -80.0, 1.0, 0.05),  # diverged
      (2, "learned", 0.1, 0, 8.0, -60.0, 0.25, 0.02),  # σ_dec: its start
      (2, "optimal", None, 0, 7.0, -5.0, 0.3, 0.09)]
  with open(path, "w") as f:
    f.write(SWEEP_HEADER + "\n")
    for i, (l, mode, sigma, seed, kl, rec, final, mse) in enumerate(rows):
      f.write(f"{i},{l},{mode},{'' if sigma is None else sigma},{seed},0.001,"
              f"{rec - kl},{rec},{kl},{kl - rec - 1},,,{l},{final},{mse},"
              f"100,8,297,0,1,1.5,0.2\n")
  base = json.loads(sweep_config.get_config("quick").base.to_json())
  with open(os.path.join(os.path.dirname(path), "sweep.json"), "w") as f:
    json.dump({"config": {"base": base}}, f)


def test_rate_distortion_points_from_a_sweep(tmp_path):
  _write_sweep(tmp_path / "results.csv")
  rows = compression.read_sweep(str(tmp_path))
  points = compression.rate_distortion_points(rows, num_dims=64, levels=17)
  ln2 = math.log(2)
  # Seeds averaged, the diverged (NaN) row left out, sorted by settings.
  assert [(p["latent_dim"], p["sigma_dec_mode"], p["sigma_dec"],
           p["num_runs"]) for p in points] == [
               (2, "fixed", 0.1, 2), (2, "fixed", 1.0, 1),
               (2, "learned", 0.1, 1), (2, "optimal", None, 1),
               (4, "fixed", 0.1, 1)]
  assert points[0]["rate_bits"] == pytest.approx(11.0 / ln2)
  # Distortion: the code length at the mean MSE, the same rule at every
  # σ_dec: (D/2) log2(2πe·MSE) + D log2(levels).
  assert points[0]["distortion_bits"] == pytest.approx(
      32 * math.log2(2 * math.pi * math.e * 0.011) + 64 * math.log2(17))
  distortion = [p["distortion_bits"] for p in points]
  assert np.argsort(distortion).tolist() == np.argsort(
      [p["mse"] for p in points]).tolist()
  # The models' own −E log p(x|z) rank σ = 0.1 and the optimal σ the
  # other way round: it is not comparable across σ_dec.
  assert points[3]["distortion_bits"] > points[0]["distortion_bits"]
  assert points[3]["neg_elbo_bits"] < points[0]["neg_elbo_bits"]
  for p in points:
    assert p["total_bits"] == pytest.approx(p["rate_bits"]
                                            + p["distortion_bits"])
  assert points[1]["neg_elbo_bits"] == pytest.approx(
      (93.0 + 64 * math.log(17)) / ln2)
  assert [compression.point_label(p) for p in points[:4]] == [
      "σ=0.1", "σ=1", "learned σ≈0.25", "optimal σ≈0.3"]
  with pytest.raises(common.ApplicationError, match="reconstruction"):
    compression.rate_distortion_points([{"sigma_dec": 1.0, "kl": 1.0}])
  with pytest.raises(common.ApplicationError, match="levels"):
    compression.rate_distortion_points(rows)
  assert compression.sweep_data(str(tmp_path)) == (64, 17)


def test_sweep_outcome_columns_cover_the_sweeps_table():
  from vae_jax.sweep import layout  # pylint: disable=g-import-not-at-top
  # A metric column missing here would be taken for a setting, and the
  # seeds of one σ_dec would no longer be averaged into one point.
  assert set(layout.METRIC_COLUMNS) | set(layout.EXECUTION_COLUMNS) <= set(
      compression.OUTCOME_COLUMNS)


def test_compress_command_on_a_sweep_only(tmp_path):
  _write_sweep(tmp_path / "results.csv")
  code, out, err = command("experiments.compress", f"--sweep_dir={tmp_path}")
  assert code == 0, err
  assert "rate–distortion per σ_dec" in out
  assert "learned σ≈0.25" in out
  rows = read_csv(tmp_path / "compression" / "rate_distortion.csv")
  assert len(rows) == 5
  assert float(rows[4]["rate_bits"]) == pytest.approx(15.0 / math.log(2))
  assert float(rows[4]["distortion_bits"]) == pytest.approx(
      compression.calibrated_distortion_bits(0.008, 64, 17))
  assert os.path.getsize(tmp_path / "compression" / "rate_distortion.png") > 0


# ------------------------------------------------------------ anomaly


def test_anomaly_class_comes_from_the_run():
  assert anomaly.anomaly_class(digits_anomaly_config.get_config()) == 0
  assert anomaly.anomaly_class(breast_cancer_config.get_config()) == 1
  assert anomaly.anomaly_class(digits_anomaly_config.get_config(), 7) == 7
  config = digits_anomaly_config.get_config("holdout_class=-1")
  with pytest.raises(common.ApplicationError, match="held no class out"):
    anomaly.anomaly_class(config)


def test_anomaly_command_on_digits(digits_run, digits):
  code, out, err = command("experiments.anomaly", f"--workdir={digits_run}",
                           "--iwae_samples=8", "--elbo_samples=2")
  assert code == 0, err
  assert "AUROC" in out
  folder = os.path.join(digits_run, "anomaly")
  rows = read_csv(os.path.join(folder, "scores.csv"))
  labels = np.array([int(r["label"]) for r in rows])
  np.testing.assert_array_equal(labels, digits.dataset.test_labels)
  is_anomaly = np.array([r["is_anomaly"] == "1" for r in rows])
  np.testing.assert_array_equal(is_anomaly, labels == 0)
  with open(os.path.join(folder, "summary.json")) as f:
    summary = json.load(f)
  for name in ("neg_elbo", "nll_iwae"):
    scores = np.array([float(r[name]) for r in rows])
    assert summary[name]["auroc"] == pytest.approx(
        sk_metrics.roc_auc_score(is_anomaly, scores), abs=1e-9)
  for name in ("histograms.png", "roc.png"):
    assert os.path.getsize(os.path.join(folder, name)) > 0


def test_missing_checkpoint_is_one_error_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    with common.one_line_errors():
      common.load_trained(str(tmp_path))
  assert info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: no checkpoints")


# ------------------------------------------------------ medicine, biology


def test_tabular_checkpoint_stores_the_train_split_standardization(
    tabular_run):
  features, labels = tabular_run["features"], tabular_run["labels"]
  params, config, meta = checkpointing.restore_params(tabular_run["workdir"])
  # The split, redone here: a seeded permutation, the first 20 % for test.
  n = len(features)
  perm = np.random.default_rng(0).permutation(n)
  test_idx = np.sort(perm[:round(0.2 * n)])
  train_idx = np.sort(perm[round(0.2 * n):])
  train_idx = train_idx[labels[train_idx] != 1]  # holdout_class=1
  stored = meta["standardization"]
  np.testing.assert_allclose(stored["mean"], features[train_idx].mean(0),
                             rtol=1e-12)
  np.testing.assert_allclose(stored["std"], features[train_idx].std(0),
                             rtol=1e-12)
  assert config.dataset == "tabular" and config.likelihood == "gaussian"
  assert params["log_sigma_dec"].shape == (4,)
  # The test inputs the applications see are those rows, standardized.
  trained = common.load_trained(tabular_run["workdir"])
  x = common.split_inputs(trained, "test")
  # float32 inputs: agreement to ~1e-6 of each feature's spread.
  np.testing.assert_allclose(
      (data_lib.destandardize(x, stored) - features[test_idx])
      / np.asarray(stored["std"]), 0.0, atol=1e-5)


def test_standardization_round_trips():
  raw = np.random.default_rng(6).normal([5.0, -300.0, 0.01],
                                        [2.0, 40.0, 0.001], (50, 3))
  stats_ = preprocess.fit_standardization(raw)
  x = data_lib.standardize(raw, stats_)
  np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(x.std(0), 1.0, rtol=1e-5)
  np.testing.assert_allclose(data_lib.destandardize(x, stats_), raw,
                             rtol=1e-6)


def test_anomaly_and_generation_on_tabular_data(tabular_run, tmp_path):
  trained = common.load_trained(tabular_run["workdir"])
  summary = anomaly.run(trained, str(tmp_path), elbo_samples=4,
                        iwae_samples=8)
  # Class 1 lies ~10 training standard deviations away from class 0: even a
  # briefly trained Gaussian VAE gives it a far larger −log p(x).
  assert summary["num_anomalies"] > 0
  assert summary["nll_iwae"]["auroc"] > 0.95
  assert summary["neg_elbo"]["auroc"] > 0.95
  result = generation.run(trained, str(tmp_path), num_samples=5, num_pairs=2,
                          interpolation_steps=3, traversal_steps=3)
  rows = read_csv(tmp_path / "reconstructions.csv")
  x = common.split_inputs(trained, "test", len(rows))
  raw = data_lib.destandardize(x, trained.dataset.standardization)
  # Tables come back in the file's units.
  np.testing.assert_allclose([float(r["input_x3"]) for r in rows], raw[:, 3],
                             rtol=1e-9)
  assert len(result["traversal_dims"]) == trained.model.latent_dim
  assert len(read_csv(tmp_path / "traversals.csv")) == 3 * len(
      result["traversal_dims"])
  # Without the data set, a user's rows in the file's units are
  # standardized with the statistics stored in the checkpoint.
  bare = common.load_trained(tabular_run["workdir"], with_dataset=False)
  assert bare.dataset is None and bare.event_shape == (4,)
  np.testing.assert_allclose(generation.prepare_inputs(bare, raw), x,
                             rtol=1e-5, atol=1e-6)


def test_optimal_sigma_is_frozen_at_the_training_mse(tabular_run):
  config = tabular_run["config"].copy_and_resolve_references()
  config.sigma_dec_mode = "optimal"
  # ~120 train rows in batches of 100: 80 padding rows, which must not count.
  config.eval_batch_size = 100
  dataset = data_lib.get_dataset(config)
  model = train_lib.build_model(config, dataset.event_shape)
  params = model.init(jax.random.key(3))
  assert model.log_sigma_dec(params) is None
  fixed, frozen = common.freeze_optimal_sigma(model, params, dataset, config)
  assert fixed.sigma_dec_mode == "fixed"
  sigma_sq = float(np.exp(2 * frozen["log_sigma_dec"]))
  # Independently: E_q ‖x − f(z)‖² / D over the train split, 256 samples of
  # z per example; the frozen value used one sample per example.
  x = jnp.asarray(common.split_inputs(
      common.Trained(model, params, config, dataset, {}, "",
                     dataset.event_shape), "train"))
  z = reparam(jax.random.key(9), model.posterior(params, x), 256)
  err = jnp.mean(jnp.square(x - jax.vmap(lambda zz: model.decode(params, zz))(
      z)), axis=-1)  # [256, N]
  # The same examples in both: only the z-sampling noise of one draw per
  # example separates the two.
  se = float(np.sqrt(np.asarray(err).var(0).mean() / err.shape[1]))
  assert abs(sigma_sq - float(err.mean())) < 5 * se


def test_changed_table_is_refused(tabular_run):
  features = tabular_run["features"].copy()
  features[:, 0] += 1.0
  path = tabular_run["path"]
  original = open(path).read()
  try:
    with open(path, "w") as f:
      f.write("size,shape,ratio,count,label\n")
      for row, label in zip(features, tabular_run["labels"]):
        f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    with pytest.raises(common.ApplicationError, match="standardization"):
      common.load_trained(tabular_run["workdir"])
  finally:
    with open(path, "w") as f:
      f.write(original)
