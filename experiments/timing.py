"""What the benchmarks share: interleaved timing rounds, a device line, and
the matrix products that bound an MLP VAE's step (its matmul floor).

Benchmarks time alternatives in interleaved rounds (the machine is shared)
and report medians with their spread, never the best round.
"""

import os
import time

import jax
import numpy as np


def interleaved(fns, rounds, calls=1):
  """Times each fn() per round, the alternatives alternating.

  Every fn is called once first (compilation, warm-up); then each round
  runs `calls` calls of every fn in turn, in an order shuffled afresh each
  round (from a fixed seed, so reruns use the same orders): what one fn
  leaves behind (caches, clock speed, the other tenants' load) does not
  always fall on the same next one, nor does one fn always run first.

  Returns:
    {name: ([process-CPU s], [wall s])} per call, one entry per round.
  """
  out = {k: ([], []) for k in fns}
  for fn in fns.values():
    jax.block_until_ready(fn())
  items = list(fns.items())
  orders = np.random.default_rng(0)
  for _ in range(rounds):
    for i in orders.permutation(len(items)):
      name, fn = items[i]
      c0, w0 = time.process_time(), time.perf_counter()
      for _ in range(calls):
        res = fn()
      jax.block_until_ready(res)
      out[name][0].append((time.process_time() - c0) / calls)
      out[name][1].append((time.perf_counter() - w0) / calls)
  return out


def device_line():
  """'device: cpu (cpu) x1, 2 CPUs visible, jax 0.10.2' for a header."""
  device = jax.devices()[0]
  return (f"device: {device.platform} ({device.device_kind}) x"
          f"{jax.device_count()}, {os.cpu_count()} CPUs visible, "
          f"jax {jax.__version__}")


def mlp_vae_layer_shapes(num_dims, hidden, latent_dim):
  """(in, out) of every dense layer of an MLP VAE: encoder, mean and
  log-variance heads, decoder."""
  enc = [num_dims] + list(hidden)
  shapes = list(zip(enc[:-1], enc[1:]))
  shapes += [(hidden[-1], latent_dim)] * 2
  dec = [latent_dim] + list(reversed(hidden)) + [num_dims]
  return shapes + list(zip(dec[:-1], dec[1:]))


def matmul_floor_operands(batch, shapes):
  """Random operands of one step's matrix products, and their FLOPs.

  Per layer [batch, in] @ [in, out] forward, [in, batch] @ [batch, out] for
  the weight gradient and, except the first layer (the data needs no
  gradient), [batch, out] @ [out, in] for the input gradient.

  Returns:
    (xs [batch, in], ws [in, out], dys [batch, out]) lists over layers, and
    the FLOPs of those products.
  """
  keys = iter(jax.random.split(jax.random.key(0), 3 * len(shapes)))
  xs = [jax.random.normal(next(keys), (batch, i)) for i, _ in shapes]
  ws = [jax.random.normal(next(keys), (i, o)) for i, o in shapes]
  dys = [jax.random.normal(next(keys), (batch, o)) for _, o in shapes]
  flops = sum(2 * batch * i * o * (3 if n else 2)
              for n, (i, o) in enumerate(shapes))
  return (xs, ws, dys), flops
