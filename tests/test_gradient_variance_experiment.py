"""End-to-end checks of experiments/gradient_variance.py on its quick config."""

import csv
import logging
import re
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gradient_variance as gv_config
from vae_jax import gradient_variance as gv
from vae_jax.core import estimators as est_lib
from vae_jax.gradient_variance import evaluate as gv_evaluate
from vae_jax.gradient_variance import paired
from vae_jax.gradient_variance import plots as gv_plots
from vae_jax.gradient_variance import settings as gv_settings
from vae_jax.gradient_variance import summary as gv_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_rows(workdir):
  with open(os.path.join(workdir, "results.csv")) as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames) == gv.COLUMNS
    return list(reader)


class _Messages(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("gv_quick"))
  config = gv_config.get_config("quick")
  handler, logger = _Messages(), logging.getLogger("absl")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    rows = gv.run(config, workdir)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return config, workdir, _read_rows(workdir), rows, handler.messages


def test_quick_run_logs_progress_with_an_eta(quick_run):
  *_, messages = quick_run
  progress = [re.match(r"gradient variance: (\d+)/(\d+) evaluations done "
                       r"\(.+\) in \d+ s; ETA (\d+) s$", m)
              for m in messages if m.startswith("gradient variance:")]
  assert progress and all(progress)
  total = int(progress[0].group(2))
  # One line per evaluation, counting up to the total; none left at the end.
  assert [int(p.group(1)) for p in progress] == list(range(1, total + 1))
  assert progress[-1].group(3) == "0"


@pytest.mark.slow
def test_quick_run_writes_every_output(quick_run):
  config, workdir, rows, _, _ = quick_run
  for name in ("variance_vs_M.png", "snr_vs_K.png", "summary.md",
               "variance_vs_latent_dim.png"):
    path = os.path.join(workdir, name)
    assert os.path.getsize(path) > 1000, name
  with open(os.path.join(workdir, "snr_vs_K.png"), "rb") as f:
    assert f.read(8) == PNG_MAGIC
  # One row per setting and estimator, for both models and every estimator.
  for model in ("linear", "vae"):
    for name in config.elbo_estimators:
      for m in config.num_samples_grid:
        assert any(r["model"] == model and r["estimator"] == name and
                   r["sweep"] == "num_samples" and int(r["num_samples"]) == m
                   for r in rows), (model, name, m)
    for name in config.iwae_estimators:
      for k in config.iwae_k_grid:
        assert any(r["model"] == model and r["estimator"] == name and
                   r["sweep"] == "iwae_k" and int(r["num_samples"]) == k
                   for r in rows), (model, name, k)
  with open(os.path.join(workdir, "summary.md")) as f:
    summary = f.read()
  for phrase in ("Variance falls as 1/M", "zero variance at the exact",
                 "Encoder SNR vs K", "Unbiased against the exact gradient",
                 "slope", "Paired tests", "STL on L_K is biased",
                 "Per-parameter gradient variance vs latent dimension",
                 "median [q10, q90]", "iwae_stl (**biased**"):
    assert phrase in summary, phrase
  # Every draw of every latent dimension, for both models.
  for model, dims in (("linear", config.linear.latent_dims),
                      ("vae", config.vae.latent_dims)):
    for d in dims:
      draws = {r["init_draw"] for r in rows if r["sweep"] == "latent_dim"
               and r["model"] == model and int(r["latent_dim"]) == d}
      assert draws == {str(i) for i in range(config.latent_dim_draws)}


@pytest.mark.slow
def test_quick_run_plots_have_no_overlaps(quick_run, tmp_path):
  """The busiest figure (error bars, a biased estimator, the noise floor):
  no legend over any axes, no colliding tick labels."""
  _, _, _, rows, _ = quick_run
  problems = []
  path = gv_plots.plot_sweep(rows, "iwae_k", "num_samples", "K", "snr",
                             str(tmp_path / "snr.png"), "SNR", 0.08, problems)
  assert os.path.getsize(path) > 1000
  assert problems == []


