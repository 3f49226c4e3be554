"""A workdir is one experiment: refused changes touch nothing, allowed ones
resume and are recorded, finished runs are not redone, and evaluation
without training writes beside the run's own results."""

import json
import os

import jax
import numpy as np
import pytest

from configs import default as default_config
from vae_jax.training import checkpointing
from vae_jax.training import workdir as workdir_lib
from tiny_runs import REPO, run_python, shrink, train


def snapshot(folder):
  """{relative path: bytes} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def gaussian_config(steps=3):
  """Digits with a fixed-σ_dec Gaussian decoder (σ_dec = 0.1); evaluates
  and checkpoints every 3 steps."""
  c = shrink(default_config.get_config(), steps=steps, every=3)
  c.likelihood, c.transform, c.sigma_dec = "gaussian", "dequantize", 0.1
  return c


def leaves(workdir):
  params, _, _ = checkpointing.restore_params(str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished")
  final = train(gaussian_config(), workdir)
  return workdir, final


@pytest.mark.parametrize("field, value, message", [
    # σ_dec lives in params["log_sigma_dec"] and the learning rate in the
    # optimizer state: resuming would continue the old model under the new
    # name, so both identify the run.
    ("sigma_dec", 0.8, "sigma_dec: 0.1 -> 0.8"),
    ("learning_rate", 0.1, "learning_rate: 0.001 -> 0.1"),
    ("batch_size", 32, "batch_size: 64 -> 32"),
    ("seed", 3, "seed: 0 -> 3"),
])
def test_refused_change_leaves_every_file_byte_identical(finished_run, field,
                                                         value, message):
  workdir, _ = finished_run
  before = snapshot(workdir)
  config = gaussian_config()
  config[field] = value
  with pytest.raises(workdir_lib.WorkdirError, match=message) as info:
    train(config, workdir)
  assert "\n" not in str(info.value)
  assert snapshot(workdir) == before


def test_cli_refuses_with_one_line_and_exit_2(finished_run):
  workdir, _ = finished_run
  before = snapshot(workdir)
  proc = run_python(["-m", "vae_jax.main", "--config=configs/default.py",
                     f"--workdir={workdir}", "--config.likelihood=gaussian",
                     "--config.transform=dequantize",
                     "--config.sigma_dec=0.8", "--config.num_train_steps=3"])
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr
  assert "sigma_dec: 0.1 -> 0.8" in errors[0]
  assert snapshot(workdir) == before


def test_finished_run_is_not_redone(finished_run):
  """Rerunning a finished workdir, even with other evaluation settings,
  returns its metrics and writes nothing (eval_workdir re-evaluates)."""
  workdir, final = finished_run
  before = snapshot(workdir)
  config = gaussian_config()
  config.final_iwae_samples = 16
  assert train(config, workdir) == json.loads(json.dumps(final))
  assert snapshot(workdir) == before


def test_allowed_change_resumes_is_recorded_and_bit_identical(tmp_path):
  straight, parts = tmp_path / "straight", tmp_path / "parts"
  train(gaussian_config(steps=6), straight)
  first = gaussian_config(steps=3)
  train(first, parts)
  longer = gaussian_config(steps=6)
  longer.final_iwae_samples = 4  # evaluation settings may change too
  final = train(longer, parts)
  for x, y in zip(leaves(straight), leaves(parts)):
    np.testing.assert_array_equal(x, y)
  history = [json.loads(l) for l in open(parts / "config_history.jsonl")]
  assert len(history) == 1
  assert history[0]["changed"] == {"num_train_steps": [3, 6],
                                   "final_iwae_samples": [8, 4]}
  config_json = json.load(open(parts / "config.json"))
  assert config_json["num_train_steps"] == 6
  assert final["step"] == 6 and final["iwae_samples"] == 4


def test_schedule_length_identifies_the_run(tmp_path):
  """With a cosine schedule num_train_steps shapes every learning rate, so
  extending such a run is refused."""
  config = gaussian_config(steps=3)
  config.lr_schedule = "cosine"
  train(config, tmp_path)
  config.num_train_steps = 6
  with pytest.raises(workdir_lib.WorkdirError, match="num_train_steps: 3 -> 6"):
    train(config, tmp_path)


def test_bad_workdirs_fail_with_one_line(tmp_path):
  afile = tmp_path / "file"
  afile.write_text("x")
  for workdir, message in ((afile, "is a file"),
                           (afile / "run", "which is a file")):
    with pytest.raises(workdir_lib.WorkdirError, match=message):
      workdir_lib.check(gaussian_config(), str(workdir))


def test_eval_workdir_writes_beside_the_run(finished_run):
  """Evaluation with the run's own settings reproduces final_metrics.json
  exactly (same key, same program); other settings go to their own file."""
  workdir, final = finished_run
  before = snapshot(workdir)
  proc = run_python(["-m", "vae_jax.eval_workdir", f"--workdir={workdir}"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  same = json.load(open(workdir / "evaluations" /
                        "step3_test_K8_chunk4_batch64.json"))
  for name in ("elbo", "reconstruction", "kl", "nll_iwae", "active_units"):
    assert same[name] == final[name], name
  proc = run_python(["-m", "vae_jax.eval_workdir", f"--workdir={workdir}",
                     "--iwae_samples=32", "--iwae_chunk_size=16"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  other = json.load(open(workdir / "evaluations" /
                         "step3_test_K32_chunk16_batch64.json"))
  assert other["iwae_samples"] == 32
  assert other["elbo"] == final["elbo"]  # the ELBO does not depend on K
  after = snapshot(workdir)
  assert {k: v for k, v in after.items()
          if not k.startswith("evaluations")} == before


def test_default_workdirs_name_their_overrides(tmp_path):
  """Two variants of one config without --workdir never share a folder."""
  config = os.path.join(REPO, "configs", "default.py")
  common = ["--config.num_train_steps=2", "--config.final_iwae_samples=4",
            "--config.iwae_chunk_size=4", "--config.eval_iwae_samples=4"]
  for seed in (1, 2):
    proc = run_python(["-m", "vae_jax.main", f"--config={config}:seed={seed}",
                       *common], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
  runs = sorted(os.listdir(tmp_path / "runs" / "default"))
  assert runs == [f"seed={s},num_train_steps=2,final_iwae_samples=4,"
                  f"iwae_chunk_size=4,eval_iwae_samples=4" for s in (1, 2)]


def test_sweep_config_runs_through_the_main_entry_point(tmp_path):
  """configs/sweep.py:quick through `python -m vae_jax.main`: one table, and
  every point a full run with evaluation rows during training."""
  proc = run_python(["-m", "vae_jax.main", "--config=configs/sweep.py:quick",
                     f"--workdir={tmp_path}", "--config.grid.latent_dim=(2,)",
                     "--config.variants=()", "--config.base.num_train_steps=4",
                     "--config.base.eval_every_steps=2"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "2 of 2 points done" in proc.stdout
  assert os.path.isfile(tmp_path / "results.csv")
  for i in (0, 1):
    lines = [json.loads(l) for l in open(
        tmp_path / "points" / str(i) / "metrics.jsonl")]
    assert [l["step"] for l in lines if "test/elbo" in l] == [2, 4]


def test_a_field_the_model_never_reads_does_not_identify_the_run(tmp_path):
  """σ_dec means nothing to a Bernoulli decoder: changing it resumes."""
  config = shrink(default_config.get_config(), steps=3)
  final = train(config, tmp_path)
  before = snapshot(tmp_path)
  config.sigma_dec = 0.5
  assert train(config, tmp_path) == json.loads(json.dumps(final))
  assert snapshot(tmp_path) == before


def test_stopping_before_the_trained_step_is_refused(finished_run):
  """num_train_steps may shrink only to a step not yet trained: below it,
  config.json would say fewer steps than the checkpoints and
  final_metrics.json hold (trained to 3 here)."""
  workdir, _ = finished_run
  before = snapshot(workdir)
  assert workdir_lib.trained_step(str(workdir)) == 3
  config = gaussian_config(steps=2)
  with pytest.raises(workdir_lib.WorkdirError,
                     match="trained to step 3: num_train_steps=2") as info:
    train(config, workdir)
  assert "\n" not in str(info.value)
  assert snapshot(workdir) == before
  workdir_lib.check(gaussian_config(steps=3), str(workdir))   # same: fine


def test_a_run_refuses_a_sweep_workdir(tmp_path):
  for marker in ("sweep.json", "points"):
    folder = tmp_path / marker.split(".")[0]
    folder.mkdir()
    if marker == "points":
      (folder / "points").mkdir()
    else:
      (folder / marker).write_text("{}")
    with pytest.raises(workdir_lib.WorkdirError, match="holds a sweep"):
      workdir_lib.check(gaussian_config(), str(folder))


def test_a_config_json_that_is_not_an_object_is_one_line(tmp_path):
  (tmp_path / "config.json").write_text("[]")
  with pytest.raises(workdir_lib.WorkdirError, match="not a JSON object"):
    workdir_lib.check(gaussian_config(), str(tmp_path))


def test_nan_in_config_json_equals_nan():
  assert workdir_lib._same(float("nan"), float("nan"))  # pylint: disable=protected-access
  assert not workdir_lib._same(float("nan"), 1.0)  # pylint: disable=protected-access


@pytest.mark.parametrize("body, message", [
    ("c.num_train_step = 20", "config.num_train_step is not a field of the "
     "runner's config; did you mean config.num_train_steps?"),
    ("c = {'latent_dim': 3}",
     "the config must be an ml_collections.ConfigDict"),
    ("del c['dataset']", "the config lacks dataset"),
    ("c.linear_gaussian.mu = float('nan')",
     "config.linear_gaussian.mu=nan must be finite"),
])
def test_a_config_file_outside_the_schema_is_one_line(tmp_path, body,
                                                      message):
  """A misspelt field in a config file would be ignored and its default
  trained; a missing one or a non-finite nested value failed later, with a
  traceback or after the workdir was written."""
  cfg = tmp_path / "cfg.py"
  cfg.write_text("from vae_jax import config_base\n\n"
                 "def get_config():\n"
                 "  c = config_base.base_config()\n"
                 f"  {body}\n"
                 "  return c\n")
  workdir = tmp_path / "run"
  proc = run_python(["-m", "vae_jax.main", f"--config={cfg}",
                     f"--workdir={workdir}"])
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), (
      proc.stderr[-2000:])
  assert not workdir.exists()
