"""Sweeps: a grid of VAEs, trained as few compiled programs, and its table.

A sweep config (see `configs/sweep.py`) holds

  base      a runner config (the fields of `configs/common.py`);
  grid      field -> list of values, crossed in alphabetical order of the
            field names (the last fastest);
  variants  a list of {field: value} dicts; each replaces the grid axes it
            names and is crossed with the remaining ones (e.g. a learned and
            the optimal σ_dec beside the grid of fixed ones).

Every point is the runner config `base` with its values set; points are
numbered 0, 1, ... in that order, so an index names the same point on every
machine and every restart.

Points whose configs differ only in values that live in the training state —
σ_dec (params["log_sigma_dec"]), the seed (initial parameters, PRNG key and
data order) and, when the optimizer reads it from its state, the learning
rate — have identical array shapes and one compiled program. They form a
group: their states are stacked along a leading grid axis [N, ...] and
`jax.vmap(TrainStep)` trains them in one jitted step, each point on exactly
the batches its own run would read. Groups of other shapes (latent_dim,
hidden, sigma_dec_mode, ...) run one after another through the same code.

Workdir layout:

  sweep.json        the sweep config, its points and their fingerprint
  groups/<id>/      checkpoints of a group in training (stacked states and
                    data iterators); removed once all its points are done
  points/<i>/       a runner-compatible workdir per point: config.json,
                    checkpoints/ (final state), final_metrics.json, images/,
                    and result.json (its CSV row, written last: the point is
                    done when it exists)
  results.csv       one row per finished point, sorted by index
  *.png             rate–distortion, ELBO/NLL vs σ_dec, active units vs
                    latent_dim, samples per point

A restarted sweep resumes a group from its newest checkpoint and never
retrains a finished point. A sweep can be split by index range across
machines (`start_index`, `end_index`) and the CSVs merged (`merge_csvs`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from vae_jax.training import checkpointing
from vae_jax.training import config_validation
from vae_jax import data as data_lib
from vae_jax.training import evaluate as eval_lib
from vae_jax.training import images
from vae_jax.core import objectives
from vae_jax.training import sharding
from vae_jax.sweep.layout import (CONFIG_COLUMNS, EXECUTION_COLUMNS,
                                  METRIC_COLUMNS, point_dir)
from vae_jax.sweep.plots import plot_all
from vae_jax.training import step as train_lib

# Config fields that change only values in the training state, never shapes
# or the compiled program (learning_rate only when the optimizer reads it
# from its state: see `learning_rate_in_state`).
STATE_VALUE_FIELDS = ("sigma_dec", "seed")

# Fields no dataset loader reads: configs equal apart from these share data.
_NON_DATA_FIELDS = (
    "seed", "architecture", "latent_dim", "hidden", "channels", "activation",
    "likelihood", "sigma_dec_mode", "sigma_dec", "objective", "num_samples",
    "analytic_kl", "batch_size", "num_train_steps", "learning_rate",
    "lr_schedule", "warmup_steps", "grad_clip_norm", "adam_b1", "adam_b2",
    "nan_policy", "eval_batch_size", "eval_every_steps", "eval_iwae_samples",
    "final_iwae_samples", "iwae_chunk_size", "log_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "num_image_examples")


class SweepError(ValueError):
  """A sweep that cannot run as configured; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point.

  Attributes:
    index: its number in the whole sweep (stable across machines).
    overrides: {field: value} the grid and variant set on `base`.
    config: the runner config of this point.
  """

  index: int
  overrides: dict
  config: ml_collections.ConfigDict


# ---------------------------------------------------------------- the grid


def _as_list(values, name):
  if isinstance(values, (list, tuple)) and not (
      name in ("hidden", "channels") and values and
      isinstance(values[0], int)):
    values = list(values)
  else:
    values = [values]  # a single value: an axis of length one
  if not values:
    raise SweepError(f"config.grid.{name} is empty")
  return values


def _axes(sweep_config):
  """[(field, [values])] in alphabetical order of the field names."""
  grid = sweep_config.get("grid") or {}
  return [(name, _as_list(grid[name], name)) for name in sorted(grid.keys())]


def _set_fields(base, overrides, where):
  config = base.copy_and_resolve_references()
  for name, value in overrides.items():
    if name not in config:
      raise SweepError(f"{where}: {name!r} is not a config field")
    if isinstance(config[name], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      config[name] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f"{where}: {name}={value!r} does not fit the field "
                       f"({str(e).splitlines()[0]})") from None
  return config


def expand_grid(sweep_config) -> list[Point]:
  """All points of the sweep, numbered: the grid product, then each variant.

  Raises:
    SweepError: a field that does not exist, a value of the wrong type, an
      empty axis, or two points that would train the same model.
  """
  axes = _axes(sweep_config)
  variants = [dict(v) for v in (sweep_config.get("variants") or [])]
  blocks = [({}, axes)]
  for v in variants:
    if not v:
      raise SweepError("config.variants holds an empty variant")
    blocks.append((v, [(n, vals) for n, vals in axes if n not in v]))
  points = []
  for fixed, block_axes in blocks:
    names = [n for n, _ in block_axes]
    for values in itertools.product(*[vals for _, vals in block_axes]):
      overrides = dict(zip(names, values))
      overrides.update(fixed)
      where = f"sweep point {len(points)}"
      points.append(Point(len(points), overrides,
                          _set_fields(sweep_config.base, overrides, where)))
  if not points:
    raise SweepError("the sweep has no points")
  _check_distinct(points)
  return points


def _effective_json(config):
  """The config as JSON, with σ_dec dropped where the model ignores it."""
  d = json.loads(config.to_json())
  if config.likelihood != "gaussian" or config.sigma_dec_mode == "optimal":
    d.pop("sigma_dec", None)
  return json.dumps(d, sort_keys=True)


def _check_distinct(points):
  seen = {}
  for p in points:
    key = _effective_json(p.config)
    if key in seen:
      raise SweepError(
          f"sweep points {seen[key]} and {p.index} train the same model "
          f"({p.overrides}); sigma_dec is unused with sigma_dec_mode="
          f"'optimal' or a Bernoulli likelihood, so name it in that variant")
    seen[key] = p.index


def validate(sweep_config, num_devices=1, num_processes=1) -> list[Point]:
  """Expands and checks the whole sweep before any work.

  Returns:
    All points of the sweep.

  Raises:
    SweepError: one line naming the first problem (a point's config error
      names the point).
  """
  if "base" not in sweep_config:
    raise SweepError("the sweep config has no `base` runner config")
  points = expand_grid(sweep_config)
  for p in points:
    try:
      config_validation.validate(p.config, num_devices, num_processes)
    except config_validation.ConfigError as e:
      raise SweepError(f"sweep point {p.index} ({_describe(p.overrides)}): "
                       f"{e}") from None
  start, end = index_range(sweep_config, len(points))
  if start >= end:
    raise SweepError(f"config.start_index={start} leaves no points before "
                     f"end index {end} (the sweep has {len(points)})")
  if sweep_config.get("max_group_size", 0) < 0:
    raise SweepError("config.max_group_size must be >= 0 (0: no limit)")
  return points


def index_range(sweep_config, num_points):
  """[start, end) of the points this process runs; end_index < 0 = all."""
  start = int(sweep_config.get("start_index", 0))
  end = int(sweep_config.get("end_index", -1))
  end = num_points if end < 0 else min(end, num_points)
  if start < 0:
    raise SweepError(f"config.start_index={start} must be >= 0")
  return start, end


def _describe(overrides):
  return ", ".join(f"{k}={v}" for k, v in overrides.items())


def fingerprint(sweep_config, points) -> str:
  """A hash of the base config and every point: what the results depend on.

  The index range and group size are left out, so machines running parts of
  one sweep agree.
  """
  blob = json.dumps({"base": json.loads(sweep_config.base.to_json()),
                     "points": [_jsonable_overrides(p.overrides)
                                for p in points]}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable_overrides(overrides):
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in overrides.items()}


# ---------------------------------------------------------------- grouping


def _hyperparam_states(opt_state):
  """The optax InjectHyperparams states inside an optimizer state."""
  found = []
  is_inject = lambda x: hasattr(x, "hyperparams") and hasattr(x, "_replace")
  for leaf in jax.tree.leaves(opt_state, is_leaf=is_inject):
    if is_inject(leaf):
      found.append(leaf)
  return found


def set_learning_rate(opt_state, value):
  """opt_state with every injected `learning_rate` hyperparameter = value."""
  is_inject = lambda x: hasattr(x, "hyperparams") and hasattr(x, "_replace")

  def replace(node):
    if is_inject(node) and "learning_rate" in node.hyperparams:
      old = node.hyperparams["learning_rate"]
      hyper = dict(node.hyperparams,
                   learning_rate=jnp.asarray(value, jnp.asarray(old).dtype))
      return node._replace(hyperparams=hyper)
    return node

  return jax.tree.map(replace, opt_state, is_leaf=is_inject)


def learning_rate_in_state(config) -> bool:
  """Whether the optimizer of `config` reads its learning rate from its state.

  optax.inject_hyperparams keeps the learning rate in the state, but a
  schedule (even a constant one) rewrites it there every step; then a
  stacked state cannot give each point its own rate, and learning_rate
  must split groups. Probed, not assumed: set the rate to 0 and look for a
  zero update.
  """
  optimizer = train_lib.make_optimizer(config)
  params = {"w": jnp.ones((2,))}
  state = optimizer.init(params)
  if not any("learning_rate" in s.hyperparams
             for s in _hyperparam_states(state)):
    return False
  updates, _ = optimizer.update({"w": jnp.ones((2,))},
                                set_learning_rate(state, 0.0), params)
  return bool(jnp.all(updates["w"] == 0.0))


@functools.lru_cache(maxsize=None)
def _learning_rate_in_state_cached(optimizer_json):
  # The answer does not depend on the rate's value: probe with any.
  fields = dict(json.loads(optimizer_json), learning_rate=1e-3)
  return learning_rate_in_state(ml_collections.ConfigDict(fields))


_OPTIMIZER_FIELDS = ("lr_schedule", "warmup_steps",
                     "num_train_steps", "grad_clip_norm", "adam_b1",
                     "adam_b2")


def value_fields(config) -> tuple[str, ...]:
  """Fields that may differ between points trained as one vmapped group."""
  optimizer_json = json.dumps({k: config[k] for k in _OPTIMIZER_FIELDS},
                              sort_keys=True)
  if _learning_rate_in_state_cached(optimizer_json):
    return STATE_VALUE_FIELDS + ("learning_rate",)
  return STATE_VALUE_FIELDS


def group_key(config, fields=None) -> str:
  """JSON of everything that fixes the compiled program (all but values)."""
  fields = value_fields(config) if fields is None else fields
  d = json.loads(config.to_json())
  for name in fields:
    d.pop(name, None)
  return json.dumps(d, sort_keys=True)


def group_points(points: Sequence[Point], max_group_size=0):
  """Points with equal `group_key`, in order of their first index.

  Args:
    points: the points to run.
    max_group_size: cap on points trained at once (memory); 0 = no cap.
      Larger groups are cut into consecutive chunks.

  Returns:
    list of lists of points.
  """
  groups = {}
  for p in points:
    groups.setdefault(group_key(p.config), []).append(p)
  out = []
  for members in groups.values():
    size = max_group_size if max_group_size > 0 else len(members)
    out.extend(members[i:i + size] for i in range(0, len(members), size))
  return sorted(out, key=lambda g: g[0].index)


# --------------------------------------------------- training of one group


def stack_trees(trees):
  """[tree_1, ..., tree_N] -> one tree of [N, ...] arrays."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree, i):
  """Row i of a stacked tree."""
  return jax.tree.map(lambda x: x[i], tree)


