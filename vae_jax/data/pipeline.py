"""Batches for training and evaluation, with grain (no TensorFlow).

Training: an infinite stream per process shard, reshuffled every epoch and
checkpointable: `get_state()` after k batches, `set_state` on a fresh
iterator, and the fresh one yields exactly batches k+1, k+2, ... of the
uninterrupted run, random transforms included.

Evaluation: the whole split once, in order, padded to full batches with a
mask, so compiled functions see one shape and averages are exact:

    total = sum((per_example * b.mask).sum() for b in eval_batches(...))
    mean = total / len(split)
"""

from __future__ import annotations

import concurrent.futures
import math
from typing import Iterator, NamedTuple

import grain
import numpy as np
from absl import logging

from vae_jax.data.base import ArraySource, DataError, Dataset
from vae_jax.data.transforms import DynamicBinarize
from vae_jax.data.transforms import aligned_empty
from vae_jax.data.transforms import make_transform

# Streams of randomness derived from the user's seed, kept independent.
_SHUFFLE, _TRAIN_TRANSFORM, _EVAL_TRANSFORM = 0, 1, 2


def derive_seed(seed: int, *tags: int) -> int:
  """A 32-bit seed for one (seed, tags) stream, e.g. (seed, shard, purpose)."""
  if seed < 0 or any(t < 0 for t in tags):
    raise DataError(f"seeds must be non-negative, got {seed}")
  return int(np.random.SeedSequence((seed,) + tags).generate_state(1)[0])


class TrainIterator(grain.DatasetIterator):
  """An infinite, checkpointable iterator of training batches.

  A grain `DatasetIterator`, so `grain.checkpoint.CheckpointHandler` (Orbax)
  saves and restores it as JSON. Its state also records the pipeline's
  settings, and `set_state` refuses a state written with other settings
  (batch size, seed, shard, ...) instead of silently feeding other batches.

  Attributes:
    batch_size: examples per batch.
    num_examples: examples in this process's shard of the training split.
    step: batches yielded so far (restored by set_state).
  """

  def __init__(self, parent: grain.DatasetIterator, settings: dict):
    super().__init__(parent)
    self._settings = dict(settings)
    self.batch_size = settings["batch_size"]
    self.num_examples = settings["num_examples"]
    self.step = 0

  def __next__(self) -> np.ndarray:
    """float32 [batch_size, *event_shape]."""
    batch = next(self._parent)
    self.step += 1
    return batch

  @property
  def epoch(self) -> float:
    """Epochs of this shard consumed so far (fractional)."""
    return self.step * self.batch_size / self.num_examples

  def get_state(self) -> dict:
    """JSON-serializable state: settings, step and grain's reader position."""
    return {"settings": dict(self._settings), "step": self.step,
            "pipeline": self._parent.get_state()}

  def set_state(self, state: dict) -> None:
    """Continues from a `get_state()` of an iterator with the same settings."""
    saved = dict(state.get("settings", {}))
    block = self._settings.get("block_batches")
    predates_blocks = block is not None and "block_batches" not in saved
    if predates_blocks:
      # Saved by a release before blocks, which made every batch on its
      # own: the stream of blocks of 1 (larger blocks draw another).
      saved["block_batches"] = block
    changed = sorted(k for k in set(saved) | set(self._settings)
                     if saved.get(k) != self._settings.get(k))
    if changed:
      diff = ", ".join(f"{k}: {saved.get(k)!r} -> {self._settings.get(k)!r}"
                       for k in changed)
      raise DataError(f"data iterator checkpoint does not match this run "
                      f"({diff}); resume with the original settings or start "
                      "a new workdir")
    if predates_blocks and block > 1:
      logging.warning(
          "the data iterator checkpoint predates batches made in blocks of "
          "%d: training continues from the same position, but random "
          "transforms (binarization, dequantization) now draw another "
          "stream, so the run is not bit-identical to an uninterrupted one "
          "from here on", block)
    self._parent.set_state(state["pipeline"])
    self.step = int(state["step"])

  def __str__(self) -> str:
    return f"TrainIterator({self._settings})"


