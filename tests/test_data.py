"""The data layer: loaders against independent references, and the pipeline's
determinism, exact resumption, sharding and random transforms.

Offline and fast: scikit-learn's bundled data, files the tests write, the
real MNIST IDX files when ../shared/data/mnist exists (skipped otherwise),
and TFDS under `tfds.testing.mock_data` (no prepared data, no network).
Statistical checks use fixed seeds and tolerances of 5 standard errors.
"""

import gzip
import json
import math
import os
import struct
import threading
import time

import ml_collections
import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from vae_jax import data
from vae_jax.data import idx
from vae_jax.data.base import ArraySource, Dataset
from vae_jax.data.transforms import Dequantize

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                         "data", "mnist")


def _config(**fields):
  c = ml_collections.ConfigDict()
  c.data_seed = 0
  c.holdout_class = -1
  for k, v in fields.items():
    c[k] = v
  return c


def _take(source, n=None):
  n = len(source) if n is None else n
  return np.stack([source[i] for i in range(n)])


def _id_dataset(n, dim=3, kind="continuous", levels=None):
  """Example i is the vector [i, i, ...]: batches reveal which examples came."""
  rows = np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1)
  return Dataset("ids", (dim,), ArraySource(rows), ArraySource(rows[:7]),
                 None, None, kind, levels, None)


def _multiset(x):
  return sorted(map(tuple, np.asarray(x).reshape(len(x), -1).tolist()))


# ---------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_partition():
  d = data.get_dataset(_config(dataset="digits"))
  assert (d.event_shape, d.kind, d.levels) == ((64,), "image8bit", 17)
  assert d.dim == 64
  assert (len(d.train), len(d.test)) == (1500, 297)
  train, test = d.train.to_numpy(), _take(d.test)
  assert train.dtype == np.float32 and train.shape == (1500, 64)
  assert train.min() == 0.0 and train.max() == 1.0
  np.testing.assert_array_equal(train * 16, np.round(train * 16))  # p / 16
  # Train and test partition the 1,797 images (as multisets of rows+labels).
  ref = sk_datasets.load_digits()
  labels = np.concatenate([d.train_labels, d.test_labels])
  pixels = np.concatenate([train, test]) * 16
  ours = np.concatenate([pixels, labels[:, None]], 1)
  theirs = np.concatenate([ref.data, ref.target[:, None]], 1)
  assert _multiset(ours) == _multiset(theirs)
  assert d.train_labels.dtype == np.int64


def test_digits_split_is_a_function_of_data_seed():
  a = data.get_dataset(_config(dataset="digits", data_seed=3))
  b = data.get_dataset(_config(dataset="digits", data_seed=3))
  c = data.get_dataset(_config(dataset="digits", data_seed=4))
  np.testing.assert_array_equal(_take(a.test), _take(b.test))
  np.testing.assert_array_equal(a.train_labels, b.train_labels)
  assert not np.array_equal(_take(a.test), _take(c.test))


def test_digits_holdout_class_leaves_train_only():
  full = data.get_dataset(_config(dataset="digits"))
  held = data.get_dataset(_config(dataset="digits", holdout_class=3))
  assert 3 not in held.train_labels
  assert len(held.train) == len(full.train) - np.sum(full.train_labels == 3)
  np.testing.assert_array_equal(_take(held.test), _take(full.test))
  assert np.sum(held.test_labels == 3) > 0
  with pytest.raises(data.DataError, match="does not occur"):
    data.get_dataset(_config(dataset="digits", holdout_class=11))


def test_unknown_dataset_and_bad_transform_are_data_errors():
  with pytest.raises(data.DataError, match="unknown dataset 'nope'"):
    data.get_dataset(_config(dataset="nope"))
  lg = data.get_dataset(_config(dataset="linear_gaussian"))
  with pytest.raises(data.DataError, match="continuous"):
    data.train_iterator(lg, 8, 0, "dynamic_binarize")
  with pytest.raises(data.DataError, match="dequantize"):
    data.train_iterator(lg, 8, 0, "dequantize")
  with pytest.raises(data.DataError, match="transform must be"):
    data.train_iterator(lg, 8, 0, "blur")


# ---------------------------------------------------------------- IDX files


