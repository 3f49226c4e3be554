"""Orbax checkpoints of a training run, with resume and damaged-step fallback.

Each checkpoint step holds two items:
  state: the TrainState pytree (params, optimizer state, step, PRNG key data)
  meta:  JSON: the data iterator's position, the resolved config, and the
         data standardization (tabular data), so a checkpoint alone can
         rebuild the model and its inputs. It also carries the checkpoint's
         integrity record (below), which callers never see.

Integrity: orbax and tensorstore check neither the bytes of an array nor the
JSON, so a few flipped bytes inside a data file restore silently as wrong
but finite numbers. `save` therefore records a SHA-256 digest of every array
(its dtype, shape and bytes) and of the rest of meta, inside meta, which
orbax finalizes atomically with the arrays. Restoring recomputes them; a
mismatch is damage like an unreadable file: the step is set aside and the
previous one is used. Checkpoints written before digests existed restore
unverified.
"""

import base64
import contextlib
import gc
import hashlib
import json
import logging as pylogging
import os
import shutil
import sys
import time
import weakref

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

# meta key of the integrity record; `restore_latest` strips it from meta.
_INTEGRITY = "_integrity"
# SHA-256: 1.8 GB/s on this machine's CPU (SHA extensions), twice BLAKE2b.
_ALGORITHM = "sha256"


class CheckpointError(RuntimeError):
  """No checkpoint in a directory could be restored; message is one line."""


class _Damaged(Exception):
  """A checkpoint step cannot be used (unreadable, or fails its checksums);
  the message says why in one line."""


def checkpoint_dir(workdir):
  return os.path.join(os.path.abspath(workdir), "checkpoints")


# Orbax's log records from opening a manager, per manager: they are about
# damaged steps (e.g. "Metadata file does not exist"), which
# `restore_latest` reports itself, so it passes them on only if it found
# no damage.
_HELD_AT_OPEN = weakref.WeakKeyDictionary()


def make_manager(workdir, keep):
  """A CheckpointManager keeping the `keep` most recent steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  with _holding_orbax_logs() as held:
    manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
  _HELD_AT_OPEN[manager] = held
  return manager


def encode_iterator_state(state):
  """Makes a grain iterator state JSON-safe (bytes become base64 text)."""
  if isinstance(state, bytes):
    return {"bytes_b64": base64.b64encode(state).decode("ascii")}
  return {"json": state}


def decode_iterator_state(blob):
  if "bytes_b64" in blob:
    return base64.b64decode(blob["bytes_b64"])
  return blob["json"]


def _leaf_name(path):
  """'opt_state/1/0/mu/enc/w' for a key path.

  Orbax restores a NamedTuple without a template as a dict, so attribute,
  dict and sequence keys all print as bare names: a leaf is named the same
  whether or not the restore had a template.
  """
  parts = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _host_leaves(tree, skipped=None):
  """[(name, np.ndarray)] in tree order.

  A replicated array is hashed from this process's copy, also across
  processes. Arrays this process cannot see in full (sharded over hosts)
  are left out, as they cannot be hashed here; their names are appended to
  `skipped` when a list is given.
  """
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = _leaf_name(path)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if leaf.is_fully_replicated:
        out.append((name, np.asarray(leaf.addressable_data(0))))
      elif skipped is not None:
        skipped.append(name)
      continue
    out.append((name, np.asarray(leaf)))
  return out


def _array_digest(a, algorithm=_ALGORITHM):
  """Hex digest of an array's dtype, shape and bytes."""
  a = np.ascontiguousarray(a)
  h = hashlib.new(algorithm)
  h.update(f"{a.dtype.name}{a.shape}".encode())
  h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def _meta_digest(meta, algorithm=_ALGORITHM):
  """Digest of meta as JSON text with sorted keys (what JsonSave keeps)."""
  text = json.dumps(meta, sort_keys=True)
  return hashlib.new(algorithm, text.encode()).hexdigest()


def array_checksums(tree):
  """{leaf name: hex digest} for every array of a pytree."""
  return {name: _array_digest(a) for name, a in _host_leaves(tree)}


def _all_finite(leaves):
  return all(np.isfinite(a).all() for _, a in leaves
             if np.issubdtype(a.dtype, np.floating))


def save(manager, step, state, meta):
  """Saves `state` (a pytree) and `meta` (JSON) at `step`, with digests.

  Raises:
    FloatingPointError: the state holds NaN or inf; nothing is written, so
      the last good checkpoint stays the latest.
  """
  unhashed = []
  leaves = _host_leaves(state, unhashed)
  if not _all_finite(leaves):
    raise FloatingPointError(f"refusing to checkpoint non-finite state at "
                             f"step {step}")
  # The JSON round trip makes tuples lists, as the restored meta will have.
  meta = json.loads(json.dumps(meta))
  meta[_INTEGRITY] = {
      "algorithm": _ALGORITHM,
      "arrays": {name: _array_digest(a) for name, a in leaves},
      "unhashed": unhashed,
      "meta": _meta_digest(meta),
  }
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               force=True)


