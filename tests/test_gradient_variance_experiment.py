"""End-to-end checks of experiments/gradient_variance.py on its quick config."""

import csv
import os
import subprocess
import sys

import jax
import pytest

from configs import gradient_variance as gv_config
from vae_jax import gradient_variance as gv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_rows(workdir):
  with open(os.path.join(workdir, "results.csv")) as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames) == gv.COLUMNS
    return list(reader)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("gv_quick"))
  config = gv_config.get_config("quick")
  gv.run(config, workdir)
  return config, workdir, _read_rows(workdir)


@pytest.mark.slow
def test_quick_run_writes_every_output(quick_run):
  config, workdir, rows = quick_run
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
                 "slope"):
    assert phrase in summary, phrase


@pytest.mark.slow
def test_quick_run_numbers_agree_with_the_closed_forms(quick_run):
  _, _, rows = quick_run
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
