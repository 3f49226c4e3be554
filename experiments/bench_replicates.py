"""R gradient replicates: batched forms against a Python loop, side by side.

    python -m experiments.bench_replicates [--num_replicates=1000 ...]

Two workloads, each reduced to per-parameter mean and variance
(`estimators.replicate_moments`), timed in interleaved rounds (every
contender once per round); printed: the median over rounds of process CPU
and wall seconds, and ratios as the median of per-round ratios with their
range [min, max]. Compilation is excluded (each contender runs once first).

  1. compute-bound: the full gradient of an MNIST-sized MLP VAE
     (784-200-200-50, Bernoulli decoder) on one batch of 32, R replicates:
       loop      a Python loop over a jitted single-replicate step
                 (estimate, update the running moments), timed on
                 `loop_replicates` keys and scaled to R (same work per
                 replicate);
       chunk c   one compiled program: vmap over c keys per chunk, lax.scan
                 over chunks (c = 1: a scan over single replicates);
       matmul    the matrix products of R single-replicate gradients
                 (forward, weight and input gradients, batch 32) and nothing
                 else: the floor, so matmul/chunk is the fraction of the
                 matrix-product limit a batched form reaches.
  2. dispatch-bound: the §3 linear-Gaussian model at one data point (d = 4),
     R replicates: the same Python loop against one vmap over all R keys.

What bounds the batched forms. Every replicate's gradient is a handful of
small matrix products plus elementwise work; with vmap the weight-gradient
products become batched [c, in, 32] @ [c, 32, out] products. Those were
blamed for vmapped chunks being slower than the scan; the profile showed
instead XLA:CPU's reduction over the leading axis of the [c, P] chunk of
gradients (≈ 0.2 GB/s). The moments are now reduced by pairwise halving of
rows (`gradient_stats.sum_rows`), and chunk 10 is the fastest form. What
is left is the matrix products themselves: the "fraction of the matmul
floor" line is the share of the time the products alone would take.
"""

import functools
import os
import statistics

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import timing
from experiments.timing import interleaved
from vae_jax import cli
from vae_jax.core import estimators as est_lib
from vae_jax.core import gradient_stats
from vae_jax.core import linear_gaussian

_R = flags.DEFINE_integer("num_replicates", 1000, "R, replicates to time.")
_CHUNKS = flags.DEFINE_list(
    "chunk_sizes", ["1", "10", "100"],
    "Replicates per vmapped chunk of the batched run, each timed (1 = a "
    "scan over single replicates inside the compiled program, no vmap).")
_LOOP_R = flags.DEFINE_integer(
    "loop_replicates", 50, "Replicates timed in the Python loop of the VAE "
    "workload, then scaled to num_replicates.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples in the batch.")
_M = flags.DEFINE_integer("num_samples", 1, "M (or K) per estimate.")
_ESTIMATOR = flags.DEFINE_string("estimator", "reparam_analytic_kl",
                                 "A vae_jax.core.estimators name.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds.")
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
  except Exception as e:  # pylint: disable=broad-except
    x = jax.random.bernoulli(jax.random.PRNGKey(seed), 0.5,
                             (batch_size, 784)).astype(jnp.float32)
    return x, f"random bits (MNIST unavailable: {type(e).__name__})"


def ratio(times, a, b, scale_a=1.0, scale_b=1.0):
  """'med [min, max]' of per-round (a·scale_a)/(b·scale_b), CPU and wall."""
  parts = []
  for i, clock in enumerate(("cpu", "wall")):
    r = (np.asarray(times[a][i]) * scale_a) / (np.asarray(times[b][i]) *
                                               scale_b)
    parts.append(f"{clock} {np.median(r):.2f}x [{r.min():.2f}, {r.max():.2f}]")
  return "; ".join(parts)


def _median(times, name, scale=1.0):
  return tuple(statistics.median(t) * scale for t in times[name])


def _loop_fn(estimator, params, x, keys, n):
  """A Python loop over a jitted single-replicate step, n replicates."""

  @jax.jit
  def loop_step(p, k, moments):
    one = gradient_stats.tree_moments_from_samples(estimator(p, k, x), 1)
    return gradient_stats.combine_tree_moments(moments, one)

  def loop():
    moments = gradient_stats.empty_tree_moments(params)
    for i in range(n):
      moments = loop_step(params, keys[i], moments)
    phi, theta = est_lib.split_params(moments)
    return (gradient_stats.concat_tree_moments(phi),
            gradient_stats.concat_tree_moments(theta))

  return loop


def _matmul_floor(batch, hidden, latent, dims, replicates):
  """A jitted function doing the matrix products of `replicates` single
  gradients of the MLP VAE (forward, weight gradient, input gradient except
  the first layer's), one replicate after another in a scan; and the
  FLOPs of one replicate."""
  operands, flops = timing.matmul_floor_operands(
      batch, timing.mlp_vae_layer_shapes(dims, hidden, latent))

  @jax.jit
  def f(xs, ws, dys):
    def body(carry, _):
      # The carry enters every product so no replicate can be skipped.
      xs_c = [x + carry for x in xs]
      total = 0.0
      for n, (x, w, dy) in enumerate(zip(xs_c, ws, dys)):
        total += jnp.sum(x @ w) + jnp.sum(x.T @ dy)
        if n:
          total += jnp.sum(dy @ w.T)
      return carry + 1e-30 * total, None
    return jax.lax.scan(body, jnp.zeros(()), None, length=replicates)[0]

  return (lambda: f(*operands)), flops


