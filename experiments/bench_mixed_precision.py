"""Train-step time with bfloat16 compute against float32, CelebA shapes.

  python -m experiments.bench_mixed_precision [--rounds=7 --steps=5 --width=0.25]

(--steps defaults to bench_throughput's 30; pass 5 on a CPU.)

The CelebA config (64×64×3, conv VAE, latent 128) with its conv channels
scaled by --width (0.25: 8-16-32-64, so a CPU round takes seconds), batch
--batch. For each likelihood (the paper's Gaussian, and the discretized
logistic mixture with its 100-channel output layer) the runner's TrainStep
is timed in float32 and in bfloat16 compute, in interleaved rounds (see
experiments.bench_throughput.interleaved). Printed: medians per step and
bf16/f32 as the median of per-round ratios [min, max], for process CPU time
and wall time. Never best-of.

On a CPU, XLA emulates bfloat16 arithmetic, so expect a ratio above 1 here;
the switch is for TPUs and GPUs, whose matrix units run bfloat16 at 2× (or
more) the float32 rate.
"""

import statistics

import jax
from absl import app
from absl import flags

from configs import celeba
from experiments.bench_throughput import ratio
from experiments.timing import interleaved
from vae_jax import cli
from vae_jax.models.vae import build_vae
from vae_jax.training import stack as stack_lib
from vae_jax.training import step as train_lib

# --rounds and --steps are bench_throughput's flags (imported with it).
_WIDTH = flags.DEFINE_float("width", 0.25, "Scale of the conv channels.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.")


def make_step(likelihood, compute_dtype):
  """A zero-argument callable running one TrainStep on a fixed batch."""
  config = celeba.get_config()
  config.channels = tuple(max(1, int(c * _WIDTH.value))
                          for c in config.channels)
  config.batch_size = _BATCH.value
  config.likelihood, config.compute_dtype = likelihood, compute_dtype
  if likelihood != "gaussian":
    config.transform = "none"
  event = (config.image_size, config.image_size, 3)
  model = build_vae(config, event)
  optimizer = train_lib.make_optimizer(config)
  step_fn = stack_lib.make_stack_step(model, config, [0])
  x = jax.random.randint(jax.random.key(0), (config.batch_size,) + event, 0,
                         256) / 255.0
  holder = {"state": train_lib.init_state(model, optimizer, 0)}

  def run():
    holder["state"], metrics = step_fn(holder["state"], x)
    return metrics["loss"]

  return run


def main(argv):
  cli.reject_extra_args(argv)
  for likelihood in ("gaussian", "discretized_logistic_mixture"):
    fns = {dt: make_step(likelihood, dt) for dt in ("float32", "bfloat16")}
    times = interleaved(fns, flags.FLAGS.rounds, flags.FLAGS.steps)
    print(f"\n{likelihood}: channels x{_WIDTH.value}, batch {_BATCH.value}, "
          f"{flags.FLAGS.rounds} rounds x {flags.FLAGS.steps} steps, medians per step")
    for name in fns:
      cpu, wall = (statistics.median(t) for t in times[name])
      print(f"  {name:8s}: cpu {1e3 * cpu:8.1f} ms, wall {1e3 * wall:8.1f} ms")
    print(f"  bf16 / f32: {ratio(times, 'bfloat16', 'float32')}")


if __name__ == "__main__":
  app.run(main)
