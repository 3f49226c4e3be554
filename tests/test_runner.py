"""End-to-end tests of the runner: configs, resume, NaNs, checkpoints, CLI.

Runs are a few steps long; they check plumbing against independent runs
(an uninterrupted run, a single-device run), not model quality.
"""

import glob
import json
import os
import re
import time

import jax
import numpy as np
import pytest

from configs import default as default_config
from configs import linear_gaussian as lg_config
from vae_jax.training import checkpointing
from vae_jax.training import loop
from vae_jax.training import workdir as workdir_lib
from vae_jax.training import step as train_lib
import tiny_runs
from tiny_runs import REPO, run_python, shrink, train

def final_params(workdir):
  params, _, _ = checkpointing.restore_params(str(workdir))
  return jax.tree.leaves(params)


def assert_trees_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_default_config_produces_every_output(tmp_path):
  final = train(shrink(default_config.get_config(), every=3), tmp_path)
  for name in ("config.json", "metrics.jsonl", "final_metrics.json"):
    assert os.path.isfile(tmp_path / name), name
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert glob.glob(str(tmp_path / "images" / "reconstructions_*.png"))
  assert glob.glob(str(tmp_path / "images" / "samples_*.png"))
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert any("test/elbo" in l for l in lines)
  assert any("train/loss" in l for l in lines)
  # The ELBO is a lower bound of L_K's estimate on average, and the terms add.
  assert final["elbo"] == pytest.approx(
      final["reconstruction"] - final["kl"], rel=1e-5)
  assert -final["nll_iwae"] >= final["elbo"] - 0.5
  assert final["bits_per_dim_elbo"] == pytest.approx(
      -final["elbo"] / (64 * np.log(2)), rel=1e-6)
  assert len(final["kl_per_dim"]) == 8
  assert sum(final["kl_per_dim"]) == pytest.approx(final["kl"], rel=1e-4)
  assert 0 <= final["active_units"] <= 8


def test_resume_is_bit_identical(tmp_path):
  straight, parts = tmp_path / "straight", tmp_path / "parts"
  train(shrink(default_config.get_config(), steps=6, every=3), straight)
  train(shrink(default_config.get_config(), steps=3, every=3), parts)
  train(shrink(default_config.get_config(), steps=6, every=3), parts)
  assert_trees_equal(final_params(straight), final_params(parts))


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  train(shrink(default_config.get_config(), steps=6, every=3), straight)
  train(shrink(default_config.get_config(), steps=6, every=3), broken)
  # Damage every file of the newest step, as a crash mid-write might.
  for path in glob.glob(str(broken / "checkpoints" / "6" / "**" / "*"),
                        recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  # Resuming falls back to step 3 and retrains 4..6: the same parameters.
  train(shrink(default_config.get_config(), steps=6, every=3), broken)
  assert_trees_equal(final_params(straight), final_params(broken))


def test_resuming_another_model_fails_without_touching_the_workdir(tmp_path):
  train(shrink(default_config.get_config(), steps=3), tmp_path)
  before = open(tmp_path / "config.json").read()
  steps_before = sorted(os.listdir(tmp_path / "checkpoints"))
  other = shrink(default_config.get_config(), steps=6)
  other.latent_dim = 4
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"latent_dim: 8 -> 4"):
    train(other, tmp_path)
  assert open(tmp_path / "config.json").read() == before
  assert sorted(os.listdir(tmp_path / "checkpoints")) == steps_before


def _nan_sometimes(original):
  """Wraps objective_terms so some steps (chosen by their key) give NaN."""
  import jax.numpy as jnp

  def wrapped(model, config, params, key, x):
    terms = original(model, config, params, key, x)
    bad = jax.random.uniform(key) < 0.35
    terms["objective"] = jnp.where(bad, jnp.nan, terms["objective"])
    return terms
  return wrapped