def _verify(state, meta):
  """Checks restored arrays and meta against the digests saved with them.

  Returns:
    meta without its integrity record.

  Raises:
    _Damaged: a digest differs, an array is missing or extra, or the state
      holds non-finite values.
  """
  meta = dict(meta)
  record = meta.pop(_INTEGRITY, None)
  leaves = _host_leaves(state)
  if record is not None:
    algorithm = record.get("algorithm", _ALGORITHM)
    if _meta_digest(meta, algorithm) != record.get("meta"):
      raise _Damaged("checksum mismatch in meta")
    saved = record.get("arrays", {})
    # Arrays sharded over hosts when saved carry no digest (`unhashed`).
    unhashed = set(record.get("unhashed", []))
    leaves = [(name, a) for name, a in leaves if name not in unhashed]
    names = {name for name, _ in leaves}
    unmatched = sorted(set(saved) ^ names)
    if unmatched:
      which = "missing" if unmatched[0] in saved else "not checksummed"
      raise _Damaged(f"array {unmatched[0]} is {which}")
    for name, a in leaves:
      if _array_digest(a, algorithm) != saved[name]:
        raise _Damaged(f"checksum mismatch in array {name}")
  if not _all_finite(leaves):
    raise _Damaged("it holds non-finite values")
  return meta


class _HoldOrbaxLogs(pylogging.Filter):
  """Holds orbax's log records back while a step is tried.

  A damaged step makes orbax log errors (e.g. "Failed to json parse
  Metadata file") that the one warning of the fallback already covers;
  a good step's records are passed on afterwards.
  """

  def __init__(self):
    super().__init__()
    self.held = []

  def filter(self, record):
    if "orbax" in record.pathname:
      self.held.append(record)
      return False
    return True


@contextlib.contextmanager
def _holding_orbax_logs():
  """Holds orbax's log records back; yields the list they collect in."""
  logger = logging.get_absl_logger()
  hold = _HoldOrbaxLogs()
  logger.addFilter(hold)
  try:
    yield hold.held
  finally:
    logger.removeFilter(hold)


def _emit(records):
  logger = logging.get_absl_logger()
  for record in records:
    logger.handle(record)


def _is_abandoned_read_noise(unraisable):
  """True for the by-products of a restore that orbax gave up on.

  Orbax restores arrays as asyncio tasks on a private event loop
  (`asyncio_utils.run_sync`); when one read fails it closes the loop with
  the other reads still pending. Tensorstore then completes those reads and
  calls `loop.call_soon_threadsafe` on the closed loop ("RuntimeError: Event
  loop is closed", with no object), and the orphaned coroutines raise again
  when garbage-collected. Both reach `sys.unraisablehook`, dozens of
  tracebacks per damaged step, possibly after the restore call returned.
  """
  exc, obj = unraisable.exc_value, unraisable.object
  if (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
      and obj is None):
    return True
  code = getattr(obj, "cr_code", None) or getattr(
      getattr(obj, "get_coro", lambda: None)(), "cr_code", None)
  return code is not None and "orbax" in code.co_filename


_noise_filter_installed = False


class _AbandonedReadTasks(pylogging.Filter):
  """Drops asyncio's "Task/Future exception was never retrieved" for reads
  that an abandoned orbax restore left behind (the third form of the same
  noise: a failed read garbage-collected without being awaited)."""

  def filter(self, record):
    if not str(record.msg).startswith(("Task exception was never retrieved",
                                       "Future exception was never "
                                       "retrieved")):
      return True
    text = record.getMessage()
    return not ("tensorstore" in text.lower() or "zarr" in text or
                "OCDBT" in text)


def _silence_abandoned_reads():
  """Installs (once) an unraisable hook dropping only that noise.

  It stays installed: the abandoned reads finish on tensorstore's threads
  whenever they do, so no scope around the restore call covers them all.
  Everything else goes to the hook that was there before.
  """
  global _noise_filter_installed
  if _noise_filter_installed:
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_abandoned_read_noise(unraisable):
      previous(unraisable)

  sys.unraisablehook = hook
  pylogging.getLogger("asyncio").addFilter(_AbandonedReadTasks())
  _noise_filter_installed = True


