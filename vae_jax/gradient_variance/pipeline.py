"""One whole benchmark run: validate, sweep, then write every output."""

import os
import time

from absl import logging

from vae_jax.gradient_variance.evaluate import Evaluator
from vae_jax.gradient_variance.plots import write_plots
from vae_jax.gradient_variance.rows import write_csv
from vae_jax.gradient_variance.summary import run_notes, summary_markdown
from vae_jax.gradient_variance.sweeps import run_sweeps
from vae_jax.gradient_variance.vae_settings import VaeFactory
from vae_jax.gradient_variance.validation import validate_config


def run(config, workdir):
  """Runs the configured sweeps and writes every output; returns the rows.

  Args:
    config: the config of configs/gradient_variance.py.
    workdir: output folder, created if missing; gets results.csv, the PNGs
      of `plots.write_plots` and summary.md.

  Returns:
    list of row dicts keyed by `schema.COLUMNS`.
  """
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  evaluator = Evaluator(config)
  factory = VaeFactory(config) if "vae" in config.models else None
  rows = run_sweeps(config, evaluator, factory)
  # After the sweeps: training and restoring add their own notes.
  notes = run_notes(config, factory)

  files = [os.path.join(workdir, "results.csv")]
  write_csv(rows, files[0])
  files += write_plots(config, rows, workdir)
  summary_path = os.path.join(workdir, "summary.md")
  files.append(summary_path)
  text = summary_markdown(config, rows, notes, time.perf_counter() - start,
                          files)
  with open(summary_path, "w") as f:
    f.write(text)
  logging.info("wrote %s", ", ".join(files))
  return rows
