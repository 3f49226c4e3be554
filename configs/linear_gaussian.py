"""The §3 linear-Gaussian VAE on synthetic x ~ N(μ, σ² I).

Encoder N(a x + b, t² I), decoder N(c z + v, s² I) with per-dimension a, b,
t, c, v, s. The run reports the learned parameters beside the closed-form
optimum (v = μ, c² + s² = σ², q = exact posterior) and the exact log p(x).
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "linear_gaussian"  # synthetic, generated from data_seed.
  c.linear_gaussian.dim = 4  # d (latent_dim is set equal to it).
  c.linear_gaussian.mu = 1.0  # μ in every dimension.
  c.linear_gaussian.sigma = 2.0  # σ.
  c.transform = "none"  # continuous data, used as is.
  c.architecture = "linear"  # the §3 model.
  c.latent_dim = 4  # equals linear_gaussian.dim.
  c.likelihood = "gaussian"  # p(x|z) = N(c z + v, s² I),
  c.sigma_dec_mode = "learned_per_dim"  # with s learned per dimension,
  c.sigma_dec = 1.0  # starting at s = 1.
  c.num_samples = 1  # M.
  c.batch_size = 128  # global batch.
  c.eval_batch_size = 128  # device-divisible.
  c.learning_rate = 1e-2  # Adam.
  c.num_train_steps = 3000  # enough to approach the optimum.
  c.eval_every_steps = 1000  # evaluation period.
  c.checkpoint_every_steps = 1000  # checkpoint period.
  c.final_iwae_samples = 1000  # K (tight already: q can equal the posterior).
  c.iwae_chunk_size = 250  # samples per chunk.
  return config_base.apply_overrides(c, config_string)
