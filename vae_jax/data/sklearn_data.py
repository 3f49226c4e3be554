"""The offline datasets that ship inside scikit-learn: digits and breast cancer.

Both need no download, so the default configs and the tests run anywhere.
"""

from __future__ import annotations

import numpy as np

from vae_jax.data import preprocess
from vae_jax.data.base import DataError, Dataset, image_dataset
from vae_jax.data.preprocess import config_value

DIGITS_LEVELS = 17  # load_digits intensities are counts 0..16 of a 4×4 block.
DIGITS_NUM_TRAIN = 1500  # of 1,797; the remaining 297 form the test split.
MALIGNANT = 1  # our label convention; scikit-learn's target has 0 = malignant.


def load_digits(config) -> Dataset:
  """scikit-learn's 8×8 digits, flattened to [64], scaled by 1/16.

  Config fields: data_seed (split), digits_num_train (default 1,500),
  holdout_class (a digit removed from the training split only; −1 = none).
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_digits()
  pixels = bunch.data.astype(np.uint8)  # [1797, 64], integers 0..16
  labels = bunch.target.astype(np.int64)
  num_train = int(config_value(config, "digits_num_train", DIGITS_NUM_TRAIN))
  seed = int(config_value(config, "data_seed", 0))
  train_idx, test_idx = preprocess.split_indices(
      len(pixels), len(pixels) - num_train, seed)
  train_x, train_y = preprocess.drop_class(
      pixels[train_idx], labels[train_idx],
      int(config_value(config, "holdout_class", -1)), "digits")
  return image_dataset("digits", train_x, pixels[test_idx], train_y,
                       labels[test_idx], levels=DIGITS_LEVELS,
                       event_shape=(64,))


def load_breast_cancer(config) -> Dataset:
  """Wisconsin diagnostic breast cancer: 569 cases × 30 features, standardized.

  Labels follow the anomaly-detection convention 0 = benign, 1 = malignant
  (scikit-learn's target is the reverse). The split is a seeded random
  `test_fraction` hold-out. With `train_on_benign_only` (or
  `holdout_class=1`) malignant cases are removed from the training split
  only, and the standardization statistics are those of what remains, so a
  model of benign tissue sees malignant cases only at test time.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_breast_cancer()
  features = bunch.data.astype(np.float64)  # [569, 30]
  labels = (bunch.target == 0).astype(np.int64)  # sklearn 0 = malignant
  seed = int(config_value(config, "data_seed", 0))
  num_test = preprocess.num_test_examples(
      len(features), float(config_value(config, "test_fraction", 0.2)))
  train_idx, test_idx = preprocess.split_indices(len(features), num_test, seed)
  holdout = int(config_value(config, "holdout_class", -1))
  if config_value(config, "train_on_benign_only", False):
    if holdout not in (-1, MALIGNANT):
      raise DataError(f"breast_cancer: train_on_benign_only conflicts with "
                      f"holdout_class={holdout}")
    holdout = MALIGNANT
  train_x, train_y = preprocess.drop_class(
      features[train_idx], labels[train_idx], holdout, "breast_cancer")
  return preprocess.standardized_dataset(
      "breast_cancer", train_x, features[test_idx], train_y, labels[test_idx])

