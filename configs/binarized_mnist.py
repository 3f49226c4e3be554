"""TFDS `binarized_mnist`: the fixed binarization of Larochelle & Murray (2011)."""

from vae_jax import config_base

mnist = config_base.sibling_config(__file__, "mnist")


def get_config(config_string=None):
  c = mnist.get_config()
  c.dataset = "binarized_mnist"  # 50,000 train / 10,000 validation / 10,000 test, already binary.
  c.transform = "none"  # no resampling: the binarization is part of the data set.
  return config_base.apply_overrides(c, config_string)
