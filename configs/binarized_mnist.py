"""TFDS `binarized_mnist`: the fixed binarization of Larochelle & Murray (2011)."""

from configs import common
from configs import mnist


def get_config(config_string=None):
  c = mnist.get_config()
  c.dataset = "binarized_mnist"  # 50,000 train / 10,000 validation / 10,000 test, already binary.
  c.transform = "none"  # no resampling: the binarization is part of the data set.
  return common.apply_overrides(c, config_string)
