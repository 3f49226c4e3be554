"""PNG grids of images (inputs, reconstructions, samples)."""

import math

import numpy as np
from PIL import Image


def image_shape_for(event_shape):
  """[H, W, C] for displayable data, or None (tabular, synthetic).

  Flattened square images (64 = 8×8, 784 = 28×28) are shown as grayscale.
  """
  if len(event_shape) == 3:
    return tuple(event_shape)
  if len(event_shape) == 1:
    side = math.isqrt(event_shape[0])
    if side * side == event_shape[0] and side >= 4:
      return (side, side, 1)
  return None


def grid(images, image_shape, num_cols=None, pad=1):
  """Tiles images into one uint8 array.

  Args:
    images: [N, *event] with values in [0, 1] (probabilities or means,
      never logits); clipped.
    image_shape: (H, W, C).
    num_cols: images per row; default ⌈√N⌉.

  Returns:
    uint8 [rows·(H+pad)+pad, cols·(W+pad)+pad, C].
  """
  h, w, c = image_shape
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  images = images.reshape((-1, h, w, c))
  n = images.shape[0]
  cols = num_cols or math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c),
                   np.float32)
  for i in range(n):
    r, k = divmod(i, cols)
    top, left = pad + r * (h + pad), pad + k * (w + pad)
    canvas[top:top + h, left:left + w] = images[i]
  return (canvas * 255 + 0.5).astype(np.uint8)


def save_png(path, array, scale=None):
  """Writes a uint8 [H, W, C] array; small images are upscaled (nearest)."""
  img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  if scale is None:
    scale = max(1, 512 // max(array.shape[:2]))
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  img.save(path)


def save_pairs(path, inputs, outputs, image_shape):
  """Inputs on odd rows, their reconstructions right below them."""
  n = inputs.shape[0]
  cols = min(n, 8)
  rows = []
  for start in range(0, n, cols):
    rows.append(np.asarray(inputs[start:start + cols]))
    rows.append(np.asarray(outputs[start:start + cols]))
  save_png(path, grid(np.concatenate(rows), image_shape, num_cols=cols))
