"""Cost of L_K and of the M-sample ELBO against the number of samples.

    python -m experiments.bench_iwae [--rounds=3 --batch_size=100]

MNIST-sized MLP VAE (784-200-200-50 tanh, Bernoulli), one evaluation batch,
forward values only, everything jitted; times are medians over interleaved
rounds (process CPU and wall), ratios the median of per-round ratios with
their range [min, max].

1. L_K (`VAE.iwae`, chunked by `iwae_chunk_size`): for K in --ks and each
   chunk size, CPU time per sample (ms per K) and XLA's temporary memory of
   the compiled program (`memory_analysis().temp_size_in_bytes`, MB). Flat
   in K for a chunk size means the chunking works. The default chunk (10)
   is the one with the least memory among those whose time per sample at
   the largest K ties the fastest within the spread (README has the run).
2. M-sample ELBO (`objectives.elbo`): time against t_enc + M·t_dec, where
   t_enc is the encoder and the KL and t_dec one decoder pass with its
   log-likelihood on one sample per example; decoded all at once
   (chunk None) and in chunks. Target: ratio <= 1.1 up to M = 64.
"""

import functools
import statistics

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import timing
from experiments.timing import interleaved
from vae_jax import cli
from vae_jax.core import distributions
from vae_jax.core import objectives
from vae_jax.models.networks import make_networks
from vae_jax.models.vae import VAE

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Examples (the runner's "
                              "eval_batch_size).")
_KS = flags.DEFINE_list("ks", ["50", "500", "5000"], "K values of part 1.")
_CHUNKS = flags.DEFINE_list("chunks", ["10", "50", "100", "200", "500"],
                            "iwae chunk sizes of part 1.")
_MS = flags.DEFINE_list("ms", ["1", "8", "64"], "M values of part 2.")
_ELBO_CHUNKS = flags.DEFINE_list("elbo_chunks", ["none", "8", "16"],
                                 "Decoder chunks of part 2 (none = all M).")


def _spread(values):
  v = np.asarray(values)
  return f"{np.median(v):.3f} [{v.min():.3f}, {v.max():.3f}]"


def iwae_part(model, params, x, key, rounds):
  ks = [int(k) for k in _KS.value]
  chunks = [int(c) for c in _CHUNKS.value]
  fns, memory = {}, {}
  for k in ks:
    for c in chunks:
      if c > k:
        continue
      f = jax.jit(functools.partial(model.iwae, num_samples=k, chunk_size=c))
      compiled = f.lower(params, key, x).compile()
      memory[(k, c)] = compiled.memory_analysis().temp_size_in_bytes / 2**20
      fns[(k, c)] = functools.partial(compiled, params, key, x)
  times = interleaved(fns, rounds)
  print(f"\n1. L_K, batch {x.shape[0]}: CPU ms per sample (median [min, max] "
        f"over {rounds} rounds) and XLA temporary memory")
  print("   K      " + "".join(f"chunk {c:<22d}" for c in chunks))
  for k in ks:
    row = []
    for c in chunks:
      if (k, c) not in fns:
        row.append(" " * 28)
        continue
      per = [1e3 * t / k for t in times[(k, c)][0]]
      row.append(f"{_spread(per):>17s} {memory[(k, c)]:6.1f} MB ")
    print(f"   {k:<6d} " + "".join(row))
  big = max(ks)
  best = min((c for c in chunks if (big, c) in fns),
             key=lambda c: statistics.median(times[(big, c)][0]))
  print(f"   fastest chunk at K = {big}: {best} "
        f"({1e3 * statistics.median(times[(big, best)][0]) / big:.3f} ms "
        f"per sample, {memory[(big, best)]:.1f} MB)")


def elbo_part(model, params, x, key, rounds):
  ms = [int(m) for m in _MS.value]
  chunks = [None if c == "none" else int(c) for c in _ELBO_CHUNKS.value]

  @jax.jit
  def enc(params, x):
    q = model.posterior(params, x)
    return q.mean, distributions.kl_diag_to_std_normal(q.mean, q.log_var)

  @jax.jit
  def dec(params, z):
    return model.log_likelihood_fn(params, x)(z)

  z = jax.random.normal(key, (x.shape[0], model.latent_dim))
  fns = {"enc": functools.partial(enc, params, x),
         "dec": functools.partial(dec, params, z)}
  for m in ms:
    for c in chunks:
      if c is not None and c >= m:
        continue
      f = jax.jit(lambda p, k, m=m, c=c: objectives.elbo(
          k, model.posterior(p, x), model.log_likelihood_fn(p, x), m,
          chunk_size=c).elbo)
      fns[(m, c)] = functools.partial(f, params, key)
  times = interleaved(fns, rounds, calls=10)
  print(f"\n2. M-sample ELBO, batch {x.shape[0]}: t / (t_enc + M t_dec) per "
        f"round, median [min, max], process CPU (target <= 1.1)")
  t_enc = np.asarray(times["enc"][0])
  t_dec = np.asarray(times["dec"][0])
  print(f"   t_enc {1e3 * np.median(t_enc):.3f} ms, t_dec "
        f"{1e3 * np.median(t_dec):.3f} ms")
  for m in ms:
    for c in chunks:
      if (m, c) not in fns:
        continue
      t = np.asarray(times[(m, c)][0])
      print(f"   M = {m:3d}, chunk {str(c):5s}: {1e3 * np.median(t):8.3f} ms,"
            f" ratio {_spread(t / (t_enc + m * t_dec))}")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  print(timing.device_line())
  encoder, decoder = make_networks("mlp", 50, (784,), hidden=(200, 200))
  model = VAE(encoder, decoder, (784,), 50, "bernoulli")
  params = jax.jit(model.init)(jax.random.key(0))
  x = jax.random.bernoulli(jax.random.key(1), 0.13,
                           (_BATCH.value, 784)).astype(jnp.float32)
  key = jax.random.key(2)
  elbo_part(model, params, x, key, max(_ROUNDS.value, 5))
  iwae_part(model, params, x, key, _ROUNDS.value)


if __name__ == "__main__":
  app.run(main)
