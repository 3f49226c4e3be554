"""Training-time random transforms of one example: binarization, dequantization.

Each transform is a function (x, rng) -> x' that grain's `random_map` calls
with a numpy Generator seeded from (pipeline seed, element index), so every
draw is reproducible and a restored iterator redraws exactly what an
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vae_jax.data.base import DataError, Dataset

TRANSFORMS = ("none", "dynamic_binarize", "dequantize")

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class DynamicBinarize:
  """x' ~ Bernoulli(x) per pixel (Salakhutdinov & Murray 2008 style).

  x: float32 [...] intensities in [0, 1] -> float32 [...] in {0, 1}, with
  E[x'] = x. Drawn afresh each time an example is read, i.e. every epoch.
  """

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


class Dequantize:
  """Uniform dequantization: x' = (p + u) / levels, u ~ U[0, 1).

  The source holds x = p / (levels − 1) for integer intensities p; the output
  lies in the cell [p/levels, (p+1)/levels)^D of [0, 1)^D, whose volume is
  levels^−D. A density q on [0, 1)^D defines the discrete model
  P(p) = ∫_cell q, and by Jensen
    −log P(p) ≤ E_u[−log q(x')] + D ln(levels) nats
  (D ln 256 for 8-bit images): add D ln(levels) to a continuous NLL before
  calling it bits/dim.

  Args:
    levels: number of intensity levels (256 for 8-bit, 17 for digits).
  """

  def __init__(self, levels: int):
    self.levels = int(levels)
    k = np.arange(self.levels, dtype=np.float64)
    # float32 rounding of (p + u)/levels can land on the next cell's edge
    # (u near 1) or, when levels is not a power of two, just below p/levels;
    # clipping to the float32 values inside the cell keeps
    # floor(x'·levels) = p.
    lo, hi = k / self.levels, (k + 1) / self.levels
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    self._lo = np.where(lo32 < lo, np.nextafter(lo32, np.float32(2)), lo32)
    self._hi = np.where(hi32 >= hi, np.nextafter(hi32, np.float32(-1)), hi32)

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    levels = self.levels
    # In place and in small integer types: this runs on every training
    # pixel (1.6 M per CelebA batch), on the host that feeds the device.
    pixel = np.multiply(x, np.float32(levels - 1))
    np.rint(pixel, out=pixel)
    pixel = pixel.astype(np.uint8 if levels <= 256 else np.intp)
    u = rng.random(x.shape)
    u += pixel
    power_of_two = levels & (levels - 1) == 0 and levels <= 2**24
    if power_of_two:
      u *= 1.0 / levels  # the same value as u / levels: 1/levels is exact
    else:
      u /= levels
    x_new = u.astype(np.float32)
    if power_of_two:
      # p / levels is a float32 and rounding is monotone, so x' never falls
      # below its cell: only the upper edge needs clipping.
      return np.minimum(x_new, self._hi[pixel], out=x_new)
    return np.clip(x_new, self._lo[pixel], self._hi[pixel], out=x_new)


def make_transform(dataset: Dataset, transform: str) -> Transform | None:
  """The random transform named `transform` for `dataset`, or None for "none".

  Raises:
    DataError: unknown name, or a transform that does not fit the data
      (binarizing continuous data, dequantizing data without levels).
  """
  if transform not in TRANSFORMS:
    raise DataError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
  if transform == "none":
    return None
  if transform == "dynamic_binarize":
    if dataset.kind == "continuous":
      raise DataError(f"transform 'dynamic_binarize' needs intensities in "
                      f"[0, 1]; dataset {dataset.name!r} is continuous")
    return DynamicBinarize()
  if dataset.kind != "image8bit":
    raise DataError(f"transform 'dequantize' needs integer image data; "
                    f"dataset {dataset.name!r} is {dataset.kind}")
  return Dequantize(dataset.levels)
