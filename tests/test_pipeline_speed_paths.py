"""The in-memory training stream (numpy permutation per epoch, one gather
per batch): its definition, its statistics, and bit-identical resume of a
training run fed by it.
"""

import json

import jax
import numpy as np
import pytest

from vae_jax import config_base
from vae_jax import data
from vae_jax.data import transforms
from vae_jax.data.base import ArraySource, Dataset
from vae_jax.data.pipeline import _SHUFFLE, _TRAIN_TRANSFORM, derive_seed
from vae_jax.training import step as train_lib


def _id_dataset(n, dim=3):
  rows = np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1)
  return Dataset("ids", (dim,), ArraySource(rows), ArraySource(rows[:3]),
                 None, None, "continuous", None, None)


def _intensity_dataset(n=30, dim=16, seed=0):
  """uint8 intensities scaled to [0, 1], like the IDX MNIST source."""
  pixels = np.random.default_rng(seed).integers(0, 256, (n, dim), np.uint8)
  return Dataset("intensities", (dim,), ArraySource(pixels, 255.0),
                 ArraySource(pixels[:3], 255.0), None, None, "image8bit",
                 256, None), pixels


@pytest.mark.parametrize("n,batch", [(10, 4), (10, 10), (7, 16)])
def test_stream_is_epochs_of_independent_permutations(n, batch):
  """Independent construction: concatenated permutations from
  derive_seed(seed, shard, _SHUFFLE, epoch), cut into batches; batch 16 over
  7 examples spans three epochs."""
  seed = 3
  it = data.train_iterator(_id_dataset(n), batch, seed)
  got = np.concatenate([next(it)[:, 0] for _ in range(6)]).astype(int)
  epochs = -(-6 * batch // n)
  want = np.concatenate([
      np.random.default_rng(derive_seed(seed, 0, _SHUFFLE, e)).permutation(n)
      for e in range(epochs)])[:6 * batch]
  np.testing.assert_array_equal(got, want)
  for e in range(len(got) // n):  # every full epoch is a permutation
    np.testing.assert_array_equal(np.sort(got[e * n:(e + 1) * n]),
                                  np.arange(n))
  assert not np.array_equal(got[:n], got[n:2 * n])


def test_binarized_batches_are_bernoulli_of_the_intensities():
  """Monte Carlo over 400 batches: each pixel's mean is its intensity within
  4 standard errors, and the draw is the documented one for batch b."""
  dataset, pixels = _intensity_dataset()
  it = data.train_iterator(dataset, 30, seed=1, transform="dynamic_binarize")
  batches = [next(it) for _ in range(400)]
  order = [np.random.default_rng(derive_seed(1, 0, _SHUFFLE, e)).permutation(
      30) for e in range(400)]
  p = pixels.astype(np.float32) / np.float32(255.0)
  total = np.zeros_like(p)
  for b, (x, perm) in enumerate(zip(batches, order)):
    assert set(np.unique(x)) <= {0.0, 1.0}
    total[perm] += x
  mean = total / 400
  se = np.sqrt(p * (1 - p) / 400) + 1e-9
  assert np.all(np.abs(mean - p) <= 4 * se + 1e-6)
  # Batches 8-15, built independently: they are block 1 (blocks of K = 8
  # batches), one draw from the generator of (seed, shard, transform, 1):
  # one byte per pixel of the whole block from its raw 64-bit words
  # (little-endian), bytes equal to 255 redrawn in order, then pixel k is 1
  # iff its byte is below k.
  K = data.pipeline.block_batches(30, (16,))
  assert K == 8
  bits = np.random.default_rng(derive_seed(1, 0, _TRAIN_TRANSFORM, 1))
  pool = []
  def next_byte():
    if not pool:
      pool.extend(np.array([bits.bit_generator.random_raw()], "<u8")
                  .view(np.uint8).tolist())
    return pool.pop(0)
  u = [next_byte() for _ in range(K * 30 * 16)]
  while any(b == 255 for b in u):
    redo = [i for i, b in enumerate(u) if b == 255]
    pool.clear()  # each round of redraws starts on a fresh word
    for i in redo:
      u[i] = next_byte()
  u = np.array(u).reshape(K, 30, 16)
  for j in range(K):  # batch size 30 = n: batch b is epoch b's permutation
    want = u[j] < pixels[order[K + j]]
    np.testing.assert_array_equal(batches[K + j], want.astype(np.float32))


def _tiny_config():
  c = config_base.base_config()
  c.hidden, c.latent_dim = (8,), 2
  return c


def test_training_resumed_from_saved_state_is_bit_identical():
  """Steps fed by the iterator: 9 steps in one go against 4 steps, a JSON
  round trip of the iterator state and a copy of the training state, a
  fresh iterator and 5 more steps."""
  dataset, _ = _intensity_dataset(n=23)
  config = _tiny_config()
  model = train_lib.build_model(config, dataset.event_shape)
  optimizer = train_lib.make_optimizer(config)
  step = jax.jit(train_lib.TrainStep(model, optimizer, config))

  def run(state, it, n):
    for _ in range(n):
      state, _ = step(state, next(it))
    return state

  new_it = lambda: data.train_iterator(dataset, 10, 4, "dynamic_binarize")
  straight = run(train_lib.init_state(model, optimizer, 0), new_it(), 9)
  it = new_it()
  half = run(train_lib.init_state(model, optimizer, 0), it, 4)
  saved_iterator = json.loads(json.dumps(it.get_state()))
  saved_state = jax.device_get(half)
  resumed_it = new_it()
  resumed_it.set_state(saved_iterator)
  resumed = run(jax.tree.map(np.asarray, saved_state), resumed_it, 5)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A resume from the wrong position would differ: the check can fail.
  wrong_it = new_it()
  wrong_it.set_state(dict(saved_iterator,
                          pipeline={"batches": 3}))
  wrong = run(jax.tree.map(np.asarray, saved_state), wrong_it, 5)
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(straight["params"]),
                 jax.tree.leaves(wrong["params"])))


