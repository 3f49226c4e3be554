"""A sweep's results table: one row per finished point, CSV I/O, merging.

A point is finished when points/<i>/result.json exists (written last, after
its final metrics); results.csv is rebuilt from those files, so a restarted
or split sweep gives the same table.
"""

import csv
import json
import math
import os
import shutil

from vae_jax.sweep.grid import SweepError
from vae_jax.sweep.layout import (CONFIG_COLUMNS, EXECUTION_COLUMNS,
                                  METRIC_COLUMNS, point_dir)
from vae_jax.sweep.plots import plot_all
from vae_jax.training.workdir import write_json_atomic as write_json


def _csv_value(value):
  if isinstance(value, tuple):
    return list(value)
  return value


def point_row(point, scalars, mse, group_size, train_time_s, eval_time_s,
              skipped):
  """The results.csv row of a finished point (a flat dict)."""
  c = point.config
  gaussian = c.likelihood == "gaussian"
  sigma_used = gaussian and c.sigma_dec_mode != "optimal"
  if not gaussian:
    sigma_final = None
  elif c.sigma_dec_mode == "fixed":
    sigma_final = float(c.sigma_dec)
  elif c.sigma_dec_mode == "optimal":
    # The σ the model was scored with: √(training-split MSE).
    sigma_final = scalars.get("sigma_dec", math.sqrt(mse))
  else:
    sigma_final = scalars["sigma_dec"]
  row = {"index": point.index,
         "latent_dim": c.latent_dim, "sigma_dec_mode": (
             c.sigma_dec_mode if gaussian else None),
         "sigma_dec": float(c.sigma_dec) if sigma_used else None,
         "seed": c.seed, "learning_rate": c.learning_rate}
  for name in point.overrides:
    if name not in row:
      row[name] = _csv_value(c[name])
  row.update({
      "elbo": scalars["elbo"], "reconstruction": scalars["reconstruction"],
      "kl": scalars["kl"], "nll_iwae": scalars["nll_iwae"],
      "bits_per_dim_elbo": scalars.get("bits_per_dim_elbo"),
      "bits_per_dim_iwae": scalars.get("bits_per_dim_iwae"),
      "active_units": scalars["active_units"],
      "sigma_dec_final": sigma_final, "mse": mse,
      "steps": scalars["step"], "iwae_samples": scalars["iwae_samples"],
      "num_examples": scalars["num_examples"],
      "skipped_updates": int(skipped),
      "group_size": group_size, "train_time_s": train_time_s,
      "eval_time_s": eval_time_s})
  return row


def load_result(workdir, index):
  """The row of a finished point, or None when it is not done."""
  path = os.path.join(point_dir(workdir, index), "result.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)["row"]


def format_ranges(indices):
  """[0, 1, 2, 5] -> '0-2,5'."""
  out, run = [], []
  for i in sorted(indices):
    if run and i != run[-1] + 1:
      out.append(run)
      run = []
    run.append(i)
  out.append(run)
  return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0])
                  for r in out if r)


def collect_rows(workdir, num_points):
  """Rows of every finished point in `workdir`, sorted by index."""
  rows = [load_result(workdir, i) for i in range(num_points)]
  return [r for r in rows if r is not None]


def write_outputs(rows, workdir, point_dirs=None):
  """results.csv and the plots for `rows`."""
  write_csv(rows, os.path.join(workdir, "results.csv"))
  if rows:
    plot_all(rows, workdir, point_dirs or [workdir])


def _columns(rows):
  extra = []
  for row in rows:
    for k in row:
      if (k not in CONFIG_COLUMNS and k not in METRIC_COLUMNS and
          k not in EXECUTION_COLUMNS and k != "index" and k not in extra):
        extra.append(k)
  return (["index"] + list(CONFIG_COLUMNS) + sorted(extra) +
          list(METRIC_COLUMNS) + list(EXECUTION_COLUMNS))


