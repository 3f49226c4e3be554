"""What the per-array checksums cost a checkpoint save and restore.

    python -m experiments.bench_checkpoint_checksums [--params=5000000 --rounds=7]

A TrainState-shaped pytree (params and Adam's two moments, float32, so 3 ×
`params` numbers) is saved and restored in interleaved rounds by
  plain    orbax with the same items (what `checkpointing.save` did before
           checksums: finite check, then save), and
  checked  `checkpointing.save` / `restore_latest` (finite check, SHA-256
           of every array and of meta, verified after the restore).
Each timing includes `wait_until_finished`, so the asynchronous write is
counted. Printed: medians over rounds of process CPU and wall seconds, and
the median of per-round ratios checked/plain with their [min, max].
"""

import os
import shutil
import statistics
import tempfile
import time

from absl import flags
import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import cli
from vae_jax.training import checkpointing

_PARAMS = flags.DEFINE_integer("params", 5_000_000, "parameters per model")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "interleaved rounds")


def _state(n):
  rng = np.random.default_rng(0)
  p = {"w": rng.normal(size=(n,)).astype(np.float32)}
  return {"step": np.int32(1), "params": p,
          "opt_state": {"mu": {"w": p["w"] * 0.1}, "nu": {"w": p["w"] ** 2}}}


def _plain_save(manager, step, state, meta):
  checkpointing._all_finite(checkpointing._host_leaves(state))  # pylint: disable=protected-access
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               force=True)


def _plain_restore(manager, abstract):
  step = manager.latest_step()
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))


def _timed(fn):
  c0, w0 = time.process_time(), time.perf_counter()
  fn()
  return time.process_time() - c0, time.perf_counter() - w0


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  state = _state(_PARAMS.value)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          state)
  meta = {"data_iterator": {"json": {"i": 1}}}
  root = tempfile.mkdtemp()
  times = {(k, op): [] for k in ("plain", "checked") for op in ("save",
                                                              "restore")}
  try:
    for r in range(_ROUNDS.value + 1):  # round 0 warms up, not counted
      for kind in ("plain", "checked") if r % 2 else ("checked", "plain"):
        workdir = os.path.join(root, f"{kind}{r}")
        manager = checkpointing.make_manager(workdir, keep=1)
        save = checkpointing.save if kind == "checked" else _plain_save

        def do_save():
          save(manager, 1, state, meta)  # pylint: disable=cell-var-from-loop
          manager.wait_until_finished()  # pylint: disable=cell-var-from-loop
        restore = (lambda: checkpointing.restore_latest(manager, abstract)) \
            if kind == "checked" else (lambda: _plain_restore(manager,
                                                              abstract))
        t_save, t_restore = _timed(do_save), _timed(restore)
        manager.close()
        shutil.rmtree(workdir)
        if r:
          times[(kind, "save")].append(t_save)
          times[(kind, "restore")].append(t_restore)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  mb = 3 * _PARAMS.value * 4 / 1e6
  print(f"state: 3 x {_PARAMS.value:,} float32 = {mb:.0f} MB, "
        f"{_ROUNDS.value} rounds")
  for op in ("save", "restore"):
    for i, clock in enumerate(("cpu", "wall")):
      plain = [t[i] for t in times[("plain", op)]]
      checked = [t[i] for t in times[("checked", op)]]
      ratios = [c / p for c, p in zip(checked, plain)]
      print(f"{op:8s} {clock:4s} plain {statistics.median(plain):.3f} s  "
            f"checked {statistics.median(checked):.3f} s  ratio "
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, "
            f"{max(ratios):.2f}]")


if __name__ == "__main__":
  cli.run(main, config_flag=None)
