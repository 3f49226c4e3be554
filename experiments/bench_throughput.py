"""Throughput of the runner's train step and input pipeline, as ratios.

  python -m experiments.bench_throughput [--rounds=7 --steps=30]

Everything is measured side by side in one process, in interleaved rounds
(each round times `steps` calls of every contender in turn, so drift on a
shared machine hits all alike). For every contender the script prints the
median over rounds of process CPU time and of wall time per call, and for
every ratio the median of the per-round ratios with their range over
rounds [min, max]. Never best-of.

Two model shapes, both Bernoulli VAEs trained with Adam 1e-3, M = 1:
  * 784-500-20 relu, batch 128 (the shape of issue 10);
  * the runner's MNIST shape (configs/mnist_idx.py: 784-200-200-50 tanh,
    batch 100).

Contenders at each shape:
  step    the runner's step (`stack.make_stack_step`, one member: the NaN
          guard included), jitted with the state donated, exactly as the
          runner calls it;
  plain   a reference step written here in a dozen lines (encoder,
          reparameterization, Bernoulli log-likelihood, analytic KL,
          optax.adam), jitted and donated, with no guard;
  matmul  the same-shape matrix products of one step and nothing else:
          every layer's forward product, its weight-gradient product and,
          except the first layer's (the data needs none), its input-gradient
          product: the floor a step of this MLP can reach;
  plain_m the plain step with the project's loss as the step computes it
          (`objective_terms`: the model's encoder, Bernoulli log-likelihood
          and KL): step / plain_m is the cost of the guard and metrics alone;
  plain_g the plain step with a NaN guard written by hand: the update in a
          lax.cond on the loss and the global gradient norm being finite.
          plain_g / plain is what such a guard costs in plain JAX, and
          step / plain_g compares the step with a plain step doing the same
          work;
  checked the step without its update bound, checking every update's
          parameters: checked / step is what the bound saves.
Printed: step/plain (target ≤ 1.00) and matmul/step, the fraction of the
matmul floor the step reaches (target ≥ 0.75).

Input pipeline (runner shape, `mnist_idx` data when ../shared/data/mnist is
there): steps/s when every step takes the next batch from
`vae_jax.data.train_iterator` (transform, then `sharding.step_input`, as
the runner feeds its step) against
steps/s on one batch already on the device (target ≥ 0.95). Also timed:
the host work alone (input: `next` on the iterator), steps cycling through
`steps` different batches already on the device (fresh: what fresh data
costs the step through the caches) and through batches ready on the host,
each handed to the step as the runner does (put).
"""

import os
import statistics

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app
from absl import flags

from vae_jax import config_base
from experiments import timing
from experiments.timing import interleaved
from vae_jax import cli
from vae_jax import data as data_lib
from vae_jax.training import sharding
from vae_jax.training import stack as stack_lib
from vae_jax.training import step as train_lib

_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved rounds.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed calls per contender and "
                              "round.")
_IDX_DIR = flags.DEFINE_string("idx_dir", "../shared/data/mnist",
                               "MNIST IDX folder for the pipeline part.")
_PARTS = flags.DEFINE_list("parts", ["step", "pipeline"],
                           "What to measure: step, pipeline.")


def shape_configs():
  """(name, config) of the two shapes measured."""
  issue = config_base.base_config()
  issue.hidden, issue.latent_dim, issue.activation = (500,), 20, "relu"
  issue.batch_size = 128
  runner = config_base.base_config()  # configs/mnist.py's model and batch.
  runner.hidden, runner.latent_dim, runner.activation = (200, 200), 50, "tanh"
  runner.batch_size = 100
  return [("784-500-20 relu, batch 128", issue),
          ("784-200-200-50 tanh, batch 100 (runner MNIST)", runner)]