class _ScriptedBytes:
  """A stand-in Generator whose raw 64-bit words carry the given bytes in
  order (little-endian), then zeros."""

  def __init__(self, stream):
    self._stream = list(stream)
    self.bit_generator = self

  def random_raw(self, size):
    take = self._stream[:8 * size]
    del self._stream[:8 * size]
    take += [0] * (8 * size - len(take))
    return np.frombuffer(bytes(take), "<u8").copy()


def test_uniform_below_redraws_out_of_range_bytes_in_order():
  """m = 255: the positions holding 255 take the next word's bytes in
  order, again until none is 255 (position 0 draws 255 twice); m = 16: no
  redraws, bytes mod 16; m = 3: bytes >= 255 redrawn, then mod 3."""
  script = [255, 1, 255, 2, 254, 0, 0, 0] + [255, 7, 0, 0, 0, 0, 0, 0] + [9]
  got = transforms.uniform_below(_ScriptedBytes(script), 255, 5)
  np.testing.assert_array_equal(got, [9, 1, 7, 2, 254])
  got = transforms.uniform_below(_ScriptedBytes([255, 16, 33, 7]), 16, 4)
  np.testing.assert_array_equal(got, [15, 0, 1, 7])
  got = transforms.uniform_below(_ScriptedBytes([255, 254] + [0] * 6 + [5]),
                                 3, 2)
  np.testing.assert_array_equal(got, [2, 254 % 3])


