r"""Downloads and prepares a TFDS dataset in the array_record format.

    python -m vae_jax.data.prepare --dataset=mnist --data_dir=~/tfds
    python -m vae_jax.data.prepare --dataset=celeb_a \
        --data_dir=gs://bucket/tfds --manual_dir=~/celeba_files

Run it once, on a machine with network access, before training on mnist,
binarized_mnist, cifar10 or celeb_a. Training reads the result through
TFDS's array_record data source and grain and never downloads, so a missing
dataset fails at once with a pointer here instead of retrying the network
for minutes.

Building (unlike reading) needs TensorFlow: TFDS encodes images and
serializes examples with it. `pip install tensorflow` in the environment
that runs this command; the training environment does not need it. The
array_record format is required: it is what gives random access (shuffling,
exact resumption) without TensorFlow.

CelebA: TFDS downloads five files from Google Drive, whose daily quota often
refuses them. Then download them by hand from
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html ("Align&Cropped Images"
and the annotation files) into one folder, under exactly these names:
img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt,
list_landmarks_align_celeba.txt, identity_CelebA.txt, and pass that folder
as --manual_dir. TFDS uses a file found there instead of downloading it (it
still verifies the recorded checksums).
"""

from __future__ import annotations

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


def prepare(name: str, data_dir: str | None = None,
            manual_dir: str | None = None,
            max_examples_per_split: int | None = None) -> str:
  """Downloads and prepares dataset `name` as array_record; returns its folder.

  Args:
    name: one of vae_jax.data.tfds_data.SPECS.
    data_dir: TFDS data dir; None for the TFDS default.
    manual_dir: folder with manually downloaded source files, or None.
    max_examples_per_split: cap per split (testing the set-up), or None.

  Raises:
    DataError: unknown dataset name.
  """
  if name not in SPECS:
    raise DataError(f"cannot prepare {name!r}: choose one of {sorted(SPECS)}")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

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
  path = prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value,
                 _MAX_EXAMPLES.value)
  print(f"prepared {_DATASET.value} in {path}")


if __name__ == "__main__":
  app.run(main)
