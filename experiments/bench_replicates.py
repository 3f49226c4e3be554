"""Batched replicates vs a Python loop: R gradient estimates of an MNIST VAE.

    python -m experiments.bench_replicates [--num_replicates=1000 ...]

Times R independent estimates of the full gradient (encoder and decoder) of
an MNIST-sized MLP VAE (784-200-200-50, Bernoulli decoder) on one batch,
reduced to per-parameter mean and variance, two ways in the same process:

  batched  `estimators.replicate_moments`: one compiled program, vmap over
           `chunk_size` PRNG keys inside a `lax.scan` over chunks (timed
           for each of --chunk_sizes; 1 is a scan over single replicates);
  loop     a Python loop calling a jitted single-replicate step (estimate,
           update the running moments) once per key.

The loop is timed on `loop_replicates` keys and extrapolated linearly to R
(it does the same work per replicate; the output says so). Compilation is
excluded from both (each is called once first) and reported separately.
Each timing is the median of `repeats` runs. This is a script, not a test:
the machine is shared and noisy, so only the ratio measured side by side
means anything.

On CPU, vmapped chunks turn each replicate's weight-gradient outer product
into a batched matrix product, which XLA:CPU runs several times slower than
the same products one by one, so there the scan over single replicates
(chunk 1) is the fastest batched form; on a GPU, large chunks are.
"""

import functools
import math
import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import cli
from vae_jax.core import estimators as est_lib
from vae_jax.core import gradient_stats

_R = flags.DEFINE_integer("num_replicates", 1000, "R, replicates to time.")
_CHUNKS = flags.DEFINE_list(
    "chunk_sizes", ["1", "10", "100"],
    "Replicates per vmapped chunk of the batched run, each timed (1 = a "
    "scan over single replicates inside the compiled program, no vmap).")
_LOOP_R = flags.DEFINE_integer(
    "loop_replicates", 50, "Replicates timed in the Python loop, then "
    "extrapolated to num_replicates.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples in the batch.")
_M = flags.DEFINE_integer("num_samples", 1, "M (or K) per estimate.")
_ESTIMATOR = flags.DEFINE_string("estimator", "reparam_analytic_kl",
                                 "A vae_jax.core.estimators name.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs; the median is kept.")
_IDX_DIR = flags.DEFINE_string(
    "idx_dir", "../shared/data/mnist",
    "MNIST IDX folder; random binary pixels when it is absent.")