def train_iterator(dataset: Dataset, batch_size: int, seed: int,
                   transform: str = "none", shard_index: int = 0,
                   shard_count: int = 1, *,
                   read_threads: int | None = None) -> TrainIterator:
  """Infinite shuffled training batches for one process's shard.

  Arrays in memory (`ArraySource`): every process draws the global batch of
  batch_size × shard_count examples and keeps rows [shard_index·batch_size,
  (shard_index + 1)·batch_size), so the global batches do not depend on the
  process count. Data read from disk (TFDS): the shard is examples
  shard_index, shard_index + shard_count, ... of the training split, so
  shards are disjoint, together cover it, and each process reads only its
  own; their order depends on the process count. Its epochs
  are concatenated — each a fresh permutation (grain's index shuffle with
  seed + epoch) — and cut into batches, so every batch is full and no
  example is ever dropped; a batch may straddle two epochs. The random
  transform draws from (seed, shard, position in the stream): fresh each
  epoch.
  In-memory sources (with a vectorized `take`) are permuted with numpy once
  per epoch and gathered and transformed `block_batches` batches at a time,
  with no per-example work; decode-per-read sources go through grain
  example by example (read threads hide decoding).

  Args:
    dataset: from `get_dataset`.
    batch_size: examples per batch on this process.
    seed: non-negative int; the whole stream is a function of it.
    transform: "none" | "dynamic_binarize" | "dequantize".
    shard_index: this process's index, 0 <= shard_index < shard_count.
    shard_count: number of processes reading disjoint shards.
    read_threads: reader threads, >= 0; default from the source
      (decode-per-read sources: 16; prepared CelebA, read from disk a batch
      at a time: 4 threads, each making one of the next 4 batches ahead; 0
      makes every batch in the calling thread). Ignored for arrays in
      memory, which are batched in the calling thread.

  Returns:
    A `TrainIterator` of float32 [batch_size, *event_shape] batches.
  """
  _check_shard(batch_size, shard_index, shard_count)
  if read_threads is not None and read_threads < 0:
    raise DataError(f"read_threads must be >= 0, got {read_threads}")
  source = dataset.train
  positions = np.arange(shard_index, len(source), shard_count)
  num_examples = len(positions)
  if num_examples == 0:
    raise DataError(f"shard {shard_index} of {shard_count} of the training "
                    f"split of {dataset.name!r} is empty")
  fn = make_transform(dataset, transform)
  settings = {"dataset": dataset.name, "num_examples": num_examples,
              "batch_size": batch_size, "seed": seed, "transform": transform,
              "shard_index": shard_index, "shard_count": shard_count}
  if hasattr(source, "take"):
    # Blocks for arrays in memory; a source read from disk (prepared
    # CelebA) reads one batch at a time, its memory and reads unchanged.
    in_memory = isinstance(source, ArraySource)
    block = block_batches(batch_size * shard_count,
                          dataset.event_shape) if in_memory else 1
    settings["block_batches"] = block
    if not in_memory:
      # Read ahead in `read_threads` threads: an accelerator's step can be
      # shorter than one thread's read and transform of a batch.
      return TrainIterator(_ArrayBatches(
          source, positions, batch_size, seed, shard_index, fn, block,
          read_ahead=_read_threads(source, read_threads)), settings)
    if shard_count == 1:
      return TrainIterator(_ArrayBatches(source, positions, batch_size, seed,
                                         shard_index, fn, block), settings)
    # Arrays in memory: every process computes the global batch b (a
    # function of the seed and b alone) and keeps its own rows, so a run
    # trains the same model on any number of processes. The gather and
    # transform are repeated per process, which in-memory data affords;
    # data read from disk is sharded instead.
    settings["num_examples"] = len(source)
    rows = slice(shard_index * batch_size, (shard_index + 1) * batch_size)
    return TrainIterator(_RowsOf(_ArrayBatches(
        source, np.arange(len(source)), batch_size * shard_count, seed, 0,
        fn, block), rows), settings)
  ds = _per_example_reads(source, batch_size, seed, shard_index, shard_count,
                          fn)
  return TrainIterator(iter(ds.to_iter_dataset(_read_options(
      dataset.train, read_threads))), settings)


# Batches made at once by an iterator over arrays in memory
# (`_ArrayBatches`): up to MAX_BLOCK_BATCHES, as many as fit in BLOCK_BYTES
# of float32 output.
MAX_BLOCK_BATCHES = 8
BLOCK_BYTES = 8 * 2**20


