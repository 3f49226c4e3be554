"""The training step, its optimizer, and the state that checkpoints hold.

Training maximizes the per-example objective averaged over the global batch
(the ELBO with M samples, or L_K); the loss is its negative, in nats.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vae_jax.models.networks import make_networks
from vae_jax.models.vae import VAE


def build_model(config, event_shape):
  """The VAE a config describes, for data of `event_shape`."""
  encoder, decoder = make_networks(
      config.architecture, config.latent_dim, tuple(event_shape),
      hidden=tuple(config.hidden), channels=tuple(config.channels),
      activation=config.activation)
  return VAE(encoder, decoder, tuple(event_shape), config.latent_dim,
             config.likelihood, config.sigma_dec_mode, float(config.sigma_dec))


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


def _tree_all_finite(tree):
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


# eq=False: jit caches on the step object by identity (configs are unhashable).
@dataclasses.dataclass(frozen=True, eq=False)
class TrainStep:
  """One optimizer step, as a pure function state, batch -> state, metrics.

  A non-finite loss or gradient never reaches the parameters: the update is
  dropped in-graph and the step is recorded in `metrics["finite"]`; the loop
  then stops (nan_policy='stop') or goes on (nan_policy='skip').
  """

  model: VAE
  optimizer: Any
  config: Any

  def __call__(self, state, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]),
                             state["step"])

    def loss_fn(params):
      terms = objective_terms(self.model, self.config, params, key, batch)
      means = {k: jnp.mean(v) for k, v in terms.items()}
      return -means["objective"], means

    (loss, means), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    updates, opt_state = self.optimizer.update(grads, state["opt_state"],
                                               state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & _tree_all_finite(grads)
    keep = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = {"step": state["step"] + 1,
                 "params": keep(params, state["params"]),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "key": state["key"]}
    metrics = dict(means, loss=loss, grad_norm=optax.tree.norm(grads),
                   finite=finite)
    return new_state, metrics