def init_point_state(config, event_shape, optimizer, set_lr=False):
  """The state `runner.train_and_evaluate(config)` starts from.

  σ_dec enters through the model's initial params["log_sigma_dec"] and the
  seed through `init_state`; with `set_lr` the learning rate goes into the
  optimizer state. Eager, as in the runner: its small per-op programs are
  compiled once per shape and reused by every point and group, which on a
  CPU is faster than compiling one initializer per group.
  """
  model = train_lib.build_model(config, event_shape)
  state = train_lib.init_state(model, optimizer, config.seed)
  if set_lr:
    state["opt_state"] = set_learning_rate(state["opt_state"],
                                           config.learning_rate)
  return state


def init_group_state(configs, event_shape, optimizer):
  """Stacked initial states of `configs` (one group), leaves [N, ...]."""
  set_lr = "learning_rate" in value_fields(configs[0])
  return stack_trees([init_point_state(c, event_shape, optimizer, set_lr)
                      for c in configs])


def make_group_step(model, optimizer, config, seed_index):
  """One jitted step for a stacked group: (states [N], batches [S]) -> ...

  Args:
    seed_index: int [N]; point n trains on batches[seed_index[n]], the
      stream of its seed (points with one seed share one data stream).

  Returns:
    step(states, batches [S, B, *event]) -> (states, metrics of [N]).
  """
  step = train_lib.TrainStep(model, optimizer, config)
  seed_index = np.asarray(seed_index, np.int32)
  identity = np.array_equal(seed_index, np.arange(len(seed_index)))

  def group_step(states, batches):
    per_point = batches if identity else jnp.take(batches, seed_index, axis=0)
    return jax.vmap(step)(states, per_point)

  return jax.jit(group_step, donate_argnums=(0,))


