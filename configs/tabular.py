"""Medicine and biology: your own table of continuous features.

A CSV (optional header row, optional label column) or a .npy array, one
example per row. Features are standardized with the training split's mean
and std (stored with the checkpoint, so samples and reconstructions map
back to the file's units); the likelihood is Gaussian with one learned
σ_dec per feature.

  python -m vae_jax.main --config=configs/tabular.py \
      --config.tabular_path=cells.csv --config.label_column=type \
      --config.holdout_class=1 --workdir=runs/cells
  python -m experiments.anomaly --workdir=runs/cells
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "tabular"  # rows of continuous features from tabular_path.
  c.tabular_path = None  # required: the CSV or .npy file (validation says so if missing).
  c.label_column = None  # optional: header name or 0-based index of a label column (not a feature).
  c.holdout_class = -1  # optional: a label kept out of training, the anomalies; -1 trains on all rows.
  c.test_fraction = 0.2  # share of rows held out for evaluation (seeded).
  c.transform = "none"  # continuous features: no binarization or dequantization.
  c.architecture = "mlp"  # tabular data.
  c.hidden = (64, 64)  # MLP widths; tens of features.
  c.latent_dim = 4  # a few factors; raise it for wide tables.
  c.likelihood = "gaussian"  # real-valued features.
  c.sigma_dec_mode = "learned_per_dim"  # one noise scale per feature.
  c.sigma_dec = 1.0  # initial σ_dec: the standardized features' own scale.
  c.batch_size = 32  # small tables: many updates per epoch.
  c.num_train_steps = 3000  # optimizer steps.
  c.eval_every_steps = 1000  # test evaluation period.
  c.eval_batch_size = 32  # device-divisible evaluation batches.
  c.checkpoint_every_steps = 1000  # checkpoint period.
  c.final_iwae_samples = 1000  # K of the final NLL estimate.
  c.iwae_chunk_size = 250  # samples per chunk.
  c.num_image_examples = 0  # tabular data: no image grids.
  return config_base.apply_overrides(c, config_string)
