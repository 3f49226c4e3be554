"""Metrics as JSON lines and TensorBoard event files (tensorboardX, no TF).

TensorBoard gets what a researcher looks for besides curves: the PNG grids
(reconstructions under their inputs, prior samples), the config as text,
and the hyperparameters with the run's final metrics (HParams dashboard).
"""

import json
import math
import os
import time

import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summaries

# Tag prefix of the final metrics that the HParams dashboard shows.
FINAL_PREFIX = "final/"


def flatten_config(config, prefix=""):
  """{"a.b": value} for a (nested) ConfigDict or dict, in key order."""
  items = config.items() if hasattr(config, "items") else []
  out = {}
  for key, value in items:
    if hasattr(value, "items"):
      out.update(flatten_config(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _hparam_value(value):
  """HParams take bool, int, float or str: tuples and None become text."""
  if isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, np.generic):
    return value.item()
  return str(value)


def _as_hwc_uint8(image):
  """[H, W] or [H, W, C] (C in 1, 3, 4) uint8, as the image grids are."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"image grids are uint8 (images.grid), got {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"an image grid is [H, W, C], got shape {image.shape}")
  return image


def _drop_rows_after(path, step):
  """Rewrites metrics.jsonl (atomically) without its rows after `step`;
  lines that do not parse are kept as they are."""
  if not os.path.isfile(path):
    return
  with open(path) as f:
    lines = f.readlines()

  def keep(line):
    try:
      return int(json.loads(line)["step"]) <= step
    except (ValueError, KeyError, TypeError):
      return True

  kept = [line for line in lines if keep(line)]
  if len(kept) == len(lines):
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Appends {"step": s, name: value, ...} lines to metrics.jsonl and writes
  the same scalars, plus images, text and hparams, to TensorBoard under
  workdir/tensorboard. With enabled=False (non-lead hosts) it does nothing.
  """

  def __init__(self, workdir, enabled=True, resume_step=None):
    """resume_step: the step training resumes from. Rows of metrics.jsonl
    after it (written before an interruption, past the last checkpoint) are
    dropped, since training writes them again, with the same values; the
    new TensorBoard event file starts with a session start at
    resume_step + 1, on which TensorBoard hides the older files' events from
    that step on (its purge of orphaned data), so no step shows twice."""
    self.enabled = enabled
    # The first step this session writes: what a later resume from the
    # same checkpoint purges along with the rest of this session.
    self._first_step = 0 if resume_step is None else resume_step + 1
    if not enabled:
      return
    path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None:
      _drop_rows_after(path, resume_step)
    self._jsonl = open(path, "a")
    # Event files are named by the second they were opened and the host; the
    # suffix keeps a writer opened within the same second as the last one
    # (a quick resume) from overwriting its file, and sorts after it.
    self._tb = SummaryWriter(
        os.path.join(workdir, "tensorboard"),
        purge_step=None if resume_step is None else resume_step + 1,
        filename_suffix=f".{time.time_ns()}")

  def write(self, step, scalars):
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else str(v))
                   for k, v in clean.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for k, v in clean.items():
      self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def write_images(self, step, images):
    """Writes image grids, e.g. {"images/samples": images.grid(...)}.

    Args:
      step: training step.
      images: {tag: uint8 [H, W, C] or [H, W]} (what `images.grid`
        returns); TensorBoard stores each as PNG.
    """
    if not self.enabled:
      return
    for tag, image in images.items():
      self._tb.add_image(tag, _as_hwc_uint8(image), int(step),
                         dataformats="HWC")
    self._tb.flush()

  def write_image_files(self, step, paths):
    """Writes PNG files already saved (workdir/images/*.png) to TensorBoard.

    Args:
      step: training step.
      paths: {tag: path of a PNG file}.
    """
    if not self.enabled:
      return
    from PIL import Image
    arrays = {}
    for tag, path in paths.items():
      with Image.open(path) as img:
        arrays[tag] = np.asarray(img.convert(
            "RGBA" if img.mode in ("RGBA", "LA", "P") else
            "L" if img.mode in ("1", "L", "I", "I;16") else "RGB"))
    self.write_images(step, arrays)

  def write_config(self, config, step=None):
    """The config as text (tag "config"), shown as preformatted JSON.

    Args:
      config: a ConfigDict, dict or JSON text.
      step: where it shows; by default the first step this session trains
        (resume_step + 1, or 0 for a writer without one). Written there, a
        session resumed again from the same checkpoint purges it with the
        rest of this one, so the config shows once per session that went
        on past a checkpoint (at the resume step itself it would stay
        beside the next session's).
    """
    if not self.enabled:
      return
    if isinstance(config, str):
      text = config
    elif hasattr(config, "to_json_best_effort"):
      text = config.to_json_best_effort(indent=2)
    else:
      text = json.dumps(config, indent=2, default=str)
    # Four leading spaces make a Markdown code block: keeps the indentation.
    self._tb.add_text("config", "\n".join("    " + l for l in
                                          text.splitlines()),
                     self._first_step if step is None else int(step))
    self._tb.flush()

  def write_hparams(self, config, final_metrics, step):
    """Hyperparameters with the run's final metrics, for the HParams tab.

    The session is written into this run (not a subdirectory, as
    tensorboardX's add_hparams does), so the dashboard's row links to the
    run's curves. Each finite scalar metric is also written as the scalar
    "final/<name>" at `step`, where the dashboard reads its value.

    Args:
      config: ConfigDict or (nested) dict; fields become dotted names.
      final_metrics: {name: number}; non-numbers (lists, dicts) are skipped.
      step: the final training step.
    """
    if not self.enabled:
      return
    hparams = {k: _hparam_value(v) for k, v in flatten_config(config).items()}
    metrics = {}
    for name, value in final_metrics.items():
      if isinstance(value, (bool, list, tuple, dict, str)) or value is None:
        continue
      value = float(value)
      if math.isfinite(value):
        metrics[FINAL_PREFIX + name] = value
    for summary in hparams_summaries(hparams, metrics):
      self._tb.file_writer.add_summary(summary)
    for tag, value in metrics.items():
      self._tb.add_scalar(tag, value, int(step))
    self._tb.flush()

  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