def _idx_bytes(array, code=0x08):
  """An IDX file built with struct, independently of vae_jax.data.idx."""
  header = struct.pack(">BBBB", 0, 0, code, array.ndim)
  header += struct.pack(">" + "I" * array.ndim, *array.shape)
  return header + array.astype(">u1").tobytes()


def _write_mnist_like(folder, n_train=12, n_test=5, gz_test=True):
  rng = np.random.default_rng(0)
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
      "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
      "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
  }
  for name, a in arrays.items():
    raw = _idx_bytes(a.astype(np.uint8))
    if name.startswith("t10k") and gz_test:
      name, raw = name + ".gz", gzip.compress(raw)
    with open(os.path.join(folder, name), "wb") as f:
      f.write(raw)
  return arrays


def test_idx_reader_on_files_written_here(tmp_path):
  arrays = _write_mnist_like(tmp_path)
  d = data.get_dataset(_config(dataset="mnist_idx", idx_dir=str(tmp_path)))
  assert (d.event_shape, d.kind, d.levels) == ((784,), "image8bit", 256)
  np.testing.assert_array_equal(
      _take(d.train) * 255, arrays["train-images-idx3-ubyte"].reshape(12, 784))
  np.testing.assert_array_equal(
      _take(d.test) * 255, arrays["t10k-images-idx3-ubyte"].reshape(5, 784))
  np.testing.assert_array_equal(d.test_labels, arrays["t10k-labels-idx1-ubyte"])
  # write_idx produces what the independent writer produces.
  a = arrays["train-images-idx3-ubyte"].astype(np.uint8)
  idx.write_idx(tmp_path / "x.gz", a)
  assert gzip.decompress((tmp_path / "x.gz").read_bytes()) == _idx_bytes(a)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-100], "truncated"),
    (lambda raw: raw + b"\0", "trailing data"),
    (lambda raw: b"\x00\x00\x08\x09" + raw[4:], "shape"),
    (lambda raw: b"\x12\x34" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:6], "truncated IDX header"),
    (lambda raw: gzip.compress(raw)[:-50], "corrupt or truncated"),
])
def test_idx_reader_rejects_damaged_files(tmp_path, damage, message):
  _write_mnist_like(tmp_path, gz_test=False)
  path = tmp_path / "t10k-images-idx3-ubyte"
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(data.DataError, match=message):
    data.get_dataset(_config(dataset="mnist_idx", idx_dir=str(tmp_path)))


def test_idx_missing_files_and_label_mismatch(tmp_path):
  with pytest.raises(data.DataError, match="no MNIST train images"):
    data.get_dataset(_config(dataset="mnist_idx", idx_dir=str(tmp_path)))
  _write_mnist_like(tmp_path, gz_test=False)
  labels = tmp_path / "t10k-labels-idx1-ubyte"
  labels.write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
  with pytest.raises(data.DataError, match="labels of shape"):
    data.get_dataset(_config(dataset="mnist_idx", idx_dir=str(tmp_path)))


def test_idx_reader_on_real_mnist():
  if not os.path.isdir(MNIST_DIR):
    pytest.skip("../shared/data/mnist is not on this machine")
  d = data.get_dataset(_config(dataset="mnist_idx", idx_dir=MNIST_DIR))
  assert (len(d.train), len(d.test), d.event_shape) == (22699, 10000, (784,))
  test = d.test.to_numpy()
  assert test.min() == 0.0 and test.max() == 1.0
  # Known facts about MNIST (README): per-class counts of the training prefix
  # are 2,010..2,581, and the test set has 980 zeros, 1,135 ones.
  counts = np.bincount(d.train_labels, minlength=10)
  assert counts.min() == 2010 and counts.max() == 2581
  assert np.bincount(d.test_labels)[:2].tolist() == [980, 1135]
  # Digit strokes are dark background with bright ink: mean pixel ≈ 0.13.
  assert 0.12 < test.mean() < 0.14


# ---------------------------------------------------------------- TFDS


@pytest.fixture
def tfds_mock():
  tfds = pytest.importorskip("tensorflow_datasets")

  def mock(num_examples=8, **kwargs):
    return tfds.testing.mock_data(
        num_examples=num_examples,
        policy=tfds.testing.MockPolicy.USE_CODE, **kwargs)

  return mock


