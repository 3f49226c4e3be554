"""Checks a whole runner config before any work, with one-line errors.

Validation runs before the workdir is created or touched, so a bad value
never damages a previous run's files.
"""

import math

import ml_collections
import numpy as np

from vae_jax import cli
from vae_jax import config_base
from vae_jax.models.networks import ACTIVATIONS, COMPUTE_DTYPES
from vae_jax.models.vae import (DISCRETIZED_LIKELIHOODS, LIKELIHOODS,
                                SIGMA_DEC_MODES)

DATASETS = ("digits", "mnist", "binarized_mnist", "mnist_idx", "celeb_a",
            "cifar10", "linear_gaussian", "breast_cancer", "tabular")
IMAGE_DATASETS = ("digits", "mnist", "binarized_mnist", "mnist_idx", "celeb_a",
                  "cifar10")
# Integer intensity levels of the 8-bit image datasets (digits: 0..16).
LEVELS = {"digits": 17, "mnist": 256, "mnist_idx": 256, "celeb_a": 256,
          "cifar10": 256}
RGB_DATASETS = ("celeb_a", "cifar10")
ARCHITECTURES = ("mlp", "conv", "linear")
OBJECTIVES = ("elbo", "iwae")
TRANSFORMS = ("none", "dynamic_binarize", "dequantize")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")
NAN_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
  """A config value that cannot work; the message is one line for the user."""


def _choice(config, name, allowed):
  value = config[name]
  if value not in allowed:
    raise ConfigError(f"config.{name}={value!r} is not one of "
                      f"{', '.join(allowed)}")


def _positive(config, name, allow_zero=False):
  value = config[name]
  ok = value >= 0 if allow_zero else value > 0
  if not ok:
    bound = ">= 0" if allow_zero else "> 0"
    raise ConfigError(f"config.{name}={value!r} must be {bound}")