def _batch(batch_size, seed=0):
  """(x [B, 784] binarized MNIST test images or random bits, description)."""
  try:
    import ml_collections  # pylint: disable=g-import-not-at-top
    from vae_jax import data  # pylint: disable=g-import-not-at-top
    if not os.path.isdir(_IDX_DIR.value):
      raise FileNotFoundError(_IDX_DIR.value)
    dataset = data.get_dataset(ml_collections.ConfigDict(
        {"dataset": "mnist_idx", "idx_dir": _IDX_DIR.value}))
    x = np.stack([dataset.test[i] for i in range(batch_size)])
    x = jax.random.bernoulli(jax.random.PRNGKey(seed), x).astype(jnp.float32)
    return x, f"first {batch_size} MNIST test images, binarized"
  except (FileNotFoundError, ImportError, Exception) as e:  # pylint: disable=broad-except
    x = jax.random.bernoulli(jax.random.PRNGKey(seed), 0.5,
                             (batch_size, 784)).astype(jnp.float32)
    return x, f"random bits (MNIST unavailable: {type(e).__name__})"


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  from vae_jax.models.networks import make_networks  # pylint: disable=g-import-not-at-top
  from vae_jax.models.vae import VAE  # pylint: disable=g-import-not-at-top

  encoder, decoder = make_networks("mlp", 50, (784,), hidden=(200, 200))
  model = VAE(encoder, decoder, (784,), 50, "bernoulli")
  params = jax.jit(model.init)(jax.random.PRNGKey(0))
  x, data_note = _batch(_BATCH.value)
  num_params = sum(v.size for v in jax.tree.leaves(params))
  estimator = est_lib.get_estimator(_ESTIMATOR.value, model, _M.value)
  r, loop_r = _R.value, _LOOP_R.value
  chunks = [int(c) for c in _CHUNKS.value]
  key = jax.random.PRNGKey(1)

  # The loop does the same work per replicate as the batched program: one
  # estimate and a per-leaf Welford update of the running moments.
  @jax.jit
  def loop_step(p, k, moments):
    one = gradient_stats.tree_moments_from_samples(estimator(p, k, x), 1)
    return gradient_stats.combine_tree_moments(moments, one)

  keys = jax.random.split(key, r)

  def loop(n):
    moments = gradient_stats.empty_tree_moments(params)
    for i in range(n):
      moments = loop_step(params, keys[i], moments)
    phi, theta = est_lib.split_params(moments)
    return (gradient_stats.concat_tree_moments(phi),
            gradient_stats.concat_tree_moments(theta))

  start = time.perf_counter()
  jax.block_until_ready(loop(1))
  compile_loop = time.perf_counter() - start
  t_loop = _median_time(lambda: loop(loop_r), _REPEATS.value)
  loop_per_rep = t_loop / loop_r
  loop_extrapolated = loop_per_rep * r

  device = jax.devices()[0]
  print(f"device: {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPUs visible, jax {jax.__version__}")
  print(f"model: MLP VAE 784-200-200-50, Bernoulli decoder, {num_params:,} "
        f"parameters; batch {_BATCH.value} ({data_note}); estimator "
        f"{_ESTIMATOR.value}, M = {_M.value}; R = {r} replicates, reduced "
        f"to per-parameter mean and variance")
  print(f"loop: Python loop over a jitted single-replicate step (estimate, "
        f"update the running moments), measured on {loop_r} replicates: "
        f"{1e3 * loop_per_rep:.3f} ms/replicate, extrapolated to R = {r}: "
        f"{loop_extrapolated:.2f} s (compile {compile_loop:.1f} s, excluded)")

  best = None
  looped = loop(loop_r)
  for chunk in chunks:
    batched = jax.jit(functools.partial(
        est_lib.replicate_moments, estimator, x=x, num_replicates=r,
        chunk_size=chunk))
    start = time.perf_counter()
    jax.block_until_ready(batched(params, key))
    compile_s = time.perf_counter() - start
    t = _median_time(lambda: batched(params, key), _REPEATS.value)
    # Same keys, same replicates: the first loop_r agree with the loop's.
    check = jax.jit(functools.partial(
        est_lib.replicate_moments, estimator, x=x, num_replicates=loop_r,
        chunk_size=min(chunk, loop_r)))(params, key)
    agree = max(float(jnp.max(jnp.abs(a.mean - b.mean)) /
                      (float(jnp.max(jnp.abs(b.mean))) + 1e-30))
                for a, b in zip(check, looped))
    form = ("scan over single replicates" if chunk == 1 else
            f"vmap over {chunk} keys per chunk, scan over "
            f"{math.ceil(r / chunk)} chunks")
    print(f"batched, chunk {chunk} ({form}; one compiled program): "
          f"{t:.3f} s = {1e3 * t / r:.3f} ms/replicate; loop/batched = "
          f"{loop_extrapolated / t:.2f}x (compile {compile_s:.1f} s, "
          f"excluded; first {loop_r} means match the loop to {agree:.0e})")
    if best is None or t < best[1]:
      best = (chunk, t)
  print(f"speed-up of the best batched form (chunk {best[0]}) over the "
        f"Python loop, same run, median of {_REPEATS.value}: "
        f"{loop_extrapolated / best[1]:.2f}x (loop time extrapolated from "
        f"{loop_r} to {r} replicates)")


if __name__ == "__main__":
  app.run(main)
