"""TFDS `mnist`, dynamically binarized, Bernoulli likelihood.

Architecture of Burda et al. (2015) by default: 784-200-200-50 with tanh
(one stochastic layer). Prepare the data once where there is network:
  python -m vae_jax.data.prepare --dataset=mnist --data_dir=DIR
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "mnist"  # 60,000 train / 10,000 test, 28×28, 8-bit.
  c.transform = "dynamic_binarize"  # pixels resampled as Bernoulli(intensity) every epoch.
  c.likelihood = "bernoulli"  # binary data.
  c.architecture = "mlp"  # Burda et al. (2015) one-layer model:
  c.hidden = (200, 200)  # 784-200-200-50,
  c.latent_dim = 50  # with 50 latents,
  c.activation = "tanh"  # and tanh units.
  c.batch_size = 100  # global batch.
  c.num_train_steps = 100_000  # optimizer steps.
  c.eval_every_steps = 5000  # test evaluation period.
  c.checkpoint_every_steps = 5000  # checkpoint period.
  c.final_iwae_samples = 5000  # K of the final NLL estimate (Burda et al.).
  return config_base.apply_overrides(c, config_string)