@pytest.mark.slow
def test_quick_run_paired_tests(quick_run):
  _, _, rows, _, _ = quick_run
  family = gv_summary.paired_family_size(rows)
  checked = 0
  for r in rows:
    if not r["paired_reference"] or r["estimator"] == r["paired_reference"]:
      continue
    z, bound = gv_summary._paired(r, family)[:2]  # pylint: disable=protected-access
    if r["estimator"] in est_lib.UNBIASED:
      assert z < bound, r
      checked += 1
    # These share the reference's decoder gradient (the same function of
    # ε): the paired difference has zero variance up to float32 round-off,
    # where independent draws would give a ratio of 1.
    if r["estimator"] in ("stl", "score_function_loo", "iwae_dreg",
                          "iwae_stl"):
      assert float(r["dec_paired_var_ratio"]) < 1e-9, r
  assert checked >= 20


@pytest.mark.slow
def test_quick_run_numbers_agree_with_the_closed_forms(quick_run):
  _, _, rows, _, _ = quick_run
  linear = [r for r in rows if r["model"] == "linear"]
  # Unbiased estimators against the exact gradient.
  checked = [r for r in linear if r["truth"] == "exact_elbo_gradient"]
  assert len(checked) >= 10
  for r in checked:
    assert float(r["enc_bias_max_abs_z"]) < 5, r
    assert float(r["dec_bias_max_abs_z"]) < 5, r
  # Measured variance traces against the closed form (R = 100 replicates).
  compared = 0
  for r in linear:
    for part in ("enc", "dec"):
      closed = r[f"{part}_closed_form_var_trace"]
      if closed and float(closed) > 1e-8:
        assert 0.5 < float(r[f"{part}_var_trace"]) / float(closed) < 2, r
        compared += 1
  assert compared >= 10
  # STL: zero encoder variance at the exact posterior, not elsewhere.
  for r in linear:
    if r["estimator"] == "stl":
      trace = float(r["enc_var_trace"])
      assert (trace < 1e-8) == (r["state"] == "optimum"), r


def test_config_errors_are_one_line():
  for field, value, message in (
      ("models", ("linear", "nope"), "models"),
      ("num_samples_grid", (10, 1), "num_samples_grid"),
      ("elbo_estimators", ("iwae_dreg",), "elbo_estimators"),
  ):
    config = gv_config.get_config("quick")
    config[field] = value
    with pytest.raises(gv.ConfigError, match=message):
      gv.validate_config(config)
  config = gv_config.get_config()
  config.linear.sigma_decs = (3.0,)  # ≥ data_sigma: no optimum exists
  with pytest.raises(gv.ConfigError, match="data_sigma"):
    gv.validate_config(config)
  with pytest.raises(ValueError, match="unknown preset"):
    gv_config.get_config("qiuck")


def test_command_line_reports_a_bad_config_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.gradient_variance",
       "--config=configs/gradient_variance.py:quick",
       "--config.vae.likelihood=poisson", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config:") and "poisson" in last
  assert not os.path.exists(os.path.join(tmp_path, "results.csv"))


@pytest.mark.slow
def test_checkpoint_state_uses_the_restored_model(tmp_path, monkeypatch):
  """A runner checkpoint becomes the "checkpoint" state (restore is faked)."""
  from configs import default as default_config  # pylint: disable=g-import-not-at-top
  from vae_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  ckpt_config = default_config.get_config()
  ckpt_config.hidden = (8,)
  ckpt_config.latent_dim = 3
  model = gv.build_vae("mlp", 3, (64,), (8,), (), "tanh", "bernoulli",
                       "fixed", 1.0)
  trained = model.init(jax.random.PRNGKey(42))
  calls = []

  def fake_restore(workdir):
    calls.append(workdir)
    return trained, ckpt_config, {}

  monkeypatch.setattr(checkpointing, "restore_params", fake_restore)
  config = gv_config.get_config("quick")
  config.models = ("vae",)
  config.sweeps = ("num_samples",)
  config.elbo_estimators = ("reparam_analytic_kl",)
  config.num_samples_grid = (1, 4)
  config.checkpoint_dir = str(tmp_path)
  gv.run(config, str(tmp_path / "out"))
  assert calls == [str(tmp_path)]
  rows = _read_rows(str(tmp_path / "out"))
  states = {r["state"] for r in rows}
  assert states == {"init", "checkpoint"}
  assert all(int(r["latent_dim"]) == 3 for r in rows)
  with open(tmp_path / "out" / "summary.md") as f:
    assert "restored from" in f.read()


