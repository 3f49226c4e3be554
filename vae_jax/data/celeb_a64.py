"""`celeb_a64`: CelebA centre-cropped and resized once, at prepare time.

TFDS's `celeb_a` stores the 178×218 aligned JPEGs, so every training read
decodes a JPEG, crops and resizes it: ≈ 0.8 ms of host CPU per image, more
than a host core can feed an accelerator at batch 128. This builder does
that work once and stores the result as raw uint8 [64, 64, 3] bytes in
array_record: a training read is a record lookup and a `np.frombuffer`, and
whole batches are fetched in one parallel call (`ArrayImageSource.take`).

Its sources, in order of preference:
  * `--manual_dir` holding `img_align_celeba.zip` and
    `list_eval_partition.txt` (the two CelebA files it needs; see
    `python -m vae_jax.data.prepare --help` for where to get them);
  * a prepared TFDS `celeb_a` in the same data_dir (read with
    `tfds.data_source`, never downloaded).

The pixels are exactly `tfds_data.center_crop_resize(image, 148, 64)` of the
decoded JPEG, what the on-the-fly path computes. Writing needs TensorFlow
(`pip install -e '.[prepare]'`); reading does not.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from vae_jax.data.base import DataError
from vae_jax.data.tfds_data import (CELEB_A64_CROP, CELEB_A64_SIZE,
                                    center_crop_resize)

NAME = "celeb_a64"
CROP_SIZE = CELEB_A64_CROP  # centre square (pixels) of the 178×218 image.
IMAGE_SIZE = CELEB_A64_SIZE  # side of the stored image (pixels).
ZIP_NAME = "img_align_celeba.zip"
PARTITION_NAME = "list_eval_partition.txt"
# list_eval_partition.txt's second column, and the sizes of the real splits.
SPLITS = {"train": 0, "validation": 1, "test": 2}
CELEBA_SPLIT_SIZES = {"train": 162_770, "validation": 19_867, "test": 19_962}


def read_partition(path: str) -> dict[str, list[str]]:
  """{split: [file name, ...]} from list_eval_partition.txt ("000001.jpg 0")."""
  by_code = {code: name for name, code in SPLITS.items()}
  out = {name: [] for name in SPLITS}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2 or not parts[1].isdigit() or int(
          parts[1]) not in by_code:
        raise DataError(f"{path}:{lineno}: expected '<file>.jpg <0|1|2>', "
                        f"got {line.strip()!r}")
      out[by_code[int(parts[1])]].append(parts[0])
  return out


def zip_members(path: str) -> dict[str, str]:
  """{base name: member name} of the JPEGs in img_align_celeba.zip."""
  with zipfile.ZipFile(path) as zf:
    return {os.path.basename(m): m for m in zf.namelist()
            if m.lower().endswith(".jpg")}


def check_manual_dir(manual_dir: str) -> list[str]:
  """What `manual_dir` holds for celeb_a64, as report lines.

  Returns:
    Lines describing each file found (sizes, counts per split, whether the
    split sizes are those of the real CelebA).

  Raises:
    DataError: a file is missing, unreadable, or the partition names images
      the zip does not hold; the message says what to fetch.
  """
  manual_dir = os.path.expanduser(manual_dir)
  lines = []
  missing = [n for n in (ZIP_NAME, PARTITION_NAME)
             if not os.path.isfile(os.path.join(manual_dir, n))]
  if missing:
    raise DataError(f"{manual_dir} lacks {', '.join(missing)}: download them "
                    "from the CelebA page (see `python -m vae_jax.data.prepare "
                    "--help`) into that folder under exactly these names")
  zip_path = os.path.join(manual_dir, ZIP_NAME)
  try:
    members = zip_members(zip_path)
  except zipfile.BadZipFile as e:
    raise DataError(f"{zip_path} is not a readable zip ({e}); download it "
                    "again") from None
  lines.append(f"{ZIP_NAME}: {os.path.getsize(zip_path) / 2**20:.1f} MiB, "
               f"{len(members)} JPEGs")
  partition = read_partition(os.path.join(manual_dir, PARTITION_NAME))
  counts = {k: len(v) for k, v in partition.items()}
  lines.append(f"{PARTITION_NAME}: " + ", ".join(
      f"{k} {v}" for k, v in counts.items()))
  absent = [n for names in partition.values() for n in names
            if n not in members]
  if absent:
    raise DataError(f"{len(absent)} images named in {PARTITION_NAME} are not "
                    f"in {ZIP_NAME} (first: {absent[0]}); the two files do "
                    "not belong together")
  if counts == CELEBA_SPLIT_SIZES:
    lines.append("split sizes match the full CelebA")
  else:
    lines.append(f"split sizes differ from the full CelebA "
                 f"({CELEBA_SPLIT_SIZES}): a partial or test copy")
  return lines


class CelebA64(tfds.core.GeneratorBasedBuilder):
  """CelebA aligned faces, centre crop 148 resized to 64×64, raw uint8."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Crop 148 → 64×64 (PIL bilinear), raw bytes."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Place {ZIP_NAME} and {PARTITION_NAME} from "
      "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html in manual_dir, or "
      "prepare TFDS celeb_a in the same data_dir first.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # Raw bytes, not PNG: a read is np.frombuffer, no decoding.
            "image": tfds.features.Tensor(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES),
        }),
        metadata=tfds.core.MetadataDict(crop_size=CROP_SIZE,
                                        image_size=IMAGE_SIZE),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html")

  def _split_generators(self, dl_manager):
    manual_dir = _manual_dir(dl_manager)
    if manual_dir is not None:
      check_manual_dir(manual_dir)
      partition = read_partition(os.path.join(manual_dir, PARTITION_NAME))
      zip_path = os.path.join(manual_dir, ZIP_NAME)
      return {split: self._generate_examples(zip_path=zip_path, names=names)
              for split, names in partition.items() if names}
    try:
      sources = {s: tfds.data_source("celeb_a", split=s,
                                     data_dir=os.fspath(self.data_dir_root),
                                     download=False) for s in SPLITS}
    except Exception:  # pylint: disable=broad-except
      raise DataError(
          f"celeb_a64 needs {ZIP_NAME} and {PARTITION_NAME} in --manual_dir "
          f"(or TFDS celeb_a prepared in {self.data_dir_root}); neither was "
          "found") from None
    return {s: self._generate_examples(source=src)
            for s, src in sources.items()}

  def _generate_examples(self, zip_path=None, names=None, source=None):
    """(key, {"image": uint8 [64, 64, 3]}) from the zip's `names` in order,
    or from every example of a TFDS celeb_a `source`."""
    if source is not None:
      for i in range(len(source)):
        pixels = np.asarray(source[i]["image"])
        yield i, {"image": center_crop_resize(pixels, CROP_SIZE, IMAGE_SIZE)}
      return
    from PIL import Image  # pylint: disable=g-import-not-at-top

    with zipfile.ZipFile(zip_path) as zf:
      members = {os.path.basename(m): m for m in zf.namelist()}
      for name in names:
        with Image.open(io.BytesIO(zf.read(members[name]))) as img:
          pixels = np.asarray(img.convert("RGB"))
        yield name, {"image": center_crop_resize(pixels, CROP_SIZE,
                                                 IMAGE_SIZE)}