def test_nan_stop_names_step_and_writes_no_bad_checkpoint(tmp_path,
                                                          monkeypatch):
  monkeypatch.setattr(train_lib, "objective_terms",
                      _nan_sometimes(train_lib.objective_terms))
  config = shrink(default_config.get_config(), steps=30, every=1)
  config.eval_every_steps = 1000  # checkpoint every step, never evaluate.
  with pytest.raises(FloatingPointError, match=r"at step (\d+)") as info:
    train(config, tmp_path)
  bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  steps = [int(os.path.basename(p))
           for p in glob.glob(str(tmp_path / "checkpoints" / "*"))
           if os.path.basename(p).isdigit()]
  assert all(s < bad_step for s in steps)


def test_nan_skip_drops_updates_and_finishes(tmp_path, monkeypatch):
  monkeypatch.setattr(train_lib, "objective_terms",
                      _nan_sometimes(train_lib.objective_terms))
  config = shrink(default_config.get_config(), steps=12, every=6)
  config.nan_policy = "skip"
  train(config, tmp_path)
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  skipped = [l["train/skipped_updates"] for l in lines
             if "train/skipped_updates" in l]
  assert skipped[-1] > 0
  assert all(np.isfinite(np.asarray(p)).all() for p in final_params(tmp_path))


def test_linear_gaussian_reports_the_optimum(tmp_path):
  config = shrink(lg_config.get_config(), steps=300, every=300)
  final = train(config, tmp_path)
  report = final["linear_gaussian"]
  # Exact log p(x) bounds the exact ELBO; both approach the optimum.
  assert report["test exact ELBO"] <= report["test exact log p(x)"] + 1e-5
  assert report["optimum expected log p(x) = ELBO"] == pytest.approx(
      -0.5 * 4 * (np.log(2 * np.pi * 4.0) + 1))


_MULTI_DEVICE_SCRIPT = r"""
import sys, numpy as np, jax
from configs import default as default_config
from vae_jax.training import config_validation
from vae_jax import data as data_lib
from vae_jax.training import loop
from vae_jax.training import checkpointing
sys.path.insert(0, {tests!r})
from tiny_runs import shrink
assert jax.device_count() == 8, jax.device_count()
config = shrink(default_config.get_config(), every=3)
loop.train_and_evaluate(config, {workdir!r}, data_lib.get_dataset(config))
params, _, _ = checkpointing.restore_params({workdir!r})
np.savez({out!r}, *[np.asarray(p) for p in jax.tree.leaves(params)])
"""


def test_eight_devices_match_one(tmp_path):
  one = tmp_path / "one"
  train(shrink(default_config.get_config(), every=3), one)
  script = _MULTI_DEVICE_SCRIPT.format(
      tests=os.path.join(REPO, "tests"), workdir=str(tmp_path / "eight"),
      out=str(tmp_path / "eight.npz"))
  proc = run_python(["-c", script], num_host_devices=8)
  assert proc.returncode == 0, proc.stderr[-2000:]
  eight = np.load(tmp_path / "eight.npz")
  leaves = final_params(one)
  for i, leaf in enumerate(leaves):
    np.testing.assert_allclose(eight[f"arr_{i}"], np.asarray(leaf),
                               rtol=1e-4, atol=1e-5)


def _cli(args, num_host_devices=None, timeout=120):
  return run_python(["-m", "vae_jax.main"] + args, num_host_devices, timeout)


@pytest.mark.parametrize("override, message", [
    ("--config.latent_dim=0", "latent_dim=0 must be > 0"),
    ("--config.sigma_dec=-1.0", "sigma_dec=-1.0 must be > 0"),
    ("--config.dataset=imagenet", "dataset='imagenet' is not one of"),
    ("--config.likelihood=poisson", "likelihood='poisson' is not one of"),
    ("--config.data_seed=-1", "data_seed=-1 must be >= 0"),
    ("--config.hidden=(0,128)", "hidden=(0, 128) must be a non-empty tuple"),
    ("--config.sigma_dec=inf", "sigma_dec=inf must be finite"),
    ("--config.batch_size=63", None),
])
def test_bad_config_exits_with_one_line_and_leaves_workdir(tmp_path, override,
                                                           message):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("previous results")
  args = ["--config=configs/default.py", f"--workdir={workdir}", override]
  devices = None
  if message is None:  # batch 63 on 2 devices
    message = "batch_size=63 is not divisible by the 2 devices"
    devices = 2
  proc = _cli(args, num_host_devices=devices)
  assert proc.returncode != 0
  error_lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1 and message in error_lines[0], proc.stderr
  assert sorted(os.listdir(workdir)) == ["keep.txt"]


