r"""Benchmark: a vmapped sweep of 8 σ_dec values against 8 runs one by one.

    python -m experiments.bench_sweep                 # digits, 1000 steps
    python -m experiments.bench_sweep --steps=3000 --latent_dim=32

Both sides train the same 8 configs (configs/sweep.py's base, σ_dec
log-spaced 0.03..0.8, one seed) for the same number of steps, in one
process, side by side (this machine is noisy: only the ratio means much):

  training   `sweep.train_group` on all 8 (one compiled, vmapped step)
             against `sweep.train_group` on each alone (8 compilations,
             8 loops), no checkpoints;
  end to end `sweep.run_sweep` (training, checkpoints, final evaluation with
             L_K, images, results.csv, plots) against 8 ×
             `runner.train_and_evaluate` (the same per run).

Times are wall seconds including compilation and data reading, as a user
sees them; the training line is also given without each run's first step
(initialization and compilation), the steady-state speed-up. Prints the
ratios (one by one / vmapped; > 1: the sweep is faster).
"""

import logging as pylogging
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from configs import sweep as sweep_configs

_STEPS = flags.DEFINE_integer("steps", 1000, "Optimizer steps per point.")
_NUM_POINTS = flags.DEFINE_integer("num_points", 8, "σ_dec values.")
_LATENT_DIM = flags.DEFINE_integer("latent_dim", 8, "Latent dimension L.")
_END_TO_END = flags.DEFINE_bool(
    "end_to_end", True, "Also time run_sweep against runner runs.")


def sigma_values(n):
  """n σ_dec values, log-spaced over [0.03, 0.8]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [float(f"{s:.3g}") for s in np.geomspace(0.03, 0.8, n)]


def bench_config(steps, num_points, latent_dim):
  """The sweep config of the benchmark: one latent_dim, one seed."""
  c = sweep_configs.get_config()
  c.base.num_train_steps = steps
  c.base.checkpoint_every_steps = steps  # one checkpoint, at the end
  c.base.log_every_steps = steps
  c.grid.latent_dim = (latent_dim,)
  c.grid.seed = (0,)
  c.grid.sigma_dec = tuple(sigma_values(num_points))
  c.variants = ()
  return c


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  pylogging.getLogger("absl").setLevel(pylogging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import runner
  from vae_jax.sweep import run as sweep  # pylint: disable=g-import-not-at-top
  from vae_jax.training import step as train_lib  # pylint: disable=g-import-not-at-top

  config = bench_config(_STEPS.value, _NUM_POINTS.value, _LATENT_DIM.value)
  points = sweep.validate(config, jax.device_count(), jax.process_count())
  configs = [p.config for p in points]
  dataset = data_lib.get_dataset(configs[0])
  assert len(sweep.group_points(points)) == 1, "the σ_dec values must group"
  b = configs[0]
  print(f"bench_sweep: {len(configs)} σ_dec values {config.grid.sigma_dec}, "
        f"latent_dim {b.latent_dim}, {b.num_train_steps} steps each, batch "
        f"{b.batch_size}, {b.dataset} (D = {dataset.event_shape}), "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)")

  def wall(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0

  first = {}

  def train(group):
    trained = sweep.train_group(group, dataset)
    jax.block_until_ready(trained.state)
    first[len(first)] = trained.first_step_s

  # Warm the eager init ops (shared by both sides) so neither pays for them.
  sweep.init_group_state(configs[:1], dataset.event_shape,
                         train_lib.make_optimizer(b))
  t_vmap = wall(lambda: train(configs))
  t_alone = sum(wall(lambda c=c: train([c])) for c in configs)
  print(f"training    vmapped: {t_vmap:7.1f} s   one by one: {t_alone:7.1f}"
        f" s   ratio (one by one / vmapped): {t_alone / t_vmap:.2f}x")
  # The same without each run's first step (initialization + compilation).
  s_vmap = t_vmap - first[0]
  s_alone = t_alone - sum(first[i] for i in range(1, len(first)))
  print(f"  after the first step: vmapped {s_vmap:6.1f} s, one by one "
        f"{s_alone:6.1f} s, ratio {s_alone / s_vmap:.2f}x; first steps "
        f"(compilation) {first[0]:.1f} s vs "
        f"{sum(first[i] for i in range(1, len(first))):.1f} s")

  if _END_TO_END.value:
    tmp = tempfile.mkdtemp(prefix="bench_sweep_")
    try:
      t_sweep = wall(lambda: sweep.run_sweep(config, os.path.join(tmp, "s")))
      t_runs = sum(wall(lambda p=p: runner.train_and_evaluate(
          p.config, os.path.join(tmp, f"r{p.index}"), dataset))
                   for p in points)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    print(f"end to end  sweep:   {t_sweep:7.1f} s   runner ×{len(points)}:"
          f" {t_runs:7.1f} s   ratio (runner runs / sweep): "
          f"{t_runs / t_sweep:.2f}x")
  print("(wall seconds, compilation and data reading included; measured "
        "side by side in one process)")


if __name__ == "__main__":
  app.run(main)
