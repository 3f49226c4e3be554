"""A sweep's results table: one row per finished point, CSV I/O, merging.

A point is finished when points/<i>/result.json exists (written last, after
its final metrics); results.csv is rebuilt from those files, so a restarted
or split sweep gives the same table. A damaged result.json counts as not
done (a warning names it; rerunning rewrites it); a damaged sweep.json
stops every command on that folder with one line, since nothing else says
which sweep it holds.
"""

import csv
import json
import math
import os
import shutil

from absl import logging

from vae_jax.models.vae import SIGMA_LIKELIHOODS
from vae_jax.sweep import grid
from vae_jax.sweep.grid import SweepError
from vae_jax.sweep.layout import (CONFIG_COLUMNS, EXECUTION_COLUMNS,
                                  METRIC_COLUMNS, point_dir)
from vae_jax.sweep.plots import plot_all
from vae_jax.training import workdir as workdir_lib

SWEEP_FILE = "sweep.json"
# Top-level entries of a single run's workdir; a sweep keeps its runs under
# points/<i>/, so a folder holding one of these is another experiment.
RUN_ENTRIES = (workdir_lib.CONFIG_FILE, "checkpoints",
               workdir_lib.FINAL_METRICS_FILE)


def _csv_value(value):
  if isinstance(value, tuple):
    return list(value)
  return value


def point_row(point, scalars, mse, group_size, train_time_s, eval_time_s,
              skipped):
  """The results.csv row of a finished point (a flat dict)."""
  c = point.config
  gaussian = c.likelihood in SIGMA_LIKELIHOODS
  sigma_used = grid.uses_sigma_dec(c)
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


def _read_json_object(path, remedy):
  """The JSON object in `path`.

  Raises:
    SweepError: one line naming the file and `remedy`, when it cannot be
      read or parsed or holds no object (a damaged file is not a traceback).
  """
  try:
    with open(path) as f:
      obj = json.load(f)
  except (OSError, ValueError) as e:
    raise SweepError(f"{path} is unreadable ({type(e).__name__}); "
                     f"{remedy}") from None
  if not isinstance(obj, dict):
    raise SweepError(f"{path} holds no JSON object; {remedy}")
  return obj


def read_sweep_json(folder):
  """The sweep.json of `folder` (fingerprint, num_points, ...), or None.

  It says which sweep a folder holds; when it is damaged nothing else can,
  so it raises rather than guess.

  Raises:
    SweepError: sweep.json unreadable or without its fingerprint.
  """
  path = os.path.join(folder, SWEEP_FILE)
  if not os.path.isfile(path):
    return None
  remedy = (f"it names the sweep in {folder}: restore it or use a new "
            f"--workdir")
  meta = _read_json_object(path, remedy)
  if (not isinstance(meta.get("fingerprint"), str) or
      not isinstance(meta.get("num_points"), int)):
    raise SweepError(f"{path} lacks its fingerprint or num_points; {remedy}")
  return meta


