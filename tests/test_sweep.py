"""Tests of vmapped sweeps: grid, grouping, equality with separate runs,
resume after a crash, split + merge, outputs.

Sweeps here are a few steps long on digits; they check that the vmapped
group computes what separate runs compute and that the bookkeeping
(resume, split, merge) does not change a single reproducible number.
"""

import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import sweep as sweep_config_lib
from vae_jax import data as data_lib
from vae_jax import sweep
from vae_jax.sweep import results as sweep_results
from vae_jax.sweep import run as sweep_run
from vae_jax.training import checkpointing
from vae_jax.training import loop
from vae_jax.training import stack as stack_lib
from configs import default as default_config
from tiny_runs import run_python, shrink, train

# Sweeps below compile the same programs again: a persistent compilation
# cache for the session makes the repeats cheap.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.environ.get("TMPDIR", "/tmp"),
                               f"vae_jax_test_cache_{os.getuid()}"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_sweep(steps=6, every=3):
  """3 σ_dec × 2 seeds (one vmapped group of 6) + a learned σ_dec (2)."""
  c = sweep_config_lib.get_config("quick")
  c.base.num_train_steps = steps
  c.base.checkpoint_every_steps = every
  c.base.log_every_steps = every
  c.base.eval_every_steps = every
  c.grid.latent_dim = (2,)
  c.grid.seed = (0, 1)
  c.grid.sigma_dec = (0.1, 0.2, 0.4)
  c.variants = ({"sigma_dec_mode": "learned", "sigma_dec": 0.2},)
  return c


def reproducible(rows):
  """CSV rows without the wall-clock and group-size columns."""
  return [{k: v for k, v in r.items() if k not in sweep.EXECUTION_COLUMNS}
          for r in rows]


