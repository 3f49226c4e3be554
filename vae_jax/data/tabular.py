"""A user's table of continuous features from a CSV or .npy file.

The file holds one example per row (comma-separated; tab-separated for
.tsv/.tab files). A CSV may start with a header row (it
is detected: a first row with a non-numeric cell). One column may hold
labels (`config.label_column`, a header name or a 0-based index); it is
excluded from the features. Non-numeric labels are mapped to 0..K−1 in
sorted order. The split is a seeded random `test_fraction` hold-out and the
features are standardized with the training split's statistics.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from vae_jax.data import preprocess
from vae_jax.data.base import DataError, Dataset
from vae_jax.data.preprocess import config_value


def load_tabular(config) -> Dataset:
  """The table at `config.tabular_path` as a standardized continuous Dataset.

  Config fields: tabular_path, label_column (None = no labels),
  test_fraction (default 0.2), data_seed, holdout_class.
  """
  path = config_value(config, "tabular_path")
  if not path:
    raise DataError("dataset 'tabular' needs --config.tabular_path=FILE "
                    "(.csv or .npy)")
  features, labels = read_table(path, config_value(config, "label_column"))
  num_test = preprocess.num_test_examples(
      len(features), float(config_value(config, "test_fraction", 0.2)))
  train_idx, test_idx = preprocess.split_indices(
      len(features), num_test, int(config_value(config, "data_seed", 0)))
  take = lambda y, idx: None if y is None else y[idx]
  train_x, train_y = preprocess.drop_class(
      features[train_idx], take(labels, train_idx),
      int(config_value(config, "holdout_class", -1)), "tabular")
  return preprocess.standardized_dataset(
      "tabular", train_x, features[test_idx], train_y, take(labels, test_idx))


def read_table(path: str, label_column: str | int | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads features [N, D] float64 and labels [N] int64 (or None).

  Raises:
    DataError: missing file, ragged or non-numeric rows, NaN/inf values,
      fewer than 2 rows, or a label column that does not exist.
  """
  if not os.path.isfile(path):
    raise DataError(f"tabular_path {path!r} is not a file")
  if path.endswith(".npy"):
    table, header = _read_npy(path), None
  else:
    table, header = _read_csv(path)
  column = _label_column_index(label_column, header, table.shape[1], path)
  labels = None
  if column is not None:
    labels = _as_int_labels(table[:, column], path)
    table = np.delete(table, column, axis=1)
  try:
    features = table.astype(np.float64)
  except ValueError as e:
    raise DataError(f"{path}: non-numeric feature value ({e})") from None
  if features.shape[0] < 2 or features.shape[1] < 1:
    raise DataError(f"{path}: need at least 2 rows and 1 feature column, got "
                    f"shape {features.shape}")
  if not np.isfinite(features).all():
    row = int(np.argwhere(~np.isfinite(features))[0, 0])
    raise DataError(f"{path}: missing, NaN or infinite value in data row {row}")
  return features, labels


def _read_npy(path):
  try:
    table = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise DataError(f"cannot read {path} as .npy: {e}") from None
  if table.ndim != 2 or table.dtype.kind not in "biuf":
    raise DataError(f"{path}: expected a 2-D numeric array [rows, columns], "
                    f"got {table.dtype} {table.shape}")
  return table


def _read_csv(path):
  """Cells as a [rows, cols] string array, and the header row or None."""
  try:
    with open(path, newline="") as f:
      delimiter = "\t" if path.endswith((".tsv", ".tab")) else ","
      rows = [r for r in csv.reader(f, delimiter=delimiter)
              if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"cannot read {path} as CSV: {e}") from None
  if not rows:
    raise DataError(f"{path} is empty")
  rows = [[c.strip() for c in r] for r in rows]
  header = rows[0] if not all(_is_number(c) for c in rows[0]) else None
  body = rows[1:] if header is not None else rows
  width = len(rows[0])
  for i, r in enumerate(body):
    if len(r) != width:
      line = i + 1 + (header is not None)
      raise DataError(f"{path}: line {line} has {len(r)} columns, expected "
                      f"{width}")
  return np.array(body, dtype=str).reshape(len(body), width), header


def _is_number(text):
  try:
    float(text)
    return True
  except ValueError:
    return False


def _label_column_index(label_column, header, num_columns, path):
  if label_column is None or label_column == "":
    return None
  if header is not None and str(label_column) in header:
    return header.index(str(label_column))
  try:
    index = int(label_column)
  except (TypeError, ValueError):
    raise DataError(f"{path}: label_column {label_column!r} is not a header "
                    f"name ({header or 'the file has no header'}) or an "
                    "index") from None
  if not -num_columns <= index < num_columns:
    raise DataError(f"{path}: label_column {index} out of range for "
                    f"{num_columns} columns")
  return index % num_columns


def _as_int_labels(column, path):
  try:
    values = column.astype(np.float64)
  except ValueError:
    # Categorical labels ("M"/"B", ...): sorted names -> 0..K-1.
    _, codes = np.unique(column.astype(str), return_inverse=True)
    return codes.astype(np.int64)
  if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
    raise DataError(f"{path}: label column holds non-integer numbers")
  return values.astype(np.int64)
