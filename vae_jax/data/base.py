"""The `Dataset` record every loader returns, its error type and array sources.

Every loader in this package returns a `Dataset` whose `train` and `test` are
random-access sources: `len(source)` examples, `source[i]` one float32 example
of shape `event_shape`, already scaled (see `Dataset.kind`). The batching
pipeline (`vae_jax.data.pipeline`) reads nothing else, so a new dataset only
has to produce two such sources.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

KINDS = ("image8bit", "binary", "continuous")


class DataError(Exception):
  """A one-line, user-facing problem: missing dataset, bad file or option."""


class Source(Protocol):
  """A random-access data source: what `Dataset.train` / `.test` hold."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> np.ndarray:
    """Example `index` as float32 [*event_shape]."""
    ...


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A train/test pair of sources and what their values mean.

  Attributes:
    name: the config's dataset name, e.g. "digits".
    event_shape: shape of one example, e.g. (64,) or (64, 64, 3).
    train: source of training examples, float32 [*event_shape] each.
    test: source of test examples, float32 [*event_shape] each.
    train_labels: int64 [len(train)] class labels, or None.
    test_labels: int64 [len(test)] class labels, or None.
    kind: "image8bit": integer intensities p ∈ {0..levels−1} scaled to
      p / (levels − 1) ∈ [0, 1]; "binary": values in {0, 1};
      "continuous": real-valued (tabular, synthetic).
    levels: number of intensity levels of image8bit data (256 for 8-bit
      images, 17 for scikit-learn digits); None otherwise.
    standardization: {"mean": [D], "std": [D]} (lists of floats) when the
      features were standardized with training statistics as
      x = (raw − mean) / std; None otherwise.
  """

  name: str
  event_shape: tuple[int, ...]
  train: Any
  test: Any
  train_labels: np.ndarray | None
  test_labels: np.ndarray | None
  kind: str
  levels: int | None
  standardization: dict | None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    if (self.kind == "image8bit") != (self.levels is not None):
      raise ValueError("levels is set exactly for image8bit data")

  @property
  def dim(self) -> int:
    """D, the number of observed dimensions per example (for bits/dim)."""
    return math.prod(self.event_shape)

  def split(self, name: str):
    """The source of split `name` ("train" or "test")."""
    if name not in ("train", "test"):
      raise DataError(f"split must be 'train' or 'test', got {name!r}")
    return self.train if name == "train" else self.test

  def labels(self, name: str) -> np.ndarray | None:
    """The labels of split `name` ("train" or "test"), or None."""
    self.split(name)
    return self.train_labels if name == "train" else self.test_labels


class ArraySource:
  """An in-memory source over a numpy array, scaled on read.

  Integer images stay in their compact dtype (uint8) in memory, 4× smaller
  than float32, and are scaled per example when read.

  Args:
    array: [N, ...] examples; reshaped to [N, *event_shape].
    divisor: each example is returned as float32(array[i]) / divisor;
      None returns float32(array[i]) as is.
    event_shape: shape of one example; defaults to array.shape[1:].
  """

  # Reading is a memory copy: one prefetch thread is plenty.
  read_threads = 1

  def __init__(self, array: np.ndarray, divisor: float | None = None,
               event_shape: tuple[int, ...] | None = None):
    event_shape = tuple(array.shape[1:] if event_shape is None else event_shape)
    self._array = np.ascontiguousarray(array).reshape(
        (len(array),) + event_shape)
    self._divisor = None if divisor is None else np.float32(divisor)
    self.event_shape = event_shape

  def __len__(self) -> int:
    return len(self._array)

  def __getitem__(self, index: int) -> np.ndarray:
    x = self._array[index].astype(np.float32)
    return x if self._divisor is None else x / self._divisor

  def take(self, indices: np.ndarray) -> np.ndarray:
    """Examples at `indices` [B] in one gather: float32 [B, *event_shape].

    The training pipeline reads whole batches through this, so the per-step
    host cost is one vectorized copy rather than B Python-level reads.
    """
    x = self._array[indices].astype(np.float32)
    return x if self._divisor is None else x / self._divisor

  @property
  def integer_levels(self) -> int | None:
    """L when the array holds integer intensities k in {0, ..., L − 1} read
    as k / (L − 1) (integer dtype, divisor L − 1); None otherwise."""
    if (self._divisor is None or not np.issubdtype(self._array.dtype,
                                                   np.integer)
        or self._divisor != int(self._divisor)):
      return None
    return int(self._divisor) + 1

  def take_integers(self, indices: np.ndarray) -> np.ndarray:
    """The stored integers k at `indices` [B]: [B, *event_shape], unscaled.

    What `take` returns times L − 1, without the float32 conversion and
    division: for transforms that work on the levels themselves.
    """
    return self._array[indices]

  def to_numpy(self) -> np.ndarray:
    """All examples at once: float32 [N, *event_shape], scaled as on read."""
    x = self._array.astype(np.float32)
    return x if self._divisor is None else x / self._divisor

  def __repr__(self) -> str:
    return (f"ArraySource(n={len(self)}, event_shape={self.event_shape}, "
            f"divisor={self._divisor})")


def image_dataset(name: str, train_pixels: np.ndarray, test_pixels: np.ndarray,
                  train_labels: np.ndarray | None,
                  test_labels: np.ndarray | None, *, levels: int | None,
                  event_shape: tuple[int, ...]) -> Dataset:
  """A `Dataset` of in-memory integer images.

  Args:
    name: dataset name.
    train_pixels: [N_train, ...] integer intensities in {0..levels−1}
      (in {0, 1} when levels is None: binary data).
    test_pixels: [N_test, ...] likewise.
    train_labels: [N_train] ints or None.
    test_labels: [N_test] ints or None.
    levels: intensity levels, or None for binary data.
    event_shape: shape of one example after reshaping, e.g. (784,).
  """
  divisor = 1.0 if levels is None else float(levels - 1)
  return Dataset(
      name=name,
      event_shape=tuple(event_shape),
      train=ArraySource(train_pixels, divisor, event_shape),
      test=ArraySource(test_pixels, divisor, event_shape),
      train_labels=_as_labels(train_labels),
      test_labels=_as_labels(test_labels),
      kind="binary" if levels is None else "image8bit",
      levels=levels,
      standardization=None)


def _as_labels(labels):
  return None if labels is None else np.asarray(labels, dtype=np.int64)
