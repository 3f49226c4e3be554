"""Orbax checkpoints of a training run, with resume and corrupt-step fallback.

Each checkpoint step holds two items:
  state: the TrainState pytree (params, optimizer state, step, PRNG key data)
  meta:  JSON: the data iterator's position, the resolved config, and the
         data standardization (tabular data), so a checkpoint alone can
         rebuild the model and its inputs.
"""

import base64
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """No checkpoint in a directory could be restored; message is one line."""


def checkpoint_dir(workdir):
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir, keep):
  """A CheckpointManager keeping the `keep` most recent steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def encode_iterator_state(state):
  """Makes a grain iterator state JSON-safe (bytes become base64 text)."""
  if isinstance(state, bytes):
    return {"bytes_b64": base64.b64encode(state).decode("ascii")}
  return {"json": state}


def decode_iterator_state(blob):
  if "bytes_b64" in blob:
    return base64.b64decode(blob["bytes_b64"])
  return blob["json"]


def _all_finite(tree):
  leaves = [np.asarray(x) for x in jax.tree.leaves(tree)
            if np.issubdtype(np.asarray(x).dtype, np.floating)]
  return all(np.isfinite(x).all() for x in leaves)


def save(manager, step, state, meta):
  """Saves `state` (a pytree) and `meta` (JSON) at `step`.

  Raises:
    FloatingPointError: the state holds NaN or inf; nothing is written, so
      the last good checkpoint stays the latest.
  """
  if not _all_finite(state):
    raise FloatingPointError(f"refusing to checkpoint non-finite state at "
                             f"step {step}")
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               force=True)


def restore_latest(manager, abstract_state):
  """Restores the newest checkpoint that loads, falling back on failure.

  Args:
    manager: CheckpointManager of the workdir.
    abstract_state: a pytree of the same structure (arrays or
      jax.ShapeDtypeStruct with shardings) telling orbax what to build.

  Returns:
    (step, state, meta), or None when there is no checkpoint at all.

  Raises:
    CheckpointError: checkpoints exist but none could be restored.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  unreadable = []
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore()))
      if not _all_finite(restored.state):
        raise ValueError("it holds non-finite values")
      _set_aside(manager, unreadable)
      return step, restored.state, restored.meta
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises many types for a damaged step; any of them means "use
      # the previous one". The message names the step for the user.
      logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); "
                      "falling back to an earlier one", step,
                      manager.directory, type(e).__name__,
                      str(e).splitlines()[0][:200] if str(e) else "")
      unreadable.append(step)
  raise CheckpointError(f"no readable checkpoint in {manager.directory} "
                        f"(tried steps {steps})")


def _set_aside(manager, steps):
  """Moves unreadable step folders to <workdir>/corrupt_checkpoints/.

  They are kept for inspection rather than deleted, and moved out of the
  manager's way so the resumed run can save those steps again.
  """
  if not steps:
    return
  root = os.fspath(manager.directory)
  aside = os.path.join(os.path.dirname(root), "corrupt_checkpoints")
  os.makedirs(aside, exist_ok=True)
  for step in steps:
    target = os.path.join(aside, f"{step}.{int(time.time())}")
    shutil.move(os.path.join(root, str(step)), target)
    logging.warning("moved unreadable checkpoint step %d to %s", step, target)
  manager.reload()


def restore_params(workdir):
  """Loads the latest readable checkpoint's parameters and config.

  For tools that use a trained model (experiments, applications) without
  its optimizer: the state is restored without a template.

  Returns:
    (params pytree of np arrays, config ConfigDict, meta dict).
  """
  import ml_collections
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f"no checkpoints in {directory}: train first with "
                          f"python -m vae_jax.main --workdir={workdir}")
  manager = ocp.CheckpointManager(directory)
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("checkpoint at step %d unreadable (%s); trying an "
                        "earlier one", step, type(e).__name__)
        continue
      config = ml_collections.ConfigDict(restored.meta["config"])
      return restored.state["params"], config, restored.meta
  finally:
    manager.close()
  raise CheckpointError(f"no readable checkpoint in {directory}")