def check_not_a_file(workdir):
  """Raises when `workdir` exists and is not a folder; reads only."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise SweepError(f"--workdir={workdir} is a file, not a folder")


def check_not_a_run(workdir):
  """Raises when `workdir` holds a single run: a workdir holds one
  experiment, and a sweep's files beside a run's would mix two. Reads only.
  """
  found = [n for n in RUN_ENTRIES if os.path.exists(os.path.join(workdir, n))]
  if found:
    raise SweepError(f"{workdir} holds a single run ({', '.join(found)}), "
                     f"not a sweep; a workdir holds one experiment: use a "
                     f"new --workdir")


def load_result(workdir, index):
  """The row of a finished point, or None when it is not done.

  Raises:
    SweepError: its result.json is damaged (see `load_result_or_none`).
  """
  path = os.path.join(point_dir(workdir, index), "result.json")
  if not os.path.isfile(path):
    return None
  remedy = "rerunning the sweep evaluates the point again and rewrites it"
  row = _read_json_object(path, remedy).get("row")
  if not isinstance(row, dict):
    raise SweepError(f"{path} holds no result row; {remedy}")
  return row


def load_result_or_none(workdir, index):
  """`load_result`, with a damaged result.json counted as not done.

  result.json is written last and only records the point's final metrics:
  rerunning the point (its checkpoints are there) rewrites it, so a damaged
  one needs a warning naming it, not a stopped sweep.
  """
  try:
    return load_result(workdir, index)
  except SweepError as e:
    logging.warning("%s; point %d counts as not done", e, index)
    return None


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
  rows = [load_result_or_none(workdir, i) for i in range(num_points)]
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


def _part_folder(path):
  return path if os.path.isdir(path) else os.path.dirname(path)


def _sweep_fingerprint_near(path):
  meta = read_sweep_json(_part_folder(path))
  return meta["fingerprint"] if meta else None


def _check_same_steps(rows, origin):
  """Raises when the merged rows were trained for different step counts.

  The fingerprint leaves num_train_steps out under a constant learning rate
  (a sweep may be extended to more steps in its workdir), so parts trained
  for different lengths share one; the rows' recorded steps tell them
  apart. Rows compared are those of equal num_train_steps column, where
  the grid sweeps it (a column of its own; empty elsewhere).
  """
  first = {}
  for row in rows:
    other = first.setdefault(row.get("num_train_steps", ""), row)
    if row.get("steps") != other.get("steps"):
      i, j = int(other["index"]), int(row["index"])
      raise SweepError(
          f"point {i} ({origin[i]}) was trained for {other.get('steps')} "
          f"steps, point {j} ({origin[j]}) for {row.get('steps')}: rerun "
          f"the parts with one config.base.num_train_steps before merging")


def merge_csvs(paths):
  """Merges the results.csv of parts of one sweep (folders or CSV files).

  Rows are united by index. Parts must come from the same sweep (their
  sweep.json fingerprints agree, where present) and a point found twice
  must have the same reproducible columns.

  Returns:
    (rows sorted by index as dicts of strings, the column list).

  Raises:
    SweepError: parts of different sweeps, conflicting rows, or rows
      trained for different step counts.
  """
  merged, columns, fingerprints, origin = {}, None, set(), {}
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
        origin[i] = csv_path
  rows = [merged[i] for i in sorted(merged)]
  _check_same_steps(rows, origin)
  return rows, columns or ["index"]


def _first_sweep_json(paths):
  """(path, contents) of the first part's sweep.json, or (None, None)."""
  for path in paths:
    meta = read_sweep_json(_part_folder(path))
    if meta is not None:
      return os.path.join(_part_folder(path), SWEEP_FILE), meta
  return None, None


def check_merge_target(workdir, source):
  """Raises when `workdir` cannot take the merged table; reads only.

  Args:
    workdir: the --workdir of the merge.
    source: the parts' sweep.json contents, or None when they have none.

  Raises:
    SweepError: a file, a single run's folder, a damaged sweep.json,
      another sweep (or one the parts cannot be shown to belong to): its
      results.csv would disagree with its sweep.json and points/; or a
      folder holding trained points, one of the parts for instance.
  """
  check_not_a_file(workdir)
  check_not_a_run(workdir)
  target = read_sweep_json(workdir)
  if target is not None and source is None:
    raise SweepError(f"{workdir} holds sweep {target['fingerprint']} and "
                     f"the parts have no {SWEEP_FILE} to show they belong "
                     f"to it; merge into a new --workdir")
  if target is not None and target["fingerprint"] != source["fingerprint"]:
    raise SweepError(f"{workdir} holds another sweep (fingerprint "
                     f"{target['fingerprint']}, the parts are of "
                     f"{source['fingerprint']}); merge into a new --workdir")
  if os.path.isdir(os.path.join(workdir, "points")):
    raise SweepError(f"{workdir} holds trained points (points/), which its "
                     f"results.csv lists, and a merged table would list "
                     f"points it lacks; merge into a new --workdir, or copy "
                     f"the other parts' points/<i> folders into it and rerun "
                     f"the sweep command there")


def write_merged(paths, workdir):
  """Merges parts into workdir/results.csv and draws the plots.

  Every check (the parts, then the target) runs before the first write.

  Returns:
    (rows, missing indices), missing from the sweep's sweep.json if known.
  """
  rows, columns = merge_csvs(paths)
  meta_path, meta = _first_sweep_json(paths)
  check_merge_target(workdir, meta)
  os.makedirs(workdir, exist_ok=True)
  out = os.path.join(workdir, "results.csv")
  tmp = out + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, out)
  missing = []
  if meta is not None:
    have = {int(r["index"]) for r in rows}
    missing = [i for i in range(meta["num_points"]) if i not in have]
    if not os.path.isfile(os.path.join(workdir, SWEEP_FILE)):
      shutil.copy(meta_path, os.path.join(workdir, SWEEP_FILE))
  folders = [_part_folder(p) for p in paths]
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
