"""A sweep config and its points: grid expansion, validation, fingerprint.

A sweep config (see `configs/sweep.py`) holds

  base      a runner config (the fields of `vae_jax/config_base.py`);
  grid      field -> list of values, crossed in alphabetical order of the
            field names (the last fastest);
  variants  a list of {field: value} dicts; each replaces the grid axes it
            names and is crossed with the remaining ones (e.g. a learned and
            the optimal σ_dec beside the grid of fixed ones).

Every point is the runner config `base` with its values set; points are
numbered 0, 1, ... in that order, so an index names the same point on every
machine and every restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

import ml_collections

from vae_jax.models import vae
from vae_jax.training import config_validation
from vae_jax.training import workdir as workdir_lib


def is_sweep_config(config) -> bool:
  """A sweep config has a `base` runner config and a `grid`."""
  return "base" in config and "grid" in config


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


def _as_list(values, name):
  if isinstance(values, (list, tuple)) and not (
      name in ("hidden", "channels") and values and
      isinstance(values[0], int)):
    values = list(values)
  else:
    values = [values]  # a single value: an axis of length one
  if not values:
    raise SweepError(f"config.grid.{name} is empty")
  _check_no_repeats(values, name)
  return values


def _check_no_repeats(values, name):
  """A value listed twice would train the same model twice; said here, the
  cause is named instead of the σ_dec hint `_check_distinct` gives."""
  for j, value in enumerate(values):
    if any(_same_value(value, v) for v in values[:j]):
      raise SweepError(f"config.grid.{name} lists the value {value!r} "
                       f"twice; each value of an axis must differ")


def _same_value(a, b):
  """Equal as the config will hold them: 1 and 1.0, (2, 2) and [2, 2]."""
  try:
    return a == b or json.dumps(a, sort_keys=True) == json.dumps(
        b, sort_keys=True)
  except TypeError:  # not JSON: == said no.
    return False


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
  for j, v in enumerate(variants):
    if not v:
      raise SweepError("config.variants holds an empty variant")
    if any(_same_value(v, w) for w in variants[:j]):
      raise SweepError(f"config.variants lists the variant {v} twice")
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


def uses_sigma_dec(config):
  """Whether the config's σ_dec enters its model (`vae.uses_sigma_dec`)."""
  return vae.uses_sigma_dec(config.likelihood, config.sigma_dec_mode)


def _effective_json(config):
  """The config as JSON, with σ_dec dropped where the model ignores it."""
  d = json.loads(config.to_json())
  if not uses_sigma_dec(config):
    d.pop("sigma_dec", None)
  return json.dumps(d, sort_keys=True)


def _check_distinct(points):
  seen = {}
  for p in points:
    key = _effective_json(p.config)
    if key in seen:
      first = points[seen[key]]
      raise SweepError(f"sweep points {first.index} and {p.index} train the "
                       f"same model ({p.overrides}); "
                       f"{_same_model_hint(first, p)}")
    seen[key] = p.index


def _same_model_hint(a, b):
  """Why two points of distinct overrides are one model: σ_dec unused (the
  usual cause), else a variant that repeats the grid or another variant."""
  differing = {k for k in set(a.overrides) | set(b.overrides)
               if a.overrides.get(k, _MISSING) != b.overrides.get(k, _MISSING)}
  if not differing:
    return ("a variant repeats points of the grid or of another variant: "
            "drop it or change a value")
  if differing <= {"sigma_dec"}:
    return ("sigma_dec is unused with sigma_dec_mode='optimal' or a "
            "likelihood without σ_dec (Bernoulli, logistic mixture), so "
            "name it in that variant")
  return (f"their values of {', '.join(sorted(differing))} change nothing "
          f"the model reads: drop the repeated variant or value")


_MISSING = object()


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
      raise SweepError(f"sweep point {p.index} ({describe(p.overrides)}): "
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


def describe(overrides):
  return ", ".join(f"{k}={v}" for k, v in overrides.items())


def fingerprint(sweep_config, points) -> str:
  """A hash of the base config and every point: what the results depend on.

  The index range and group size are left out, so machines running parts of
  one sweep agree; so are the fields a run may change on resume
  (`workdir.RESUMABLE_FIELDS`: training longer, evaluating harder), which
  each point's own workdir guard records instead. Parts of a sweep trained
  for different step counts thus share a fingerprint: a merge compares the
  steps their rows record (`results.merge_csvs`).
  """
  base = json.loads(sweep_config.base.to_json())
  for name in workdir_lib.RESUMABLE_FIELDS:
    if name != "num_train_steps" or base.get("lr_schedule") == "constant":
      base.pop(name, None)
  blob = json.dumps({"base": base,
                     "points": [jsonable_overrides(p.overrides)
                                for p in points]}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def jsonable_overrides(overrides):
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in overrides.items()}
