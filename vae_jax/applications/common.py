"""What every application needs: a trained model back from its workdir, and
per-example quantities over a whole split.

The applications run on one device (the default one) with plain `jax.jit`;
they evaluate a few hundred to a few ten thousand examples, which needs no
mesh.
"""

import contextlib
import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vae_jax.training import checkpointing
from vae_jax import cli
from vae_jax import data as data_lib
from vae_jax.training import evaluate as eval_lib
from vae_jax.training import step as train_lib
from vae_jax.core.distributions import kl_diag_to_std_normal_per_dim
from vae_jax.core.objectives import reparam
from vae_jax.models.vae import VAE

LN2 = math.log(2.0)


class ApplicationError(RuntimeError):
  """A one-line, user-facing problem (wrong kind of run, missing labels)."""


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained VAE restored from a runner workdir.

  Attributes:
    model: the VAE. A run trained with sigma_dec_mode="optimal" comes back
      as "fixed" at its training-split σ*² (see `freeze_optimal_sigma`), so
      every per-example number depends on that example only.
    params: parameter pytree (numpy arrays).
    config: the run's resolved ConfigDict, as stored in the checkpoint.
    dataset: the run's Dataset, rebuilt from the config; None when loaded
      with `with_dataset=False` (prior samples, or the user's own inputs).
    meta: the checkpoint's meta JSON (standardization, event shape, data
      iterator).
    workdir: where it came from.
    event_shape: the shape of one example, e.g. (28, 28, 1) or (D,).
  """

  model: VAE
  params: Any
  config: Any
  dataset: data_lib.Dataset | None
  meta: dict
  workdir: str
  event_shape: tuple

  @property
  def num_dims(self):
    """D, observed dimensions per example."""
    return math.prod(self.event_shape)

  @property
  def standardization(self):
    """{"mean", "std"} [D] of tabular data (the training split's), or None."""
    stored = self.meta.get("standardization")
    if stored is None:
      return None
    return {k: np.asarray(v, np.float64) for k, v in stored.items()}

  @property
  def dequantization_nats(self):
    """Nats added to an NLL before bits/dim; None for continuous data."""
    return eval_lib.dequantization_nats(self.require_dataset(),
                                        self.config.transform,
                                        self.config.likelihood)

  def require_dataset(self):
    """The dataset, or ApplicationError when loaded without it."""
    if self.dataset is None:
      raise ApplicationError(
          f"this needs the data set {self.config.dataset!r}, which was not "
          "loaded")
    return self.dataset


def load_trained(workdir, with_dataset=True):
  """Restores the newest readable checkpoint of a runner workdir.

  Args:
    workdir: a runner workdir (or a sweep point's folder).
    with_dataset: rebuild the run's data set (evaluation, scores,
      reconstructions of test examples). False needs none of it: the
      example shape and standardization come from the checkpoint, for prior
      samples and the user's own inputs.

  Raises:
    checkpointing.CheckpointError: no (readable) checkpoint.
    data_lib.DataError: the dataset cannot be rebuilt.
    ApplicationError: the data changed since training (tabular file edited:
      its standardization no longer matches the stored one); or, without
      the data set, a checkpoint that does not record its example shape or
      a decoder whose σ_dec is set from the training split.
  """
  params, config, meta = checkpointing.restore_params(workdir)
  dataset = data_lib.get_dataset(config) if with_dataset else None
  return _trained(workdir, params, config, meta, dataset)


def load_trained_if_data(workdir):
  """`load_trained`, with the data set when it can be loaded, else without.

  The checkpoint is restored once either way.

  Returns:
    (Trained, None) with the data set, or (Trained without it, the one-line
    reason the data set could not be loaded).

  Raises:
    checkpointing.CheckpointError: no (readable) checkpoint.
    ApplicationError: loaded without the data set, what `load_trained`
      refuses (its message then also says why the data set failed).
  """
  params, config, meta = checkpointing.restore_params(workdir)
  try:
    return _trained(workdir, params, config, meta,
                    data_lib.get_dataset(config)), None
  except data_lib.DataError as e:
    skipped = str(e)
  try:
    return _trained(workdir, params, config, meta, None), skipped
  except ApplicationError as without:
    raise ApplicationError(f"{without}; loading it failed: {skipped}"
                           ) from None


def _trained(workdir, params, config, meta, dataset):
  """The `Trained` of a restored checkpoint, with `dataset` or None."""
  if dataset is not None:
    _check_standardization(dataset, meta.get("standardization"))
    event_shape = tuple(dataset.event_shape)
  else:
    if "event_shape" not in meta:
      raise ApplicationError(
          f"the checkpoint in {workdir} does not record its example shape "
          "(written before vae_jax stored it): this needs the data set "
          f"{config.dataset!r}")
    event_shape = tuple(int(n) for n in meta["event_shape"])
  model = train_lib.build_model(config, event_shape)
  params = jax.tree.map(jnp.asarray, params)
  if model.likelihood == "gaussian" and model.sigma_dec_mode == "optimal":
    if dataset is None:
      raise ApplicationError(
          "sigma_dec_mode 'optimal' sets σ_dec from the training split: this "
          f"needs the data set {config.dataset!r}")
    model, params = freeze_optimal_sigma(model, params, dataset, config)
  return Trained(model, params, config, dataset, meta, workdir, event_shape)


def _check_standardization(dataset, stored):
  """The rebuilt data must be scaled exactly as the model was trained on."""
  current = dataset.standardization
  if stored is None and current is None:
    return
  if stored is None or current is None or not all(
      np.allclose(stored[k], current[k], rtol=1e-6, atol=1e-9)
      for k in ("mean", "std")):
    raise ApplicationError(
        f"the data of {dataset.name!r} no longer matches the standardization "
        "stored with the checkpoint (was the file changed since training?)")


def freeze_optimal_sigma(model, params, dataset, config, seed=0):
  """Replaces the per-batch calibrated σ_dec by one σ*² from the train split.

  In training, "optimal" sets σ_dec² to the mean squared error of the batch
  (Rybkin et al. 2021), which makes an example's likelihood depend on the
  others in its batch (and on padding rows). Scoring and compressing single
  examples need a fixed decoder, so σ*² is set once to the MSE over the
  whole training split at one posterior sample per example.

  Returns:
    (model with sigma_dec_mode "fixed", params with log_sigma_dec []).
  """
  key = jax.random.key(seed)

  @jax.jit
  def squared_error(k, x):
    z = reparam(k, model.posterior(params, x))
    err = jnp.square(x - model.decode(params, z))
    return jnp.sum(err.reshape(x.shape[0], -1), axis=-1)

  total, count = 0.0, 0.0
  for i, batch in enumerate(data_lib.eval_batches(
      dataset, "train", config.eval_batch_size, config.transform,
      seed=config.seed)):
    sq = np.asarray(squared_error(jax.random.fold_in(key, i), batch.x))
    total += float(np.sum(sq * batch.mask))
    count += float(np.sum(batch.mask))
  sigma_sq = max(total / (count * dataset.dim), 1e-6)
  logging.info("sigma_dec_mode 'optimal': fixed σ_dec = %.4g (train MSE)",
               math.sqrt(sigma_sq))
  fixed = dataclasses.replace(model, sigma_dec_mode="fixed")
  params = dict(params, log_sigma_dec=jnp.asarray(0.5 * math.log(sigma_sq),
                                                  jnp.float32))
  return fixed, params


@contextlib.contextmanager
def one_line_errors():
  """For commands: a known problem exits with one `error:` line, code 2."""
  try:
    yield
  except (ApplicationError, checkpointing.CheckpointError,
          data_lib.DataError) as e:
    cli.fail(str(e))


def output_dir(workdir, application, override=None):
  """WORKDIR/<application>, or `override`; created if missing."""
  path = override or os.path.join(workdir, application)
  os.makedirs(path, exist_ok=True)
  return path


def map_split(fn, trained, split="test", batch_size=None, key=None):
  """Applies a per-example function to a whole split, batch by batch.

  Batches come from `eval_batches` (the run's evaluation transform and
  seed, so binarized test images are the ones the runner evaluated), padded
  to one shape so `fn` compiles once; padding rows are dropped.

  Args:
    fn: jittable (params, key, x [B, *event]) -> dict of [B, ...] arrays.
    trained: from `load_trained`.
    split: "train" or "test".
    batch_size: rows per batch; default config.eval_batch_size.
    key: PRNG key; batch i uses fold_in(key, i).

  Returns:
    dict of np.ndarray [N, ...] for the N examples of the split, in order.
  """
  config = trained.config
  batch_size = batch_size or config.eval_batch_size
  key = jax.random.key(0) if key is None else key
  jitted = jax.jit(fn)
  parts = {}
  for i, batch in enumerate(data_lib.eval_batches(
      trained.require_dataset(), split, batch_size, config.transform,
      seed=config.seed)):
    keep = np.asarray(batch.mask) > 0
    if not keep.any():
      continue
    out = jax.device_get(jitted(trained.params, jax.random.fold_in(key, i),
                                jnp.asarray(batch.x)))
    for name, value in out.items():
      parts.setdefault(name, []).append(np.asarray(value)[keep])
  return {name: np.concatenate(v) for name, v in parts.items()}


def split_inputs(trained, split="test", num=None):
  """The first `num` examples of a split as the model sees them.

  Returns:
    float32 [min(num, N), *event] (the run's evaluation transform applied).
  """
  n = len(trained.require_dataset().split(split))
  num = n if num is None else min(num, n)
  rows = []
  for batch in data_lib.eval_batches(trained.dataset, split,
                                     min(num, trained.config.eval_batch_size),
                                     trained.config.transform,
                                     seed=trained.config.seed):
    rows.append(batch.x[np.asarray(batch.mask) > 0])
    if sum(len(r) for r in rows) >= num:
      break
  return np.concatenate(rows)[:num]


def per_example_terms(model, num_elbo_samples, num_iwae_samples, chunk_size):
  """A per-batch function giving the bound terms of every example, in nats.

  Args:
    model: VAE.
    num_elbo_samples: M of the ELBO's Monte Carlo reconstruction term (the
      KL is analytic).
    num_iwae_samples: K of the importance-weighted bound L_K.
    chunk_size: samples per IWAE chunk (memory O(chunk_size)).

  Returns:
    fn(params, key, x [B, *event]) -> {"elbo", "reconstruction", "kl",
    "iwae": [B] nats, "kl_per_dim": [B, L] nats}, for `map_split`.
  """
  chunk = min(chunk_size, num_iwae_samples)
  if num_iwae_samples % chunk:
    raise ApplicationError(f"iwae_samples={num_iwae_samples} is not a "
                           f"multiple of the chunk size {chunk}")

  def fn(params, key, x):
    k_elbo, k_iwae = jax.random.split(key)
    posterior = model.posterior(params, x)
    terms = model.elbo(params, k_elbo, x, num_samples=num_elbo_samples)
    return {"elbo": terms.elbo, "reconstruction": terms.reconstruction,
            "kl": terms.kl,
            "iwae": model.iwae(params, k_iwae, x, num_iwae_samples, chunk),
            "kl_per_dim": kl_diag_to_std_normal_per_dim(*posterior)}

  return fn


def write_csv(path, columns):
  """Writes equal-length columns {name: [N]} as a CSV with a header row."""
  names = list(columns)
  values = [np.asarray(columns[n]).reshape(-1) for n in names]
  lengths = {len(v) for v in values}
  if len(lengths) != 1:
    raise ValueError(f"columns differ in length: {sorted(lengths)}")
  with open(path, "w") as f:
    f.write(",".join(names) + "\n")
    for row in zip(*values):
      f.write(",".join(_cell(v) for v in row) + "\n")


def _cell(value):
  if isinstance(value, (bool, np.bool_)):
    return str(int(value))
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  return repr(float(value))


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt

