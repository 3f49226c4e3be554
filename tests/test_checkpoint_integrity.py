"""Checkpoints are verified on restore: damage is found, reported in one
line, and the previous step is used instead.

Damage is made the way it happens (bytes flipped in place, files garbled or
emptied) and checked against the saved arrays themselves.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vae_jax.training import checkpointing


def make_state(seed):
  """A TrainState-shaped pytree; random floats, so the data files do not
  compress and a flipped byte lands in an array's bytes."""
  rng = np.random.default_rng(seed)
  params = {"enc": {"w": rng.normal(size=(64, 64)).astype(np.float32),
                    "b": rng.normal(size=(64,)).astype(np.float32)}}
  mu = jax.tree.map(lambda x: 0.1 * x, params)
  return {"step": np.int32(seed), "params": params,
          "opt_state": ({"count": np.int32(seed)}, {"mu": mu, "nu": mu}),
          "key": np.array([seed, 7], np.uint32)}


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x),
                                                     np.asarray(x).dtype),
                      state)


def save_steps(workdir, steps):
  manager = checkpointing.make_manager(workdir, keep=5)
  for s in steps:
    checkpointing.save(manager, s, make_state(s), {"data_iterator": {"s": s},
                                                   "config": {"seed": 0}})
  manager.wait_until_finished()
  return manager


def assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def flip_bytes_in_largest_data_file(step_dir, count=16):
  """XORs `count` bytes in the middle of the step's largest array file;
  the file keeps its length."""
  files = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "d",
                                             "*"), recursive=True)
           if os.path.isfile(p)]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    for i in range(mid, mid + count):
      data[i] ^= 0xFF
    f.seek(0)
    f.write(data)
  return path


def test_flipped_bytes_are_found_and_the_previous_step_is_used(tmp_path):
  manager = save_steps(tmp_path, [1, 2])
  step2 = os.path.join(checkpointing.checkpoint_dir(tmp_path), "2")
  path = flip_bytes_in_largest_data_file(step2)
  size = os.path.getsize(path)
  # Orbax alone restores the damaged step without complaint, wrong values:
  # this is the damage only the checksums can see.
  raw = manager.restore(2, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract(make_state(2))),
      meta=ocp.args.JsonRestore()))
  differs = [not np.array_equal(np.asarray(x), y) for x, y in zip(
      jax.tree.leaves(raw.state), jax.tree.leaves(make_state(2)))]
  assert sum(differs) == 1
  assert os.path.getsize(path) == size

  step, state, meta = checkpointing.restore_latest(
      manager, abstract(make_state(2)))
  assert step == 1
  assert_trees_equal(state, make_state(1))
  assert meta == {"data_iterator": {"s": 1}, "config": {"seed": 0}}
  assert manager.all_steps() == [1]
  aside = glob.glob(str(tmp_path / "corrupt_checkpoints" / "2.*"))
  assert len(aside) == 1 and os.path.isdir(aside[0])
  manager.close()


def test_restore_params_skips_a_damaged_step(tmp_path):
  save_steps(tmp_path, [1, 2]).close()
  flip_bytes_in_largest_data_file(
      os.path.join(checkpointing.checkpoint_dir(tmp_path), "2"))
  params, config, meta = checkpointing.restore_params(str(tmp_path))
  assert_trees_equal(params, make_state(1)["params"])
  assert config.seed == 0 and meta["data_iterator"] == {"s": 1}


def test_edited_meta_is_damage(tmp_path):
  manager = save_steps(tmp_path, [1, 2])
  # Valid JSON with one value changed: a parser cannot notice.
  path = os.path.join(checkpointing.checkpoint_dir(tmp_path), "2", "meta",
                      "metadata")
  blob = json.load(open(path))
  blob["data_iterator"]["s"] = 3
  json.dump(blob, open(path, "w"))
  step, _, meta = checkpointing.restore_latest(manager,
                                               abstract(make_state(2)))
  assert step == 1 and meta["data_iterator"] == {"s": 1}
  manager.close()