def read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def snapshot(folder):
  """{relative path: (mtime_ns, bytes)} of every file under `folder`, and
  every folder (None): any write, new file or new folder changes it."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), folder)] = None
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns,
                                              f.read())
  return out


def error_lines(proc):
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


def copy_of(folder, tmp_path, name):
  """A copy of a shared workdir that a test may damage."""
  return shutil.copytree(folder, str(tmp_path / name))


@pytest.fixture(scope="module")
def run_workdir(tmp_path_factory):
  """The workdir of one single (non-sweep) run, two steps long."""
  workdir = tmp_path_factory.mktemp("run")
  train(shrink(default_config.get_config(), steps=2), workdir)
  return str(workdir)


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
  """One uninterrupted tiny sweep, shared by the tests that compare to it."""
  workdir = str(tmp_path_factory.mktemp("full"))
  config = tiny_sweep()
  sweep.validate(config, jax.device_count())
  rows = sweep.run_sweep(config, workdir)
  return workdir, rows


# ----------------------------------------------------------- grid and groups


def test_grid_numbering_and_variants():
  c = tiny_sweep()
  points = sweep.expand_grid(c)
  # Product in alphabetical axis order (latent_dim, seed, sigma_dec), the
  # last fastest, then the variant crossed with the axes it does not name.
  assert [(p.config.seed, p.config.sigma_dec, p.config.sigma_dec_mode)
          for p in points] == [
              (0, 0.1, "fixed"), (0, 0.2, "fixed"), (0, 0.4, "fixed"),
              (1, 0.1, "fixed"), (1, 0.2, "fixed"), (1, 0.4, "fixed"),
              (0, 0.2, "learned"), (1, 0.2, "learned")]
  assert [p.index for p in points] == list(range(8))
  groups = sweep.group_points(points)
  assert [[p.index for p in g] for g in groups] == [[0, 1, 2, 3, 4, 5],
                                                    [6, 7]]
  assert [[p.index for p in g] for g in sweep.group_points(points, 4)] == [
      [0, 1, 2, 3], [4, 5], [6, 7]]
  # A shape change (latent_dim) splits a group.
  c.grid.latent_dim = (2, 4)
  shapes = [{p.config.latent_dim for p in g}
            for g in sweep.group_points(sweep.expand_grid(c))]
  assert all(len(s) == 1 for s in shapes) and len(shapes) == 4


def test_default_config_is_valid_and_has_learned_and_optimal():
  c = sweep_config_lib.get_config()
  points = sweep.validate(c, 1)
  modes = {p.config.sigma_dec_mode for p in points}
  assert modes == {"fixed", "learned", "optimal"}
  assert {p.config.latent_dim for p in points} == {2, 8, 32}
  assert all(p.config.likelihood == "gaussian" and
             p.config.transform == "dequantize" for p in points)


def test_celeba_sweep_config_groups_fixed_sigma_per_latent_dim():
  from configs import celeba_sweep
  points = sweep.validate(celeba_sweep.get_config(), 8)
  assert len(points) == 4 * 6 + 2 * 4
  groups = sweep.group_points(points)
  # The 6 fixed σ_dec of each latent_dim are one vmapped program; learned
  # and optimal σ_dec change the program, so they run on their own.
  assert [len(g) for g in groups] == [6, 6, 6, 6] + [1] * 8
  assert all(len({p.config.latent_dim for p in g}) == 1 for g in groups)


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.grid, "sigma_dek", (0.1,)), "'sigma_dek' is not a"),
    (lambda c: setattr(c, "variants", c.variants + (
        {"sigma_dec_mode": "optimal"},)), "train the same model"),
    (lambda c: setattr(c.grid, "latent_dim", (0,)), "latent_dim=0 must be"),
    (lambda c: setattr(c, "start_index", 8), "leaves no points"),
    (lambda c: setattr(c.grid, "sigma_dec", (0.1, 0.1)),
     r"config.grid.sigma_dec lists the value 0.1 twice"),
    (lambda c: setattr(c.grid, "latent_dim", (2, 2.0)),
     r"config.grid.latent_dim lists the value 2.0 twice"),
    (lambda c: setattr(c, "variants", c.variants * 2),
     r"config.variants lists the variant .* twice"),
    (lambda c: setattr(c, "variants", c.variants + ({"seed": 1},)),
     "train the same model .* a variant repeats points of the grid"),
])
def test_bad_sweep_configs_fail_with_one_line(edit, message):
  c = tiny_sweep()
  edit(c)
  with pytest.raises(sweep.SweepError, match=message) as info:
    sweep.validate(c, 1)
  assert "\n" not in str(info.value)


def test_duplicate_axis_value_is_named_not_blamed_on_sigma_dec():
  c = tiny_sweep()
  c.grid.sigma_dec = (0.1, 0.2, 0.1)
  with pytest.raises(sweep.SweepError) as info:
    sweep.validate(c, 1)
  assert "lists the value 0.1 twice" in str(info.value)
  assert "unused" not in str(info.value)


def test_sigma_dec_grid_of_a_discretized_gaussian_is_distinct():
  """A discretized Gaussian decoder reads σ_dec: its points differ (they
  were refused as 'the same model') and its rows report σ_dec."""
  c = tiny_sweep()
  c.base.likelihood = "discretized_gaussian"
  c.base.transform = "none"
  c.base.num_levels = 17
  points = sweep.validate(c, 1)
  assert len(points) == 8
  scalars = {"elbo": -1.0, "reconstruction": 0.0, "kl": 1.0,
             "nll_iwae": 1.0, "active_units": 2, "step": 6,
             "iwae_samples": 8, "num_examples": 297, "sigma_dec": 0.3}
  fixed = sweep.point_row(points[1], scalars, 0.04, 1, 0.0, 0.0, 0)
  assert (fixed["sigma_dec"], fixed["sigma_dec_final"]) == (0.2, 0.2)
  learned = sweep.point_row(points[6], scalars, 0.04, 1, 0.0, 0.0, 0)
  assert learned["sigma_dec_final"] == 0.3


def test_learning_rate_groups_follow_the_optimizer():
  """Learning rates share a group exactly when the optimizer reads the
  rate from its state (set_learning_rate then changes the update)."""
  import optax
  c = tiny_sweep().base
  in_state = stack_lib.learning_rate_in_state(c)
  state_optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
  params = {"w": np.ones(2, np.float32)}
  opt_state = stack_lib.set_learning_rate(state_optimizer.init(params), 0.5)
  updates, _ = state_optimizer.update({"w": np.ones(2, np.float32)},
                                      opt_state, params)
  np.testing.assert_allclose(updates["w"], -0.5, rtol=1e-6)
  s = tiny_sweep()
  s.grid.learning_rate = (1e-3, 2e-3)
  groups = sweep.group_points(sweep.expand_grid(s))
  mixed = any(len({p.config.learning_rate for p in g}) > 1 for g in groups)
  assert mixed == in_state


# ------------------------------------------- vmapped == separate runs


def test_vmapped_group_matches_separate_runs(full_sweep, tmp_path):
  """Every point of the vmapped group (3 σ_dec × 2 seeds) and of the learned
  group ends where the same config run alone (`loop.train_and_evaluate`,
  what `python -m vae_jax.main` runs) ends.

  Not bit for bit. Measured after one step (σ_dec 0.1 and 0.2): the loss,
  the gradients and Adam's moments of the vmapped stack are bit-identical
  to the single run's; the parameter update p − lr·m̂/(√v̂ + ε) differs by
  one ulp in some elements (the vmapped program computes it in another
  compiled loop). Where the update nearly cancels a parameter those ulps
  are large relative errors, and training carries them on: tolerances
  below, not equality.
  """
  workdir, rows = full_sweep
  points = sweep.expand_grid(tiny_sweep())
  dataset = data_lib.get_dataset(points[0].config)
  for p in points:
    final = loop.train_and_evaluate(p.config, str(tmp_path / str(p.index)),
                                    dataset)
    alone, _, _ = checkpointing.restore_params(str(tmp_path / str(p.index)))
    together, _, _ = checkpointing.restore_params(
        sweep.point_dir(workdir, p.index))
    a, b = jax.tree.leaves(alone), jax.tree.leaves(together)
    assert len(a) == len(b)
    for x, y in zip(a, b):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5,
                                 atol=1e-6)
    row = rows[p.index]
    assert row["index"] == p.index
    for name in ("elbo", "reconstruction", "kl", "nll_iwae"):
      assert row[name] == pytest.approx(final[name], rel=1e-5, abs=1e-4)
    assert row["active_units"] == final["active_units"]
  # The points really differ: σ_dec and seed reached the stacked state.
  elbos = [r["elbo"] for r in rows[:6]]
  assert len(set(np.round(elbos, 3))) == 6
  learned = [r for r in rows if r["sigma_dec_mode"] == "learned"]
  assert all(r["sigma_dec_final"] != 0.2 for r in learned)


def test_learning_rates_vmapped_when_the_optimizer_reads_them(monkeypatch,
                                                            tmp_path):
  """With an optimizer that reads its rate from its state (a float, not a
  schedule, given to inject_hyperparams), points with different learning
  rates share a group, and each ends where it ends alone."""
  import optax
  from vae_jax.training import step as train_lib

  def float_lr_optimizer(config):
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=config.learning_rate, b1=config.adam_b1,
        b2=config.adam_b2)

  monkeypatch.setattr(train_lib, "make_optimizer", float_lr_optimizer)
  stack_lib._learning_rate_in_state_cached.cache_clear()
  try:
    c = tiny_sweep()
    c.grid.seed = (0,)
    c.grid.sigma_dec = (0.1,)
    c.grid.learning_rate = (1e-3, 3e-3)
    c.variants = ()
    points = sweep.expand_grid(c)
    assert [len(g) for g in sweep.group_points(points)] == [2]
    dataset = data_lib.get_dataset(points[0].config)
    loop.train(sweep.members_of(points, str(tmp_path / "together")), dataset)
    firsts = []
    for p in points:
      loop.train_and_evaluate(p.config, str(tmp_path / f"alone{p.index}"),
                              dataset)
      alone, _, _ = checkpointing.restore_params(
          str(tmp_path / f"alone{p.index}"))
      together, _, _ = checkpointing.restore_params(
          sweep.point_dir(str(tmp_path / "together"), p.index))
      for x, y in zip(jax.tree.leaves(alone), jax.tree.leaves(together)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x),
                                   rtol=1e-5, atol=1e-6)
      firsts.append(np.asarray(jax.tree.leaves(alone)[0]))
    assert not np.allclose(firsts[0], firsts[1])  # the rates took effect
  finally:
    stack_lib._learning_rate_in_state_cached.cache_clear()


def test_nan_policy_names_the_point_or_skips_its_updates(monkeypatch,
                                                        tmp_path):
  """A non-finite loss in one vmapped point stops the stack naming that
  point (nan_policy='stop') or drops only its updates ('skip')."""
  import jax.numpy as jnp
  from vae_jax.training import step as train_lib
  real = train_lib.objective_terms

  def nan_for_large_sigma(model, config, params, key, x):
    terms = real(model, config, params, key, x)
    bad = params["log_sigma_dec"] > jnp.log(0.3)  # σ_dec = 0.4 only
    terms["objective"] = jnp.where(bad, jnp.nan, terms["objective"])
    return terms

  monkeypatch.setattr(train_lib, "objective_terms", nan_for_large_sigma)
  points = sweep.expand_grid(tiny_sweep())[:3]  # σ_dec 0.1, 0.2, 0.4
  dataset = data_lib.get_dataset(points[0].config)
  stopped = str(tmp_path / "stop")
  with pytest.raises(FloatingPointError, match="at step 1 of sweep point 2"):
    loop.train(sweep.members_of(points, stopped), dataset)
  for p in points:  # no checkpoint after the bad step
    assert not os.listdir(os.path.join(sweep.point_dir(stopped, p.index),
                                       "checkpoints"))
  for p in points:
    p.config.nan_policy = "skip"
  skipped = str(tmp_path / "skip")
  finals = loop.train(sweep.members_of(points, skipped), dataset)
  assert [f["skipped_updates"] for f in finals] == [0, 0, 6]
  init = stack_lib.init_member_state(points[2].config, dataset.event_shape,
                                     train_lib.make_optimizer(points[2].config))
  trained, _, _ = checkpointing.restore_params(sweep.point_dir(skipped, 2))
  for x, y in zip(jax.tree.leaves(init["params"]), jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


# ------------------------------------------------------ resume and split


def test_interrupted_sweep_gives_the_same_csv(full_sweep, tmp_path,
                                              monkeypatch):
  workdir = str(tmp_path)
  config = tiny_sweep()

  class Crash(Exception):
    pass

  # Count the steps each stack trains.
  trained_steps = []
  real_make_step = stack_lib.make_stack_step

  def counting_make_step(*args, **kwargs):
    step = real_make_step(*args, **kwargs)
    trained_steps.append(0)

    def counted(states, batches):
      trained_steps[-1] += 1
      return step(states, batches)
    return counted

  monkeypatch.setattr(stack_lib, "make_stack_step", counting_make_step)

  # Crash 1: between the members' saves at the last step: points 0-2 of
  # the first group have checkpoints at steps 3 and 6, points 3-5 at 3.
  real_save = checkpointing.save

  def save_then_crash(manager, step, state, meta):
    real_save(manager, step, state, meta)
    c = meta["config"]
    if step == 6 and c["seed"] == 0 and c["sigma_dec"] == 0.4:
      manager.wait_until_finished()
      raise Crash

  monkeypatch.setattr(checkpointing, "save", save_then_crash)
  with pytest.raises(Crash):
    sweep.run_sweep(config, workdir)
  assert trained_steps == [6]
  assert not glob.glob(os.path.join(workdir, "points", "*", "result.json"))
  monkeypatch.setattr(checkpointing, "save", real_save)

  # Crash 2: after two points of the first group are recorded. The group
  # resumes at step 3, the newest step all its members have.
  real_record = sweep_run._record_point
  recorded = []

  def record_then_crash(point, *args, **kwargs):
    if len(recorded) == 2:
      raise Crash
    recorded.append(point.index)
    return real_record(point, *args, **kwargs)

  monkeypatch.setattr(sweep_run, "_record_point", record_then_crash)
  trained_steps.clear()
  with pytest.raises(Crash):
    sweep.run_sweep(config, workdir)
  assert recorded == [0, 1]
  assert trained_steps == [3]
  monkeypatch.setattr(sweep_run, "_record_point", real_record)

  # Restart: the first group's other 4 points are trained and evaluated
  # already (their final checkpoints and final_metrics.json): nothing is
  # retrained; the second group trains from scratch.
  trained_steps.clear()
  sweep.run_sweep(config, workdir)
  assert trained_steps == [6]
  full_dir, _ = full_sweep
  assert reproducible(read(os.path.join(workdir, "results.csv"))) == (
      reproducible(read(os.path.join(full_dir, "results.csv"))))

  # A rerun of a finished sweep trains nothing and keeps the table.
  trained_steps.clear()
  sweep.run_sweep(config, workdir)
  assert trained_steps == []
  assert reproducible(read(os.path.join(workdir, "results.csv"))) == (
      reproducible(read(os.path.join(full_dir, "results.csv"))))


def test_split_by_index_range_and_merge(full_sweep, tmp_path):
  config = tiny_sweep()
  parts = []
  for start, end in ((0, 3), (3, -1)):  # cuts the vmapped group in two
    config.start_index, config.end_index = start, end
    part = str(tmp_path / f"part{start}")
    sweep.run_sweep(config, part)
    parts.append(part)
  assert len(read(os.path.join(parts[0], "results.csv"))) == 3
  rows, missing = sweep.write_merged(parts, str(tmp_path / "merged"))
  assert missing == []
  merged = read(str(tmp_path / "merged" / "results.csv"))
  full = read(os.path.join(full_sweep[0], "results.csv"))
  assert [r["index"] for r in merged] == [str(i) for i in range(8)]
  assert len(merged) == len(full)
  # Two groups of 3 instead of 6 vmapped together: equal to float
  # tolerance, not bit for bit.
  for m, f in zip(reproducible(merged), reproducible(full)):
    assert m.keys() == f.keys()
    for k in m:
      try:
        assert float(m[k]) == pytest.approx(float(f[k]), rel=1e-5,
                                            abs=1e-5), k
      except ValueError:
        assert m[k] == f[k], k
  # Parts of another sweep are refused.
  other = tiny_sweep()
  other.grid.sigma_dec = (0.1, 0.2, 0.5)
  other.start_index, other.end_index = 0, 3
  sweep.run_sweep(other, str(tmp_path / "other"))
  with pytest.raises(sweep.SweepError, match="another sweep"):
    sweep.merge_csvs([parts[0], str(tmp_path / "other")])
  # A workdir refuses a changed sweep.
  with pytest.raises(sweep.SweepError, match="holds another sweep"):
    sweep.run_sweep(other, parts[0])


# ---------------------------------------------------------------- outputs


def test_outputs_table_plots_and_samples(full_sweep):
  workdir, rows = full_sweep
  table = read(os.path.join(workdir, "results.csv"))
  assert len(table) == 8
  for column in ("latent_dim", "sigma_dec", "seed", "elbo", "reconstruction",
                 "kl", "nll_iwae", "active_units", "sigma_dec_final", "steps",
                 "train_time_s"):
    assert column in table[0], column
  assert all(r["steps"] == "6" for r in table)
  for r in rows:
    # ELBO = reconstruction − KL (nats), and the learned σ_dec is reported.
    assert r["elbo"] == pytest.approx(r["reconstruction"] - r["kl"],
                                      rel=1e-5)
    assert r["sigma_dec_final"] > 0 and r["mse"] > 0
  for name in ("rate_distortion.png", "elbo_nll_vs_sigma_dec.png",
               "active_units_vs_latent_dim.png", "samples.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000, name
  for i in range(8):
    folder = sweep.point_dir(workdir, i)
    for name in ("samples_00000006.png", "reconstructions_00000006.png"):
      assert os.path.isfile(os.path.join(folder, "images", name))
    # Every point is a full run: train rows and TensorBoard events.
    lines = [json.loads(l) for l in open(os.path.join(folder,
                                                      "metrics.jsonl"))]
    assert any("train/loss" in l for l in lines)
    # Test rows during training and at the last step, one tag.
    assert [l["step"] for l in lines if "test/elbo" in l] == [3, 6]
    assert glob.glob(os.path.join(folder, "tensorboard", "events.*"))
    final = json.load(open(os.path.join(sweep.point_dir(workdir, i),
                                        "final_metrics.json")))
    assert final["elbo"] == rows[i]["elbo"]


def test_optimal_sigma_is_the_root_mse():
  """For sigma_dec_mode='optimal' the reported σ_dec is √(test MSE); the
  empty sigma_dec cell says the configured value was unused."""
  c = tiny_sweep()
  point = sweep.Point(0, {"sigma_dec_mode": "optimal"},
                      sweep.expand_grid(c)[0].config)
  point.config.sigma_dec_mode = "optimal"
  scalars = {"elbo": -1.0, "reconstruction": 0.0, "kl": 1.0,
             "nll_iwae": 1.0, "active_units": 2, "step": 6,
             "iwae_samples": 8, "num_examples": 297}
  row = sweep.point_row(point, scalars, 0.04, 1, 0.0, 0.0, 0)
  assert row["sigma_dec_final"] == pytest.approx(0.2)
  assert row["sigma_dec"] is None


# ------------------------------------------------------------- entry point


_MULTI_DEVICE_SCRIPT = r"""
import sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from test_sweep import tiny_sweep, MESH_POINTS
from vae_jax import sweep
from vae_jax import data as data_lib
from vae_jax.training import checkpointing, loop
assert jax.device_count() == 4, jax.device_count()
points = [sweep.expand_grid(tiny_sweep())[i] for i in MESH_POINTS]
loop.train(sweep.members_of(points, {workdir!r}),
           data_lib.get_dataset(points[0].config))