def test_missing_tfds_dataset_fails_in_seconds(tmp_path):
  start = time.time()
  proc = _cli(["--config=configs/mnist.py", f"--workdir={tmp_path / 'run'}",
               f"--config.data_dir={tmp_path / 'empty'}"], timeout=60)
  assert proc.returncode != 0
  assert "vae_jax.data.prepare" in proc.stderr
  assert time.time() - start < 30
  assert not (tmp_path / "run").exists()


def test_config_parameter_string_and_default_workdir(tmp_path):
  from configs import celeba
  config = celeba.get_config("sigma_dec=0.3,latent_dim=64")
  assert config.sigma_dec == 0.3 and config.latent_dim == 64
  with pytest.raises(ValueError, match="not a config field"):
    celeba.get_config("sigma=0.3")
  from vae_jax import main
  assert main.default_workdir("configs/celeba.py") == os.path.join(
      "runs", "celeba")
  overrides = main.config_overrides(
      ["main.py", "--config=configs/celeba.py:sigma_dec=0.8",
       "--config.latent_dim=64", "--config.hidden", "(8:8)"],
      "configs/celeba.py:sigma_dec=0.8")
  assert overrides == "sigma_dec=0.8,latent_dim=64,hidden=(8:8)"
  assert main.default_workdir("configs/celeba.py:sigma_dec=0.8",
                              overrides) == os.path.join(
      "runs", "celeba", "sigma_dec=0.8,latent_dim=64,hidden=_8_8_")
  # Every spelling absl takes for a config flag names the folder.
  assert main.config_overrides(
      ["main.py", "--noconfig.analytic_kl", "-config.latent_dim=4",
       "--config.analytic_kl", "--workdir=x"], "c.py") == (
           "analytic_kl=False,latent_dim=4,analytic_kl=True")
  # Over 200 characters: a readable head and a hash of the whole, so two
  # long overrides that share their head still get two folders.
  long_a, long_b = ("idx_dir=" + "x" * 300 + tail for tail in "ab")
  name_a, name_b = (os.path.basename(main.default_workdir("c.py", o))
                    for o in (long_a, long_b))
  assert len(name_a) == 200 and name_a != name_b
  assert name_a.startswith("idx_dir=xxx")


def test_ctrl_c_is_one_line_and_leaves_a_checkpoint(tmp_path):
  """SIGINT mid-training: 'interrupted', exit 130, no traceback; the same
  command resumes from the checkpoints it finished writing."""
  import signal  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  args = ["-m", "vae_jax.main", f"--workdir={workdir}",
          "--config.num_train_steps=100000000",
          "--config.checkpoint_every_steps=50"]
  # The child takes SIGINT as a terminal would deliver it, whatever this
  # process inherited: a shell's background job without job control (nohup,
  # `cmd &` in a script) starts with SIGINT ignored, and so would the child.
  with tiny_runs.Child(args, env=dict(os.environ, PYTHONPATH=REPO),
                       preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                        signal.SIG_DFL)
                       ) as child:
    child.wait_for_line(r"step \d+/")  # steps are being trained
    child.proc.send_signal(signal.SIGINT)
    returncode, err = child.finish()
  assert returncode == 130, err[-2000:]
  assert "Traceback" not in err
  assert [l for l in err.splitlines() if not re.match(r"[IWE]\d{4} ", l)
          ] == ["interrupted"], err[-2000:]
  # The step it stopped after is checkpointed, whatever the interval.
  stopped = int(re.search(r"SIGINT: stopped after step (\d+)", err).group(1))
  assert workdir_lib.trained_step(str(workdir)) == stopped >= 1


