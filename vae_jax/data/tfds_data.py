"""TFDS datasets read with `as_data_source` (array_record), without TensorFlow.

Reading never touches the network: a dataset that is not prepared in
`data_dir` raises `DataError` at once with the command that prepares it
(`python -m vae_jax.data.prepare`, on a machine with network access).

Small datasets (mnist, binarized_mnist, cifar10: ≤ 200 MB of uint8) are
decoded once into memory, which makes every later epoch a memory copy and
gives their labels for free. CelebA stays on disk. Its fast path is
`celeb_a64` (vae_jax/data/celeb_a64.py): cropped and resized once at prepare
time, stored as raw uint8, read a whole batch per call. Dataset "celeb_a"
uses it whenever it is prepared and crop_size/image_size are its 148/64;
otherwise it falls back to TFDS `celeb_a`, decoded, centre-cropped and
resized per example as it is read (≈ 0.8 ms of host CPU per image).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

from absl import logging

from vae_jax.data import preprocess
from vae_jax.data.base import DataError, Dataset, image_dataset
from vae_jax.data.preprocess import config_value


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How one TFDS dataset becomes a `Dataset`.

  Attributes:
    tfds_name: the TFDS registry name.
    levels: intensity levels (256), or None for binary pixels.
    flatten: return [H·W·C] instead of [H, W, C] (the MLP benchmarks).
    in_memory: decode the whole split once at load time.
    has_labels: the examples have an int "label" feature.
  """

  tfds_name: str
  levels: int | None
  flatten: bool
  in_memory: bool
  has_labels: bool


SPECS = {
    "mnist": TfdsSpec("mnist", 256, flatten=True, in_memory=True,
                      has_labels=True),
    "binarized_mnist": TfdsSpec("binarized_mnist", None, flatten=True,
                                in_memory=True, has_labels=False),
    "cifar10": TfdsSpec("cifar10", 256, flatten=False, in_memory=True,
                        has_labels=True),
    "celeb_a": TfdsSpec("celeb_a", 256, flatten=False, in_memory=False,
                        has_labels=False),
    "celeb_a64": TfdsSpec("celeb_a64", 256, flatten=False, in_memory=False,
                          has_labels=False),
}
# What celeb_a64 holds (vae_jax.data.celeb_a64.CROP_SIZE, IMAGE_SIZE; kept
# here so that reading does not import the builder unless it is needed).
CELEB_A64_CROP, CELEB_A64_SIZE = 148, 64

# The five files TFDS's celeb_a builder downloads from Google Drive, whose
# daily quota often refuses them; placed in --manual_dir they are used
# instead (TFDS matches them by these names and checks their checksums).
CELEB_A_MANUAL_FILES = ("img_align_celeba.zip", "list_eval_partition.txt",
                        "list_attr_celeba.txt",
                        "list_landmarks_align_celeba.txt",
                        "identity_CelebA.txt")


def default_data_dir() -> str:
  """TFDS's default data dir: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR",
                                           "~/tensorflow_datasets"))


def prepare_hint(name: str, data_dir: str | None) -> str:
  """The one-line instruction that prepares dataset `name` in `data_dir`."""
  hint = (f"run `python -m vae_jax.data.prepare --dataset={name} "
          f"--data_dir={data_dir or default_data_dir()}` on a machine with "
          "network access (and TensorFlow)")
  if name == "celeb_a64":
    hint = (f"run `python -m vae_jax.data.prepare --dataset=celeb_a64 "
            f"--data_dir={data_dir or default_data_dir()} "
            "--manual_dir=FOLDER` (FOLDER holding img_align_celeba.zip and "
            "list_eval_partition.txt from "
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; needs "
            "`pip install -e '.[prepare]'`)")
  if name == "celeb_a":
    hint += (" (CelebA: if the Google Drive download fails, download "
             f"{', '.join(CELEB_A_MANUAL_FILES)} from "
             "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into a folder "
             "and add --manual_dir=FOLDER)")
  return hint


def open_splits(name: str, splits: tuple[str, ...],
                data_dir: str | None) -> dict:
  """Opens TFDS array_record sources of `splits`, never downloading.

  Args:
    name: one of SPECS.
    splits: TFDS split names, e.g. ("train", "test").
    data_dir: TFDS data dir, None for the TFDS default.

  Returns:
    {split: random-access source of feature dicts (numpy values)}.

  Raises:
    DataError: the dataset is not prepared there, or not as array_record.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if data_dir:
    data_dir = os.path.expanduser(data_dir)  # a no-op for gs:// paths
  where = data_dir or default_data_dir()
  if name == "celeb_a64":
    # Defining the builder class registers it with TFDS.
    from vae_jax.data import celeb_a64  # pylint: disable=g-import-not-at-top,unused-import
  try:
    # try_gcs=False (the default, spelled out): never look for it online.
    builder = tfds.builder(SPECS[name].tfds_name, data_dir=data_dir,
                           try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"cannot open TFDS dataset {name!r} in {where}: "
                    f"{_first_line(e)}; "
                    f"{prepare_hint(name, data_dir)}") from None
  try:
    # as_data_source only reads local files (tfds.data_source with
    # download=False does the same): no retries against an unreachable host.
    # It is tried before is_prepared(), which tfds.testing.mock_data does
    # not patch; is_prepared() then only chooses the error message.
    return {s: builder.as_data_source(split=s) for s in splits}
  except Exception as e:  # pylint: disable=broad-except
    if not builder.is_prepared():
      raise DataError(f"dataset {name!r} is not prepared in {where}: "
                      f"{prepare_hint(name, data_dir)}") from None
    raise DataError(f"dataset {name!r} in {builder.data_dir} cannot be read "
                    f"as array_record ({_first_line(e)}): delete that folder "
                    "or choose a new data_dir, then "
                    f"{prepare_hint(name, data_dir)}") from None