def stacked_batch_sharding(mesh):
  """Batches [S, B, ...]: B split over 'data', the stream axis replicated."""
  return NamedSharding(mesh, P(None, sharding.DATA_AXIS))


@dataclasses.dataclass
class TrainedGroup:
  """The outcome of `train_group`.

  Attributes:
    state: stacked state, leaves [N, ...].
    seeds: the distinct seeds, in the order of `data_iterators`.
    data_iterators: encoded iterator state per seed (for the checkpoints).
    train_time_s: wall seconds of training, summed over resumed sessions
      (compilation and data reading included).
    skipped_updates: int [N], updates dropped as non-finite.
    first_step_s: wall seconds from the start of this call to the end of
      its first step (initialization, restore and compilation); 0 when no
      step ran.
  """

  state: Any
  seeds: list
  data_iterators: list
  train_time_s: float
  skipped_updates: np.ndarray
  first_step_s: float = 0.0

  def iterator_of(self, seed):
    return self.data_iterators[self.seeds.index(seed)]


def _abstract(tree, shard):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      jnp.shape(x), jnp.asarray(x).dtype, sharding=shard), tree)


def _first_nonfinite(window, first_step):
  """(step, point) of the first non-finite update in a window, or None."""
  finite = np.stack([np.asarray(m["finite"]) for m in window])  # [T, N]
  if finite.all():
    return None
  t, n = np.argwhere(~finite)[0]
  return first_step + int(t), int(n)


