"""Deterministic splits, class hold-out, standardization and config access.

Shared by the in-memory loaders (digits, tabular, breast_cancer, IDX), so
that every dataset without an official split is split the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_jax.data.base import ArraySource, DataError, Dataset

_MISSING = object()


def config_value(config: Any, name: str, default: Any = None) -> Any:
  """`config.name`, or `default` when the field is absent or None.

  Works for ml_collections.ConfigDict, dicts and plain attribute objects, so
  tests and scripts can pass whichever is at hand.
  """
  if config is None:
    return default
  try:
    value = config[name]
  except (KeyError, TypeError, AttributeError):
    value = getattr(config, name, _MISSING)
  return default if value is _MISSING or value is None else value


def split_indices(num_examples: int, num_test: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random train/test partition of range(num_examples).

  Args:
    num_examples: N.
    num_test: how many indices go to the test split, 0 < num_test < N.
    seed: the split is a function of (N, num_test, seed) only.

  Returns:
    (train_idx [N − num_test], test_idx [num_test]), each sorted so that
    examples keep their file order within a split.
  """
  if not 0 < num_test < num_examples:
    raise DataError(f"cannot hold out {num_test} of {num_examples} examples "
                    "for testing: need 0 < num_test < num_examples")
  perm = np.random.default_rng(seed).permutation(num_examples)
  return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def num_test_examples(num_examples: int, test_fraction: float) -> int:
  """round(N · test_fraction), kept within 1..N−1."""
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
  return min(max(int(round(num_examples * test_fraction)), 1), num_examples - 1)


def drop_class(examples: np.ndarray, labels: np.ndarray | None,
               holdout_class: int, dataset: str):
  """Removes the examples of `holdout_class` (anomaly detection set-up).

  Args:
    examples: [N, ...].
    labels: [N] ints.
    holdout_class: the label to remove; negative keeps everything.
    dataset: name for the error message.

  Returns:
    (examples, labels) without that class.
  """
  if holdout_class is None or holdout_class < 0:
    return examples, labels
  if labels is None:
    raise DataError(f"holdout_class={holdout_class} needs labels, and dataset "
                    f"{dataset!r} has none")
  keep = labels != holdout_class
  if keep.all():
    raise DataError(f"holdout_class={holdout_class} does not occur in the "
                    f"training labels of {dataset!r} "
                    f"(labels present: {sorted(set(labels.tolist()))})")
  return examples[keep], labels[keep]


def fit_standardization(train: np.ndarray) -> dict:
  """Per-feature mean and std of the training features.

  Args:
    train: [N, D] raw training features.

  Returns:
    {"mean": [D], "std": [D]} as lists of floats (JSON-serializable, so the
    trainer can store them beside a checkpoint). Constant features get
    std 1 so they map to 0 instead of dividing by zero.
  """
  train = np.asarray(train, np.float64)
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return {"mean": mean.tolist(), "std": std.tolist()}


def standardize(raw: np.ndarray, standardization: dict) -> np.ndarray:
  """(raw − mean) / std. raw: [..., D] → float32 [..., D]."""
  mean = np.asarray(standardization["mean"], np.float64)
  std = np.asarray(standardization["std"], np.float64)
  return ((np.asarray(raw, np.float64) - mean) / std).astype(np.float32)


def destandardize(x: np.ndarray, standardization: dict) -> np.ndarray:
  """Inverse of `standardize`: x · std + mean, back in the file's units.

  Args:
    x: [..., D] standardized features (data or decoder means).
    standardization: `Dataset.standardization`.

  Returns:
    float64 [..., D] raw features.
  """
  mean = np.asarray(standardization["mean"], np.float64)
  std = np.asarray(standardization["std"], np.float64)
  return np.asarray(x, np.float64) * std + mean


def standardized_dataset(name: str, train_raw: np.ndarray,
                         test_raw: np.ndarray, train_labels,
                         test_labels) -> Dataset:
  """A continuous `Dataset` standardized with the training split's statistics.

  Args:
    name: dataset name.
    train_raw: [N_train, D] raw features.
    test_raw: [N_test, D] raw features.
    train_labels: [N_train] ints or None.
    test_labels: [N_test] ints or None.
  """
  stats = fit_standardization(train_raw)
  as_labels = lambda y: None if y is None else np.asarray(y, np.int64)
  return Dataset(
      name=name,
      event_shape=(train_raw.shape[1],),
      train=ArraySource(standardize(train_raw, stats)),
      test=ArraySource(standardize(test_raw, stats)),
      train_labels=as_labels(train_labels),
      test_labels=as_labels(test_labels),
      kind="continuous",
      levels=None,
      standardization=stats)