def load_tfds(config) -> Dataset:
  """A TFDS dataset (config.dataset in SPECS) as a `Dataset`.

  Config fields: data_dir; holdout_class (in-memory labelled datasets);
  crop_size and image_size (celeb_a).
  """
  name = config_value(config, "dataset")
  spec = SPECS[name]
  if name in ("celeb_a", "celeb_a64"):
    return _celeb_a(config)
  sources = open_splits(name, ("train", "test"),
                        config_value(config, "data_dir"))
  train_x, train_y = decode_all(sources["train"], spec.has_labels)
  test_x, test_y = decode_all(sources["test"], spec.has_labels)
  if spec.levels is None and (train_x.max(initial=0) > 1
                              or test_x.max(initial=0) > 1):
    raise DataError(f"dataset {name!r}: pixels are not binary (max "
                    f"{max(train_x.max(), test_x.max())}); re-prepare it")
  train_x, train_y = preprocess.drop_class(
      train_x, train_y, int(config_value(config, "holdout_class", -1)), name)
  shape = train_x.shape[1:]
  event_shape = (int(np.prod(shape)),) if spec.flatten else shape
  return image_dataset(name, train_x, test_x, train_y, test_y,
                       levels=spec.levels, event_shape=event_shape)


def decode_all(source, with_labels: bool, num_threads: int = 8):
  """Decodes a whole TFDS split into memory.

  Args:
    source: random-access source of {"image": uint8 [H, W, C], "label": int}.
    with_labels: also collect the "label" feature.
    num_threads: decoding threads (PNG decoding releases the GIL).

  Returns:
    (images uint8 [N, H, W, C], labels int64 [N] or None).
  """
  n = len(source)
  if n == 0:
    raise DataError("a TFDS split is empty; re-prepare the dataset")
  chunks = [range(i, min(i + 1024, n)) for i in range(0, n, 1024)]
  read_chunk = lambda idx: [source[i] for i in idx]
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    examples = [ex for chunk in pool.map(read_chunk, chunks) for ex in chunk]
  images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
  labels = (np.array([int(ex["label"]) for ex in examples], np.int64)
            if with_labels else None)
  return images, labels


def _celeb_a(config) -> Dataset:
  """CelebA from celeb_a64 when it fits the config, else from TFDS celeb_a."""
  name = config_value(config, "dataset")
  data_dir = config_value(config, "data_dir")
  crop = int(config_value(config, "crop_size", CELEB_A64_CROP))
  size = int(config_value(config, "image_size", CELEB_A64_SIZE))
  if int(config_value(config, "holdout_class", -1)) >= 0:
    raise DataError("holdout_class needs labels, and celeb_a has none")
  fits = (crop, size) == (CELEB_A64_CROP, CELEB_A64_SIZE)
  if name == "celeb_a64" and not fits:
    raise DataError(f"celeb_a64 holds centre crops {CELEB_A64_CROP} resized "
                    f"to {CELEB_A64_SIZE}; for crop_size={crop}, "
                    f"image_size={size} use dataset='celeb_a'")
  if name == "celeb_a64" or (fits and is_prepared("celeb_a64", data_dir)):
    sources = open_splits("celeb_a64", ("train", "test"), data_dir)
    logging.info("%s: reading the prepared 64×64 celeb_a64 (fast path)", name)
    return _image8bit(name, ArrayImageSource(sources["train"]),
                      ArrayImageSource(sources["test"]))
  try:
    sources = open_splits("celeb_a", ("train", "test"), data_dir)
  except DataError as e:
    if not fits:
      raise
    # Name the fast path too: it is what a new user should prepare.
    raise DataError(f"{e}; or, faster to train on, "
                    f"{prepare_hint('celeb_a64', data_dir)}") from None
  logging.info("%s: decoding, cropping (%d) and resizing (%d) TFDS celeb_a "
               "per read; prepare celeb_a64 for the fast path", name, crop,
               size)
  return _image8bit(name, CropResizeSource(sources["train"], crop, size),
                    CropResizeSource(sources["test"], crop, size))


