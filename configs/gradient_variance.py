"""Gradient-estimator variance benchmark (experiments/gradient_variance.py).

    python -m experiments.gradient_variance --workdir=/tmp/gv   # this file's default
    --config=configs/gradient_variance.py:quick      # tiny, for tests (~1 min)
    --config=configs/gradient_variance.py:mnist      # real MNIST IDX files
    --config.checkpoint_dir=runs/digits             # a runner's trained model

The default runs offline on 2 CPU cores in a few minutes: the §3
linear-Gaussian model (exact gradients) and a small MLP VAE on scikit-learn's
8×8 digits. Presets in the config string combine with commas ("quick,mnist").
Single fields change with --config.<field>=<value>.
"""

import ml_collections

ELBO_ESTIMATORS = ("reparam_analytic_kl", "reparam_mc_kl", "score_function",
                   "score_function_loo", "stl")
IWAE_ESTIMATORS = ("iwae_reparam", "iwae_stl", "iwae_dreg")
PRESETS = ("quick", "mnist")


def get_config(config_string=None):
  c = ml_collections.ConfigDict()
  c.seed = 0  # base PRNG seed: parameters, data batches, Monte Carlo samples.
  c.models = ("linear", "vae")  # linear: §3 model, exact truth; vae: MLP VAE on real data.
  c.sweeps = ("num_samples", "latent_dim", "sigma_dec", "iwae_k")  # which sweeps to run.
  c.elbo_estimators = ELBO_ESTIMATORS  # ELBO estimators of vae_jax.estimators.
  c.iwae_estimators = IWAE_ESTIMATORS  # L_K estimators, swept over K.
  c.num_samples_grid = (1, 10, 100, 1000)  # M per estimate (log-spaced, 1 to 1000).
  c.base_num_samples = 10  # M of the latent_dim and sigma_dec sweeps and of the summary table.
  c.iwae_k_grid = (1, 10, 100, 1000)  # K of the importance-weighted bound.
  c.snr_fit_min_k = 2  # SNR-vs-K slopes fit K >= this (K = 1 is the ELBO: DReG = STL there).
  c.chunk_size = 250  # replicates per vmapped chunk (lowered to respect max_chunk_evals).
  c.max_chunk_evals = 4096  # cap on chunk × M × batch: vmap small estimates, scan big ones (faster on CPU; raise on GPU).
  c.latent_dim_draws = 3  # random draws per latent dimension in its sweep, averaged (linear: data, init and noise, each draw nested over d; VAE: initializations).
  c.checkpoint_dir = ml_collections.config_dict.placeholder(str)  # runner workdir; its model is the "checkpoint" state.

  c.linear = ml_collections.ConfigDict()  # §3: q = N(a x + b, t²), p(x|z) = N(c z + v, s²).
  c.linear.latent_dim = 4  # d = data dimension = latent dimension.
  c.linear.latent_dims = (1, 4, 16, 64)  # d grid of the latent_dim sweep; nested: every d is the first d dims of one draw.
  c.linear.sigma_dec = 0.5  # decoder noise s (σ_dec); < data_sigma for the optimum to exist.
  c.linear.sigma_decs = (0.1, 0.5, 1.5)  # s grid of the sigma_dec sweep.
  c.linear.data_mu = 1.0  # μ of x ~ N(μ, σ² I), every dimension.
  c.linear.data_sigma = 2.0  # σ of the data.
  c.linear.init_scale = 0.5  # std of the random initialization around a = c = 1, b = v = log t = 0.
  c.linear.batch_size = 16  # examples in the fixed batch each gradient averages.
  c.linear.states = ("init", "near_optimum", "optimum")  # see near_optimum_noise; optimum: q = exact posterior.
  c.linear.near_optimum_noise = 0.02  # near_optimum = optimum + N(0, noise²) on every parameter ("trained").
  c.linear.num_replicates = 1000  # R, independent estimates per setting.
  c.linear.max_sample_evals = 4_000_000  # cap on R × M × batch in the ELBO sweeps (R shrinks for large M).
  c.linear.iwae_batch_size = 16  # examples in the batch of the K sweep.
  c.linear.iwae_max_sample_evals = 16_000_000  # cap on R × K × batch in the K sweep.
  c.linear.min_replicates = 200  # floor on R whatever the cap.

  c.vae = ml_collections.ConfigDict()  # real-data VAE (vae_jax.vae.VAE).
  c.vae.dataset = "digits"  # vae_jax.data name: digits (offline) | mnist_idx | mnist | celeb_a ...
  c.vae.idx_dir = "../shared/data/mnist"  # IDX folder for dataset=mnist_idx.
  c.vae.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default.
  c.vae.architecture = "mlp"  # mlp | conv.
  c.vae.hidden = (128,)  # MLP widths (decoder reversed).
  c.vae.channels = (32, 64, 128, 256)  # conv channels (architecture=conv).
  c.vae.activation = "tanh"  # hidden nonlinearity.
  c.vae.latent_dim = 8  # L.
  c.vae.latent_dims = (2, 8, 32)  # L grid of the latent_dim sweep (state init).
  c.vae.likelihood = "bernoulli"  # bernoulli (pixels binarized at random, fixed seed) | gaussian.
  c.vae.sigma_dec = 0.1  # σ_dec when likelihood=gaussian (pixels in [0, 1]).
  c.vae.sigma_decs = (0.03, 0.1, 0.3, 1.0)  # σ_dec sweep: Gaussian decoder on the unbinarized pixels, state init.
  c.vae.batch_size = 8  # test examples in the fixed batch of the ELBO sweeps.
  c.vae.states = ("init", "trained")  # trained: Adam steps below, or the checkpoint if given.
  c.vae.train_steps = 3000  # Adam steps of the in-process "trained" state (no checkpoint).
  c.vae.train_batch_size = 64  # its batch.
  c.vae.learning_rate = 1e-3  # its Adam learning rate.
  c.vae.train_estimator = "reparam_analytic_kl"  # its gradient (any vae_jax.core.estimators name, e.g. iwae_dreg).
  c.vae.train_num_samples = 1  # its M (or K).
  c.vae.num_replicates = 1000  # R per setting.
  c.vae.max_sample_evals = 1_000_000  # cap on R × M × batch in the ELBO sweeps.
  c.vae.iwae_batch_size = 4  # examples in the batch of the K sweep.
  c.vae.iwae_max_sample_evals = 4_000_000  # cap on R × K × batch in the K sweep.
  c.vae.min_replicates = 200  # floor on R.

  for preset in (config_string or "").split(","):
    preset = preset.strip()
    if not preset:
      continue
    if preset not in PRESETS:
      raise ValueError(f"unknown preset {preset!r} in the config string; "
                       f"choose from {PRESETS}")
    _PRESET_FNS[preset](c)
  return c


