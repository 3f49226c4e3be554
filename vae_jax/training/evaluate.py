"""Test-set evaluation: ELBO and its terms, L_K NLL, bits/dim, active units.

All averages are exact over the split: the last, short batch is padded and
its padding masked out.
"""

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vae_jax import data as data_lib
from vae_jax.training import sharding
from vae_jax.core.diagnostics import active_units, bits_per_dim
from vae_jax.core.distributions import kl_diag_to_std_normal_per_dim
from vae_jax.models.vae import DISCRETIZED_LIKELIHOODS


def dequantization_nats(dataset, transform, likelihood=None):
  """Nats to add to a NLL in nats before calling it bits/dim.

  0 for a Bernoulli or discretized likelihood on binary data, and for a
  discretized likelihood on the integer levels (transform 'none'): these
  are probability masses already. D ln(levels) for a continuous density on
  uniformly dequantized levels (the −log of the cell volume levels^−D, see
  `data.transforms.Dequantize`). A continuous density (Gaussian) on binary
  values is no mass and has no bits/dim.

  Args:
    dataset: the `Dataset` evaluated.
    transform: the config's training transform.
    likelihood: the config's likelihood; None is read as a continuous one.

  Returns:
    nats, or None when bits/dim is not meaningful: continuous tabular
    data, a discretized likelihood on anything but the integer levels, or
    a continuous density on binary data.
  """
  num_dims = math.prod(dataset.event_shape)
  if transform == "dynamic_binarize" or dataset.kind == "binary":
    is_mass = likelihood == "bernoulli" or likelihood in DISCRETIZED_LIKELIHOODS
    return 0.0 if is_mass else None
  if likelihood in DISCRETIZED_LIKELIHOODS:
    # A mass on the levels; on dequantized values it models nothing.
    return 0.0 if transform == "none" and dataset.levels else None
  if transform == "dequantize" and dataset.levels:
    return num_dims * math.log(dataset.levels)
  return None


def make_eval_fn(model, num_iwae_samples, chunk_size, mesh):
  """A jitted batch evaluation: per-example sums needed for exact averages.

  Returns:
    fn(params, key, x [B, *event], mask [B], sigma_sq=None) -> dict of [B]
    or [B, L] arrays; padded rows (mask 0) are returned too and dropped by
    the caller. sigma_sq: the fixed σ² an "optimal"-σ_dec model is scored
    with (see `evaluate`).
  """

  def fn(params, key, x, mask, sigma_sq=None):
    k_elbo, k_iwae = jax.random.split(key)
    posterior = model.posterior(params, x)
    terms = model.elbo(params, k_elbo, x, num_samples=1, mask=mask,
                       sigma_sq=sigma_sq)
    iwae = model.iwae(params, k_iwae, x, num_iwae_samples,
                      min(chunk_size, num_iwae_samples), mask=mask,
                      sigma_sq=sigma_sq)
    return {"elbo": terms.elbo, "reconstruction": terms.reconstruction,
            "kl": terms.kl, "iwae": iwae, "posterior_mean": posterior.mean,
            "kl_per_dim": kl_diag_to_std_normal_per_dim(*posterior)}

  data_sharding = sharding.batch_sharded(mesh)
  return jax.jit(fn, out_shardings=data_sharding)


