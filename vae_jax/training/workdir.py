"""A workdir holds one experiment: what identifies it, and what may change.

`config.json` in a workdir describes what was trained there. Rerunning a
command on that workdir resumes it only when every field that changes what
is trained, or how it is scored, is unchanged; the few fields in
`RESUMABLE_FIELDS` (how long to train, how often to log, how hard to
evaluate) may differ, and each such change is appended to
`config_history.jsonl`. Anything else is refused with one line naming each
changed field, before a single file in the workdir is touched.
"""

import datetime
import json
import math
import os

from vae_jax.models.vae import uses_sigma_dec

# Fields that may differ when a workdir is resumed, and why each is safe.
RESUMABLE_FIELDS = {
    "num_train_steps": "train longer or stop earlier (constant learning "
                       "rate only: a schedule's shape depends on it)",
    "log_every_steps": "progress lines",
    "eval_every_steps": "evaluation during training",
    "checkpoint_every_steps": "checkpoint period",
    "keep_checkpoints": "checkpoints kept",
    "eval_iwae_samples": "K of L_K during training",
    "final_iwae_samples": "K of the final L_K",
    "iwae_chunk_size": "samples per L_K chunk (memory)",
    "eval_batch_size": "examples per evaluation batch",
    "num_image_examples": "images per PNG grid",
    "nan_policy": "stop or skip a non-finite update from now on",
    "data_dir": "where the same TFDS data lives",
    "idx_dir": "where the same MNIST IDX files live",
}

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"


class WorkdirError(ValueError):
  """A workdir that cannot hold this run; the message is one line."""


def flat_fields(config_json):
  """{"a": 1, "b": {"c": 2}} -> {"a": 1, "b.c": 2} (JSON values)."""
  out = {}
  for name, value in config_json.items():
    if isinstance(value, dict):
      for sub, v in flat_fields(value).items():
        out[f"{name}.{sub}"] = v
    else:
      out[name] = value
  return out


def config_fields(config):
  """The flat JSON fields of a ConfigDict (tuples become lists)."""
  return flat_fields(json.loads(config.to_json_best_effort()))


def _resumable(name, current):
  if name == "num_train_steps":
    return current.get("lr_schedule") == "constant"
  return name in RESUMABLE_FIELDS


def _unused(name, current):
  """Fields the model of `current` never reads: they identify nothing."""
  if name == "sigma_dec":
    return not uses_sigma_dec(current.get("likelihood"),
                              current.get("sigma_dec_mode"))
  return False


def _load_saved(workdir):
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError("not a JSON object")
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} is unreadable ({type(e).__name__}: {e}); it "
                       f"should describe the run in {workdir}: restore it "
                       f"or use a new --workdir") from None
  return flat_fields(saved)


def _same(old, new):
  """Equal JSON values; NaN equals NaN (a field written as NaN is the same
  field, not a change)."""
  if (isinstance(old, float) and isinstance(new, float) and math.isnan(old)
      and math.isnan(new)):
    return True
  return old == new


def checkpoint_steps(workdir):
  """The steps of the checkpoint folders in `workdir` (read from their
  names, nothing restored): [int], empty for none."""
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return []
  return [int(name) for name in os.listdir(root) if name.isdigit()]


def trained_step(workdir):
  """The furthest step trained in `workdir`: the newest checkpoint folder's
  step or final_metrics.json's, whichever is larger; 0 for none."""
  steps = [0] + checkpoint_steps(workdir)
  final = _read_json(os.path.join(workdir, FINAL_METRICS_FILE))
  if isinstance(final, dict) and isinstance(final.get("step"), int):
    steps.append(final["step"])
  return max(steps)


def _read_json(path):
  """The JSON in `path`, or None when absent or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _check_location(workdir):
  """A workdir must be a writable folder or a path one can create."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a folder")
  parent = os.path.abspath(workdir)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise WorkdirError(f"--workdir={workdir} lies under {parent}, which is a "
                       f"file")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir={workdir}: {parent} is not writable")


def _format(value):
  return "<absent>" if value is _ABSENT else repr(value)


_ABSENT = object()


