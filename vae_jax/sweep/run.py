"""Running a sweep: every group of points through the one training loop.

Workdir layout:

  sweep.json        the sweep config, its points and their fingerprint
  points/<i>/       the run of point i: a full runner workdir (config.json,
                    checkpoints/, metrics.jsonl with train/test/final rows,
                    tensorboard/, images/, final_metrics.json), plus
                    result.json (its results.csv row, written last: the
                    point is done when it exists)
  results.csv       one row per finished point, sorted by index
  *.png             rate–distortion, ELBO/NLL vs σ_dec, active units vs
                    latent_dim, samples per point

Each group of points (`grouping.group_points`) is one call of
`training.loop.train`: its points are the members of one vmapped stack, and
each resumes from its own checkpoints, so a restarted sweep continues where
it stopped and never retrains a finished point; the same sweep command with
`--config.start_index=i --config.end_index=i+1` resumes or extends point i
alone (`--config.base.num_train_steps` to extend; results.csv then holds
only the points at the new step count, see `rows_of_this_config`). A
sweep can be split by index range across machines (`start_index`,
`end_index`) and the CSVs merged (`results.merge_csvs`).
"""

import json
import os
import time

import jax
from absl import logging

from vae_jax import data as data_lib
from vae_jax.sweep import grid as grid_lib
from vae_jax.sweep import grouping
from vae_jax.sweep import results
from vae_jax.sweep.layout import point_dir
from vae_jax.training import checkpointing
from vae_jax.training import evaluate as eval_lib
from vae_jax.training import loop
from vae_jax.training import step as step_lib
from vae_jax.training import workdir as workdir_lib


def members_of(points, workdir):
  """The loop members of `points`: their configs and point folders."""
  return [loop.Member(p.config, point_dir(workdir, p.index),
                      f"sweep point {p.index}") for p in points]


def check_workdir(sweep_config, points, workdir):
  """Raises (one line) when `workdir` holds a single run, another sweep or a
  damaged sweep.json, or a point folder holds another experiment; writes
  nothing."""
  fp = grid_lib.fingerprint(sweep_config, points)
  results.check_not_a_file(workdir)
  results.check_not_a_run(workdir)
  meta = results.read_sweep_json(workdir)
  if meta is not None:
    old = meta["fingerprint"]
    if old != fp:
      raise grid_lib.SweepError(
          f"{workdir} holds another sweep (fingerprint {old}, this config "
          f"gives {fp}: the base config or the grid changed); use a new "
          f"--workdir or the original config")
  for m in members_of(points, workdir):
    workdir_lib.check(m.config, m.workdir, m.label)
  return fp


def _write_sweep_json(sweep_config, points, workdir, fp):
  if jax.process_index() != 0:
    return
  workdir_lib.write_json_atomic(os.path.join(workdir, results.SWEEP_FILE), {
      "fingerprint": fp, "num_points": len(points),
      "config": json.loads(sweep_config.to_json_best_effort()),
      "points": [{"index": p.index,
                  "overrides": grid_lib.jsonable_overrides(p.overrides)}
                 for p in points]})


def _is_done(workdir, point):
  """Whether the point has its row at its step count (a damaged result.json
  warns and counts as not done: rerunning rewrites it)."""
  return _done_row(point, results.load_result_or_none(workdir,
                                                      point.index))


def _done_row(point, row):
  return row is not None and row.get("steps") == point.config.num_train_steps


def rows_of_this_config(workdir, points):
  """Rows of the points finished at the step count this config trains them
  for, sorted by index; and the indices of points finished at another.

  The fingerprint leaves num_train_steps out, so a sweep extended over part
  of its range (start_index, end_index) holds points trained for the old
  and the new count: its table and plots take only the latter, so they
  describe one experiment, the one sweep.json records.
  """
  rows, other_steps = [], []
  for p in points:
    row = results.load_result_or_none(workdir, p.index)
    if _done_row(p, row):
      rows.append(row)
    elif row is not None:
      other_steps.append(p.index)
  return rows, other_steps


