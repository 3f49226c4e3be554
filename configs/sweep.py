"""σ_dec × latent_dim × seed sweep (experiments/sweep.py).

    python -m vae_jax.main --config=configs/sweep.py --workdir=runs/sweep
    --config=configs/sweep.py:quick        # tiny grid, for tests (~30 s)
    --config=configs/sweep.py:mnist        # real MNIST IDX files (GPU/TPU)
    --config.base.num_train_steps=3000     # any runner field of the base
    --config.start_index=0 --config.end_index=24   # one machine's share
    --config.grid.sigma_dec='(0.05, 0.1, 0.2)'     # an axis (a tuple)

The default runs offline (scikit-learn's 8×8 digits, D = 64 pixels,
dequantized, Gaussian decoder) in a few minutes on 2 CPU cores: 6 fixed
σ_dec × 3 latent dimensions × 2 seeds, plus a learned and the optimal
("calibrated") σ_dec for every latent dimension and seed: 48 points in 9
compiled groups. Presets in the config string combine with commas.
"""

import ml_collections

from vae_jax import config_base

default = config_base.sibling_config(__file__, "default")

PRESETS = ("quick", "mnist")


def _digits_base():
  """The runner config every point starts from (fields of vae_jax/config_base.py)."""
  b = default.get_config()
  b.likelihood = "gaussian"  # σ_dec matters only for a Gaussian decoder.
  b.transform = "dequantize"  # continuous pixels: levels 0..16 plus uniform noise, in [0, 1).
  b.sigma_dec_mode = "fixed"  # the grid's σ_dec; variants below set the others.
  b.sigma_dec = 0.1  # overridden by the grid.
  b.latent_dim = 8  # overridden by the grid.
  b.hidden = (128, 128)  # MLP widths.
  b.batch_size = 64  # per point; devices split it.
  b.num_train_steps = 1500  # ~64 epochs of the 1,500 training digits.
  b.learning_rate = 1e-3  # Adam.
  b.log_every_steps = 500  # progress lines per group.
  b.checkpoint_every_steps = 500  # group checkpoints (stacked states), for resume.
  b.eval_every_steps = 500  # test rows in every point's metrics.jsonl and TensorBoard.
  b.eval_iwae_samples = 50  # K of L_K during training (cheap).
  b.eval_batch_size = 64  # test batches (padded, masked); divisible by 1, 2, 4, 8 devices.
  b.final_iwae_samples = 500  # K of the test NLL estimate −L_K.
  b.iwae_chunk_size = 250  # samples per chunk.
  b.num_image_examples = 16  # prior samples and reconstructions per point.
  return b


def get_config(config_string=None):
  presets = config_base.presets(config_string, PRESETS)
  c = ml_collections.ConfigDict()
  c.base = _digits_base()  # runner config of every point.
  # Axes (tuples, so --config.grid.<field>='(a, b)' can replace them),
  # crossed in alphabetical order of the field names (last fastest).
  c.grid = ml_collections.ConfigDict()
  c.grid.latent_dim = (2, 8, 32)  # L: too many collapse to the prior.
  c.grid.seed = (0, 1)  # initial parameters, Monte Carlo samples, data order.
  c.grid.sigma_dec = (0.03, 0.06, 0.1, 0.2, 0.4, 0.8)  # fixed σ_dec (pixels in [0, 1)); weighs reconstruction like 1/β.
  # Each variant replaces the axes it names and is crossed with the others.
  c.variants = (
      {"sigma_dec_mode": "learned", "sigma_dec": 0.1},  # one learned scalar σ_dec, starting at 0.1.
      {"sigma_dec_mode": "optimal", "sigma_dec": 0.1},  # σ_dec² = batch MSE (Rybkin et al. 2021); sigma_dec unused.
  )  # --config.variants='()' drops them.
  c.start_index = 0  # first point this machine runs.
  c.end_index = -1  # one past the last point; -1 = to the end.
  c.max_group_size = 0  # most points trained at once (memory); 0 = a whole group.

  if "mnist" in presets:
    b = c.base
    b.dataset = "mnist_idx"  # 22,699 real MNIST training images from idx_dir.
    b.idx_dir = "../shared/data/mnist"  # IDX files.
    b.hidden = (512, 256)  # wider MLP for 784 pixels.
    b.batch_size = 128
    b.num_train_steps = 10_000
    b.checkpoint_every_steps = 2000
    b.log_every_steps = 1000
    b.eval_batch_size = 500
    b.final_iwae_samples = 1000
    b.iwae_chunk_size = 250
    c.grid.latent_dim = (2, 8, 32, 128)
  if "quick" in presets:
    b = c.base
    b.num_train_steps = 30
    b.log_every_steps = 10
    b.checkpoint_every_steps = 10
    b.final_iwae_samples = 8
    b.eval_every_steps = 1_000_000  # no evaluation during training.
    b.eval_iwae_samples = 8
    b.iwae_chunk_size = 8
    b.num_image_examples = 4
    c.grid.latent_dim = (2, 4)
    c.grid.seed = (0,)
    c.grid.sigma_dec = (0.1, 0.4)
  return c