def vae_workload(r, chunks, rounds):
  from vae_jax.models.networks import make_networks  # pylint: disable=g-import-not-at-top
  from vae_jax.models.vae import VAE  # pylint: disable=g-import-not-at-top

  encoder, decoder = make_networks("mlp", 50, (784,), hidden=(200, 200))
  model = VAE(encoder, decoder, (784,), 50, "bernoulli")
  params = jax.jit(model.init)(jax.random.PRNGKey(0))
  x, data_note = _batch(_BATCH.value)
  num_params = sum(v.size for v in jax.tree.leaves(params))
  estimator = est_lib.get_estimator(_ESTIMATOR.value, model, _M.value)
  key = jax.random.PRNGKey(1)
  keys = jax.random.split(key, r)
  loop_r = min(_LOOP_R.value, r)
  fns = {"loop": _loop_fn(estimator, params, x, keys, loop_r)}
  for chunk in chunks:
    batched = jax.jit(functools.partial(
        est_lib.replicate_moments, estimator, x=x, num_replicates=r,
        chunk_size=chunk))
    fns[f"chunk {chunk}"] = functools.partial(batched, params, key)
  floor, flops = _matmul_floor(_BATCH.value, (200, 200), 50, 784, r)
  fns["matmul"] = floor
  print(f"\n1. compute-bound: MLP VAE 784-200-200-50, Bernoulli decoder, "
        f"{num_params:,} parameters; batch {_BATCH.value} ({data_note}); "
        f"estimator {_ESTIMATOR.value}, M = {_M.value}; R = {r}; "
        f"{rounds} interleaved rounds, medians")
  times = interleaved(fns, rounds)
  scale = {k: (r / loop_r if k == "loop" else 1.0) for k in fns}
  for k in fns:
    cpu, wall = _median(times, k, scale[k])
    note = (f" (measured on {loop_r} replicates, scaled to {r})"
            if k == "loop" else "")
    print(f"  {k:10s}: cpu {cpu:7.3f} s, wall {wall:7.3f} s = "
          f"{1e3 * cpu / r:.3f} ms CPU per replicate{note}")
  print(f"  matmul floor: {flops / 1e6:.1f} MFLOP per replicate, "
        f"{flops * r / _median(times, 'matmul')[0] / 1e9:.1f} GFLOP/s")
  first = f"chunk {chunks[0]}"
  first_label = "scan (chunk 1)" if chunks[0] == 1 else first
  for chunk in chunks:
    name = f"chunk {chunk}"
    print(f"  {name:10s}: loop/batched {ratio(times, 'loop', name, scale['loop'])}"
          f"; {first_label}/batched {ratio(times, first, name)}"
          f"; fraction of the matmul floor {ratio(times, 'matmul', name)}")
  # Same keys, same replicates: the first loop_r agree with the loop's.
  check = jax.jit(functools.partial(
      est_lib.replicate_moments, estimator, x=x, num_replicates=loop_r,
      chunk_size=min(max(chunks), loop_r)))(params, key)
  looped = fns["loop"]()
  agree = max(float(jnp.max(jnp.abs(a.mean - b.mean)) /
                    (float(jnp.max(jnp.abs(b.mean))) + 1e-30))
              for a, b in zip(check, looped))
  print(f"  first {loop_r} replicate means, batched vs loop: max relative "
        f"difference {agree:.0e}")


def linear_workload(r, rounds):
  d = 4
  enc, dec = linear_gaussian.init_params(jax.random.PRNGKey(0), d)
  params = est_lib.linear_gaussian_params(enc, dec)
  x = linear_gaussian.sample_data(jax.random.PRNGKey(1), jnp.ones(d), 2.0, 1)
  estimator = est_lib.get_estimator(_ESTIMATOR.value,
                                    est_lib.LinearGaussianModel(), _M.value)
  key = jax.random.PRNGKey(2)
  keys = jax.random.split(key, r)
  fns = {"loop": _loop_fn(estimator, params, x, keys, r),
         "vmap": functools.partial(jax.jit(functools.partial(
             est_lib.replicate_moments, estimator, x=x, num_replicates=r,
             chunk_size=r)), params, key)}
  times = interleaved(fns, rounds)
  print(f"\n2. dispatch-bound: §3 linear-Gaussian model, d = {d}, one data "
        f"point, {_ESTIMATOR.value}, R = {r}; {rounds} interleaved rounds")
  for k in fns:
    cpu, wall = _median(times, k)
    print(f"  {k:10s}: cpu {1e3 * cpu:8.2f} ms, wall {1e3 * wall:8.2f} ms")
  print(f"  loop/vmap (target >= 20): {ratio(times, 'loop', 'vmap')}")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  print(timing.device_line())
  chunks = [int(c) for c in _CHUNKS.value]
  linear_workload(_R.value, max(_ROUNDS.value, 5))
  vae_workload(_R.value, chunks, _ROUNDS.value)


if __name__ == "__main__":
  app.run(main)