def _record_point(point, final, mse, group_size, workdir, eval_time_s):
  """Writes points/<i>/result.json (the point is done) and returns its row."""
  row = results.point_row(point, final, mse, group_size,
                          final.get("train_time_s", 0.0), eval_time_s,
                          final.get("skipped_updates", 0))
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(
        os.path.join(point_dir(workdir, point.index), "result.json"),
        {"row": row, "overrides": grid_lib.jsonable_overrides(
            point.overrides)})
  return row


def run_group(group, dataset, workdir, name):
  """Trains one group as a stack and records each point's row."""
  t0 = time.time()
  finals = loop.train(members_of(group, workdir), dataset, name=name)
  eval_time_s = time.time() - t0
  model = step_lib.build_model(group[0].config, dataset.event_shape)
  rows = []
  for p, final in zip(group, finals):
    params, _, _ = checkpointing.restore_params(point_dir(workdir, p.index))
    # Test MSE per dimension: the distortion axis of the rate–distortion
    # plot, comparable across σ_dec.
    mse = eval_lib.split_mse(model, params, dataset, p.config,
                             jax.random.key(p.config.seed + 2), split="test")
    row = _record_point(p, final, mse, len(group), workdir,
                        max(eval_time_s - final.get("train_time_s", 0.0),
                            0.0))
    logging.info("point %d (%s): elbo %.2f  kl %.2f  nll_iwae %.2f  "
                 "active %d", p.index, grid_lib.describe(p.overrides),
                 row["elbo"], row["kl"], row["nll_iwae"],
                 row["active_units"])
    rows.append(row)
  return rows


def run_sweep(sweep_config, workdir, load_dataset=None):
  """Trains and evaluates the points of the index range; writes the table.

  Args:
    sweep_config: a validated sweep config (see `grid.validate`).
    workdir: output folder; rerunning resumes.
    load_dataset: config -> Dataset; default `data.get_dataset`.

  Returns:
    The rows of results.csv: the workdir's points finished at this
    config's step count.
  """
  load_dataset = load_dataset or data_lib.get_dataset
  points = grid_lib.expand_grid(sweep_config)
  fp = check_workdir(sweep_config, points, workdir)
  start, end = grid_lib.index_range(sweep_config, len(points))
  selected = points[start:end]
  pending = [p for p in selected if not _is_done(workdir, p)]
  # Every check above reads only; the first write follows.
  os.makedirs(workdir, exist_ok=True)
  _write_sweep_json(sweep_config, points, workdir, fp)
  groups = grouping.group_points(
      pending, sweep_config.get("max_group_size", 0),
      has_checkpoints=lambda p: bool(workdir_lib.checkpoint_steps(
          point_dir(workdir, p.index))))
  logging.info("sweep: %d points (indices %d..%d of %d); %d already done; "
               "%d groups to run", len(selected), start, end - 1,
               len(points), len(selected) - len(pending), len(groups))
  datasets = {}
  t_start = time.time()
  for g, group in enumerate(groups):
    c0 = group[0].config
    dkey = grouping.data_key(c0)
    if dkey not in datasets:
      datasets[dkey] = load_dataset(c0)
    name = (f"group {g + 1}/{len(groups)} (points "
            f"{results.format_ranges([p.index for p in group])})")
    logging.info("%s: %s, %d points", name, grid_lib.describe(
        {k: v for k, v in group[0].overrides.items()
         if k not in ("seed", "sigma_dec", "learning_rate")}) or "base",
                 len(group))
    run_group(group, datasets[dkey], workdir, name)
    elapsed = time.time() - t_start
    logging.info("sweep: %d/%d groups done in %.0f s; ETA %.0f s", g + 1,
                 len(groups), elapsed, elapsed / (g + 1) *
                 (len(groups) - g - 1))
  rows, other_steps = rows_of_this_config(workdir, points)
  if other_steps:
    logging.warning(
        "points %s were trained for another number of steps than this "
        "config's: results.csv and the plots leave them out; the sweep "
        "command over them (start_index, end_index) trains them to it",
        results.format_ranges(other_steps))
  if jax.process_index() == 0:
    results.write_outputs(rows, workdir)
    logging.info("sweep outputs: %s (results.csv, plots, points/<i>/)",
                 workdir)
  return rows
