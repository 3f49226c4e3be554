"""CelebA 64×64: σ_dec × latent_dim sweep of configs/celeba.py (TPU/GPU).

    python -m vae_jax.main --config=configs/celeba_sweep.py --workdir=gs://BUCKET/celeba_sweep
    --config=configs/celeba_sweep.py:short        # 10,000 steps per point
    --config.start_index=0 --config.end_index=12  # one slice's share

Every point is configs/celeba.py with its grid values set; the fixed σ_dec
of one latent dimension train together as one vmapped program (6 conv VAEs
per step), the other shapes one after another. Each point is a full run in
points/<i>/ (checkpoints, metrics, TensorBoard, images); results.csv and the
plots summarize them. CelebA must be prepared first (see configs/celeba.py).
"""

import ml_collections

from vae_jax import config_base

celeba = config_base.sibling_config(__file__, "celeba")

PRESETS = ("short",)


def get_config(config_string=None):
  presets = config_base.presets(config_string, PRESETS)
  c = ml_collections.ConfigDict()
  c.base = celeba.get_config()  # runner config of every point.
  c.grid = ml_collections.ConfigDict()
  c.grid.latent_dim = (32, 64, 128, 256)  # L.
  c.grid.seed = (0,)  # one seed: each point is a 64×64 conv VAE.
  c.grid.sigma_dec = (0.03, 0.05, 0.1, 0.2, 0.4, 0.8)  # fixed σ_dec, pixels in [0, 1).
  c.variants = (
      {"sigma_dec_mode": "learned", "sigma_dec": 0.1},  # one learned σ_dec.
      {"sigma_dec_mode": "optimal", "sigma_dec": 0.1},  # σ_dec² = batch MSE (Rybkin et al.).
  )
  c.start_index = 0  # first point this machine runs.
  c.end_index = -1  # one past the last point; -1 = to the end.
  c.max_group_size = 0  # most points per vmapped program (memory); 0 = all.
  if "short" in presets:
    c.base.num_train_steps = 10_000
    c.base.warmup_steps = 500
    c.base.eval_every_steps = 2500
  return c
