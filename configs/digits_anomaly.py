"""Anomaly detection on scikit-learn's 8×8 digits: one class never trained on.

The model of configs/default.py, trained on every digit but `holdout_class`;
the test split keeps all ten, so the held-out digit's test images are the
anomalies. Offline, about a minute on 2 CPU cores. Then

  python -m experiments.anomaly --workdir=runs/digits_anomaly

Hold out another digit with configs/digits_anomaly.py:holdout_class=7.
One run is one class and one seed; every digit held out in turn × 3 seeds,
with baselines and paired DeLong tests:

  python -m experiments.anomaly_protocol --workdir=runs/anomaly_protocol
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "digits"  # 1,797 images of 8×8 pixels, levels 0..16, scaled to [0, 1].
  c.holdout_class = 0  # the anomaly: digit 0, the first class (not chosen for being easy); ~30 of 297 test images.
  c.transform = "dynamic_binarize"  # binary pixels resampled every epoch.
  c.likelihood = "bernoulli"  # binary data.
  c.latent_dim = 8  # small images: 8 latents suffice.
  c.hidden = (128, 128)  # MLP widths.
  c.batch_size = 64  # global batch.
  c.num_train_steps = 2000  # ~95 epochs of the ~1,350 training images; ~1 minute on 2 CPU cores.
  c.eval_every_steps = 500  # four evaluations in the run.
  c.eval_batch_size = 64  # device-divisible evaluation batches.
  c.checkpoint_every_steps = 500  # checkpoints at 500, 1000, 1500, 2000.
  c.final_iwae_samples = 1000  # K of the final NLL estimate (and the anomaly score's default K).
  c.iwae_chunk_size = 250  # samples per chunk.
  return config_base.apply_overrides(c, config_string)
