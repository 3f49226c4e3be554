"""TFDS `cifar10`: 32×32×3, conv VAE, Gaussian likelihood on dequantized pixels.

Published CIFAR-10 bits/dim (IAF, NVAE, VDVAE, PixelCNN++) come from
discretized logistic mixtures on the integer pixels; this variant gives the
number to set beside them (bits_per_dim_iwae, with no dequantization term):
  python -m vae_jax.main --config=configs/cifar10.py:likelihood=discretized_logistic_mixture,transform=none
Add compute_dtype=bfloat16 for bfloat16 compute on accelerators.
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "cifar10"  # 50,000 train / 10,000 test.
  c.transform = "dequantize"  # density on [0,1)^D; bits/dim adds D ln 256.
  c.architecture = "conv"  # 3 stride-2 layers: 32 → 4.
  c.channels = (64, 128, 256)  # encoder channels (decoder reversed).
  c.activation = "gelu"  # conv nonlinearity.
  c.latent_dim = 128  # dimensions of z.
  c.likelihood = "gaussian"  # N(f(z), σ_dec² I).
  c.sigma_dec_mode = "learned"  # one learned σ_dec.
  c.sigma_dec = 0.1  # its initial value.
  c.num_mixtures = 10  # discretized_logistic_mixture: PixelCNN++'s 10 components.
  c.batch_size = 128  # global batch.
  c.eval_batch_size = 128  # device-divisible.
  c.learning_rate = 2e-4  # peak Adam learning rate.
  c.lr_schedule = "warmup_cosine"  # warm-up then cosine decay.
  c.warmup_steps = 1000  # warm-up steps.
  c.grad_clip_norm = 1.0  # clip the global gradient norm.
  c.num_train_steps = 100_000  # optimizer steps.
  c.eval_every_steps = 5000  # evaluation period.
  c.checkpoint_every_steps = 2000  # checkpoint period.
  c.eval_iwae_samples = 10  # cheap L_K during training.
  c.final_iwae_samples = 1000  # final NLL estimate.
  c.iwae_chunk_size = 100  # samples per chunk.
  return config_base.apply_overrides(c, config_string)