def train_group(configs, dataset, checkpoint_dir=None, mesh=None,
                name="group", point_indices=None) -> TrainedGroup:
  """Trains points of one group together, resuming from `checkpoint_dir`.

  Args:
    configs: runner configs equal in every field but the value fields.
    dataset: their `Dataset`.
    checkpoint_dir: folder of this group's checkpoints; None trains without
      checkpoints (benchmarks).
    mesh: device mesh; default all devices on a 'data' axis.
    name: label in log lines.
    point_indices: sweep indices of the points, for messages and a check
      that a checkpoint belongs to these points.

  Returns:
    TrainedGroup.

  Raises:
    FloatingPointError: a non-finite update with nan_policy='stop', naming
      the step and the point; no checkpoint is written after it.
  """
  t_start = time.time()
  c0 = configs[0]
  mesh = sharding.make_mesh() if mesh is None else mesh
  points = (list(range(len(configs))) if point_indices is None
            else list(point_indices))
  model = train_lib.build_model(c0, dataset.event_shape)
  optimizer = train_lib.make_optimizer(c0)
  state = init_group_state(configs, dataset.event_shape, optimizer)
  seeds = list(dict.fromkeys(int(c.seed) for c in configs))
  seed_index = [seeds.index(int(c.seed)) for c in configs]
  local_batch = c0.batch_size // jax.process_count()
  iterators = [data_lib.train_iterator(
      dataset, local_batch, s, c0.transform,
      shard_index=jax.process_index(), shard_count=jax.process_count())
               for s in seeds]
  repl = sharding.replicated(mesh)
  past_time, skipped = 0.0, np.zeros(len(configs), np.int64)
  manager = None
  if checkpoint_dir is not None:
    manager = checkpointing.make_manager(checkpoint_dir, c0.keep_checkpoints)
    restored = checkpointing.restore_latest(manager, _abstract(state, repl))
  else:
    restored = None
  if restored is None:
    state = jax.device_put(state, repl)
  else:
    step, state, meta = restored
    if meta["points"] != points or meta["seeds"] != seeds:
      raise SweepError(f"group checkpoint in {checkpoint_dir} holds points "
                       f"{meta['points']}, not {points}")
    for it, blob in zip(iterators, meta["data_iterators"]):
      it.set_state(checkpointing.decode_iterator_state(blob))
    past_time = float(meta["train_time_s"])
    skipped = np.asarray(meta["skipped_updates"], np.int64)
    logging.info("%s: resumed at step %d from %s", name, step,
                 checkpoint_dir)

  def encoded_iterators():
    return [checkpointing.encode_iterator_state(it.get_state())
            for it in iterators]

  group_step = make_group_step(model, optimizer, c0, seed_index)
  batch_shard = stacked_batch_sharding(mesh)
  total = c0.num_train_steps
  step = int(np.asarray(jax.device_get(state["step"]))[0])
  window, window_start, t0 = [], step, time.time()
  first_step_s = 0.0
  while step < total:
    local = np.stack([next(it) for it in iterators])  # [S, B_local, ...]
    batches = jax.make_array_from_process_local_data(batch_shard, local)
    state, metrics = group_step(state, batches)
    if not first_step_s:
      jax.block_until_ready(metrics)  # once: separates compilation time
      first_step_s = time.time() - t_start
    window.append(metrics)
    step += 1
    log = step % c0.log_every_steps == 0 or step == total
    save = step % c0.checkpoint_every_steps == 0 or step == total
    if not (log or save):
      continue
    window = jax.device_get(window)
    bad = _first_nonfinite(window, window_start + 1)
    if bad is not None and c0.nan_policy == "stop":
      raise FloatingPointError(
          f"non-finite loss or gradient at step {bad[0]} of sweep point "
          f"{points[bad[1]]}; the update was not applied and no checkpoint "
          f"was written after it (set nan_policy='skip' to drop such "
          f"updates and go on)")
    skipped += np.sum([~np.asarray(m["finite"]) for m in window], axis=0)
    if log:
      losses = np.mean([np.asarray(m["loss"]) for m in window], axis=0)
      rate = len(window) / max(time.time() - t0, 1e-9)
      logging.info("%s: step %d/%d  loss %.3f..%.3f nats over %d points  "
                   "%.1f steps/s", name, step, total, float(np.min(losses)),
                   float(np.max(losses)), len(configs), rate)
    if save and manager is not None:
      meta = {"points": points, "seeds": seeds,
              "data_iterators": encoded_iterators(),
              "train_time_s": past_time + time.time() - t_start,
              "skipped_updates": skipped.tolist()}
      checkpointing.save(manager, step, state, meta)
    window, window_start, t0 = [], step, time.time()
  if manager is not None:
    manager.wait_until_finished()
    manager.close()
  return TrainedGroup(state, seeds, encoded_iterators(),
                      past_time + time.time() - t_start, skipped,
                      first_step_s)


