r"""Prepares a TFDS dataset in the array_record format, once, before training.

    pip install -e '.[prepare]'         # TensorFlow: needed here only
    python -m vae_jax.data.prepare --dataset=mnist --data_dir=~/tfds
    python -m vae_jax.data.prepare --dataset=celeb_a64 \
        --data_dir=gs://bucket/tfds --manual_dir=~/celeba_files
    python -m vae_jax.data.prepare --dataset=celeb_a64 \
        --manual_dir=~/celeba_files --check      # only report what is there

Run it on a machine with network access (for mnist, binarized_mnist,
cifar10) before training. Training reads the result through TFDS's
array_record data source and grain and never downloads, so a missing
dataset fails at once with a pointer here instead of retrying the network
for minutes.

Building (unlike reading) needs TensorFlow: TFDS serializes examples with
it. `pip install -e '.[prepare]'` installs it (tensorflow-cpu on Linux); the
training environment does not need it. The array_record format is required:
it is what gives random access (shuffling, exact resumption) without
TensorFlow.

CelebA. The config `configs/celeba.py` (dataset "celeb_a", crop 148 → 64)
reads `celeb_a64` when it is prepared: the faces cropped and resized once
here and stored raw, so the host reads a 64×64 batch instead of decoding,
cropping and resizing 178×218 JPEGs every step (≈ 0.8 ms per image per
core; `python -m experiments.bench_celeba_pipeline` measures both). It needs
two files, downloaded by hand (Google Drive's daily quota refuses scripted
downloads) from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html:

  * "Align&Cropped Images" → `img_align_celeba.zip` (1.4 GB, 202,599 JPEGs);
  * "Train/Val/Test Partitions" → `list_eval_partition.txt`
    (in Eval/ on the Drive folder).

Put both in one folder under exactly these names and pass it as
--manual_dir; --check reports what it finds there (file sizes, images per
split, whether they are the full 162,770 / 19,867 / 19,962) without
preparing. Preparing costs ≈ 0.75 ms of CPU per image (≈ 2.5 min for the
202,599 faces; measured on generated 178×218 JPEGs) and writes ≈ 2–2.5 GB
(12,288 bytes per face, compressed by array_record).
Without --manual_dir, celeb_a64 is built from TFDS `celeb_a` prepared in the
same data_dir.

TFDS `celeb_a` itself (178×218 JPEGs, needed only for other crop or image
sizes) downloads five files from Google Drive; when that fails, put
img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt,
list_landmarks_align_celeba.txt and identity_CelebA.txt in --manual_dir
(TFDS verifies their checksums).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags

from vae_jax.data.base import DataError
from vae_jax.data.tfds_data import SPECS

_DATASET = flags.DEFINE_enum("dataset", None, sorted(SPECS),
                             "Dataset to prepare.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir to write into (local path or gs://); "
    "default $TFDS_DATA_DIR or ~/tensorflow_datasets.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder of manually downloaded files (CelebA).")
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples_per_split", None, "Prepare only this many examples per "
    "split (a quick smoke test of the set-up).")
_CHECK = flags.DEFINE_bool(
    "check", False, "Only report what --manual_dir holds (celeb_a64); "
    "prepare nothing.")


def check(name: str, manual_dir: str | None) -> list[str]:
  """Report lines on `manual_dir` for dataset `name`; DataError if unusable."""
  if name != "celeb_a64":
    return [f"{name}: nothing to check by hand (TFDS downloads it)"]
  if not manual_dir:
    raise DataError("--manual_dir is required to check celeb_a64's files")
  from vae_jax.data import celeb_a64  # pylint: disable=g-import-not-at-top
  return celeb_a64.check_manual_dir(manual_dir)


def prepare(name: str, data_dir: str | None = None,
            manual_dir: str | None = None,
            max_examples_per_split: int | None = None) -> str:
  """Prepares dataset `name` as array_record; returns its folder.

  Args:
    name: one of vae_jax.data.tfds_data.SPECS.
    data_dir: TFDS data dir; None for the TFDS default.
    manual_dir: folder with manually downloaded source files, or None.
    max_examples_per_split: cap per split (testing the set-up), or None.

  Raises:
    DataError: unknown dataset name, TensorFlow missing, or (celeb_a64) a
      manual_dir without the files it needs.
  """
  if name not in SPECS:
    raise DataError(f"cannot prepare {name!r}: choose one of {sorted(SPECS)}")
  if importlib.util.find_spec("tensorflow") is None:
    raise DataError("preparing a TFDS dataset needs TensorFlow: run "
                    "`pip install -e '.[prepare]'` (reading it does not)")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if name == "celeb_a64":
    from vae_jax.data import celeb_a64  # pylint: disable=g-import-not-at-top,unused-import
    if manual_dir:
      celeb_a64.check_manual_dir(manual_dir)  # fail before any writing
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
  builder = tfds.builder(SPECS[name].tfds_name, data_dir=data_dir)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None,
      max_examples_per_split=max_examples_per_split)
  builder.download_and_prepare(file_format="array_record",
                               download_config=download_config)
  return os.fspath(builder.data_dir)


def main(argv):
  del argv
  if _DATASET.value is None:
    sys.exit("--dataset is required: one of " + ", ".join(sorted(SPECS)))
  try:
    if _CHECK.value or (_DATASET.value == "celeb_a64" and _MANUAL_DIR.value):
      for line in check(_DATASET.value, _MANUAL_DIR.value):
        print(line)
    if _CHECK.value:
      return
    path = prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value,
                   _MAX_EXAMPLES.value)
  except DataError as e:
    sys.exit(f"error: {e}")
  print(f"prepared {_DATASET.value} in {path}")


if __name__ == "__main__":
  app.run(main)