def plain_step(model, learning_rate, project_loss=None, guard=False):
  """A VAE step as one writes it without a framework: no metrics, and no
  guard unless asked for.

  project_loss: a config; use the project's loss for it
  (`train_lib.objective_terms`, what `TrainStep` differentiates) instead of
  the dozen hand-written lines, which separates the cost of the guard from
  that of the loss.
  guard: skip the update, as one would write it in plain JAX, when the loss
  or the global gradient norm is not finite (the norm, then a lax.cond
  around the update): what the step's NaN guard costs written by hand.
  """
  tx = optax.adam(learning_rate)

  def step(params, opt_state, key, x):
    def loss_fn(p):
      if project_loss is not None:
        return -jnp.mean(train_lib.objective_terms(model, project_loss, p, key,
                                                   x)["objective"])
      mean, log_var = model.encoder.apply(p["encoder"], x)
      z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
      logits = model.decoder.apply(p["decoder"], z)
      rec = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
      kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
      return -jnp.mean(rec - kl)
    loss, grads = jax.value_and_grad(loss_fn)(params)

    def update(old):
      params, opt_state = old
      with jax.named_scope("optimizer"):  # a label for profile_step only
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    if not guard:
      params, opt_state = update((params, opt_state))
      return params, opt_state, loss
    with jax.named_scope("guard"):  # a label for profile_step only
      finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    params, opt_state = jax.lax.cond(finite, update, lambda old: old,
                                     (params, opt_state))
    return params, opt_state, loss

  return tx, jax.jit(step, donate_argnums=(0, 1))


def matmul_chain(batch, shapes):
  """A jitted function doing one step's matrix products
  (`timing.matmul_floor_operands`), and their FLOPs."""
  operands, flops = timing.matmul_floor_operands(batch, shapes)

  @jax.jit
  def f(xs, ws, dys):
    out = []
    for n, (x, w, dy) in enumerate(zip(xs, ws, dys)):
      out += [x @ w, x.T @ dy] + ([dy @ w.T] if n else [])
    return out

  return (lambda: f(*operands)), flops


def ratio(times, a, b):
  """'med [min, max]' of per-round a/b, process CPU and wall."""
  parts = []
  for i, clock in enumerate(("cpu", "wall")):
    r = np.asarray(times[a][i]) / np.asarray(times[b][i])
    parts.append(f"{clock} {np.median(r):.3f} [{r.min():.3f}, {r.max():.3f}]")
  return "; ".join(parts)


def describe(times, name):
  cpu, wall = (statistics.median(t) for t in times[name])
  return f"{name:7s}: cpu {1e3 * cpu:7.3f} ms, wall {1e3 * wall:7.3f} ms"


def bench_step(name, config, rounds, steps):
  """Times at one shape, interleaved: the runner's step, the plain step
  (hand-written loss; the project's loss: plain_m; a guard: plain_g), the
  step checking every update's parameters, and the matmul floor; prints
  medians and ratios."""
  model = train_lib.build_model(config, (784,))
  optimizer = train_lib.make_optimizer(config)
  x = jax.random.bernoulli(jax.random.key(0), 0.13,
                           (config.batch_size, 784)).astype(jnp.float32)
  step_fn = stack_lib.make_stack_step(model, config, [0])
  holder = {"state": train_lib.init_state(model, optimizer, config.seed)}

  def run_step():
    holder["state"], metrics = step_fn(holder["state"], x)
    return metrics["loss"]

  # The same step checking every update's parameters (no update bound).
  checked_fn = jax.jit(train_lib.TrainStep(model, optimizer, config),
                       donate_argnums=(0,))
  checked = {"state": train_lib.init_state(model, optimizer, config.seed)}

  def run_checked():
    checked["state"], metrics = checked_fn(checked["state"], x)
    return metrics["loss"]

  key = jax.random.key(1)

  def run_plain_variant(**variant):
    tx, fn = plain_step(model, config.learning_rate, **variant)
    params = model.init(jax.random.key(0))  # its own buffers: all donate
    ref = {"params": params, "opt": tx.init(params)}

    def run():
      ref["params"], ref["opt"], loss = fn(ref["params"], ref["opt"], key, x)
      return loss

    return run

  run_plain = run_plain_variant()
  run_plain_m = run_plain_variant(project_loss=config)
  run_plain_g = run_plain_variant(guard=True)

  chain, flops = matmul_chain(config.batch_size, timing.mlp_vae_layer_shapes(
      784, config.hidden, config.latent_dim))
  times = interleaved({"step": run_step, "plain": run_plain,
                       "plain_m": run_plain_m, "plain_g": run_plain_g,
                       "checked": run_checked, "matmul": chain},
                      rounds, steps)
  print(f"\n{name}: {rounds} rounds x {steps} calls, medians per call")
  for k in ("step", "plain", "plain_m", "plain_g", "checked", "matmul"):
    print("  " + describe(times, k))
  print(f"  matmul FLOPs per step {flops / 1e6:.1f} M; step reaches "
        f"{flops / statistics.median(times['step'][0]) / 1e9:.1f} GFLOP/s "
        "of matmul work per CPU-second")
  print(f"  step / plain  (target <= 1.00): {ratio(times, 'step', 'plain')}")
  print(f"  matmul / step (target >= 0.75): {ratio(times, 'matmul', 'step')}")
  print(f"  step / plain_m (same loss code): {ratio(times, 'step', 'plain_m')}")
  print(f"  plain_m / plain (loss code)    : {ratio(times, 'plain_m', 'plain')}")
  print(f"  step / plain_g (same guard)    : {ratio(times, 'step', 'plain_g')}")
  print(f"  plain_g / plain (guard by hand): {ratio(times, 'plain_g', 'plain')}")
  print(f"  matmul / plain                 : {ratio(times, 'matmul', 'plain')}")
  print(f"  checked / step (param check)   : "
        f"{ratio(times, 'checked', 'step')}")