# ------------------------------------------------------- evaluating points


@dataclasses.dataclass(frozen=True)
class PointTools:
  """Compiled functions evaluating the points of one group (one compile
  each per group, not per point).

  Attributes:
    model: the group's VAE (σ_dec and seed live in the parameters).
    eval_fn: `evaluate.make_eval_fn` with the final K, as the runner's.
    mse_fn: (params, key, x [B, *event]) -> squared error at z ~ q, [B].
    sample_fn: (params, key) -> decoder means at z ~ p(z), [n, *event].
    reconstruct_fn: (params, x) -> decoder means at E_q[z], [B, *event].
  """

  model: Any
  eval_fn: Any
  mse_fn: Any
  sample_fn: Any
  reconstruct_fn: Any


def make_point_tools(model, config, mesh=None):
  mesh = sharding.make_mesh() if mesh is None else mesh

  def mse(params, key, x):
    z = objectives.reparam(key, model.posterior(params, x))
    err = jnp.square(x - model.decoder_mean(params, z))
    return jnp.sum(err.reshape((err.shape[0], -1)), axis=1)

  n = config.num_image_examples
  return PointTools(
      model=model,
      eval_fn=eval_lib.make_eval_fn(model, config.final_iwae_samples,
                                    config.iwae_chunk_size, mesh),
      mse_fn=jax.jit(mse, out_shardings=sharding.batch_sharded(mesh)),
      sample_fn=jax.jit(lambda params, key: model.sample_prior(params, key,
                                                               n)),
      reconstruct_fn=jax.jit(model.reconstruct))


