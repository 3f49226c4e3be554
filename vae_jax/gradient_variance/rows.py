"""The row table: writing it to results.csv and reading values back out."""

import csv

import numpy as np

from vae_jax.gradient_variance.schema import COLUMNS


def write_csv(rows, path):
  """Writes `rows` (dicts keyed by COLUMNS) to `path`, floats to 6 digits."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _fmt_csv(row.get(k, "")) for k in COLUMNS})


def _fmt_csv(value):
  if isinstance(value, float):
    return f"{value:.6g}"
  return value


def to_float(value):
  """A row cell as a float; NaN for the empty string and other non-numbers."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


def series(rows, sweep, x_key, y_key, **match):
  """{(model, state, estimator): (xs, ys)} of rows matching `match`."""
  out = {}
  for r in rows:
    if r["sweep"] != sweep or any(r[k] != v for k, v in match.items()):
      continue
    out.setdefault((r["model"], r["state"], r["estimator"]), []).append(
        (to_float(r[x_key]), to_float(r[y_key])))
  return {k: tuple(np.array(v).T) for k, v in
          ((k, sorted(v)) for k, v in out.items())}


def find_row(rows, **match):
  """The first row whose cells equal `match`, or None."""
  for r in rows:
    if all(r[k] == v for k, v in match.items()):
      return r
  return None
