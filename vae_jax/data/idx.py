"""MNIST-style IDX files (optionally gzip-compressed), read and validated.

IDX layout (big-endian): two zero bytes, a type code, the number of
dimensions n, then n uint32 sizes, then the values in C order. Image files
are type 0x08 (uint8) with n = 3 ([count, rows, cols]), label files type 0x08
with n = 1. A corrupt or truncated file raises `DataError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from vae_jax.data import preprocess
from vae_jax.data.base import DataError, Dataset, image_dataset

# IDX type code -> big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# Names the MNIST files go by, preferred first. The "partial" names are the
# 22,699-image training prefix in ../shared/data/mnist.
_IMAGE_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte",
              "train-images-partial-idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file, gzip-compressed or not (detected from its bytes).

  Args:
    path: the file.

  Returns:
    The array with the header's shape, in native byte order.

  Raises:
    DataError: unreadable, not IDX, or header and payload size disagree.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
      raw = gzip.decompress(raw)
  except FileNotFoundError:
    raise DataError(f"IDX file not found: {path}") from None
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"cannot read IDX file {path}: {e} "
                    "(corrupt or truncated download?)") from None
  return parse_idx(raw, path)


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
  """Parses the bytes of an uncompressed IDX file (see `read_idx`)."""
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise DataError(f"{name} is not an IDX file (bad magic number "
                    f"{raw[:4].hex() or 'empty'})")
  dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
  header_size = 4 + 4 * ndim
  if ndim == 0 or len(raw) < header_size:
    raise DataError(f"{name}: truncated IDX header")
  shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, offset=4))
  expected = int(np.prod(shape)) * dtype.itemsize
  actual = len(raw) - header_size
  if actual != expected:
    problem = "truncated" if actual < expected else "trailing data"
    raise DataError(f"{name}: header promises shape {shape} ({expected} bytes) "
                    f"but the file holds {actual} bytes ({problem})")
  return np.frombuffer(raw, dtype, offset=header_size).reshape(shape).astype(
      dtype.newbyteorder("="))


def find_idx_files(idx_dir: str, split: str) -> tuple[str, str | None]:
  """Locates the image file and its label file for `split` in `idx_dir`.

  Args:
    idx_dir: folder with MNIST IDX files.
    split: "train" or "test".

  Returns:
    (images_path, labels_path or None when there is no label file).
  """
  for stem in _IMAGE_NAMES[split]:
    for suffix in ("", ".gz"):
      images = os.path.join(idx_dir, stem + suffix)
      if os.path.isfile(images):
        label_stem = stem.replace("images", "labels").replace("idx3", "idx1")
        labels = os.path.join(idx_dir, label_stem + suffix)
        return images, labels if os.path.isfile(labels) else None
  looked_for = ", ".join(s + "[.gz]" for s in _IMAGE_NAMES[split])
  raise DataError(f"no MNIST {split} images in {idx_dir!r} "
                  f"(looked for {looked_for}); set --config.idx_dir")


def read_image_split(idx_dir: str,
                     split: str) -> tuple[np.ndarray, np.ndarray | None]:
  """Images [N, rows, cols] uint8 and labels [N] int64 (or None) of a split."""
  images_path, labels_path = find_idx_files(idx_dir, split)
  images = read_idx(images_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DataError(f"{images_path}: expected uint8 images [N, rows, cols], "
                    f"got {images.dtype} {images.shape}")
  labels = None
  if labels_path is not None:
    labels = read_idx(labels_path)
    if labels.shape != (len(images),):
      raise DataError(f"{labels_path}: labels of shape {labels.shape} for "
                      f"{len(images)} images")
    labels = labels.astype(np.int64)
  return images, labels


def load_mnist_idx(config) -> Dataset:
  """MNIST from IDX files in `config.idx_dir`: [784] per image, pixel / 255.

  Config fields: idx_dir, holdout_class (a digit removed from the training
  split only; −1 = none).
  """
  idx_dir = preprocess.config_value(config, "idx_dir")
  if not idx_dir:
    raise DataError("dataset 'mnist_idx' needs --config.idx_dir=FOLDER of "
                    "MNIST IDX files")
  if not os.path.isdir(idx_dir):
    raise DataError(f"idx_dir {idx_dir!r} is not a folder")
  train_x, train_y = read_image_split(idx_dir, "train")
  test_x, test_y = read_image_split(idx_dir, "test")
  if train_x.shape[1:] != test_x.shape[1:]:
    raise DataError(f"{idx_dir}: train images are {train_x.shape[1:]} but test "
                    f"images are {test_x.shape[1:]}")
  train_x, train_y = preprocess.drop_class(
      train_x, train_y,
      int(preprocess.config_value(config, "holdout_class", -1)), "mnist_idx")
  dim = int(np.prod(train_x.shape[1:]))
  return image_dataset("mnist_idx", train_x, test_x, train_y, test_y,
                       levels=256, event_shape=(dim,))


def write_idx(path: str | os.PathLike, array: np.ndarray,
              compress: bool | None = None) -> None:
  """Writes `array` as an IDX file, gzip-compressed if asked or named *.gz.

  Useful for tests and for exporting subsets in the format other tools read.
  """
  array = np.asarray(array)
  codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
  code = codes.get(array.dtype)
  if code is None:
    raise DataError(f"IDX cannot store dtype {array.dtype}")
  header = bytes([0, 0, code, array.ndim]) + np.asarray(
      array.shape, ">u4").tobytes()
  payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
  if compress is None:
    compress = os.fspath(path).endswith(".gz")
  with open(path, "wb") as f:
    f.write(gzip.compress(payload) if compress else payload)
