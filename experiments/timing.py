"""What the benchmarks share: interleaved timing rounds and a device line.

Benchmarks time alternatives in interleaved rounds (the machine is shared)
and report medians with their spread, never the best round.
"""

import os
import time

import jax


def interleaved(fns, rounds, calls=1):
  """Times each fn() per round, the alternatives alternating.

  Every fn is called once first (compilation, warm-up); then each round
  runs `calls` calls of every fn in turn.

  Returns:
    {name: ([process-CPU s], [wall s])} per call, one entry per round.
  """
  out = {k: ([], []) for k in fns}
  for fn in fns.values():
    jax.block_until_ready(fn())
  for _ in range(rounds):
    for name, fn in fns.items():
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
