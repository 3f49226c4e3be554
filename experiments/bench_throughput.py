"""Throughput of the runner's train step, as ratios measured side by side.

  python -m experiments.bench_throughput [--config=configs/mnist_idx.py]

Prints, in one run on whatever device JAX finds:
  1. achieved FLOP/s of the jitted train step (XLA's own FLOP count of the
     compiled program / measured time) against a plain chain of `jnp.dot`s of
     the same layer sizes (forward only), and their ratio;
  2. steps/s with the real input pipeline (grain iterator, host → device)
     against steps/s with the batch already on the device, and their ratio.
A pipeline ratio near 1 means the input pipeline is not the bottleneck. On
a CPU "device" the step and the pipeline share the same cores, so the
ratio there is a lower bound of what an accelerator sees; the third line,
the pipeline's own rate, says how much headroom it has.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from vae_jax import data as data_lib
from vae_jax.training import sharding
from vae_jax.training import step as train_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mnist_idx.py",
                                          "Runner config to measure.")
_STEPS = flags.DEFINE_integer("steps", 300, "Timed steps per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats; the best "
                                "of each is reported (noisy machines).")


def _time(fn, steps):
  """Seconds per call of fn(), after one warm-up call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def layer_shapes(config, num_dims):
  """(in, out) of every dense layer of the MLP encoder and decoder."""
  enc = [num_dims] + list(config.hidden)
  shapes = list(zip(enc[:-1], enc[1:]))
  shapes += [(config.hidden[-1], config.latent_dim)] * 2  # mean, log_var
  dec = [config.latent_dim] + list(reversed(config.hidden)) + [num_dims]
  return shapes + list(zip(dec[:-1], dec[1:]))


def dot_chain(batch, shapes):
  """A jitted function doing one [batch, in] @ [in, out] per layer."""
  keys = jax.random.split(jax.random.key(0), len(shapes))
  xs = [jax.random.normal(k, (batch, i)) for k, (i, _) in zip(keys, shapes)]
  ws = [jax.random.normal(k, (i, o)) for k, (i, o) in zip(keys, shapes)]

  @jax.jit
  def f(xs, ws):
    return [jnp.dot(x, w) for x, w in zip(xs, ws)]

  flops = sum(2 * batch * i * o for i, o in shapes)
  return (lambda: f(xs, ws)), flops


def main(argv):
  del argv
  config = _CONFIG.value
  if config.architecture != "mlp":
    raise app.UsageError("the FLOP comparison is written for MLP configs")
  dataset = data_lib.get_dataset(config)
  mesh = sharding.make_mesh()
  model = train_lib.build_model(config, dataset.event_shape)
  optimizer = train_lib.make_optimizer(config)
  step_fn = jax.jit(train_lib.TrainStep(model, optimizer, config))
  state = jax.device_put(train_lib.init_state(model, optimizer, config.seed),
                         sharding.replicated(mesh))
  iterator = data_lib.train_iterator(dataset, config.batch_size, config.seed,
                                     config.transform)
  fixed = sharding.global_batch(next(iterator), mesh)
  flops_step = step_fn.lower(state, fixed).compile().cost_analysis()
  flops_step = flops_step[0] if isinstance(flops_step, list) else flops_step
  flops_step = float(flops_step["flops"])
  dots, flops_dots = dot_chain(config.batch_size,
                               layer_shapes(config, dataset.dim))

  def on_device():
    return step_fn(state, fixed)[1]["loss"]

  def with_pipeline():
    batch = sharding.global_batch(next(iterator), mesh)
    return step_fn(state, batch)[1]["loss"]

  def pipeline_only():
    return sharding.global_batch(next(iterator), mesh)

  best = {"step": np.inf, "dots": np.inf, "pipe": np.inf, "data": np.inf}
  for _ in range(_REPEATS.value):  # interleaved, so drift hits all alike
    best["step"] = min(best["step"], _time(on_device, _STEPS.value))
    best["dots"] = min(best["dots"], _time(dots, _STEPS.value))
    best["pipe"] = min(best["pipe"], _time(with_pipeline, _STEPS.value))
    best["data"] = min(best["data"], _time(pipeline_only, _STEPS.value))
  step_rate = flops_step / best["step"]
  dot_rate = flops_dots / best["dots"]
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; "
        f"config {config.dataset}, batch {config.batch_size}, "
        f"layers {layer_shapes(config, dataset.dim)}")
  print(f"train step : {flops_step / 1e6:9.2f} MFLOP (XLA count), "
        f"{best['step'] * 1e3:8.3f} ms, {step_rate / 1e9:8.2f} GFLOP/s")
  print(f"jnp.dot    : {flops_dots / 1e6:9.2f} MFLOP (forward layers), "
        f"{best['dots'] * 1e3:8.3f} ms, {dot_rate / 1e9:8.2f} GFLOP/s")
  print(f"ratio train-step FLOP/s / jnp.dot FLOP/s = {step_rate / dot_rate:.3f}")
  print(f"steps/s on-device batch {1 / best['step']:9.1f}, with input "
        f"pipeline {1 / best['pipe']:9.1f}; ratio pipeline/on-device = "
        f"{best['step'] / best['pipe']:.3f}")
  print(f"input pipeline alone (read, transform, to device): "
        f"{1 / best['data']:9.1f} batches/s = "
        f"{best['step'] / best['data']:.2f}x the on-device step rate")


if __name__ == "__main__":
  app.run(main)