def _linear_problem(d=2, batch=3):
  config = gv_config.get_config()
  setting = gv_settings.linear_setting(config, "init", d, 0.5, batch)
  return setting.params, setting.x


def test_joint_moments_equal_separate_runs_and_pair_the_replicates():
  """Shared keys: each estimator's moments equal `replicate_moments`', and
  the paired moments equal those of the stacked differences (float64 numpy
  over `replicate_gradients`, an independent computation)."""
  params, x = _linear_problem()
  names = ("reparam_analytic_kl", "stl")
  ests = [est_lib.get_estimator(n, est_lib.LinearGaussianModel(), 3)
          for n in names]
  key, r = jax.random.PRNGKey(7), 60
  moments, diffs = jax.jit(lambda p, k, x: paired.joint_replicate_moments(
      ests, 0, p, k, x, r, 25))(params, key, x)  # 25: a ragged last chunk
  assert diffs[0] is None
  stacked = []
  for e, (enc, dec) in zip(ests, moments):
    ref_enc, ref_dec = jax.jit(lambda p, k, x, e=e: est_lib.replicate_moments(
        e, p, k, x, r, 60))(params, key, x)
    np.testing.assert_allclose(enc.mean, ref_enc.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dec.variance, ref_dec.variance, rtol=1e-4)
    g = jax.jit(lambda p, k, x, e=e: est_lib.replicate_gradients(
        e, p, k, x, r))(params, key, x)
    stacked.append(np.concatenate(
        [np.asarray(v, np.float64).reshape(r, -1) for v in
         jax.tree.leaves(est_lib.split_params(g))], axis=1))
  for i in (1,):
    delta = stacked[i] - stacked[0]
    got = np.concatenate([diffs[i][0].mean, diffs[i][1].mean])
    var = np.concatenate([diffs[i][0].variance, diffs[i][1].variance])
    np.testing.assert_allclose(got, delta.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, delta.var(0, ddof=1), rtol=1e-3,
                               atol=1e-6)
    # The decoder gradients are the same function of ε: Δ_θ is exactly 0.
    assert float(jnp.max(jnp.abs(diffs[i][1].variance))) == 0


def _shifted_estimators(delta, noise):
  """g_ref = ε and g_a = ε + delta + noise·η on shared keys (ε, η ~ N(0, 1)),
  params-shaped: {"encoder": [4], "decoder": [4]}."""
  def make(shift, scale):
    def estimator(params, key, x):
      del params, x
      eps, eta = jax.random.normal(key, (2, 4))
      g = eps + shift + scale * eta
      return {"encoder": g, "decoder": g}
    return estimator
  return make(0.0, 0.0), make(delta, noise)


def test_paired_test_resolves_what_an_unpaired_one_cannot():
  """With shared ε, Δ = delta + 0.1 η: z = delta √R / 0.1 (= 10 here); an
  unpaired test would have z ≈ delta √R / √2 (≈ 0.7)."""
  r, delta, noise = 400, 0.05, 0.1
  ref, shifted = _shifted_estimators(delta, noise)
  params = {"encoder": jnp.zeros(4), "decoder": jnp.zeros(4)}
  moments, diffs = paired.joint_replicate_moments(
      [ref, shifted], 0, params, jax.random.PRNGKey(0), None, r, 100)
  out = paired.paired_summary(diffs[1][0], moments[1][0].variance,
                              moments[0][0].variance, 0.0)
  expected = delta * np.sqrt(r) / noise
  # max over 4 parameters of |N(expected, 1)|: within expected ± 4.
  assert abs(out["paired_max_abs_z"] - expected) < 4, out
  # Var Δ / (Var a + Var ref) = noise² / (2 + noise²), SE from R = 400.
  np.testing.assert_allclose(out["paired_var_ratio"],
                             noise**2 / (2 + noise**2), rtol=0.2)
  unpaired = delta * np.sqrt(r) / np.sqrt(
      moments[0][0].variance + moments[1][0].variance)
  assert float(jnp.max(unpaired)) < 2 < out["paired_max_abs_z"] / 4
  # No shift: the paired z stays below the t-Bonferroni bound.
  ref, same = _shifted_estimators(0.0, noise)
  moments, diffs = paired.joint_replicate_moments(
      [ref, same], 0, params, jax.random.PRNGKey(1), None, r, 100)
  z = paired.paired_summary(diffs[1][0], moments[1][0].variance,
                            moments[0][0].variance, 0.0)["paired_max_abs_z"]
  assert z < gv_summary.bonferroni_z(4, r)


