"""Offline default: scikit-learn's 8×8 digits, Bernoulli MLP VAE.

Needs no network and no dataset download (the digits ship with
scikit-learn) and finishes in about a minute on 2 CPU cores.
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "digits"  # 1,797 images of 8×8 pixels, levels 0..16, scaled to [0, 1].
  c.transform = "dynamic_binarize"  # binary pixels resampled every epoch.
  c.likelihood = "bernoulli"  # binary data.
  c.latent_dim = 8  # small images: 8 latents suffice.
  c.hidden = (128, 128)  # MLP widths.
  c.batch_size = 64  # global batch.
  c.num_train_steps = 5000  # ~210 epochs; about a minute on 2 CPU cores.
  c.eval_every_steps = 1000  # five evaluations in the run.
  c.eval_batch_size = 64  # device-divisible evaluation batches.
  c.checkpoint_every_steps = 1000  # a checkpoint every 1000 steps.
  c.final_iwae_samples = 5000  # K of the final NLL estimate (Burda et al.'s K).
  c.iwae_chunk_size = 10  # samples per chunk: memory flat in K (experiments/bench_iwae.py).
  return config_base.apply_overrides(c, config_string)