def test_mse(tools, params, dataset, config, key):
  """Mean squared error per dimension on the test split, z ~ q(z|x).

  For a Gaussian decoder its square root is the calibrated σ_dec: the
  maximizer of the test reconstruction term over one shared σ (Rybkin et
  al. 2021). Exact average (padding masked).
  """
  mesh = sharding.make_mesh()
  total, count = 0.0, 0.0
  batches = data_lib.eval_batches(
      dataset, "test", config.eval_batch_size // jax.process_count(),
      config.transform, seed=config.seed, shard_index=jax.process_index(),
      shard_count=jax.process_count())
  for i, batch in enumerate(batches):
    err = tools.mse_fn(params, jax.random.fold_in(key, i),
                       sharding.global_batch(batch.x, mesh))
    mask = sharding.global_batch(batch.mask, mesh)
    total += float(jax.device_get(jnp.sum(err * mask)))
    count += float(jax.device_get(jnp.sum(mask)))
  return total / (count * math.prod(dataset.event_shape))


def _save_point_images(tools, params, dataset, config, point_dir, key):
  shape = images.image_shape_for(dataset.event_shape)
  n = min(config.num_image_examples, len(dataset.test))
  if shape is None or n < config.num_image_examples or n == 0:
    return
  out = os.path.join(point_dir, "images")
  os.makedirs(out, exist_ok=True)
  samples = jax.device_get(tools.sample_fn(params, key))
  images.save_png(os.path.join(out, "samples.png"),
                  images.grid(samples, shape))
  x = next(iter(data_lib.eval_batches(dataset, "test", n, config.transform,
                                      seed=config.seed))).x
  recon = jax.device_get(tools.reconstruct_fn(params, jnp.asarray(x)))
  images.save_pairs(os.path.join(out, "reconstructions.png"), x, recon,
                    shape)