def block_batches(batch_size: int, event_shape) -> int:
  """Batches per block: 8 for MNIST or digits batches, 1 for 64 × 64 × 3
  images at batch 128 (6.3 MB a batch)."""
  batch_bytes = 4 * batch_size * math.prod(event_shape)
  return max(1, min(MAX_BLOCK_BATCHES, BLOCK_BYTES // batch_bytes))


class _ArrayBatches(grain.DatasetIterator):
  """Sources with a vectorized `take` (arrays in memory, or prepared CelebA
  records read in blocks of 1): batches are gathers, no per-example work.

  The stream is the concatenation of epochs, epoch e a permutation drawn
  from (seed, shard, e); batch b is its positions [b·B, (b+1)·B). Batches
  are made in blocks of K (`block_batches`): block j (batches jK, ...,
  jK + K − 1) is gathered with one `take` and its random transform draws
  from (seed, shard, j), as one array. So batch b is a function of b alone:
  the state is the batch count, and a restored iterator remakes the block
  and yields exactly the batches of the uninterrupted run.

  Cost, batches of 100 MNIST images binarized, process CPU on the 2-core
  CPU: 75 µs a batch in blocks of 8 against 111 µs made one at a time (the
  generator set-up, the gather and numpy's per-call work are paid once per
  block); grain's per-example range → shuffle → repeat → batch took
  ≈ 0.9 ms. Feeding the runner's step, blocks of 8 gave 0.976 of on-device
  steps/s against 0.939 one batch at a time (process CPU, one interleaved
  run of 25 rounds); experiments/bench_throughput.py printed 0.947-0.963
  over four runs. Blocks come 64-byte aligned, so a batch in one is
  aligned too whenever its size in bytes is a multiple of 64 (MNIST and
  digits at any batch size): then on CPU the device array aliases the
  batch instead of copying it. Nothing writes to a block once made.
  """

  def __init__(self, source, positions, batch_size, seed, shard_index, fn,
               block_batches, read_ahead=0):
    """read_ahead: > 0 makes the next `read_ahead` blocks in as many
    threads while the current one is used (sources read from disk: their
    reads and numpy's transforms release the GIL for part of the work; the
    record decoding and stacking hold it). Blocks are functions of their
    index, so the stream and the state are the same either way."""
    super().__init__()
    self._source, self._positions = source, positions
    self._batch_size, self._fn = batch_size, fn
    self._block_batches = block_batches
    self._seed, self._shard = seed, shard_index
    self._perms = {}  # epoch -> permutation; at most the last two epochs
    self._next = 0
    self._block_index, self._block = None, None
    self._read_ahead = read_ahead
    self._pool, self._ahead = None, {}  # block index -> Future of its block
    # Binarizing integer images: draw from the stored levels directly
    # (`DynamicBinarize.from_integers`, the same values).
    self._from_integers = (
        isinstance(fn, DynamicBinarize) and fn.levels is not None
        and getattr(source, "integer_levels", None) == fn.levels)

  def _permutation(self, epoch):
    if epoch not in self._perms:
      if len(self._perms) >= 2:
        del self._perms[min(self._perms)]
      rng = np.random.default_rng(derive_seed(self._seed, self._shard,
                                              _SHUFFLE, epoch))
      self._perms[epoch] = rng.permutation(len(self._positions))
    return self._perms[epoch]

  def _indices(self, start, stop):
    """Indices into positions of stream places [start, stop), across epochs
    if need be."""
    n = len(self._positions)
    parts = []
    while start < stop:
      epoch, offset = divmod(start, n)
      take = min(stop - start, n - offset)
      parts.append(self._permutation(epoch)[offset:offset + take])
      start += take
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

  def _block_rows(self, block):
    """Rows of the source in block `block`, in stream order: [K·B]."""
    size = self._block_batches * self._batch_size
    return self._positions[self._indices(block * size, (block + 1) * size)]

  def _get_block(self, block):
    """Block `block`, made here or, with read_ahead, taken from the thread
    that made it; the next read_ahead blocks are then started."""
    if not self._read_ahead:
      return self._make_block(block, self._block_rows(block))
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(
          self._read_ahead, thread_name_prefix="vae_jax-read-ahead")
    for j in [j for j in self._ahead
              if not block <= j <= block + self._read_ahead]:
      self._ahead.pop(j).cancel()  # after a jump (set_state): not needed
    # Not started (the first block, or after a jump): made here, not queued
    # behind work being thrown away.
    made = (None if block in self._ahead else
            self._make_block(block, self._block_rows(block)))
    for j in range(block + 1, block + self._read_ahead + 1):
      if j not in self._ahead:
        # The rows here: the permutation cache is not shared with threads.
        self._ahead[j] = self._pool.submit(self._make_block, j,
                                           self._block_rows(j))
    return made if made is not None else self._ahead.pop(block).result()

  def close(self):
    """Stops reading ahead: waits for the blocks being made, drops the
    rest (grain's close: explicit, blocking clean-up)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None
    self._ahead = {}
    super().close()

  def _make_block(self, block, rows):
    """Batches block·K, ..., block·K + K − 1: [K, B, *event_shape]."""
    if self._fn is None:
      x = self._source.take(rows)
    else:
      rng = np.random.default_rng(derive_seed(self._seed, self._shard,
                                              _TRAIN_TRANSFORM, block))
      x = (self._fn.from_integers(self._source.take_integers(rows), rng)
           if self._from_integers else self._fn(self._source.take(rows), rng))
    x = _aligned(x)
    return x.reshape((self._block_batches, self._batch_size) + x.shape[1:])

  def __next__(self):
    block, offset = divmod(self._next, self._block_batches)
    if block != self._block_index:
      self._block, self._block_index = self._get_block(block), block
    self._next += 1
    return self._block[offset]

  def get_state(self):
    return {"batches": self._next}

  def set_state(self, state):
    self._next = int(state["batches"])


def _aligned(x):
  """x, or a copy of it 64-byte aligned, so that on CPU the device array
  aliases the batch instead of copying it (see `aligned_empty`)."""
  if x.ctypes.data % 64 == 0:
    return x
  out = aligned_empty(x.shape, x.dtype)
  out[...] = x
  return out


class _RowsOf(grain.DatasetIterator):
  """This process's rows of each global batch of its parent."""

  def __init__(self, parent, rows):
    super().__init__(parent)
    self._rows = rows

  def __next__(self):
    return next(self._parent)[self._rows]

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


def _per_example_reads(source, batch_size, seed, shard_index, shard_count,
                       fn):
  """Decode-per-read sources (TFDS images): read threads work per example."""
  ds = grain.MapDataset.source(source)
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  ds = ds.shuffle(seed=derive_seed(seed, shard_index, _SHUFFLE)).repeat()
  if fn is not None:
    ds = ds.random_map(fn, seed=derive_seed(seed, shard_index,
                                            _TRAIN_TRANSFORM))
  return ds.batch(batch_size, drop_remainder=True)


class EvalBatch(NamedTuple):
  """One evaluation batch.

  Attributes:
    x: float32 [batch_size, *event_shape]; padding rows are zeros.
    mask: float32 [batch_size]; 1 for real examples, 0 for padding.
  """

  x: np.ndarray
  mask: np.ndarray


def eval_batches(dataset: Dataset, split: str, batch_size: int,
                 transform: str = "none", seed: int = 0, *,
                 shard_index: int = 0, shard_count: int = 1,
                 read_threads: int | None = None) -> Iterator[EvalBatch]:
  """The whole split (or this process's shard of it) once, in order.

  Every batch has exactly batch_size rows: the last is padded with zeros and
  `mask` marks the real rows, so per-example averages over the split are
  exact (sum of masked values / number of examples) and a jitted function
  compiles once. Every shard yields the same number of batches (trailing
  all-padding batches where shards differ in size), so processes stay in
  step. Random transforms are keyed on (seed, example index), so results do
  not depend on batch_size or shard_count, and the same seed gives the same
  binarized / dequantized split every time.

  Args:
    dataset: from `get_dataset`.
    split: "train" or "test".
    batch_size: rows per batch.
    transform: "none" | "dynamic_binarize" | "dequantize".
    seed: seed of the random transform (fixed, so evaluations are repeatable).
    shard_index: this process's shard (examples shard_index::shard_count).
    shard_count: number of shards.
    read_threads: reader threads; default from the source.

  Yields:
    `EvalBatch(x [batch_size, *event_shape], mask [batch_size])`.
  """
  _check_shard(batch_size, shard_index, shard_count)
  source = dataset.split(split)
  ds = grain.MapDataset.source(source)
  fn = make_transform(dataset, transform)
  if fn is not None:
    # Keyed on the example index: applied before sharding and batching.
    ds = ds.random_map(fn, seed=derive_seed(seed, _EVAL_TRANSFORM))
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  num_batches = math.ceil(math.ceil(len(source) / shard_count) / batch_size)
  return _padded(ds, num_batches, batch_size, dataset.event_shape,
                 _read_options(source, read_threads))


def _padded(ds, num_batches, batch_size, event_shape, read_options):
  yielded = 0
  if len(ds):
    for x in ds.batch(batch_size).to_iter_dataset(read_options):
      n = len(x)
      mask = np.zeros(batch_size, np.float32)
      mask[:n] = 1.0
      if n < batch_size:
        x = np.concatenate(
            [x, np.zeros((batch_size - n,) + x.shape[1:], np.float32)])
      yielded += 1
      yield EvalBatch(x, mask)
  for _ in range(num_batches - yielded):
    yield EvalBatch(np.zeros((batch_size,) + tuple(event_shape), np.float32),
                    np.zeros(batch_size, np.float32))


def _check_shard(batch_size, shard_index, shard_count):
  if batch_size < 1:
    raise DataError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 <= shard_index < shard_count:
    raise DataError(f"need 0 <= shard_index < shard_count, got "
                    f"{shard_index} and {shard_count}")


def _read_threads(source, read_threads):
  """read_threads, or the source's own default where None."""
  return (getattr(source, "read_threads", 4) if read_threads is None
          else read_threads)


def _read_options(source, read_threads):
  threads = _read_threads(source, read_threads)
  # Elements here are whole batches: a few per thread hide the reading
  # latency without holding hundreds of batches in memory.
  return grain.ReadOptions(num_threads=threads,
                           prefetch_buffer_size=2 * threads)