def runner_step(config, event_shape, mesh):
  """The runner's jitted, donated step (`stack.make_stack_step`, one
  member) on a state replicated over `mesh`, as a function batch -> loss
  that carries the state from call to call."""
  model = train_lib.build_model(config, event_shape)
  optimizer = train_lib.make_optimizer(config)
  step_fn = stack_lib.make_stack_step(model, config, [0])
  holder = {"state": jax.device_put(
      train_lib.init_state(model, optimizer, config.seed),
      sharding.replicated(mesh))}

  def step(batch):
    holder["state"], metrics = step_fn(holder["state"], batch)
    return metrics["loss"]

  return step


def bench_pipeline(config, rounds, steps):
  """On-device steps/s vs steps fed by the input pipeline, runner shape."""
  config = ml_collections.ConfigDict(config.to_dict())
  if os.path.isdir(_IDX_DIR.value):
    config.dataset, config.idx_dir = "mnist_idx", _IDX_DIR.value
  else:
    config.dataset = "digits"
  dataset = data_lib.get_dataset(config)
  mesh = sharding.make_mesh()
  step = runner_step(config, dataset.event_shape, mesh)
  iterator = data_lib.train_iterator(dataset, config.batch_size, config.seed,
                                     config.transform)
  fixed = sharding.global_batch(next(iterator), mesh)

  def on_device():
    return step(fixed)

  def with_pipeline():
    return step(sharding.step_input(next(iterator), mesh))

  def pipeline_only():
    return next(iterator)

  # What the ratio is made of: fresh batches already on the device (cache
  # effects alone), and fresh batches ready on the host (plus the handing
  # over).
  host_batches = [next(iterator) for _ in range(steps)]
  device_batches = [sharding.global_batch(b, mesh) for b in host_batches]
  count = {"device": 0, "host": 0}

  def fresh_on_device():
    count["device"] = (count["device"] + 1) % steps
    return step(device_batches[count["device"]])

  def ready_on_host():
    count["host"] = (count["host"] + 1) % steps
    return step(sharding.step_input(host_batches[count["host"]], mesh))

  times = interleaved({"device": on_device, "piped": with_pipeline,
                       "input": pipeline_only, "fresh": fresh_on_device,
                       "put": ready_on_host}, rounds, steps)
  print(f"\ninput pipeline ({config.dataset}, {config.transform}, batch "
        f"{config.batch_size}): {rounds} rounds x {steps} calls")
  for k in ("device", "piped", "input", "fresh", "put"):
    print("  " + describe(times, k))
  print(f"  steps/s with pipeline / on-device (target >= 0.95): "
        f"{ratio(times, 'device', 'piped')}")
  print(f"  input alone / on-device step time: "
        f"{ratio(times, 'input', 'device')}")
  print(f"  on-device / fresh device batches: "
        f"{ratio(times, 'device', 'fresh')}")
  print(f"  on-device / fresh host batches as the step takes them: "
        f"{ratio(times, 'device', 'put')}")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  print(timing.device_line())
  shapes = shape_configs()
  if "step" in _PARTS.value:
    for name, config in shapes:
      bench_step(name, config, _ROUNDS.value, _STEPS.value)
  if "pipeline" in _PARTS.value:
    bench_pipeline(shapes[1][1], _ROUNDS.value, 3 * _STEPS.value)


if __name__ == "__main__":
  app.run(main)
