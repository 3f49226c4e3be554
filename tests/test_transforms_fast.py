"""The in-place `Dequantize` draws exactly what its plain formula draws.

Reference: x' = clip(float32((p + u) / levels), cell) with p = rint(x·(levels
− 1)) and u = rng.random(x.shape), in float64, as first written; the same
seed must give bit-identical batches (resumed runs and published streams
depend on it), including at the cell edges.
"""

import numpy as np
import pytest

from vae_jax.data.transforms import Dequantize


def reference(levels, x, u):
  k = np.arange(levels, dtype=np.float64)
  lo, hi = k / levels, (k + 1) / levels
  lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
  lo32 = np.where(lo32 < lo, np.nextafter(lo32, np.float32(2)), lo32)
  hi32 = np.where(hi32 >= hi, np.nextafter(hi32, np.float32(-1)), hi32)
  pixel = np.rint(x.astype(np.float64) * (levels - 1)).astype(np.intp)
  out = ((pixel + u) / levels).astype(np.float32)
  return np.clip(out, lo32[pixel], hi32[pixel])


class Fixed:
  """An rng whose draws are given: u in [0, 1)."""

  def __init__(self, u):
    self.u = u

  def random(self, shape):
    return np.broadcast_to(self.u, shape).copy()


@pytest.mark.parametrize("levels", [2, 17, 256, 1000])
def test_dequantize_matches_the_plain_formula_bit_for_bit(levels):
  rng = np.random.default_rng(levels)
  x = (rng.integers(0, levels, (64, 300)) / (levels - 1)).astype(np.float32)
  got = Dequantize(levels)(x, np.random.default_rng(7))
  want = reference(levels, x, np.random.default_rng(7).random(x.shape))
  np.testing.assert_array_equal(got, want)
  # Edges: u = 0 and the largest double below 1.
  for u in (0.0, np.nextafter(1.0, 0.0)):
    np.testing.assert_array_equal(Dequantize(levels)(x, Fixed(u)),
                                  reference(levels, x, np.full(x.shape, u)))
  assert got.dtype == np.float32
  np.testing.assert_array_equal(np.floor(got.astype(np.float64) * levels),
                                np.rint(x.astype(np.float64) * (levels - 1)))