def is_prepared(name: str, data_dir: str | None) -> bool:
  """Whether TFDS dataset `name` is prepared in `data_dir` (local metadata
  only; False under tfds.testing.mock_data, which does not patch it)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if name == "celeb_a64":
    from vae_jax.data import celeb_a64  # pylint: disable=g-import-not-at-top,unused-import
  try:
    return tfds.builder(SPECS[name].tfds_name, data_dir=(
        os.path.expanduser(data_dir) if data_dir else None),
                        try_gcs=False).is_prepared()
  except Exception:  # pylint: disable=broad-except
    return False


def _image8bit(name, train, test) -> Dataset:
  return Dataset(name=name, event_shape=train.event_shape, train=train,
                 test=test, train_labels=None, test_labels=None,
                 kind="image8bit", levels=256, standardization=None)


class ArrayImageSource:
  """uint8 images stored raw in a TFDS source, scaled by 1/255 on read.

  `take` fetches a whole batch in one `__getitems__` call (array_record reads
  the records in parallel), so the pipeline's batched path applies: one
  gather and one vectorized transform per batch.

  Args:
    source: random-access TFDS source of {"image": uint8 [H, W, C]}.
  """

  # Per-example reads (evaluation) are record lookups: a few threads hide
  # their latency. Training batches go through `take`, the next 4 made
  # ahead in as many threads (`pipeline.train_iterator`).
  read_threads = 4

  def __init__(self, source):
    if len(source) == 0:
      raise DataError("a TFDS split is empty; re-prepare the dataset")
    self._source = source
    self.event_shape = tuple(np.asarray(source[0]["image"]).shape)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    """float32 [H, W, C] in [0, 1]."""
    return np.asarray(self._source[int(index)]["image"],
                      np.float32) / np.float32(255)

  def take(self, indices: np.ndarray) -> np.ndarray:
    """Examples at `indices` [B]: float32 [B, H, W, C] in [0, 1]."""
    records = self._source.__getitems__([int(i) for i in indices])
    pixels = np.stack([r["image"] for r in records])
    return pixels.astype(np.float32) / np.float32(255)


class CropResizeSource:
  """TFDS images, centre-cropped to crop_size² and resized to image_size².

  Each read decodes one JPEG and resizes it with PIL's antialiasing bilinear
  filter; the result is rounded back to uint8, so the data stay 8-bit
  integers (as dequantization and bits/dim assume), then scaled by 1/255.

  Args:
    source: random-access source of {"image": uint8 [H, W, C]}.
    crop_size: side of the centre square, ≤ min(H, W).
    image_size: output side.
  """

  # JPEG decoding and resizing release the GIL: many threads pay off.
  read_threads = 16

  def __init__(self, source, crop_size: int, image_size: int):
    self._source = source
    self._crop = crop_size
    self._size = image_size
    if len(source) == 0:
      raise DataError("a TFDS split is empty; re-prepare the dataset")
    height, width, channels = np.asarray(source[0]["image"]).shape
    if not 0 < crop_size <= min(height, width):
      raise DataError(f"crop_size={crop_size} does not fit images of "
                      f"{height}×{width}")
    if image_size < 1:
      raise DataError(f"image_size must be >= 1, got {image_size}")
    self.event_shape = (image_size, image_size, channels)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    pixels = center_crop_resize(np.asarray(self._source[index]["image"]),
                                self._crop, self._size)
    return pixels.astype(np.float32) / np.float32(255)


def center_crop_resize(image: np.ndarray, crop_size: int,
                       image_size: int) -> np.ndarray:
  """Centre square crop then resize.

  Args:
    image: uint8 [H, W, C].
    crop_size: side of the centre square.
    image_size: output side.

  Returns:
    uint8 [image_size, image_size, C].
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  height, width = image.shape[:2]
  top, left = (height - crop_size) // 2, (width - crop_size) // 2
  square = image[top:top + crop_size, left:left + crop_size]
  if crop_size == image_size:
    return np.ascontiguousarray(square)
  channels = square.shape[2]
  pil = Image.fromarray(square[..., 0] if channels == 1 else square)
  out = np.asarray(pil.resize((image_size, image_size),
                              Image.Resampling.BILINEAR))
  return out.reshape(image_size, image_size, channels)


def _first_line(error: Exception) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]
