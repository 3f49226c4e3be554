"""Medicine: a VAE of benign breast tissue scores malignant cases as anomalies.

scikit-learn's Wisconsin diagnostic breast-cancer table (569 cases × 30
cell-nucleus features, no download). Malignant cases are removed from the
training split; features are standardized with the statistics of what
remains (stored with the checkpoint); the likelihood is Gaussian with one
learned σ_dec per feature. Seconds on 2 CPU cores. Then

  python -m experiments.anomaly --workdir=runs/breast_cancer

Over 5 training seeds, against Gaussian and probabilistic-PCA baselines:
python -m experiments.anomaly_protocol (which also runs the digits).
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "breast_cancer"  # 569 cases × 30 continuous features; label 1 = malignant.
  c.train_on_benign_only = True  # train on benign cases only: malignant ones are the anomalies.
  c.test_fraction = 0.2  # 114 test cases (benign and malignant), seeded split.
  c.transform = "none"  # continuous standardized features: no binarization or dequantization.
  c.architecture = "mlp"  # tabular data.
  c.hidden = (64, 64)  # MLP widths for 30 features.
  c.latent_dim = 4  # the 30 features are strongly correlated (sizes, areas, perimeters).
  c.likelihood = "gaussian"  # real-valued features.
  c.sigma_dec_mode = "learned_per_dim"  # features differ in how well z predicts them.
  c.sigma_dec = 1.0  # initial σ_dec: the standardized features' own scale.
  c.batch_size = 32  # ~9 batches per epoch of ~285 benign training cases.
  c.num_train_steps = 3000  # ~340 epochs; seconds on 2 CPU cores.
  c.learning_rate = 1e-3  # Adam.
  c.eval_every_steps = 1000  # three evaluations in the run.
  c.eval_batch_size = 32  # device-divisible evaluation batches.
  c.checkpoint_every_steps = 1000  # checkpoints at 1000, 2000, 3000.
  c.eval_iwae_samples = 100  # K during training.
  c.final_iwae_samples = 1000  # K of the final NLL estimate (and the anomaly score's default K).
  c.iwae_chunk_size = 250  # samples per chunk.
  c.num_image_examples = 0  # tabular data: no image grids.
  return config_base.apply_overrides(c, config_string)