leaves = [jax.tree.leaves(checkpointing.restore_params(
    sweep.point_dir({workdir!r}, p.index))[0]) for p in points]
np.savez({out!r}, *[np.stack(xs) for xs in zip(*leaves)])
"""

# Two seeds (two data streams gathered per point) and two σ_dec.
MESH_POINTS = (0, 1, 3)


def test_four_devices_match_one(full_sweep, tmp_path):
  """A group trained with its batch axis sharded over a 4-device mesh ends
  where the single-device sweep ends."""
  script = _MULTI_DEVICE_SCRIPT.format(
      tests=os.path.join(REPO, "tests"), out=str(tmp_path / "four.npz"),
      workdir=str(tmp_path / "four"))
  proc = run_python(["-c", script], num_host_devices=4)
  assert proc.returncode == 0, proc.stderr[-2000:]
  four = np.load(tmp_path / "four.npz")
  stacked = [four[f"arr_{j}"] for j in range(len(four.files))]
  for row, i in enumerate(MESH_POINTS):
    params, _, _ = checkpointing.restore_params(
        sweep.point_dir(full_sweep[0], i))
    for j, leaf in enumerate(jax.tree.leaves(params)):
      np.testing.assert_allclose(stacked[j][row], np.asarray(leaf),
                                 rtol=1e-4, atol=1e-5)


def test_cli_bad_config_and_merge(tmp_path, full_sweep):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep",
       "--config=configs/sweep.py:quick", f"--workdir={tmp_path / 'bad'}",
       "--config.base.batch_size=0"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "batch_size=0 must be > 0" in errors[0]
  assert not (tmp_path / "bad").exists()
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep",
       f"--merge={full_sweep[0]}", f"--workdir={tmp_path / 'merged'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "merged 8 points" in proc.stdout
  assert read(str(tmp_path / "merged" / "results.csv")) == read(
      os.path.join(full_sweep[0], "results.csv"))
  # A --workdir that cannot be created: one line, not a traceback.
  (tmp_path / "a_file").write_text("")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep",
       f"--merge={full_sweep[0]}", f"--workdir={tmp_path / 'a_file' / 'x'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "Not a directory" in errors[0], proc.stderr


# ------------------------------------------- workdirs that hold other things


def test_sweep_refuses_a_single_runs_workdir(run_workdir, tmp_path):
  """A folder with a run's config.json / checkpoints/ is another
  experiment: one error line, exit 2, not a file touched."""
  before = snapshot(run_workdir)
  proc = run_python(["-m", "vae_jax.main", "--config=configs/sweep.py:quick",
                     f"--workdir={run_workdir}"], timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = error_lines(proc)
  assert len(errors) == 1 and "holds a single run" in errors[0], errors
  assert snapshot(run_workdir) == before
  # Checkpoints alone mark a run too.
  only_checkpoints = tmp_path / "only_checkpoints"
  (only_checkpoints / "checkpoints").mkdir(parents=True)
  config = tiny_sweep()
  with pytest.raises(sweep.SweepError, match="holds a single run"):
    sweep.run_sweep(config, str(only_checkpoints))
  assert os.listdir(only_checkpoints) == ["checkpoints"]


def test_merge_refuses_a_run_or_another_sweep(full_sweep, run_workdir,
                                              tmp_path):
  """--merge writes into --workdir only when it is new or holds the same
  sweep: a run's folder, another sweep's (its sweep.json would disagree
  with the new results.csv) or one the parts cannot be matched to is
  refused before anything is written."""
  other = copy_of(full_sweep[0], tmp_path, "other")
  meta = json.load(open(os.path.join(other, "sweep.json")))
  meta["fingerprint"] = "0" * 16
  json.dump(meta, open(os.path.join(other, "sweep.json"), "w"))
  for target, message in ((run_workdir, "holds a single run"),
                          (other, "holds another sweep")):
    before = snapshot(target)
    proc = run_python(["-m", "experiments.sweep",
                       f"--merge={full_sweep[0]}", f"--workdir={target}"],
                      timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = error_lines(proc)
    assert len(errors) == 1 and message in errors[0], errors
    assert snapshot(target) == before
  # Parts without sweep.json (bare CSVs) cannot be shown to belong to it.
  csv_only = tmp_path / "csv" / "results.csv"
  csv_only.parent.mkdir()
  shutil.copy(os.path.join(full_sweep[0], "results.csv"), csv_only)
  before = snapshot(other)
  with pytest.raises(sweep.SweepError, match="have no sweep.json"):
    sweep.write_merged([str(csv_only)], other)
  assert snapshot(other) == before


def test_merge_refuses_a_folder_with_trained_points(full_sweep, tmp_path):
  """Merging parts into one of them would list in its results.csv points
  its points/ lacks: refused, nothing written."""
  part = copy_of(full_sweep[0], tmp_path, "part")
  before = snapshot(part)
  with pytest.raises(sweep.SweepError, match="holds trained points") as info:
    sweep.write_merged([part, full_sweep[0]], part)
  assert "\n" not in str(info.value)
  assert snapshot(part) == before
  # Also without its sweep.json (deleted, or from before sweep.json).
  os.remove(os.path.join(part, "sweep.json"))
  before = snapshot(part)
  with pytest.raises(sweep.SweepError, match="holds trained points"):
    sweep.write_merged([full_sweep[0]], part)
  assert snapshot(part) == before


def test_damaged_sweep_json_is_one_line(full_sweep, tmp_path):
  workdir = copy_of(full_sweep[0], tmp_path, "damaged")
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    f.write("{bad")
  before = snapshot(workdir)
  proc = run_python(["-m", "vae_jax.main", "--config=configs/sweep.py:quick",
                     f"--workdir={workdir}"], timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = error_lines(proc)
  assert len(errors) == 1, proc.stderr[-2000:]
  assert "sweep.json is unreadable (JSONDecodeError)" in errors[0]
  assert "Traceback" not in proc.stderr
  with pytest.raises(sweep.SweepError, match="sweep.json is unreadable"):
    sweep.run_sweep(tiny_sweep(), workdir)
  with pytest.raises(sweep.SweepError, match="sweep.json is unreadable"):
    sweep.write_merged([workdir], str(tmp_path / "merged"))
  assert snapshot(workdir) == before
  assert not (tmp_path / "merged").exists()


def test_damaged_result_json_reruns_the_point(full_sweep, tmp_path,
                                              monkeypatch):
  """A damaged points/<i>/result.json counts as not done: a warning names
  it, the point is evaluated again and its row rewritten."""
  workdir = copy_of(full_sweep[0], tmp_path, "damaged")
  damaged = os.path.join(sweep.point_dir(workdir, 2), "result.json")
  with open(damaged, "w") as f:
    f.write("{bad")
  warnings = []
  monkeypatch.setattr(sweep_results.logging, "warning",
                      lambda msg, *args: warnings.append(msg % args))
  rows = sweep.run_sweep(tiny_sweep(), workdir)
  assert len(warnings) == 1 and damaged in warnings[0], warnings
  assert "point 2 counts as not done" in warnings[0]
  assert json.load(open(damaged))["row"]["index"] == 2
  assert [r["index"] for r in rows] == list(range(8))
  assert reproducible(read(os.path.join(workdir, "results.csv"))) == (
      reproducible(read(os.path.join(full_sweep[0], "results.csv"))))


def test_merge_refuses_parts_trained_for_different_steps(tmp_path):
  """The fingerprint leaves num_train_steps out (a sweep may be extended
  in its workdir), so the merge compares the rows' steps; extending the
  shorter part makes them mergeable."""
  config = tiny_sweep(steps=2, every=2)
  config.grid.sigma_dec = (0.1, 0.2)
  config.grid.seed = (0,)
  config.variants = ()
  parts = [str(tmp_path / "a"), str(tmp_path / "b")]
  config.start_index, config.end_index = 0, 1
  sweep.run_sweep(config, parts[0])
  config.base.num_train_steps = 3
  config.start_index, config.end_index = 1, -1
  sweep.run_sweep(config, parts[1])
  with pytest.raises(sweep.SweepError) as info:
    sweep.write_merged(parts, str(tmp_path / "merged"))
  assert "was trained for 2 steps" in str(info.value)
  assert "\n" not in str(info.value)
  assert not (tmp_path / "merged").exists()
  config.start_index, config.end_index = 0, 1  # extend part a to 3 steps
  sweep.run_sweep(config, parts[0])
  rows, missing = sweep.write_merged(parts, str(tmp_path / "merged"))
  assert missing == [] and [r["steps"] for r in rows] == ["3", "3"]


def test_a_sweep_extended_in_part_tables_only_points_at_the_new_steps(
    tmp_path):
  """Extending point 0 of two to 3 steps leaves point 1 at 2: results.csv
  (whose sweep.json now says 3) holds point 0 alone, until point 1 is
  extended too."""
  config = tiny_sweep(steps=2, every=2)
  config.grid.sigma_dec = (0.1, 0.2)
  config.grid.seed = (0,)
  config.variants = ()
  workdir = str(tmp_path / "sw")
  sweep.run_sweep(config, workdir)
  config.base.num_train_steps = 3
  config.start_index, config.end_index = 0, 1
  rows = sweep.run_sweep(config, workdir)
  table = read(os.path.join(workdir, "results.csv"))
  assert [(r["index"], r["steps"]) for r in rows] == [(0, 3)]
  assert [(r["index"], r["steps"]) for r in table] == [("0", "3")]
  meta = json.load(open(os.path.join(workdir, "sweep.json")))
  assert meta["config"]["base"]["num_train_steps"] == 3
  config.start_index, config.end_index = 1, 2
  sweep.run_sweep(config, workdir)
  table = read(os.path.join(workdir, "results.csv"))
  assert [(r["index"], r["steps"]) for r in table] == [("0", "3"),
                                                      ("1", "3")]


def test_a_trained_point_keeps_its_checkpoints_beside_a_new_one(full_sweep,
                                                                tmp_path):
  """Point 0 trained alone and interrupted before its result was recorded,
  then the range widened to points 0-1 (one vmapped program): point 0
  resumes and point 1 starts afresh, in separate groups. Grouped together,
  point 0's checkpoints were deleted and it was retrained from step 0."""
  config = tiny_sweep()
  workdir = str(tmp_path / "sw")
  config.start_index, config.end_index = 0, 1
  sweep.run_sweep(config, workdir)
  point0 = os.path.join(workdir, "points", "0")
  for name in ("result.json", "final_metrics.json"):
    os.remove(os.path.join(point0, name))
  checkpoints = snapshot(os.path.join(point0, "checkpoints"))
  config.end_index = 2
  sweep.run_sweep(config, workdir)
  assert snapshot(os.path.join(point0, "checkpoints")) == checkpoints
  # Trained alone or in the full sweep's group of 6: equal to float
  # tolerance (README: vmapped groups are not bit-identical).
  full_dir, _ = full_sweep
  got = read(os.path.join(workdir, "results.csv"))
  want = read(os.path.join(full_dir, "results.csv"))[:2]
  assert [r["index"] for r in got] == ["0", "1"]
  for column in ("elbo", "nll_iwae", "kl"):
    np.testing.assert_allclose([float(r[column]) for r in got],
                               [float(r[column]) for r in want], rtol=1e-4)


def test_sweep_and_merge_refuse_a_workdir_that_is_a_file(full_sweep,
                                                         tmp_path):
  afile = tmp_path / "a_file"
  afile.write_text("not a folder")
  with pytest.raises(sweep.SweepError, match="is a file, not a folder"):
    sweep.run_sweep(tiny_sweep(), str(afile))
  with pytest.raises(sweep.SweepError, match="is a file, not a folder"):
    sweep.write_merged([full_sweep[0]], str(afile))
  assert afile.read_text() == "not a folder"