def _local_rows(array):
  """This process's rows of a batch-sharded global array, in order."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start)
  return np.concatenate([np.asarray(s.data) for s in shards])


@functools.lru_cache(maxsize=16)
def _squared_error_fn(model, mesh):
  return jax.jit(model.squared_error,
                 out_shardings=sharding.batch_sharded(mesh))


def split_mse(model, params, dataset, config, key, split="train"):
  """Mean squared error per dimension over a split, at z ~ q(z|x).

  Exact average (padding masked), in squared data units. For an "optimal"
  σ_dec its value is the σ² that maximizes the split's reconstruction term
  (Rybkin et al. 2021).
  """
  mesh = sharding.make_mesh()
  fn = _squared_error_fn(model, mesh)
  total, count = 0.0, 0.0
  batches = data_lib.eval_batches(
      dataset, split, config.eval_batch_size // jax.process_count(),
      config.transform, seed=config.seed, shard_index=jax.process_index(),
      shard_count=jax.process_count())
  for i, batch in enumerate(batches):
    err = fn(params, jax.random.fold_in(key, i),
             sharding.global_batch(batch.x, mesh))
    mask = sharding.global_batch(batch.mask, mesh)
    total += float(jax.device_get(jnp.sum(err * mask)))
    count += float(jax.device_get(jnp.sum(mask)))
  return total / (count * math.prod(dataset.event_shape))


def evaluate(model, params, dataset, config, eval_fn, key, split="test"):
  """Exact averages over a split.

  An "optimal"-σ_dec model is scored with one σ² fixed beforehand from the
  training split (`split_mse`), not refitted on each test batch and sample:
  an example's score then depends on nothing else in its batch, and test
  numbers do not depend on the evaluation batch size.

  Returns:
    (scalars dict, kl_per_dim np.ndarray [L]). Scalars in nats per example:
    elbo, reconstruction, kl, nll_iwae (−L_K), their bits/dim where
    meaningful, active_units, and sigma_dec for a learned or optimal
    decoder scale.
  """
  mesh = sharding.make_mesh()
  sigma_sq = None
  if model.likelihood == "gaussian" and model.sigma_dec_mode == "optimal":
    sigma_sq = max(split_mse(model, params, dataset, config,
                             jax.random.fold_in(key, 2**31 - 1)), 1e-6)
  local_batch = config.eval_batch_size // jax.process_count()
  sums, count, means = {}, 0.0, []
  kl_dims = np.zeros((config.latent_dim,))
  batches = data_lib.eval_batches(
      dataset, split, local_batch, config.transform, seed=config.seed,
      shard_index=jax.process_index(), shard_count=jax.process_count())
  num_batches = math.ceil(len(dataset.split(split)) / config.eval_batch_size)
  start = last_log = time.time()
  for i, batch in enumerate(batches):
    if time.time() - last_log > 30:  # long L_K evaluations show progress
      elapsed = time.time() - start
      logging.info("evaluating %s: batch %d/%d, ETA %.0f s", split, i,
                   num_batches, elapsed / max(i, 1) * (num_batches - i))
      last_log = time.time()
    mask = sharding.global_batch(batch.mask, mesh)
    out = eval_fn(params, jax.random.fold_in(key, i),
                  sharding.global_batch(batch.x, mesh), mask,
                  None if sigma_sq is None else jnp.float32(sigma_sq))
    # Masked sums on device; one transfer brings back scalars and [L] sums.
    sums_here = {name: jnp.sum(out[name] * mask)
                 for name in ("elbo", "reconstruction", "kl", "iwae")}
    sums_here["kl_per_dim"] = jnp.sum(out["kl_per_dim"] * mask[:, None], 0)
    sums_here["count"] = jnp.sum(mask)
    sums_here = jax.device_get(sums_here)
    kl_dims += np.asarray(sums_here.pop("kl_per_dim"), np.float64)
    count += float(sums_here.pop("count"))
    for name, value in sums_here.items():
      sums[name] = sums.get(name, 0.0) + float(value)
    # Active units use this process's rows (all rows on one process).
    means.append(_local_rows(out["posterior_mean"])[np.asarray(batch.mask) > 0])
  result = {k: v / count for k, v in sums.items()}
  result["nll_iwae"] = -result.pop("iwae")
  deq = dequantization_nats(dataset, config.transform, config.likelihood)
  if deq is not None:
    num_dims = math.prod(dataset.event_shape)
    result["bits_per_dim_elbo"] = float(bits_per_dim(-result["elbo"],
                                                     num_dims, deq))
    result["bits_per_dim_iwae"] = float(bits_per_dim(result["nll_iwae"],
                                                     num_dims, deq))
  result["active_units"] = int(active_units(np.concatenate(means)))
  log_sigma = model.log_sigma_dec(params)
  if log_sigma is not None and config.sigma_dec_mode != "fixed":
    result["sigma_dec"] = float(jnp.mean(jnp.exp(log_sigma)))
  if sigma_sq is not None:
    result["sigma_dec"] = math.sqrt(sigma_sq)
  result["num_examples"] = int(count)
  return result, kl_dims / count