def test_snr_quantiles_match_numpy():
  params, x = _linear_problem(d=6)
  e = est_lib.get_estimator("reparam_analytic_kl",
                            est_lib.LinearGaussianModel(), 2)
  key, r = jax.random.PRNGKey(3), 200
  enc, _ = jax.jit(lambda p, k, x: est_lib.replicate_moments(
      e, p, k, x, r, 100))(params, key, x)
  g = jax.jit(lambda p, k, x: est_lib.replicate_gradients(
      e, p, k, x, r))(params, key, x)["encoder"]
  g = np.concatenate([np.asarray(v, np.float64).reshape(r, -1)
                      for v in jax.tree.leaves(g)], axis=1)
  ratio = np.abs(g.mean(0)) / g.std(0, ddof=1)
  ours = np.asarray(gv_evaluate.snr_quantiles(enc))
  np.testing.assert_allclose(ours, np.quantile(ratio, [0.1, 0.5, 0.9]),
                             rtol=1e-3)
  # The spread is real: the 10th and 90th percentiles differ.
  assert ours[2] > 1.5 * ours[0]


def test_linear_latent_dims_are_nested_and_draws_differ():
  config = gv_config.get_config()
  small = gv_settings.linear_setting(config, "init", 4, 0.5)
  big = gv_settings.linear_setting(config, "init", 64, 0.5)
  for a, b in zip(jax.tree.leaves(small.params), jax.tree.leaves(big.params)):
    np.testing.assert_array_equal(a, b[:4])
  np.testing.assert_array_equal(small.x, big.x[:, :4])
  other = gv_settings.linear_setting(config, "init", 4, 0.5, init_draw=1)
  assert not np.allclose(other.params["encoder"]["a"],
                         small.params["encoder"]["a"])
  assert gv_settings.linear_setting(
      config, "init", 4, 0.5, init_draw=0).tag() == small.tag()


def test_biased_estimators_are_flagged_in_plot_labels():
  for name in est_lib.ESTIMATORS:
    label, _ = gv_plots.estimator_style(name)
    assert ("BIASED" in label) == (name not in est_lib.UNBIASED), name
  styles = {name: tuple(map(str, gv_plots.estimator_style(name)[1].values()))
            for name in est_lib.ELBO_ESTIMATORS}
  assert len(set(styles.values())) == len(styles)  # all distinguishable


def test_command_line_defaults_its_config(tmp_path):
  """No --config: the default config is loaded (a field of it can be set)."""
  result = subprocess.run(
      [sys.executable, "-m", "experiments.gradient_variance",
       "--config.vae.likelihood=poisson", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config:") and "poisson" in last


def test_layout_check_finds_a_legend_on_the_data_and_colliding_ticks():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots()
  ax.plot([1, 2], [1, 2], label="a")
  assert gv_plots.layout_problems(fig) == []
  ax.legend(loc="center")
  ax.set_xticks([1, 1.01])
  ax.set_xticklabels(["a long label", "another long label"])
  ax.set_title("a title far too long for its figure " * 4)
  assert gv_plots.layout_problems(fig) == [
      "axes 0: title runs off the figure", "axes 0: x tick labels overlap",
      "legend overlaps axes 0 ('a title far too long for its figure a ti')"]
  plt.close(fig)