@pytest.mark.parametrize("levels", [256, 17, 2])
def test_binarization_is_exactly_bernoulli_of_the_level(levels):
  """Exhaustive: row k holds level k; fed every byte value below levels − 1
  once, it has exactly k ones, so P(1) = k / (levels − 1) with no rounding.
  (levels 17: bytes 0..255 cover each value mod 16 sixteen times.)"""
  top = levels - 1
  k = np.arange(levels, dtype=np.float32)
  width = 255 if top == 255 else 256
  x = np.repeat((k / np.float32(top))[:, None], width, axis=1)
  rng = _ScriptedBytes(np.tile(np.arange(width), levels).tolist())
  out = transforms.DynamicBinarize(levels)(x, rng)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out.sum(axis=1), k * (width // top))


@pytest.mark.parametrize("levels", [256, 17, 2])
def test_binarizing_from_the_integers_is_the_float_path_bit_for_bit(levels):
  """The training pipeline's fast path for integer images (the stored
  levels k, no float32 round trip) draws the same bytes and gives the same
  batch as binarizing k / (levels − 1); and a source holding the same
  images as float32, which takes the float path, yields the same stream."""
  top = levels - 1
  k = np.random.default_rng(levels).integers(0, levels, (40, 50), np.uint8)
  binarize = transforms.DynamicBinarize(levels)
  fast = binarize.from_integers(k, np.random.default_rng(7))
  slow = binarize(k / np.float32(top), np.random.default_rng(7))
  np.testing.assert_array_equal(fast, slow)
  assert fast.dtype == np.float32 and fast.ctypes.data % 64 == 0
  assert 0 < fast.mean() < 1

  as_ints = ArraySource(k, float(top))
  as_floats = ArraySource(k / np.float32(top))
  assert as_ints.integer_levels == levels and as_floats.integer_levels is None
  streams = []
  for source in (as_ints, as_floats):
    kind, lv = ("binary", None) if levels == 2 else ("image8bit", levels)
    dataset = Dataset("k", (50,), source, source, None, None, kind, lv, None)
    it = data.train_iterator(dataset, 16, seed=5,
                             transform="dynamic_binarize")
    streams.append(np.stack([next(it) for _ in range(6)]))
  np.testing.assert_array_equal(*streams)


@pytest.mark.parametrize("transform", ["none", "dynamic_binarize"])
def test_batches_are_64_byte_aligned(transform):
  """So that on CPU the device array aliases the batch (no copy)."""
  dataset, _ = _intensity_dataset()
  it = data.train_iterator(dataset, 7, seed=0, transform=transform)
  for _ in range(5):
    batch = next(it)
    assert batch.ctypes.data % 64 == 0 and batch.dtype == np.float32


def test_blocks_are_sized_by_bytes_and_recorded_in_the_state(monkeypatch,
                                                             caplog):
  """8 batches a block for MNIST-size batches, 1 for 64 × 64 × 3 images at
  batch 128; any block size resumes mid-block exactly; a state saved with
  another block size is refused, and one saved before blocks existed is
  taken (silently for blocks of 1, the same stream; with a warning for
  larger blocks: same position, another transform stream)."""
  block_batches = data.pipeline.block_batches
  assert block_batches(100, (784,)) == 8
  assert block_batches(128, (64, 64, 3)) == 1
  dataset, _ = _intensity_dataset(n=23)
  for budget, want in ((8 * 2**20, 8), (3 * 10 * 16 * 4, 3),
                       (10 * 16 * 4, 1)):
    monkeypatch.setattr(data.pipeline, "BLOCK_BYTES", budget)
    it = data.train_iterator(dataset, 10, 4, "dynamic_binarize")
    assert it.get_state()["settings"]["block_batches"] == want
    for _ in range(4):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(9)]
    fresh = data.train_iterator(dataset, 10, 4, "dynamic_binarize")
    fresh.set_state(state)
    for x in expected:
      np.testing.assert_array_equal(next(fresh), x)
  with pytest.raises(data.DataError, match="block_batches: 3 -> 1"):
    state["settings"]["block_batches"] = 3
    data.train_iterator(dataset, 10, 4, "dynamic_binarize").set_state(state)
  del state["settings"]["block_batches"]
  with caplog.at_level("WARNING"):  # blocks of 1: the old stream, silently
    data.train_iterator(dataset, 10, 4, "dynamic_binarize").set_state(state)
  assert "predates" not in caplog.text
  monkeypatch.setattr(data.pipeline, "BLOCK_BYTES", 8 * 2**20)
  old = data.train_iterator(dataset, 10, 4, "dynamic_binarize")
  with caplog.at_level("WARNING"):
    old.set_state(state)
  assert old.step == 4 and "predates batches made in blocks of 8" in (
      caplog.text)