def changes(config, workdir):
  """Fields of `config` that differ from the workdir's config.json.

  Returns:
    (refused, allowed): lists of (field, old, new); ([], []) for a new
    workdir.
  """
  saved = _load_saved(workdir)
  if saved is None:
    return [], []
  current = config_fields(config)
  refused, allowed = [], []
  for name in sorted(set(saved) | set(current)):
    old, new = saved.get(name, _ABSENT), current.get(name, _ABSENT)
    if _same(old, new) or (_unused(name, current) and
                      saved.get("likelihood") == current.get("likelihood") and
                      saved.get("sigma_dec_mode") ==
                      current.get("sigma_dec_mode")):
      continue
    (allowed if _resumable(name, current) else refused).append(
        (name, old, new))
  return refused, allowed


def check(config, workdir, label=None):
  """Raises WorkdirError when `workdir` cannot hold the run `config`.

  Nothing is written: call it for every workdir of a command before any
  work, so a refused run leaves every file as it was.
  """
  _check_location(workdir)
  where = f"{label} in {workdir}" if label else workdir
  for sweep_file in ("sweep.json", "points"):
    if os.path.exists(os.path.join(workdir, sweep_file)):
      raise WorkdirError(f"{where} holds a sweep ({sweep_file}), not a single "
                         f"run: use a new --workdir")
  if (not os.path.isfile(os.path.join(workdir, CONFIG_FILE)) and
      os.path.isdir(os.path.join(workdir, "checkpoints"))):
    raise WorkdirError(f"{workdir} holds checkpoints but no {CONFIG_FILE}: "
                       f"use a new --workdir")
  refused, allowed = changes(config, workdir)
  if refused:
    what = "; ".join(f"{name}: {_format(old)} -> {_format(new)}"
                     for name, old, new in refused)
    raise WorkdirError(
        f"{where} holds another experiment ({what}); use a new --workdir, "
        f"or the original values (only "
        f"{', '.join(sorted(RESUMABLE_FIELDS))} may change on resume)")
  if any(name == "num_train_steps" for name, _, _ in allowed):
    # Stopping earlier is allowed only before that step: config.json must
    # keep describing what was trained.
    done = trained_step(workdir)
    if config.num_train_steps < done:
      raise WorkdirError(
          f"{where} is trained to step {done}: num_train_steps="
          f"{config.num_train_steps} would not describe it; use "
          f"num_train_steps >= {done}, or a new --workdir")


def write_json_atomic(path, obj):
  """Writes JSON atomically: a crash leaves the old file or none, never half."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def prepare(config, workdir, is_lead=True):
  """Checks `workdir`, creates it, and records the config.

  A new workdir gets config.json. A resumed one with allowed changes gets a
  line in config_history.jsonl ({"time", "changed": {field: [old, new]}})
  and config.json rewritten with the new values, so it keeps describing
  what is trained there.

  Returns:
    The allowed changes, [(field, old, new)].
  """
  check(config, workdir)
  _, allowed = changes(config, workdir)
  if not is_lead:
    return allowed
  os.makedirs(workdir, exist_ok=True)
  config_json = json.loads(config.to_json_best_effort())
  config_path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(config_path):
    write_json_atomic(config_path, config_json)
  elif allowed:
    record = {"time": datetime.datetime.now(datetime.timezone.utc)
                      .isoformat(timespec="seconds"),
              "changed": {name: [None if old is _ABSENT else old,
                                 None if new is _ABSENT else new]
                          for name, old, new in allowed}}
    with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
      f.write(json.dumps(record) + "\n")
    write_json_atomic(config_path, config_json)
  return allowed


def finished_metrics(config, workdir):
  """The final metrics of a run already trained to config.num_train_steps.

  Returns:
    The dict in final_metrics.json when it reports that step, else None.
  """
  final = _read_json(os.path.join(workdir, FINAL_METRICS_FILE))
  if not isinstance(final, dict) or final.get("step") != (
      config.num_train_steps):
    return None
  return final


def write_final_metrics(workdir, final):
  write_json_atomic(os.path.join(workdir, FINAL_METRICS_FILE), final)