def test_sigterm_saves_the_step_it_stops_at_and_exits_143(tmp_path):
  """SIGTERM (a scheduler's or a preemptible VM's notice): the loop stops
  between steps, checkpoints that step although no checkpoint is due, and
  exits as the signal would (128 + 15) with one line."""
  import signal  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  with tiny_runs.Child(
      ["-m", "vae_jax.main", f"--workdir={workdir}",
       "--config.num_train_steps=100000000", "--config.log_every_steps=7",
       "--config.checkpoint_every_steps=100000000"],
      env=dict(os.environ, PYTHONPATH=REPO)) as child:
    child.wait_for_line(r"step \d+/")
    child.proc.send_signal(signal.SIGTERM)
    returncode, err = child.finish()
  assert returncode == 128 + signal.SIGTERM, err[-2000:]
  assert [l for l in err.splitlines() if not re.match(r"[IWE]\d{4} ", l)
          ] == ["terminated"], err[-2000:]
  stopped = int(re.search(r"SIGTERM: stopped after step (\d+)", err).group(1))
  assert stopped >= 7
  assert workdir_lib.trained_step(str(workdir)) == stopped
  # Its metrics are logged up to that step.
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert max(r["step"] for r in rows) == stopped


def test_a_first_ctrl_c_asks_the_loop_to_stop_and_a_second_interrupts():
  """The first SIGINT while training only sets a flag (the loop stops
  between steps, never inside orbax's save); the handler it replaced is
  back at once, so a second one raises KeyboardInterrupt where it lands."""
  import signal  # pylint: disable=g-import-not-at-top
  # As in a terminal, whatever this process inherited (see the test above).
  inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    stop = loop._StopRequest()  # pylint: disable=protected-access
    stop.install()
    try:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.05)  # the handler runs in the main thread, between bytecodes
      assert stop.signum == signal.SIGINT
      # Alone, a process stops on its own signal, at any step.
      assert stop.signal_to_stop_on(all_pause=False) == signal.SIGINT
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)
    finally:
      stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # An ignored SIGINT stays ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ignored = loop._StopRequest()  # pylint: disable=protected-access
    ignored.install()
    try:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.05)
      assert ignored.signum == 0
      assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
      ignored.uninstall()  # its SIGTERM handler
  finally:
    signal.signal(signal.SIGINT, inherited)


def test_resume_rewrites_no_metric_row_twice(tmp_path):
  """Killed after logging past its last checkpoint, a run writes those rows
  again on resume: the old ones are dropped, so every (step, kind of row)
  appears once. Simulated by removing the last checkpoint."""
  config = shrink(default_config.get_config(), steps=6, every=3)
  config.log_every_steps = 1
  train(config, tmp_path)

  def rows():
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    return [(l["step"], tuple(sorted(l))) for l in lines]

  whole = rows()
  assert max(s for s, _ in whole) == 6
  checkpointing.make_manager(str(tmp_path), 3).delete(6)
  os.remove(tmp_path / workdir_lib.FINAL_METRICS_FILE)
  train(config, tmp_path)
  again = rows()
  assert len(again) == len(set(again)) == len(whole)
  assert sorted(again) == sorted(whole)


def test_a_signal_during_the_last_save_stops_before_the_final_evaluation(
    tmp_path, monkeypatch):
  """A signal noted after the loop's last check (here while the last step
  is saved) is not lost: training stops before the final evaluation, and
  the same command then runs only that evaluation."""
  import signal  # pylint: disable=g-import-not-at-top
  config = shrink(default_config.get_config(), steps=4)
  workdir = tmp_path / "run"
  save = loop.checkpointing.save

  def save_then_signal(*args):
    save(*args)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs in the main thread, between bytecodes

  monkeypatch.setattr(loop.checkpointing, "save", save_then_signal)
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(loop.StopRequested) as stopped:
    train(config, workdir)
  assert (stopped.value.signum, stopped.value.step) == (signal.SIGTERM, 4)
  assert workdir_lib.trained_step(str(workdir)) == 4
  assert not (workdir / workdir_lib.FINAL_METRICS_FILE).exists()
  assert signal.getsignal(signal.SIGTERM) == before  # handler given back
  monkeypatch.setattr(loop.checkpointing, "save", save)
  assert train(config, workdir)["step"] == 4