def test_tfds_mnist_through_get_dataset_and_iterator(tfds_mock, tmp_path):
  with tfds_mock(num_examples=20):
    d = data.get_dataset(_config(dataset="mnist", data_dir=str(tmp_path)))
  assert (d.event_shape, d.kind, d.levels) == ((784,), "image8bit", 256)
  assert len(d.train) == 20 and d.train_labels.shape == (20,)
  x = _take(d.train)
  assert x.min() >= 0 and x.max() <= 1
  np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)
  batch = next(data.train_iterator(d, 8, 0, "dynamic_binarize"))
  assert batch.shape == (8, 784) and set(np.unique(batch)) <= {0.0, 1.0}


def test_tfds_cifar10_through_get_dataset_and_iterator(tfds_mock, tmp_path):
  with tfds_mock(num_examples=6):
    d = data.get_dataset(_config(dataset="cifar10", data_dir=str(tmp_path)))
  assert (d.event_shape, d.levels, len(d.test)) == ((32, 32, 3), 256, 6)
  batch = next(data.train_iterator(d, 4, 0, "dequantize"))
  assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.float32
  assert batch.min() >= 0 and batch.max() < 1


def test_tfds_celeb_a_crop_and_resize(tfds_mock, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds_mock(num_examples=3):
    d = data.get_dataset(_config(dataset="celeb_a", data_dir=str(tmp_path),
                                 crop_size=148, image_size=64))
    assert d.event_shape == (64, 64, 3) and d.train_labels is None
    x = d.test[1]
    assert x.shape == (64, 64, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1
    batch = next(data.train_iterator(d, 2, 0, "dequantize"))
    assert batch.shape == (2, 64, 64, 3)
    # Without resizing the output is exactly the centre crop of the raw image.
    raw = tfds.data_source("celeb_a", split="test", download=False)[1]["image"]
    same = data.get_dataset(_config(dataset="celeb_a", data_dir=str(tmp_path),
                                    crop_size=100, image_size=100))
    np.testing.assert_array_equal(same.test[1] * 255,
                                  raw[59:159, 39:139].astype(np.float32))
    # Resizing averages: a 148→64 image keeps the crop's mean colour.
    crop = raw[35:183, 15:163].astype(np.float64) / 255
    np.testing.assert_allclose(x.mean(axis=(0, 1)), crop.mean(axis=(0, 1)),
                               atol=0.01)
    with pytest.raises(data.DataError, match="crop_size=300"):
      data.get_dataset(_config(dataset="celeb_a", data_dir=str(tmp_path),
                               crop_size=300))


def test_tfds_binarized_mnist_checks_pixels_are_binary(tfds_mock, tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 2, (5, 28, 28, 1)).astype(np.uint8)

  def binary_source(self, split, **kwargs):
    del self, split, kwargs
    return [{"image": im} for im in images]

  with tfds_mock(as_data_source_fn=binary_source):
    d = data.get_dataset(_config(dataset="binarized_mnist",
                                 data_dir=str(tmp_path)))
  assert (d.kind, d.levels, d.event_shape) == ("binary", None, (784,))
  np.testing.assert_array_equal(_take(d.test), images.reshape(5, 784))
  # The stock mock fills images with 0..254: not binary, so refused.
  with tfds_mock(), pytest.raises(data.DataError, match="not binary"):
    data.get_dataset(_config(dataset="binarized_mnist", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name", ["celeb_a", "mnist"])
def test_missing_tfds_dataset_fails_fast_with_instructions(tmp_path, name):
  start = time.monotonic()
  with pytest.raises(data.DataError) as info:
    data.get_dataset(_config(dataset=name, data_dir=str(tmp_path)))
  assert time.monotonic() - start < 10
  message = str(info.value)
  assert "\n" not in message and "not prepared" in message
  assert (f"python -m vae_jax.data.prepare --dataset={name} "
          f"--data_dir={tmp_path}") in message
  if name == "celeb_a":
    assert "--manual_dir" in message and "img_align_celeba.zip" in message


def test_prepare_rejects_unknown_dataset():
  from vae_jax.data import prepare  # pylint: disable=g-import-not-at-top
  with pytest.raises(data.DataError, match="cannot prepare"):
    prepare.prepare("digits")


# ---------------------------------------------------------------- pipeline


def test_train_iterator_is_deterministic_and_reshuffles_each_epoch():
  d = _id_dataset(40)
  ids = lambda it, k: np.concatenate([next(it)[:, 0] for _ in range(k)])
  a = ids(data.train_iterator(d, 10, seed=5), 8)
  b = ids(data.train_iterator(d, 10, seed=5), 8)
  c = ids(data.train_iterator(d, 10, seed=6), 8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # Each epoch (40 consecutive examples) is a permutation; epochs differ.
  np.testing.assert_array_equal(np.sort(a[:40]), np.arange(40))
  np.testing.assert_array_equal(np.sort(a[40:]), np.arange(40))
  assert not np.array_equal(a[:40], a[40:])


@pytest.mark.parametrize("transform", ["none", "dynamic_binarize"])
def test_train_iterator_resumes_exactly_from_state(transform):
  d = data.get_dataset(_config(dataset="digits"))
  it = data.train_iterator(d, 64, seed=1, transform=transform)
  for _ in range(20):  # 1,280 examples: the next batches straddle epoch 2.
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(6)]
  fresh = data.train_iterator(d, 64, seed=1, transform=transform)
  fresh.set_state(state)
  assert fresh.step == 20
  for want in expected:
    np.testing.assert_array_equal(next(fresh), want)
  assert it.epoch == pytest.approx(26 * 64 / 1500)
  other = data.train_iterator(d, 32, seed=1, transform=transform)
  with pytest.raises(data.DataError, match="batch_size: 64 -> 32"):
    other.set_state(state)


class _DiskLikeSource:
  """A source read a batch at a time, as prepared CelebA is (a `take`, not
  arrays in memory): 8-bit images, 1/255 on read; counts the threads that
  read it."""

  read_threads = 3

  def __init__(self, pixels):
    self._pixels = pixels
    self.event_shape = pixels.shape[1:]
    self.threads = set()

  def __len__(self):
    return len(self._pixels)

  def __getitem__(self, index):
    return self._pixels[index].astype(np.float32) / np.float32(255)

  def take(self, indices):
    self.threads.add(threading.current_thread().name)
    return self._pixels[indices].astype(np.float32) / np.float32(255)


def _ahead_and_inline(source, batch_size, seed, read_threads=None):
  """Dequantized training iterators over `source`: reading ahead (in
  read_threads threads, by default the source's), and not at all."""
  d = Dataset("disk", source.event_shape, source, source, None, None,
              "image8bit", 256, None)
  return [data.train_iterator(d, batch_size, seed, transform="dequantize",
                              read_threads=threads)
          for threads in (read_threads, 0)]


def test_read_ahead_yields_the_same_stream_and_resumes_exactly():
  """Sources read from disk make the next batches in threads; the batches,
  random transform included, are those made one by one in the caller's
  thread, across epochs and after jumps (set_state) either way."""
  pixels = np.random.default_rng(0).integers(0, 256, (37, 4, 4, 3),
                                             dtype=np.uint8)
  source = _DiskLikeSource(pixels)
  ahead, inline = _ahead_and_inline(source, batch_size=5, seed=2)
  for _ in range(20):  # 100 examples: almost three epochs
    np.testing.assert_array_equal(next(ahead), next(inline))
  assert any(t.startswith("vae_jax-read-ahead") for t in source.threads)
  state = ahead.get_state()
  assert state["pipeline"] == {"batches": 20}
  want = [next(inline) for _ in range(4)]
  # Into a block being read ahead (22: 21-23 pending), back past the
  # current one, far back, far ahead; then to the saved state.
  for jump in (22, 19, 3, 40):
    ahead.set_state(dict(state, step=jump, pipeline={"batches": jump}))
    inline.set_state(dict(state, step=jump, pipeline={"batches": jump}))
    for _ in range(6):
      np.testing.assert_array_equal(next(ahead), next(inline))
    assert len(ahead._parent._ahead) <= source.read_threads  # pylint: disable=protected-access
  ahead.set_state(state)
  for w in want:
    np.testing.assert_array_equal(next(ahead), w)
  ahead.close()  # waits for the blocks being made, starts no more
  assert not ahead._parent._ahead  # pylint: disable=protected-access


def test_a_read_that_fails_ahead_fails_next_and_can_be_retried():
  pixels = np.random.default_rng(0).integers(0, 256, (20, 2, 2, 1),
                                             dtype=np.uint8)

  class FailsOnce(_DiskLikeSource):
    failed = False

    def take(self, indices):
      if not self.failed and threading.current_thread().name.startswith(
          "vae_jax-read-ahead"):
        FailsOnce.failed = True
        raise OSError("read error")
      return super().take(indices)

  source = FailsOnce(pixels)
  ahead, inline = _ahead_and_inline(source, batch_size=4, seed=0)
  got, want = [], [next(inline) for _ in range(6)]
  failures = 0
  while len(got) < 6:
    try:
      got.append(next(ahead))
    except OSError:
      failures += 1
  assert failures == 1
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  with pytest.raises(data.DataError, match="read_threads must be >= 0"):
    _ahead_and_inline(source, batch_size=4, seed=0, read_threads=-1)


def test_train_iterator_checkpoints_with_grain_orbax_handler(tmp_path):
  import grain  # pylint: disable=g-import-not-at-top
  d = data.get_dataset(_config(dataset="digits"))
  it = data.train_iterator(d, 50, seed=2, transform="dynamic_binarize")
  next(it), next(it)
  grain.checkpoint.CheckpointHandler().save(tmp_path, item=it)
  expected = next(it)
  fresh = data.train_iterator(d, 50, seed=2, transform="dynamic_binarize")
  grain.checkpoint.CheckpointHandler().restore(tmp_path, item=fresh)
  np.testing.assert_array_equal(next(fresh), expected)


def test_processes_read_their_rows_of_the_same_global_batches():
  """In-memory data: process s of 2 reads row s of each global batch the
  one-process run reads, so the process count does not change training."""
  d = _id_dataset(101)
  whole = data.train_iterator(d, 2, seed=0)
  shards = [data.train_iterator(d, 1, seed=0, shard_index=s, shard_count=2)
            for s in range(2)]
  first_epoch = []
  for _ in range(50):
    batch = next(whole)
    np.testing.assert_array_equal(
        np.concatenate([next(it) for it in shards]), batch)
    first_epoch.extend(batch[:, 0].tolist())
  assert len(set(first_epoch)) == 100  # one epoch: no example twice


def test_eval_shards_are_disjoint_cover_the_split_and_stay_in_step():
  d = _id_dataset(101)
  shards = [list(data.eval_batches(d, "train", 8, shard_index=s, shard_count=2))
            for s in range(2)]
  assert len(shards[0]) == len(shards[1]) == 7
  ids = [b.x[b.mask > 0, 0] for s in shards for b in s]
  np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(101))


def test_eval_batches_cover_the_split_in_order_with_a_mask():
  d = data.get_dataset(_config(dataset="digits"))
  batches = list(data.eval_batches(d, "test", 64))
  assert [b.x.shape for b in batches] == [(64, 64)] * 5
  assert [b.mask.sum() for b in batches] == [64, 64, 64, 64, 41]
  real = np.concatenate([b.x[b.mask > 0] for b in batches])
  np.testing.assert_array_equal(real, _take(d.test))
  assert not batches[-1].x[41:].any()


# ---------------------------------------------------------------- transforms


def test_dynamic_binarization_matches_intensities_in_expectation():
  d = data.get_dataset(_config(dataset="digits"))
  x = _take(d.train).astype(np.float64)
  b = np.concatenate([e.x[e.mask > 0] for e in
                      data.eval_batches(d, "train", 500, "dynamic_binarize")])
  assert set(np.unique(b)) == {0.0, 1.0}
  assert not b[x == 0].any() and b[x == 1].all()
  # Σ(b − x) has mean 0 and variance Σ x(1 − x).
  assert abs((b - x).sum()) < 5 * math.sqrt((x * (1 - x)).sum())
  again = np.concatenate([e.x[e.mask > 0] for e in data.eval_batches(
      d, "train", 128, "dynamic_binarize")])
  np.testing.assert_array_equal(b, again)  # fixed seed, any batch size
  other = next(iter(data.eval_batches(d, "train", 500, "dynamic_binarize",
                                      seed=1)))
  assert not np.array_equal(other.x, b[:500])


def test_dynamic_binarization_is_fresh_each_epoch_and_reproducible():
  n, dim = 12, 400
  rows = ((np.arange(n)[:, None] * 37 + np.arange(dim)) % 255).astype(np.uint8)
  source = ArraySource(rows, 255.0)
  d = Dataset("rows", (dim,), source, source, None, None, "image8bit", 256,
              None)
  # Same seed, same shuffle: the untransformed stream names each row.
  plain = data.train_iterator(d, n, seed=3)  # batch = one epoch
  binar = data.train_iterator(d, n, seed=3, transform="dynamic_binarize")
  epochs = [(next(plain), next(binar)) for _ in range(2)]
  first_pixel = rows[:, 0].tolist()  # distinct: (37 i) mod 255
  by_id = []
  for x, b in epochs:
    ids = [first_pixel.index(int(round(v * 255))) for v in x[:, 0]]
    by_id.append(b[np.argsort(ids)])
  assert (by_id[0] != by_id[1]).mean() > 0.2  # fresh draws per epoch
  again = data.train_iterator(d, n, seed=3, transform="dynamic_binarize")
  np.testing.assert_array_equal(next(again), epochs[0][1])


@pytest.mark.parametrize("name, levels", [("digits", 17), ("ids", 256)])
def test_dequantize_stays_in_the_pixel_cell(name, levels):
  if name == "digits":
    d = data.get_dataset(_config(dataset="digits"))
  else:
    pixels = np.tile(np.arange(256, dtype=np.uint8), (40, 1))
    d = Dataset("ids", (256,), ArraySource(pixels, 255.0),
                ArraySource(pixels, 255.0), None, None, "image8bit", 256, None)
  pixel = np.rint(_take(d.train) * (levels - 1))
  x = np.concatenate([e.x[e.mask > 0] for e in
                      data.eval_batches(d, "train", 256, "dequantize")])
  assert x.dtype == np.float32 and 0 <= x.min() and x.max() < 1
  np.testing.assert_array_equal(np.floor(x.astype(np.float64) * levels), pixel)
  # u = x·levels − p is U[0, 1): mean 1/2, standard error sqrt(1/12 / N).
  u = x.astype(np.float64) * levels - pixel
  assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)


@pytest.mark.parametrize("levels", [17, 256])
def test_dequantize_clips_float32_rounding_into_the_cell(levels):

  class Extreme:  # the largest and smallest draws of U[0, 1)
    def __init__(self, value):
      self.value = value

    def random(self, shape):
      return np.full(shape, self.value)

  pixel = np.arange(levels, dtype=np.float64)
  x = (pixel / (levels - 1)).astype(np.float32)
  for u in (np.nextafter(1.0, 0.0), 0.0):
    out = Dequantize(levels)(x, Extreme(u)).astype(np.float64)
    np.testing.assert_array_equal(np.floor(out * levels), pixel)


# ---------------------------------------------------------------- tables


def test_breast_cancer_standardization_round_trip_and_labels():
  d = data.get_dataset(_config(dataset="breast_cancer", test_fraction=0.2))
  ref = sk_datasets.load_breast_cancer()
  assert (d.event_shape, d.kind) == ((30,), "continuous")
  assert len(d.train) + len(d.test) == 569
  train = _take(d.train).astype(np.float64)
  np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(train.std(0), 1, atol=1e-5)
  raw = data.destandardize(np.concatenate([train, _take(d.test)]),
                           d.standardization)
  labels = np.concatenate([d.train_labels, d.test_labels])
  ours = np.concatenate([raw, labels[:, None]], 1)
  malignant = (ref.target == 0)[:, None]  # our label 1
  theirs = np.concatenate([ref.data, malignant], 1)
  np.testing.assert_allclose(np.array(_multiset(ours)),
                             np.array(_multiset(theirs)), rtol=1e-5, atol=1e-6)
  assert labels.sum() == 212  # malignant cases in the Wisconsin data


def test_breast_cancer_benign_only_training():
  d = data.get_dataset(_config(dataset="breast_cancer",
                               train_on_benign_only=True))
  assert not d.train_labels.any() and d.test_labels.sum() > 20
  train = _take(d.train).astype(np.float64)
  np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(train.std(0), 1, atol=1e-5)
  # Identify each training row in scikit-learn's table: all are benign
  # (sklearn target 1), none repeats, and the stored statistics are theirs.
  ref = sk_datasets.load_breast_cancer()
  back = data.destandardize(train, d.standardization)
  scale = ref.data.std(0)
  match = [int(np.argmin(np.abs((ref.data - row) / scale).sum(1)))
           for row in back]
  assert len(set(match)) == len(match) and np.all(ref.target[match] == 1)
  np.testing.assert_allclose(back, ref.data[match], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(d.standardization["mean"], ref.data[match].mean(0))
  np.testing.assert_allclose(d.standardization["std"], ref.data[match].std(0))


def test_tabular_csv_with_header_and_label_column(tmp_path):
  rng = np.random.default_rng(0)
  raw = rng.normal([1.0, -5.0, 100.0], [2.0, 0.1, 30.0], (50, 3))
  label = rng.integers(0, 2, 50)
  path = tmp_path / "t.csv"
  lines = ["a,b,kind,c"] + [f"{r[0]},{r[1]},{'xy'[y]},{r[2]}"
                            for r, y in zip(raw, label)]
  path.write_text("\n".join(lines) + "\n")
  d = data.get_dataset(_config(dataset="tabular", tabular_path=str(path),
                               label_column="kind", test_fraction=0.2))
  assert (d.event_shape, len(d.train), len(d.test)) == ((3,), 40, 10)
  train = _take(d.train).astype(np.float64)
  back = data.destandardize(train, d.standardization)
  np.testing.assert_allclose(np.array(d.standardization["mean"]),
                             back.mean(0), rtol=1e-6)
  ours = np.concatenate([back, d.train_labels[:, None]], 1)
  theirs = np.concatenate([raw, label[:, None]], 1)
  for row in ours:  # every training row is a row of the file, label included
    assert np.isclose(theirs, row, rtol=1e-5, atol=1e-5).all(1).any()
  np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(train.std(0), 1, atol=1e-5)
  # .npy with a label column given by index: the same table.
  npy = tmp_path / "t.npy"
  np.save(npy, np.concatenate([raw[:, :2], label[:, None], raw[:, 2:]], 1))
  e = data.get_dataset(_config(dataset="tabular", tabular_path=str(npy),
                               label_column="2"))
  np.testing.assert_allclose(_take(e.train), _take(d.train), atol=1e-6)
  np.testing.assert_array_equal(e.test_labels, d.test_labels)


@pytest.mark.parametrize("text, message", [
    ("1,2\n3\n", "line 2 has 1 columns"),
    ("1,2\n3,oops\n", "non-numeric"),
    ("1,2\n3,nan\n", "NaN"),
    ("1,2\n", "at least 2 rows"),
])
def test_tabular_bad_files_are_data_errors(tmp_path, text, message):
  path = tmp_path / "bad.csv"
  path.write_text(text)
  with pytest.raises(data.DataError, match=message):
    data.get_dataset(_config(dataset="tabular", tabular_path=str(path)))
  with pytest.raises(data.DataError, match="is not a file"):
    data.get_dataset(_config(dataset="tabular",
                             tabular_path=str(tmp_path / "none.csv")))


# ---------------------------------------------------------------- synthetic


def test_linear_gaussian_statistics_and_determinism():
  cfg = _config(dataset="linear_gaussian", data_seed=7)
  cfg.linear_gaussian = ml_collections.ConfigDict(dict(
      dim=3, mu=[1.0, -2.0, 0.5], sigma=1.5, num_train=20000, num_test=100))
  d = data.get_dataset(cfg)
  assert (d.event_shape, d.kind) == ((3,), "continuous")
  assert d.standardization is None
  x = _take(d.train).astype(np.float64)
  n = len(x)
  assert np.all(np.abs(x.mean(0) - [1.0, -2.0, 0.5]) < 5 * 1.5 / math.sqrt(n))
  var_se = 1.5**2 * math.sqrt(2 / (n - 1))
  assert np.all(np.abs(x.var(0, ddof=1) - 1.5**2) < 5 * var_se)
  np.testing.assert_array_equal(_take(data.get_dataset(cfg).test),
                                _take(d.test))
  cfg.data_seed = 8
  assert not np.array_equal(_take(data.get_dataset(cfg).test), _take(d.test))
