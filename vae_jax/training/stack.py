"""N same-shaped models as one pytree: stacking, initial states, the step.

Configs that differ only in values held in the training state — σ_dec
(params["log_sigma_dec"]), the seed (initial parameters, PRNG key, data
order) and, when the optimizer reads it from its state, the learning rate —
compile to one program. Their states stack along a leading member axis
[N, ...] and `jax.vmap` of the train step trains all N at once, each on the
batches its own run would read.
"""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vae_jax.training import sharding
from vae_jax.training import step as step_lib

# Config fields held in the training state, never in shapes or the program
# (learning_rate joins them when the optimizer reads it from its state).
STATE_VALUE_FIELDS = ("sigma_dec", "seed")


def stack_trees(trees):
  """[tree_1, ..., tree_N] -> one tree of [N, ...] arrays."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree, i):
  """Member i of a stacked tree."""
  return jax.tree.map(lambda x: x[i], tree)


def set_learning_rate(opt_state, value):
  """opt_state with every injected `learning_rate` hyperparameter = value."""

  def replace(node):
    if step_lib.is_inject_state(node) and "learning_rate" in node.hyperparams:
      old = node.hyperparams["learning_rate"]
      hyper = dict(node.hyperparams,
                   learning_rate=jnp.asarray(value, jnp.asarray(old).dtype))
      return node._replace(hyperparams=hyper)
    return node

  return jax.tree.map(replace, opt_state, is_leaf=step_lib.is_inject_state)


def learning_rate_in_state(config) -> bool:
  """Whether the optimizer of `config` reads its learning rate from its state.

  optax.inject_hyperparams keeps the rate in the state, but a schedule (even
  a constant one) rewrites it there every step; then a stacked state cannot
  give each member its own rate. Probed, not assumed: set the rate to 0 and
  look for a zero update.
  """
  optimizer = step_lib.make_optimizer(config)
  params = {"w": jnp.ones((2,))}
  state = optimizer.init(params)
  if not any("learning_rate" in s.hyperparams
             for s in step_lib.inject_states(state)):
    return False
  updates, _ = optimizer.update({"w": jnp.ones((2,))},
                                set_learning_rate(state, 0.0), params)
  return bool(jnp.all(updates["w"] == 0.0))


@functools.lru_cache(maxsize=None)
def _learning_rate_in_state_cached(optimizer_json):
  # The answer does not depend on the rate's value: probe with any.
  fields = dict(json.loads(optimizer_json), learning_rate=1e-3)
  return learning_rate_in_state(ml_collections.ConfigDict(fields))


_OPTIMIZER_FIELDS = ("lr_schedule", "warmup_steps", "num_train_steps",
                     "grad_clip_norm", "adam_b1", "adam_b2")


def value_fields(config) -> tuple[str, ...]:
  """Fields that may differ between members trained as one vmapped stack."""
  optimizer_json = json.dumps({k: config[k] for k in _OPTIMIZER_FIELDS},
                              sort_keys=True)
  if _learning_rate_in_state_cached(optimizer_json):
    return STATE_VALUE_FIELDS + ("learning_rate",)
  return STATE_VALUE_FIELDS


def program_key(config) -> str:
  """JSON of everything that fixes the compiled program (all but values)."""
  d = json.loads(config.to_json())
  for name in value_fields(config):
    d.pop(name, None)
  return json.dumps(d, sort_keys=True)


def init_member_state(config, event_shape, optimizer):
  """The state a run of `config` starts from (see `step.init_state`).

  σ_dec enters through the model's initial params["log_sigma_dec"], the
  seed through `init_state`, and a state-held learning rate through the
  optimizer state. Eager: its small per-op programs compile once per shape
  and are reused by every member and stack.
  """
  model = step_lib.build_model(config, event_shape)
  state = step_lib.init_state(model, optimizer, config.seed)
  if "learning_rate" in value_fields(config):
    state["opt_state"] = set_learning_rate(state["opt_state"],
                                           config.learning_rate)
  return state


def stacked_batch_sharding(mesh):
  """Batches [S, B, ...]: B split over 'data', the stream axis replicated."""
  return NamedSharding(mesh, P(None, sharding.DATA_AXIS))


def make_stack_step(model, config, seed_index):
  """The jitted train step of a stack of N = len(seed_index) members.

  N = 1 is the plain step, state [...] and batch [B, ...]: no vmap, so a
  run alone is exactly the program it always was. N > 1 vmaps the step over
  stacked states [N, ...] and takes one batch per data stream, [S, B, ...];
  member n reads stream seed_index[n] (members with one seed share one
  stream, as they would read the same batches alone).

  The step is `step_lib.make_train_step(model, config)`: states must come
  from `step_lib.make_optimizer(config)`, as `init_member_state` makes them.

  Returns:
    step(states, batches) -> (states, metrics); metrics leaves are [] for
    N = 1 and [N] otherwise. The states argument is donated.
  """
  step = step_lib.make_train_step(model, config)
  seed_index = np.asarray(seed_index, np.int32)
  if len(seed_index) == 1:
    return jax.jit(step, donate_argnums=(0,))
  identity = np.array_equal(seed_index, np.arange(len(seed_index)))

  def stack_step(states, batches):
    per_member = batches if identity else jnp.take(batches, seed_index,
                                                   axis=0)
    return jax.vmap(step)(states, per_member)

  return jax.jit(stack_step, donate_argnums=(0,))