def validate(config, num_devices=1, num_processes=1):
  """Raises ConfigError (one line) for the first value that cannot work.

  Args:
    config: the runner's ConfigDict (fields of vae_jax/config_base.py).
    num_devices: global device count; batch sizes must be multiples of it.
    num_processes: JAX process count; each reads an equal share of a batch.
  """
  _check_fields(config)
  _check_finite_numbers(config)
  _choice(config, "dataset", DATASETS)
  _choice(config, "architecture", ARCHITECTURES)
  _choice(config, "likelihood", LIKELIHOODS)
  _choice(config, "sigma_dec_mode", SIGMA_DEC_MODES)
  _choice(config, "objective", OBJECTIVES)
  _choice(config, "transform", TRANSFORMS)
  _choice(config, "lr_schedule", LR_SCHEDULES)
  _choice(config, "nan_policy", NAN_POLICIES)
  _choice(config, "activation", tuple(ACTIVATIONS))
  _choice(config, "compute_dtype", tuple(COMPUTE_DTYPES))
  for name in ("latent_dim", "sigma_dec", "num_samples", "batch_size",
               "eval_batch_size", "learning_rate", "eval_every_steps",
               "eval_iwae_samples", "final_iwae_samples", "iwae_chunk_size",
               "log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    _positive(config, name)
  for name in ("num_train_steps", "warmup_steps", "grad_clip_norm",
               "num_image_examples"):
    _positive(config, name, allow_zero=True)
  for name in ("num_mixtures",):
    _positive(config, name)
  for name in ("seed", "data_seed"):
    _positive(config, name, allow_zero=True)
  for name in ("hidden", "channels"):
    widths = tuple(config[name])
    if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
      raise ConfigError(f"config.{name}={widths!r} must be a non-empty "
                        f"tuple of positive integers")
  if not 0.0 < config.test_fraction < 1.0:
    raise ConfigError(f"config.test_fraction={config.test_fraction!r} must "
                      f"lie in (0, 1)")
  if config.num_levels < 2:
    raise ConfigError(f"config.num_levels={config.num_levels} must be >= 2")
  for name in ("adam_b1", "adam_b2"):
    # Adam runs in float32: a value that rounds to 1 there divides by
    # 1 - b^t = 0 in the bias correction.
    if not 0.0 <= config[name] < 1.0 or np.float32(config[name]) == 1.0:
      raise ConfigError(f"config.{name}={config[name]!r} must lie in [0, 1) "
                        "and stay below 1 in float32 (at most 1 - 2^-24)")
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % num_devices:
      raise ConfigError(f"config.{name}={config[name]} is not divisible by "
                        f"the {num_devices} devices")
    if config[name] % num_processes:
      raise ConfigError(f"config.{name}={config[name]} is not divisible by "
                        f"the {num_processes} processes")
  for name in ("eval_iwae_samples", "final_iwae_samples"):
    k, chunk = config[name], config.iwae_chunk_size
    if k > chunk and k % chunk:
      raise ConfigError(f"config.{name}={k} is not a multiple of "
                        f"config.iwae_chunk_size={chunk}")
  _check_likelihood_fits_data(config)
  if config.transform == "dequantize" and config.likelihood == "bernoulli":
    raise ConfigError("config.likelihood='bernoulli' needs binary data: use "
                      "transform='dynamic_binarize', not 'dequantize'")
  if config.architecture == "conv" and config.dataset not in (
      "celeb_a", "cifar10"):
    raise ConfigError(f"config.architecture='conv' needs an RGB image "
                      f"dataset (celeb_a, cifar10), not {config.dataset!r}")
  if config.architecture == "linear":
    if config.dataset != "linear_gaussian":
      raise ConfigError("config.architecture='linear' is the §3 model: use "
                        "dataset='linear_gaussian'")
    if config.latent_dim != config.linear_gaussian.dim:
      raise ConfigError(f"config.latent_dim={config.latent_dim} must equal "
                        f"config.linear_gaussian.dim="
                        f"{config.linear_gaussian.dim} for the §3 model")
  if config.transform != "none" and config.dataset not in IMAGE_DATASETS:
    raise ConfigError(f"config.transform={config.transform!r} applies to "
                      f"8-bit images; use 'none' for {config.dataset!r}")
  if config.dataset == "celeb_a":
    _positive(config, "image_size")
    if config.crop_size < config.image_size:
      raise ConfigError(f"config.crop_size={config.crop_size} is smaller "
                        f"than config.image_size={config.image_size}")
  if config.architecture == "conv":
    side = config.image_size if config.dataset == "celeb_a" else 32
    if side % (2 ** len(config.channels)):
      raise ConfigError(f"image side {side} is not divisible by "
                        f"2**len(config.channels)={2 ** len(config.channels)}")
  if config.dataset == "tabular" and not config.tabular_path:
    raise ConfigError("config.dataset='tabular' needs config.tabular_path "
                      "(a CSV or .npy file of features)")
  if config.dataset == "linear_gaussian" and config.linear_gaussian.sigma <= 0:
    raise ConfigError(f"config.linear_gaussian.sigma="
                      f"{config.linear_gaussian.sigma} must be > 0")


def _check_fields(config):
  """A config file's fields are the runner's (vae_jax/config_base.py): a
  misspelt field would otherwise be ignored and its default trained."""
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"the config must be an ml_collections.ConfigDict "
                      f"(start from vae_jax.config_base.base_config()), got "
                      f"{type(config).__name__}")
  known = cli.config_fields(config_base.base_config())
  given = cli.config_fields(config)
  extra = [f for f in given if f not in known]
  if extra:
    hint = cli.suggest(extra[0], list(known))
    raise ConfigError(
        f"config.{extra[0]} is not a field of the runner's config"
        + (f"; did you mean config.{hint}?" if hint else
           " (vae_jax/config_base.py lists them)"))
  missing = [f for f in known if f not in given]
  if missing:
    raise ConfigError(f"the config lacks {', '.join(missing[:5])}"
                      f"{' ...' if len(missing) > 5 else ''}: start it from "
                      f"vae_jax.config_base.base_config()")


def _check_finite_numbers(config):
  """inf or nan in a float field, nested ones included, fails at step 1
  without naming the field."""
  for name, value in cli.config_fields(config).items():
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"config.{name}={value!r} must be finite")


def _check_likelihood_fits_data(config):
  """Discretized likelihoods are masses over the data's integer levels."""
  if config.likelihood in DISCRETIZED_LIKELIHOODS:
    if config.dataset not in LEVELS:
      raise ConfigError(f"config.likelihood={config.likelihood!r} needs "
                        f"8-bit image data ({', '.join(LEVELS)}), not "
                        f"{config.dataset!r}")
    if config.transform != "none":
      raise ConfigError(f"config.likelihood={config.likelihood!r} models "
                        f"the integer pixel levels: use transform='none', "
                        f"not {config.transform!r}")
    if config.num_levels != LEVELS[config.dataset]:
      raise ConfigError(f"config.num_levels={config.num_levels} does not "
                        f"match {config.dataset!r}, which has "
                        f"{LEVELS[config.dataset]} levels")
  if (config.likelihood == "discretized_gaussian" and
      config.sigma_dec_mode == "optimal"):
    raise ConfigError("config.sigma_dec_mode='optimal' is for the "
                      "continuous gaussian likelihood only")
  if (config.sigma_dec_mode == "learned_per_channel" and
      config.dataset not in RGB_DATASETS):
    raise ConfigError(f"config.sigma_dec_mode='learned_per_channel' needs "
                      f"RGB images ({', '.join(RGB_DATASETS)}), not "
                      f"{config.dataset!r}")