def _quick(c):
  """A tiny run for the experiment's test: every output, ~20 s on 2 cores."""
  c.elbo_estimators = ("reparam_analytic_kl", "score_function_loo", "stl")
  c.iwae_estimators = ("iwae_reparam", "iwae_stl", "iwae_dreg")
  c.num_samples_grid = (2, 20)
  c.base_num_samples = 2
  c.iwae_k_grid = (1, 10)
  c.snr_fit_min_k = 1
  c.linear.latent_dims = (1, 2)
  c.linear.latent_dim = 2
  c.linear.sigma_decs = (0.5,)
  c.linear.batch_size = 4
  c.linear.iwae_batch_size = 4
  c.linear.states = ("init", "optimum")
  c.linear.num_replicates = 100
  c.linear.min_replicates = 100
  c.vae.hidden = (16,)
  c.vae.latent_dim = 2
  c.vae.latent_dims = (2, 4)
  c.latent_dim_draws = 2
  c.vae.sigma_decs = (0.1,)
  c.vae.batch_size = 2
  c.vae.iwae_batch_size = 2
  c.vae.train_steps = 20
  c.vae.num_replicates = 100
  c.vae.min_replicates = 100


def _mnist(c):
  """The VAE part on real MNIST from the IDX files (784-200-200-50 style).

  Sized for a CPU (M and K to 100, small batches and R: about 2 minutes on
  2 cores); on an accelerator raise the grids, budgets and chunk limits.
  """
  c.vae.dataset = "mnist_idx"
  c.vae.hidden = (200, 200)
  c.vae.latent_dim = 50
  c.vae.latent_dims = (10, 50)
  c.vae.train_steps = 2000
  c.num_samples_grid = (1, 10, 100)
  c.iwae_k_grid = (1, 10, 100)
  c.vae.batch_size = 4
  c.vae.iwae_batch_size = 4
  c.vae.num_replicates = 200
  c.vae.min_replicates = 100
  c.vae.max_sample_evals = 100_000
  c.vae.iwae_max_sample_evals = 100_000


_PRESET_FNS = {"quick": _quick, "mnist": _mnist}