def _one_line(e):
  """The first line of an exception, without tensorstore's spec dump."""
  text = str(e).split(" See full TensorStore details")[0]
  text = text.splitlines()[0][:200] if text else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _try_restore(manager, step, args):
  """Restores and verifies one step.

  Returns:
    (state, meta without the integrity record).

  Raises:
    _Damaged: anything wrong with the step, as one line.
  """
  _silence_abandoned_reads()  # before: the loop closes inside restore().
  with _holding_orbax_logs() as held:
    try:
      restored = manager.restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises many types for a damaged step; any of them means "use
      # the previous one". Its log records about it are dropped.
      gc.collect()  # orphaned coroutines complain now, into the filter.
      raise _Damaged(_one_line(e)) from e
  try:
    meta = _verify(restored.state, restored.meta)
  except _Damaged:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # An integrity record that is itself garbled (not a dict, an unknown
    # algorithm) is damage too.
    raise _Damaged(f"unreadable checksums ({_one_line(e)})") from e
  _emit(held)
  return restored.state, meta


def abstract_state(tree, sharding):
  """What `restore_latest` needs: the shapes and dtypes of `tree`, every
  array placed with `sharding`."""
  def abstract(x):
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

  return jax.tree.map(abstract, tree)


def restore_latest(manager, abstract_state):
  """Restores the newest checkpoint that loads and verifies.

  Damaged steps (unreadable, or not matching the checksums saved with them)
  are moved to <workdir>/corrupt_checkpoints/, each with one warning line.

  Args:
    manager: CheckpointManager of the workdir.
    abstract_state: a pytree of the same structure (arrays or
      jax.ShapeDtypeStruct with shardings) telling orbax what to build.

  Returns:
    (step, state, meta), or None when there is no checkpoint at all.

  Raises:
    CheckpointError: checkpoints exist but none could be restored.
  """
  held_at_open = _HELD_AT_OPEN.pop(manager, [])
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    _emit(held_at_open)
    return None
  args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                            meta=ocp.args.JsonRestore())
  damaged = []
  for step in steps:
    try:
      state, meta = _try_restore(manager, step, args)
    except _Damaged as e:
      damaged.append((step, str(e)))
      continue
    if not damaged:
      _emit(held_at_open)
    _set_aside(manager, damaged, f"resuming from step {step}")
    return step, state, meta
  for step, reason in damaged:
    logging.warning("checkpoint step %d in %s is damaged (%s)", step,
                    manager.directory, reason)
  raise CheckpointError(f"no readable checkpoint in {manager.directory} "
                        f"(tried steps {steps})")


def _set_aside(manager, damaged, outcome):
  """Moves damaged step folders to <workdir>/corrupt_checkpoints/.

  They are kept for inspection rather than deleted, and moved out of the
  manager's way so the resumed run can save those steps again. One warning
  line per step says what was wrong, where it went and what happens next.
  """
  if not damaged:
    return
  root = os.fspath(manager.directory)
  aside = os.path.join(os.path.dirname(root), "corrupt_checkpoints")
  os.makedirs(aside, exist_ok=True)
  for step, reason in damaged:
    target = os.path.join(aside, f"{step}.{int(time.time())}")
    shutil.move(os.path.join(root, str(step)), target)
    logging.warning("checkpoint step %d in %s is damaged (%s); moved to %s, "
                    "%s", step, root, reason, target, outcome)
  manager.reload()


def _local_target(directory, step):
  """Abstract state of a saved step, every array on this process's first
  device: a checkpoint written on another topology (8 devices, a TPU
  slice) then restores here. Unreadable metadata is damage."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  try:
    tree = ocp.StandardCheckpointHandler().metadata(
        epath.Path(directory) / str(step) / "state")
  except Exception as e:  # pylint: disable=broad-except
    raise _Damaged(f"unreadable metadata ({_one_line(e)})") from e
  tree = getattr(tree, "item_metadata", tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                     sharding=device), tree)


def restore_params(workdir):
  """Loads the latest readable, verified checkpoint's parameters and config.

  For tools that use a trained model (experiments, applications) without
  its optimizer: the state is restored without a template. Damaged steps
  are skipped with a warning but left in place (this is a reader).

  Returns:
    (params pytree of np arrays, config ConfigDict, meta dict).
  """
  import ml_collections
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f"no checkpoints in {directory}: train first with "
                          f"python -m vae_jax.main --workdir={workdir}")
  with _holding_orbax_logs() as held_at_open:
    manager = ocp.CheckpointManager(directory)
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_local_target(directory, step)),
            meta=ocp.args.JsonRestore())
        state, meta = _try_restore(manager, step, args)
      except _Damaged as e:
        logging.warning("checkpoint step %d in %s is damaged (%s); trying an "
                        "earlier one", step, directory, e)
        held_at_open = []  # about the damage just reported
        continue
      _emit(held_at_open)
      config = ml_collections.ConfigDict(meta["config"])
      return state["params"], config, meta
  finally:
    manager.close()
  raise CheckpointError(f"no readable checkpoint in {directory}")