def _manual_dir(dl_manager) -> str | None:
  """The user's manual_dir when it holds the zip, else None."""
  try:
    path = os.fspath(dl_manager.manual_dir)
  except Exception:  # pylint: disable=broad-except
    return None  # TFDS raises when no manual_dir was given.
  return path if os.path.isfile(os.path.join(path, ZIP_NAME)) else None


def write_synthetic_manual_dir(manual_dir: str, split_sizes: dict[str, int],
                               seed: int = 0, quality: int = 90) -> None:
  """Writes CelebA-shaped stand-ins of the two files celeb_a64 reads.

  For offline tests and benchmarks: 178×218 RGB JPEGs (smooth colour
  gradients plus noise, so they compress and decode like photos) in
  `img_align_celeba.zip` under CelebA's names (000001.jpg, ...), and a
  `list_eval_partition.txt` assigning the first split_sizes["train"] to
  train, then validation, then test.

  Args:
    manual_dir: folder to create and fill.
    split_sizes: {"train": n, "validation": n, "test": n}; absent means 0.
    seed: seed of the image content.
    quality: JPEG quality (CelebA's files are ≈ 95).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  os.makedirs(manual_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[0:218, 0:178].astype(np.float32)
  lines = []
  n = 0
  with zipfile.ZipFile(os.path.join(manual_dir, ZIP_NAME), "w",
                       zipfile.ZIP_STORED) as zf:
    for split, code in SPLITS.items():
      for _ in range(split_sizes.get(split, 0)):
        n += 1
        name = f"{n:06d}.jpg"
        base, slope = rng.uniform(30, 200, 3), rng.uniform(-0.4, 0.4, (2, 3))
        pixels = (base + rows[..., None] * slope[0] + cols[..., None] * slope[1]
                  + rng.normal(0, 8, (218, 178, 3)))
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            buf, format="JPEG", quality=quality)
        # CelebA's zip holds its images in this folder.
        zf.writestr(f"img_align_celeba/{name}", buf.getvalue())
        lines.append(f"{name} {code}\n")
  with open(os.path.join(manual_dir, PARTITION_NAME), "w",
            encoding="utf-8") as f:
    f.writelines(lines)