def _write_json(path, obj):
  """Writes atomically: a crash leaves the old file or none, never half."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


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
    sigma_final = math.sqrt(mse)
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


def finish_point(point, tools, state, data_iterator, dataset, workdir,
                 group_size, train_time_s, skipped, standardization=None):
  """Saves, evaluates and records one trained point; returns its row.

  The point's folder becomes a runner workdir: its checkpoint holds the
  state and data-iterator position the runner would have written, so
  `python -m vae_jax.main --workdir=points/<i>` reloads it.
  """
  t0 = time.time()
  c = point.config
  out = point_dir(workdir, point.index)
  is_lead = jax.process_index() == 0
  manager = checkpointing.make_manager(out, 1)
  checkpointing.save(manager, int(c.num_train_steps), state, {
      "data_iterator": data_iterator,
      "config": json.loads(c.to_json()),
      "standardization": standardization})
  manager.wait_until_finished()
  manager.close()
  # The runner's final evaluation: same key, same K, same functions.
  key = jax.random.key(c.seed + 1)
  scalars, kl_per_dim = eval_lib.evaluate(tools.model, state["params"],
                                          dataset, c, tools.eval_fn, key)
  scalars["step"] = int(jax.device_get(state["step"]))
  scalars["iwae_samples"] = c.final_iwae_samples
  mse = test_mse(tools, state["params"], dataset, c,
                 jax.random.key(c.seed + 2))
  row = point_row(point, scalars, mse, group_size, train_time_s,
                  time.time() - t0, skipped)
  if is_lead:
    with open(os.path.join(out, "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2))
    _write_json(os.path.join(out, "final_metrics.json"),
                dict(scalars, kl_per_dim=kl_per_dim.tolist()))
    _save_point_images(tools, state["params"], dataset, c, out, key)
    row["eval_time_s"] = time.time() - t0
    _write_json(os.path.join(out, "result.json"),
                {"row": row, "overrides": _jsonable_overrides(
                    point.overrides)})
  return row


def load_result(workdir, index):
  """The row of a finished point, or None when it is not done."""
  path = os.path.join(point_dir(workdir, index), "result.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)["row"]


# ----------------------------------------------------------- the whole run


def _standardization(dataset):
  if dataset.standardization is None:
    return None
  return {k: np.asarray(v).tolist()
          for k, v in dataset.standardization.items()}


def data_key(config):
  d = json.loads(config.to_json())
  for name in _NON_DATA_FIELDS:
    d.pop(name, None)
  return json.dumps(d, sort_keys=True)


def _write_sweep_json(sweep_config, points, workdir):
  """Records the sweep; refuses a workdir holding another sweep's points."""
  fp = fingerprint(sweep_config, points)
  path = os.path.join(workdir, "sweep.json")
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f).get("fingerprint")
    if old != fp:
      raise SweepError(
          f"{workdir} holds another sweep (fingerprint {old}, this config "
          f"gives {fp}: the base config or the grid changed); use a new "
          f"--workdir or the original config")
  if jax.process_index() == 0:
    _write_json(path, {
        "fingerprint": fp, "num_points": len(points),
        "config": json.loads(sweep_config.to_json_best_effort()),
        "points": [{"index": p.index,
                    "overrides": _jsonable_overrides(p.overrides)}
                   for p in points]})
  return fp


def _group_dir(workdir, indices):
  digest = hashlib.sha1(json.dumps(indices).encode()).hexdigest()[:8]
  return os.path.join(workdir, "groups", f"{indices[0]:05d}-{digest}")


def _stored_group(workdir, pending):
  """A group folder whose points include all of `pending`, or None.

  After a crash between the evaluations of a group's points, the group's
  final checkpoint holds the rest: they are evaluated from it, not
  retrained.
  """
  root = os.path.join(workdir, "groups")
  if not os.path.isdir(root):
    return None
  want = {p.index for p in pending}
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "points.json")
    if os.path.isfile(path):
      with open(path) as f:
        indices = json.load(f)
      if want <= set(indices):
        return os.path.join(root, name), indices
  return None


