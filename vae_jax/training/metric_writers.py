"""Metrics as JSON lines and TensorBoard event files (tensorboardX, no TF)."""

import json
import math
import os

from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends {"step": s, name: value, ...} lines to metrics.jsonl and writes
  the same scalars to TensorBoard under workdir/tensorboard."""

  def __init__(self, workdir, enabled=True):
    self.enabled = enabled
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

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

  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
