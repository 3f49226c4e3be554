"""The training step, its optimizer, and the state that checkpoints hold.

Training maximizes the per-example objective averaged over the global batch
(the ELBO with M samples, or L_K); the loss is its negative, in nats.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from vae_jax.models.vae import VAE
from vae_jax.models.vae import build_vae


def build_model(config, event_shape) -> VAE:
  """The VAE a config describes, for data of `event_shape`."""
  return build_vae(config, event_shape)


def learning_rate_schedule(config):
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate,
                                       max(config.num_train_steps, 1))
  return optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, config.warmup_steps,
      max(config.num_train_steps, config.warmup_steps + 1))


def make_optimizer(config):
  """Adam with the configured schedule, after optional global-norm clipping."""
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  # inject_hyperparams puts the learning rate in the optimizer state, where
  # a vmapped sweep can set one per grid point.
  # A constant rate goes in as a number (a schedule would overwrite the
  # state's value every step).
  lr = (config.learning_rate if config.lr_schedule == "constant" else
        learning_rate_schedule(config))
  parts.append(optax.inject_hyperparams(optax.adam)(
      learning_rate=lr, b1=config.adam_b1, b2=config.adam_b2))
  return optax.chain(*parts)


# Half a unit in the last place of float32's largest finite value, 2^127:
# a finite float32 moved by less than this rounds to a finite float32.
FLOAT32_SAFE_MOVE = 2.0**103
# float32's smallest normal number: XLA:CPU flushes smaller results to 0.
_FLOAT32_TINY = 2.0**-126


def adam_step_bound(b1, b2):
  """Supremum of |Adam step| / learning rate over all finite gradients.

  optax's Adam moves a parameter by lr·m̂/(√v̂ + ε), with m̂ = m_t/(1 − b1ᵗ),
  v̂ = v_t/(1 − b2ᵗ), m_t = (1 − b1) Σ_k b1ᵏ g_{t−k} and
  v_t = (1 − b2) Σ_k b2ᵏ g²_{t−k} (k < t, from m_0 = v_0 = 0). Writing
  b1ᵏ|g| = (b1/√b2)ᵏ · (√b2)ᵏ|g|, Cauchy-Schwarz gives, with ρ = b1²/b2,

    |m_t| ≤ (1 − b1) √(Σ_k ρᵏ) √(v_t/(1 − b2)),

  so |m̂|/√v̂ ≤ (1 − b1)/(1 − b1ᵗ) · √((1 − b2ᵗ)(1 − ρᵗ)/((1 − b2)(1 − ρ))),
  with equality for g_{t−k} ∝ (b1/b2)ᵏ. As b2ᵗ·ρᵗ = b1²ᵗ, AM-GM gives
  (1 − b2ᵗ)(1 − ρᵗ) ≤ (1 − b1ᵗ)², so for every t

    |m̂|/√v̂ ≤ (1 − b1)/√((1 − b2)(1 − ρ)),

  approached as t grows: 7.27 at the defaults b1 = 0.9, b2 = 0.999 (Kingma
  & Ba's §2.1 sizes the step at (1 − b1)/√(1 − b2) = 3.16, an
  approximation that the tight sequence exceeds). ε > 0 only shrinks it.

  Args:
    b1, b2: the decay rates, floats or float32 [] arrays, in [0, 1).

  Returns:
    The bound, f32 []; inf outside 0 ≤ b1 < √b2 < 1, where it does not hold
    (b2 ≥ 1 or ρ ≥ 1: no bound independent of t; b1 = 1 leaves m̂ = 0/0;
    negative b's can make v negative or enlarge 1 − b1).
  """
  b1, b2 = (jnp.asarray(b, jnp.float32) for b in (b1, b2))
  sqrt_b2 = jnp.sqrt(jnp.maximum(b2, 0.0))
  # b1 < √b2 is ρ < 1, without b1² underflowing.
  bounded = (b1 >= 0) & (b2 > 0) & (b2 < 1) & (b1 < sqrt_b2)
  no_memory = (b1 == 0) & (b2 == 0)  # then m̂/√v̂ = g/|g|
  b1, b2, sqrt_b2 = (jnp.where(bounded, v, 0.5) for v in (b1, b2, sqrt_b2))
  rho = jnp.square(b1 / sqrt_b2)
  bound = (1 - b1) / jnp.sqrt((1 - b2) * (1 - rho))
  return jnp.where(bounded, bound, jnp.where(no_memory, 1.0, jnp.inf))


def is_inject_state(node) -> bool:
  """Whether node is the state of an optax.inject_hyperparams optimizer."""
  return hasattr(node, "hyperparams") and hasattr(node, "_replace")


def inject_states(opt_state) -> list:
  """The inject_hyperparams states in opt_state, in tree order."""
  return [node for node in jax.tree.leaves(opt_state, is_leaf=is_inject_state)
          if is_inject_state(node)]


def adam_update_bound(opt_state) -> jax.Array:
  """A bound on every element of the update `make_optimizer`'s Adam just
  made from finite gradients: f32 [], inf where none can be given.

  Applied to the state that update returned: inject_hyperparams keeps in it
  the hyperparameters the update used, as float32 (a schedule's current
  learning rate, a sweep member's own one). The bound is
  1024 · |lr| · (adam_step_bound(b1, b2) + f): the factor 1024 is a margin
  for float32 rounding of the moments (relative errors of order 1e-7 per
  operation, which the recursions do not accumulate: both contract), and f
  covers the parts of m whose terms in v XLA:CPU flushed to zero. A term
  of v is lost when (1 − b2)·g² is below 2⁻¹²⁶, or when b2·v is (all
  earlier terms then go at once); either way
  |g_{t−k}| < √(2⁻¹²⁶/((1 − b2)·b2ᵏ⁺¹)), and with weights at most b1ᵏ in m̂
  these add at most √(2⁻¹²⁶/((1 − b2)·b2))/(1 − √ρ) to m̂, over at least ε
  in the denominator: f = 3.4e-9 at the defaults.

  Only for the state of `make_optimizer`: one inject_hyperparams node whose
  hyperparameters are exactly learning_rate, b1, b2, eps and eps_root
  (adamw, adamax and others add or lack some), with ε > 0 and
  eps_root ≥ 0. Otherwise, or if any is NaN, the bound is inf and the step
  checks.
  """
  nodes = inject_states(opt_state)
  names = ("learning_rate", "b1", "b2", "eps", "eps_root")
  if len(nodes) != 1 or set(nodes[0].hyperparams) != set(names):
    return jnp.full((), jnp.inf, jnp.float32)
  lr, b1, b2, eps, eps_root = (
      jnp.asarray(nodes[0].hyperparams[k], jnp.float32) for k in names)
  sqrt_rho = b1 / jnp.sqrt(jnp.maximum(b2, _FLOAT32_TINY))
  flushed = jnp.sqrt(_FLOAT32_TINY / jnp.maximum(
      (1 - b2) * b2, _FLOAT32_TINY)) / (
          jnp.maximum(1 - sqrt_rho, _FLOAT32_TINY) * eps)
  bound = 1024 * jnp.abs(lr) * (adam_step_bound(b1, b2) + flushed)
  valid = (eps > 0) & (eps_root >= 0) & (bound >= 0)  # False for NaN
  return jnp.where(valid, bound, jnp.inf)


def make_train_step(model, config) -> "TrainStep":
  """The runner's step: `make_optimizer(config)` with `adam_update_bound`.

  The bound holds for that optimizer only (Adam, with optional clipping
  before it: tests/test_step.py checks that it is optax's Adam);
  `step.optimizer` is the one to initialize states with.
  """
  return TrainStep(model, make_optimizer(config), config, adam_update_bound)


def init_state(model, optimizer, seed):
  """The training state pytree: what a checkpoint stores.

  Returns:
    {"step": int32 [], "params": pytree, "opt_state": pytree,
     "key": uint32 key data [2]}. The key is the run's base key; step t
    draws its Monte Carlo samples from fold_in(key, t), so resuming at any
    step reproduces the uninterrupted run.
  """
  key = jax.random.key(seed)
  params = model.init(jax.random.fold_in(key, 0))
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": optimizer.init(params),
          "key": jax.random.key_data(jax.random.fold_in(key, 1))}


def objective_terms(model, config, params, key, x):
  """Per-example training objective and its parts, [B] each, in nats."""
  if config.objective == "iwae":
    bound = model.iwae(params, key, x, config.num_samples)
    return {"objective": bound}
  terms = model.elbo(params, key, x, config.num_samples, config.analytic_kl)
  return {"objective": terms.elbo, "reconstruction": terms.reconstruction,
          "kl": terms.kl}


def tree_all_finite(tree):
  """True iff every element of every leaf is finite: bool [].

  An inf or NaN makes a sum inf or NaN, and a sum of finite values is
  finite unless it overflows: so a finite Σ_leaves Σ x proves every
  element finite. Only when that sum is not finite does the exact test run,
  Σ 0·x per leaf (0 for finite x, NaN for ±inf or NaN; XLA keeps 0·x: it
  does not assume finite floats). On CPU a plain sum costs 0.6-0.75 of
  Σ 0·x at the benchmark's shapes; under vmap (a sweep group) the cond
  becomes a select and both run.
  """
  leaves = jax.tree.leaves(tree)

  def exact():
    total = sum(jnp.sum(jnp.zeros((), x.dtype) * x) for x in leaves)
    return total == 0

  sums_finite = jnp.isfinite(sum(jnp.sum(x) for x in leaves))
  return jax.lax.cond(sums_finite, lambda: jnp.ones((), bool), exact)


# eq=False: jit caches on the step object by identity (configs are unhashable).
@dataclasses.dataclass(frozen=True, eq=False)
class TrainStep:
  """One optimizer step, as a pure function state, batch -> state, metrics.

  NaN policy. `metrics["finite"]` is False when the loss or the global
  gradient norm is non-finite (the norm is finite iff every gradient is,
  short of a sum of squares beyond float32 range: a norm above ~1.8e19),
  or when the update would make a parameter non-finite: that step is the
  one flagged, not the next.

  * A non-finite loss or gradient never reaches the state: the update sits
    in a lax.cond, so params and opt_state come back unchanged, bit for bit
    (the step counter still advances, so the next step draws fresh samples).
  * An update that makes a parameter non-finite is dropped (a select of
    the old state) under nan_policy='skip'. Under 'stop' the flagged state
    is returned as computed: the loop stops at that step and never saves or
    uses it (the checkpointer refuses non-finite state), which spares every
    step a select over all parameters and optimizer state, an extra pass
    over both.

  Cost: finiteness of the gradients comes from the norm reported anyway and
  the kept update is written once, in place. The parameter check
  (`tree_all_finite`, one plain sum per parameter leaf) runs only when it
  can find something: `update_bound`, where given (the runner's Adam:
  `adam_update_bound`), maps the new optimizer state to a bound on every
  element of the update just made from finite gradients. Below
  FLOAT32_SAFE_MOVE a finite parameter cannot become non-finite, and the
  check is skipped (a lax.cond on one scalar; under vmap it becomes a select
  and the check runs). Without a bound, as for any other optimizer, every
  update is checked.
  """

  model: VAE
  optimizer: Any
  config: Any
  update_bound: Optional[Callable[[Any], jax.Array]] = None

  def __call__(self, state, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]),
                             state["step"])

    def loss_fn(params):
      terms = objective_terms(self.model, self.config, params, key, batch)
      means = {k: jnp.mean(v) for k, v in terms.items()}
      return -means["objective"], means

    (loss, means), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    # Named scopes label the compiled program's operations (op_name), so a
    # profile shows what the guard and the optimizer cost
    # (experiments/profile_step.py); they change nothing else.
    with jax.named_scope("guard"):
      grad_norm = optax.tree.norm(grads)
      inputs_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    revert = self.config.nan_policy == "skip"

    def update(old):
      params, opt_state = old
      with jax.named_scope("optimizer"):
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        new = (optax.apply_updates(params, updates), opt_state)
      with jax.named_scope("guard"):
        # FLOAT32_SAFE_MOVE is float32's: other parameters are checked.
        if self.update_bound is None or any(
            leaf.dtype != jnp.float32 for leaf in jax.tree.leaves(params)):
          params_finite = tree_all_finite(new[0])
        else:
          params_finite = jax.lax.cond(
              self.update_bound(opt_state) < FLOAT32_SAFE_MOVE,
              lambda: jnp.ones((), bool), lambda: tree_all_finite(new[0]))
      if revert:
        new = jax.tree.map(lambda n, o: jnp.where(params_finite, n, o), new,
                           old)
      return new, params_finite

    def skip(old):
      return old, jnp.zeros((), bool)

    # lax.cond runs only the taken branch: a kept step reads and writes each
    # buffer once; under vmap (a sweep group) it becomes a per-model select,
    # with the same values as N separate steps.
    (params, opt_state), params_finite = jax.lax.cond(
        inputs_finite, update, skip, (state["params"], state["opt_state"]))
    new_state = {"step": state["step"] + 1, "params": params,
                 "opt_state": opt_state, "key": state["key"]}
    metrics = dict(means, loss=loss, grad_norm=grad_norm,
                   finite=inputs_finite & params_finite)
    return new_state, metrics