def _format(value):
  if value is None:
    return ""
  if isinstance(value, float):
    return "nan" if math.isnan(value) else repr(value)
  if isinstance(value, (list, tuple, dict)):
    return json.dumps(value)
  return str(value)


def write_csv(rows, path):
  """One row per point, sorted by index; floats at full precision."""
  rows = sorted(rows, key=lambda r: int(r["index"]))
  columns = _columns(rows) if rows else ["index"]
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_format(row.get(c)) for c in columns])
  os.replace(tmp, path)


def read_csv(path):
  """Rows of a results.csv as dicts of strings (empty string = none)."""
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _sweep_fingerprint_near(path):
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  meta = os.path.join(folder, "sweep.json")
  if not os.path.isfile(meta):
    return None
  with open(meta) as f:
    return json.load(f).get("fingerprint")


def merge_csvs(paths):
  """Merges the results.csv of parts of one sweep (folders or CSV files).

  Rows are united by index. Parts must come from the same sweep (their
  sweep.json fingerprints agree, where present) and a point found twice
  must have the same reproducible columns.

  Returns:
    (rows sorted by index as dicts of strings, the column list).

  Raises:
    SweepError: parts of different sweeps, or conflicting rows.
  """
  merged, columns, fingerprints = {}, None, set()
  for path in paths:
    csv_path = (os.path.join(path, "results.csv") if os.path.isdir(path)
                else path)
    if not os.path.isfile(csv_path):
      raise SweepError(f"no results.csv at {path}")
    fp = _sweep_fingerprint_near(path)
    if fp is not None:
      fingerprints.add(fp)
    if len(fingerprints) > 1:
      raise SweepError(f"{path} is part of another sweep (fingerprints "
                       f"{sorted(fingerprints)})")
    with open(csv_path, newline="") as f:
      reader = csv.DictReader(f)
      cols = reader.fieldnames or []
      if columns is None:
        columns = cols
      elif cols != columns:
        raise SweepError(f"{csv_path} has other columns than {paths[0]}")
      for row in reader:
        i = int(row["index"])
        if i in merged:
          a = {k: v for k, v in merged[i].items()
               if k not in EXECUTION_COLUMNS}
          b = {k: v for k, v in row.items() if k not in EXECUTION_COLUMNS}
          if a != b:
            raise SweepError(f"point {i} differs between the parts "
                             f"({csv_path})")
          continue
        merged[i] = row
  return [merged[i] for i in sorted(merged)], columns or ["index"]


def write_merged(paths, workdir):
  """Merges parts into workdir/results.csv and draws the plots.

  Returns:
    (rows, missing indices), missing from the sweep's sweep.json if known.
  """
  rows, columns = merge_csvs(paths)
  os.makedirs(workdir, exist_ok=True)
  out = os.path.join(workdir, "results.csv")
  tmp = out + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, out)
  missing = []
  for path in paths:
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    meta = os.path.join(folder, "sweep.json")
    if os.path.isfile(meta):
      with open(meta) as f:
        num_points = json.load(f)["num_points"]
      have = {int(r["index"]) for r in rows}
      missing = [i for i in range(num_points) if i not in have]
      if not os.path.isfile(os.path.join(workdir, "sweep.json")):
        shutil.copy(meta, os.path.join(workdir, "sweep.json"))
      break
  folders = [p if os.path.isdir(p) else os.path.dirname(p) for p in paths]
  if rows:
    plot_all(rows, workdir, folders)
  return rows, missing


def format_table(rows, columns=("index", "latent_dim", "sigma_dec_mode",
                                "sigma_dec", "seed", "elbo", "kl",
                                "nll_iwae", "active_units",
                                "sigma_dec_final")):
  """A fixed-width text table of some columns of typed rows (terminal)."""
  def cell(v):
    if v is None or v == "":
      return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
  table = [list(columns)] + [[cell(r.get(c)) for c in columns] for r in rows]
  widths = [max(len(line[j]) for line in table) for j in range(len(columns))]
  return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths))
                   for line in table)