def run_sweep(sweep_config, workdir, load_dataset=None):
  """Trains and evaluates the points of the index range; writes the table.

  Args:
    sweep_config: a validated sweep config (see `validate`).
    workdir: output folder; rerunning resumes.
    load_dataset: config -> Dataset; default `data.get_dataset`.

  Returns:
    The rows of results.csv (all finished points in the workdir).
  """
  load_dataset = load_dataset or data_lib.get_dataset
  os.makedirs(workdir, exist_ok=True)
  points = expand_grid(sweep_config)
  _write_sweep_json(sweep_config, points, workdir)
  start, end = index_range(sweep_config, len(points))
  selected = points[start:end]
  by_index = {p.index: p for p in points}
  groups = group_points(selected, sweep_config.get("max_group_size", 0))
  done = sum(load_result(workdir, p.index) is not None for p in selected)
  logging.info("sweep: %d points (indices %d..%d of %d) in %d groups; %d "
               "already done", len(selected), start, end - 1, len(points),
               len(groups), done)
  datasets = {}
  for g, group in enumerate(groups):
    pending = [p for p in group if load_result(workdir, p.index) is None]
    if not pending:
      continue
    stored = _stored_group(workdir, pending)
    if stored is None:
      members = pending
      group_dir = _group_dir(workdir, [p.index for p in members])
      if jax.process_index() == 0:
        os.makedirs(group_dir, exist_ok=True)
        _write_json(os.path.join(group_dir, "points.json"),
                    [p.index for p in members])
    else:
      group_dir, indices = stored
      members = [by_index[i] for i in indices]
    c0 = members[0].config
    dkey = data_key(c0)
    if dkey not in datasets:
      datasets[dkey] = load_dataset(c0)
    dataset = datasets[dkey]
    name = (f"group {g + 1}/{len(groups)} (points "
            f"{format_ranges([p.index for p in members])})")
    logging.info("%s: %s, %d points", name, _describe(
        {k: v for k, v in members[0].overrides.items()
         if k not in value_fields(c0)}) or "base", len(members))
    trained = train_group([p.config for p in members], dataset,
                          checkpoint_dir=group_dir, name=name,
                          point_indices=[p.index for p in members])
    tools = make_point_tools(train_lib.build_model(c0, dataset.event_shape),
                             c0)
    pending_indices = {p.index for p in pending}
    for r, p in enumerate(members):
      if p.index not in pending_indices:
        continue
      row = finish_point(p, tools, unstack_tree(trained.state, r),
                         trained.iterator_of(int(p.config.seed)), dataset,
                         workdir, len(members), trained.train_time_s,
                         trained.skipped_updates[r],
                         _standardization(dataset))
      logging.info("point %d (%s): elbo %.2f  kl %.2f  nll_iwae %.2f  "
                   "active %d", p.index, _describe(p.overrides), row["elbo"],
                   row["kl"], row["nll_iwae"], row["active_units"])
    if jax.process_index() == 0 and all(
        load_result(workdir, p.index) is not None for p in members):
      shutil.rmtree(group_dir, ignore_errors=True)
  rows = collect_rows(workdir, len(points))
  if jax.process_index() == 0:
    _remove_finished_groups(workdir)
    write_outputs(rows, workdir)
  return rows


def _remove_finished_groups(workdir):
  """Deletes group checkpoints whose points are all done (left by a run
  whose index range changed)."""
  root = os.path.join(workdir, "groups")
  if not os.path.isdir(root):
    return
  for name in os.listdir(root):
    path = os.path.join(root, name, "points.json")
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      indices = json.load(f)
    if all(load_result(workdir, i) is not None for i in indices):
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
  if not os.listdir(root):
    os.rmdir(root)


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


# ---------------------------------------------------------------- CSV I/O


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
