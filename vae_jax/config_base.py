"""The full set of runner config fields, each with its default and meaning.

Every config file starts from `base_config()` and overrides what differs,
so `vae_jax.training.config_validation` sees one schema everywhere.
"""

import importlib.util
import os

import ml_collections


def base_config():
  """Defaults shared by all runner configs (the digits MLP setting)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # PRNG seed for parameters, Monte Carlo samples and shuffling.

  # ---- data ----
  c.dataset = "digits"  # digits|mnist|binarized_mnist|mnist_idx|celeb_a|cifar10|linear_gaussian|breast_cancer|tabular
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default (~/tensorflow_datasets).
  c.idx_dir = "../shared/data/mnist"  # folder of MNIST IDX files, for dataset=mnist_idx.
  c.tabular_path = ml_collections.config_dict.placeholder(str)  # CSV or .npy of features, for dataset=tabular.
  c.label_column = ml_collections.config_dict.placeholder(str)  # tabular: column holding labels (excluded from features).
  c.test_fraction = 0.2  # tabular: share of rows held out for evaluation.
  c.data_seed = 0  # seed of the train/test split for datasets without one.
  c.holdout_class = -1  # a label left out of training (anomaly detection); -1 keeps all.
  c.train_on_benign_only = False  # breast_cancer: train on benign cases only.
  c.crop_size = 148  # celeb_a: centre crop (pixels) before resizing.
  c.image_size = 64  # celeb_a: output height and width (pixels).
  c.transform = "dynamic_binarize"  # none|dynamic_binarize|dequantize: training-time random transform.
  c.linear_gaussian = ml_collections.ConfigDict()  # synthetic §3 data x ~ N(mu, sigma² I).
  c.linear_gaussian.dim = 4  # d, also the latent dimension of the linear model.
  c.linear_gaussian.mu = 1.0  # data mean in every dimension.
  c.linear_gaussian.sigma = 2.0  # data standard deviation.
  c.linear_gaussian.num_train = 4096  # training examples.
  c.linear_gaussian.num_test = 1024  # test examples.

  # ---- model ----
  c.architecture = "mlp"  # mlp|conv|linear (linear = the §3 model a x + b, c z + v).
  c.latent_dim = 16  # L, dimensions of z.
  c.hidden = (200, 200)  # MLP hidden widths (encoder order; decoder reversed).
  c.channels = (32, 64, 128, 256)  # conv encoder channels, each a stride-2 layer.
  c.activation = "tanh"  # tanh|relu|gelu|elu|softplus.
  c.likelihood = "bernoulli"  # bernoulli (binary data) | gaussian | discretized_gaussian | discretized_logistic_mixture (integer levels, transform=none).
  c.sigma_dec_mode = "fixed"  # gaussian: fixed|learned|learned_per_channel|learned_per_dim|optimal.
  c.sigma_dec = 1.0  # gaussian: σ_dec, or its initial value when learned.
  c.num_levels = 256  # discretized_*: intensity levels of the data (256 for 8-bit images, 17 for digits).
  c.num_mixtures = 5  # discretized_logistic_mixture: logistic components per pixel.
  c.compute_dtype = "float32"  # float32|bfloat16: hidden layers' compute; params, optimizer state, heads and ELBO sums stay float32.

  # ---- objective ----
  c.objective = "elbo"  # elbo | iwae (importance-weighted bound L_K).
  c.num_samples = 1  # M Monte Carlo samples per example (K for iwae).
  c.analytic_kl = True  # elbo: closed-form KL (eq 3) or Monte Carlo KL (eq 1).

  # ---- optimization ----
  c.batch_size = 100  # global batch, split over all devices.
  c.num_train_steps = 3000  # optimizer steps.
  c.learning_rate = 1e-3  # peak Adam learning rate.
  c.lr_schedule = "constant"  # constant | cosine | warmup_cosine.
  c.warmup_steps = 0  # linear warm-up steps for warmup_cosine.
  c.grad_clip_norm = 0.0  # clip the global gradient norm; 0 disables.
  c.adam_b1 = 0.9  # Adam β1.
  c.adam_b2 = 0.999  # Adam β2.
  c.nan_policy = "stop"  # stop: exit naming the step | skip: drop that update.

  # ---- evaluation, logging, checkpoints ----
  c.eval_batch_size = 100  # examples per evaluation batch (device count must divide it).
  c.eval_every_steps = 1000  # evaluate on the test split this often.
  c.eval_iwae_samples = 100  # K of the importance-weighted NLL during training.
  c.final_iwae_samples = 5000  # K of the final importance-weighted NLL estimate.
  c.iwae_chunk_size = 10  # samples per chunk: memory flat in K and the least of the chunks tried; time per sample ties the fastest at K = 5000 (experiments/bench_iwae.py).
  c.log_every_steps = 100  # progress line and train metrics.
  c.checkpoint_every_steps = 1000  # save a checkpoint this often (and at the end).
  c.keep_checkpoints = 3  # how many recent checkpoints to keep.
  c.num_image_examples = 16  # images per PNG grid (reconstructions, samples).
  return c


def sibling_config(this_file, name):
  """The config module `name`.py in the folder of `this_file`, by path.

  Config files build on each other (configs/binarized_mnist.py on
  configs/mnist.py) through this rather than `from configs import mnist`,
  so a config file works from any working directory and `configs` need not
  be an installed package (a top-level `configs` would collide with other
  projects' in site-packages).

  Args:
    this_file: the calling config file's `__file__`.
    name: the sibling's file name without ".py".

  Returns:
    the loaded module; call its `get_config()`.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)),
                      name + ".py")
  spec = importlib.util.spec_from_file_location(f"vae_jax_config_{name}",
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def presets(config_string, allowed):
  """The presets named in a parameter string "a,b", checked against allowed.

  Raises:
    ValueError: one line naming unknown presets.
  """
  named = [p for p in (config_string or "").split(",") if p]
  unknown = sorted(set(named) - set(allowed))
  if unknown:
    raise ValueError(f"unknown preset(s) {unknown}; choose from {allowed}")
  return named


def apply_overrides(config, config_string):
  """Applies a config parameter string "field=value,field2=value2".

  It lets `--config=configs/celeba.py:sigma_dec=0.1,latent_dim=64` select a
  variant; values are parsed to the type of the field they replace.

  Raises:
    ValueError: one line naming an unknown field or an unparsable value.
  """
  if not config_string:
    return config
  for item in config_string.split(","):
    if "=" not in item:
      raise ValueError(f"config parameter {item!r} is not of the form field=value")
    name, text = (s.strip() for s in item.split("=", 1))
    node, leaf = config, name
    while "." in leaf:
      head, leaf = leaf.split(".", 1)
      node = node[head]
    if leaf not in node:
      raise ValueError(f"config parameter {name!r} is not a config field")
    node[leaf] = _parse_like(node[leaf], text, name)
  return config


def _parse_like(current, text, name):
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false"):
        raise ValueError
      return text.lower() == "true"
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, tuple):
      return tuple(int(v) for v in text.strip("()").split(":") if v)
  except ValueError:
    raise ValueError(f"config parameter {name}={text!r} does not parse as "
                     f"{type(current).__name__}") from None
  return text
