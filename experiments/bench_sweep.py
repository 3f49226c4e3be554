r"""Benchmark: a vmapped sweep of 8 σ_dec values against 8 runs one by one.

    python -m experiments.bench_sweep                 # digits, 1000 steps, 3 rounds
    python -m experiments.bench_sweep --steps=3000 --latent_dim=32 --rounds=5

Both sides train the same 8 configs (configs/sweep.py's base, σ_dec
log-spaced 0.03..0.8, one seed) for the same number of steps, through the
same loop (`training.loop.train`), in one process:

  sweep       `sweep.run_sweep`: the 8 points as one vmapped stack, each a
              full run (checkpoints, final evaluation with L_K, images),
              then results.csv and the plots;
  one by one  8 × `loop.train_and_evaluate`, what 8 commands of
              `python -m vae_jax.main` run (8 compilations, 8 loops).

Rounds alternate the two sides (the machine is shared, so only ratios of
medians mean much). A third line times the compiled step alone on one
fixed batch (no loop, no data): the vmapped stack of N against N single
steps, which bounds what vmapping can give on this hardware. Printed per side: median wall and process-CPU seconds
with their range over rounds, and the steady training rate read from the
runs' own metrics.jsonl (train/steps_per_sec, which excludes the first,
compiling step): models × steps per second.
"""

import json
import logging as pylogging
import os
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from configs import sweep as sweep_configs

_STEPS = flags.DEFINE_integer("steps", 1000, "Optimizer steps per point.")
_NUM_POINTS = flags.DEFINE_integer("num_points", 8, "σ_dec values.")
_LATENT_DIM = flags.DEFINE_integer("latent_dim", 8, "Latent dimension L.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds per side.")


def sigma_values(n):
  """n σ_dec values, log-spaced over [0.03, 0.8]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [float(f"{s:.3g}") for s in np.geomspace(0.03, 0.8, n)]


def bench_config(steps, num_points, latent_dim):
  """The sweep config of the benchmark: one latent_dim, one seed."""
  c = sweep_configs.get_config()
  c.base.num_train_steps = steps
  c.base.checkpoint_every_steps = steps  # one checkpoint, at the end
  c.base.log_every_steps = max(steps // 4, 1)
  c.base.eval_every_steps = steps  # no evaluation during training
  c.grid.latent_dim = (latent_dim,)
  c.grid.seed = (0,)
  c.grid.sigma_dec = tuple(sigma_values(num_points))
  c.variants = ()
  return c


def _timed(fn):
  w0, c0 = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - w0, time.process_time() - c0


def _last_rate(workdir):
  """The last train/steps_per_sec a run logged (compilation excluded)."""
  rate = None
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      rate = row.get("train/steps_per_sec", rate)
  return rate


def step_ratio(points, dataset, rounds, steps=300):
  """Median ms per step of the N-member stack and of one member, per round.

  Returns:
    (stack ms, single ms) lists over rounds, the two timed alternately.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import stack as stack_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  c = points[0].config
  model = step_lib.build_model(c, dataset.event_shape)
  optimizer = step_lib.make_optimizer(c)
  states = [stack_lib.init_member_state(p.config, dataset.event_shape,
                                        optimizer) for p in points]
  x = jnp.asarray(next(data_lib.train_iterator(dataset, c.batch_size, c.seed,
                                               c.transform)))
  n = len(points)
  stack_fn = stack_lib.make_stack_step(model, c, [0] * n)
  single_fn = stack_lib.make_stack_step(model, c, [0])

  def timed(fn, state, batch):
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = fn(state, batch)
    jax.block_until_ready(m)
    return (time.perf_counter() - t0) / steps * 1e3, state

  stacked = stack_lib.stack_trees(states)
  single = jax.tree.map(jnp.array, states[0])
  stack_ms, single_ms = [], []
  for _ in range(rounds):
    ms, stacked = timed(stack_fn, stacked, x[None])
    stack_ms.append(ms)
    ms, single = timed(single_fn, single, x)
    single_ms.append(ms)
  return stack_ms, single_ms


def _summary(values):
  return (f"{statistics.median(values):7.1f} s "
          f"[{min(values):.1f}..{max(values):.1f}]")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  pylogging.getLogger("absl").setLevel(pylogging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax import sweep  # pylint: disable=g-import-not-at-top
  from vae_jax.training import loop  # pylint: disable=g-import-not-at-top

  config = bench_config(_STEPS.value, _NUM_POINTS.value, _LATENT_DIM.value)
  points = sweep.validate(config, jax.device_count(), jax.process_count())
  dataset = data_lib.get_dataset(points[0].config)
  assert len(sweep.group_points(points)) == 1, "the σ_dec values must group"
  n = len(points)
  b = points[0].config
  print(f"bench_sweep: {n} σ_dec values {config.grid.sigma_dec}, latent_dim "
        f"{b.latent_dim}, {b.num_train_steps} steps each, batch "
        f"{b.batch_size}, {b.dataset} (D = {dataset.event_shape}), final "
        f"K = {b.final_iwae_samples}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), {_ROUNDS.value} rounds")
  walls = {"sweep": [], "alone": []}
  cpus = {"sweep": [], "alone": []}
  rates = {"sweep": [], "alone": []}
  tmp = tempfile.mkdtemp(prefix="bench_sweep_")
  try:
    for r in range(_ROUNDS.value):
      for side in (("sweep", "alone") if r % 2 == 0 else ("alone", "sweep")):
        root = os.path.join(tmp, f"{side}{r}")
        if side == "sweep":
          wall, cpu = _timed(lambda root=root: sweep.run_sweep(config, root))
          # One stack step trains all n models.
          rates[side].append(n * _last_rate(sweep.point_dir(root, 0)))
        else:
          wall, cpu = _timed(lambda root=root: [
              loop.train_and_evaluate(p.config, os.path.join(root, str(i)),
                                      dataset)
              for i, p in enumerate(points)])
          rates[side].append(statistics.mean(
              _last_rate(os.path.join(root, str(i))) for i in range(n)))
        walls[side].append(wall)
        cpus[side].append(cpu)
        shutil.rmtree(root, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  for side, label in (("sweep", "sweep (vmapped)"),
                      ("alone", f"one by one ×{n}")):
    print(f"{label:18s} wall {_summary(walls[side])}   process CPU "
          f"{_summary(cpus[side])}   training "
          f"{statistics.median(rates[side]):8.0f} model-steps/s")
  wall_ratio = statistics.median(walls["alone"]) / statistics.median(
      walls["sweep"])
  cpu_ratio = statistics.median(cpus["alone"]) / statistics.median(
      cpus["sweep"])
  rate_ratio = statistics.median(rates["sweep"]) / statistics.median(
      rates["alone"])
  print(f"ratio (one by one / sweep): end to end wall {wall_ratio:.2f}x, "
        f"process CPU {cpu_ratio:.2f}x; steady training rate "
        f"{rate_ratio:.2f}x")
  stack_ms, single_ms = step_ratio(points, dataset, _ROUNDS.value)
  ratios = [n * b / a for a, b in zip(stack_ms, single_ms)]
  print(f"compiled step alone: stack of {n} {statistics.median(stack_ms):.3f} "
        f"ms, one model {statistics.median(single_ms):.3f} ms; {n} single "
        f"steps / one stack step = {statistics.median(ratios):.2f}x "
        f"[{min(ratios):.2f}..{max(ratios):.2f}]")
  print("(medians over interleaved rounds, [min..max]; compilation, data "
        "reading, checkpoints and final evaluation included in wall and "
        "CPU; the training rate excludes each run's first step)")


if __name__ == "__main__":
  app.run(main)
