"""Real MNIST from local IDX files (the benchmark of README), no TFDS needed.

`idx_dir` defaults to ../shared/data/mnist: 22,699 training and the full
10,000 test images. Same model as configs/mnist.py.
"""

from vae_jax import config_base

mnist = config_base.sibling_config(__file__, "mnist")


def get_config(config_string=None):
  c = mnist.get_config()
  c.dataset = "mnist_idx"  # IDX files read from idx_dir.
  c.idx_dir = "../shared/data/mnist"  # train-images-partial + t10k files.
  c.num_train_steps = 20_000  # benchmark budget (~88 epochs of 22,699 images).
  return config_base.apply_overrides(c, config_string)