def test_checkpoints_without_checksums_still_restore(tmp_path):
  # What `save` wrote before checksums existed.
  manager = checkpointing.make_manager(tmp_path, keep=3)
  manager.save(4, args=ocp.args.Composite(
      state=ocp.args.StandardSave(make_state(4)),
      meta=ocp.args.JsonSave({"data_iterator": {"s": 4}})))
  manager.wait_until_finished()
  step, state, meta = checkpointing.restore_latest(manager,
                                                   abstract(make_state(4)))
  assert step == 4 and meta == {"data_iterator": {"s": 4}}
  assert_trees_equal(state, make_state(4))
  manager.close()


def test_manager_delete_and_all_steps_keep_working(tmp_path):
  manager = save_steps(tmp_path, [1, 2, 3])
  manager.delete(3)
  assert manager.all_steps() == [1, 2]
  step, state, _ = checkpointing.restore_latest(manager,
                                                abstract(make_state(2)))
  assert step == 2
  assert_trees_equal(state, make_state(2))
  manager.close()


def test_every_step_damaged_is_one_error(tmp_path):
  manager = save_steps(tmp_path, [1, 2])
  for s in (1, 2):
    flip_bytes_in_largest_data_file(
        os.path.join(checkpointing.checkpoint_dir(tmp_path), str(s)))
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"no readable checkpoint .*tried steps \[2, 1\]"):
    checkpointing.restore_latest(manager, abstract(make_state(2)))
  manager.close()


def test_non_finite_state_is_not_saved(tmp_path):
  manager = checkpointing.make_manager(tmp_path, keep=3)
  state = make_state(1)
  state["opt_state"][1]["nu"]["enc"]["b"][3] = np.inf
  with pytest.raises(FloatingPointError, match="step 5"):
    checkpointing.save(manager, 5, state, {})
  manager.wait_until_finished()
  assert manager.all_steps() == []
  manager.close()


_FALLBACK_SCRIPT = textwrap.dedent("""
  import glob, os, shutil, sys
  import jax, numpy as np
  from vae_jax.training import checkpointing

  def state(seed):
    rng = np.random.default_rng(seed)
    # Many arrays: many reads in flight when the first one fails.
    return {f"w{i:02d}": rng.normal(size=(8, 8)).astype(np.float32)
            for i in range(40)}

  # Whether reads are still in flight when orbax gives up is a race, lost
  # in about 2 of 3 tries: three garbled workdirs make the noise near sure.
  # The last two damage every file of the step, or leave its folder empty.
  for mode, payload, pattern in (
      ("garbled0", b"garbage", "state/**/d/*"),
      ("garbled1", b"garbage", "state/**/d/*"),
      ("garbled2", b"garbage", "state/**/d/*"),
      ("emptied", b"", "state/**/d/*"),
      ("allgarbled", b"garbage", "**/*"),
      ("emptydir", None, None)):
    workdir = os.path.join(sys.argv[1], mode)
    manager = checkpointing.make_manager(workdir, keep=3)
    for s in (1, 2):
      checkpointing.save(manager, s, state(s), {"s": s})
    manager.wait_until_finished()
    manager.close()
    step_dir = os.path.join(workdir, "checkpoints", "2")
    if payload is None:
      shutil.rmtree(step_dir)
      os.makedirs(step_dir)
    for path in glob.glob(os.path.join(step_dir, pattern or "-"),
                          recursive=True):
      if os.path.isfile(path):
        with open(path, "wb") as f:
          f.write(payload)
    manager = checkpointing.make_manager(workdir, keep=3)  # a new process'
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state(2))
    step, restored, _ = checkpointing.restore_latest(manager, abstract)
    assert step == 1, step
    assert all(np.array_equal(restored[k], v) for k, v in state(1).items())
    manager.close()
  print("ok")
""")


def test_fallback_prints_one_warning_line_per_damaged_step(tmp_path):
  script = tmp_path / "fallback.py"
  script.write_text(_FALLBACK_SCRIPT)
  result = subprocess.run([sys.executable, str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == "ok"
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  modes = ("garbled0", "garbled1", "garbled2", "emptied", "allgarbled",
           "emptydir")
  assert len(lines) == len(modes), "\n".join(lines[:40])
  for mode, line in zip(modes, lines):
    assert "WARNING" in line and "checkpoint step 2" in line, line
    assert f"{mode}/corrupt_checkpoints/2." in line, line
    assert "resuming from step 1" in line, line
