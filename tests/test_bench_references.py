"""The reference steps experiments/bench_throughput.py times the runner's
step against do what their names say: a speed ratio against a reference
that computes something else would mean nothing."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments import bench_throughput
from vae_jax import config_base
from vae_jax.training import step as train_lib


def _setup():
  c = config_base.base_config()
  c.hidden, c.latent_dim, c.activation, c.batch_size = (16,), 2, "tanh", 8
  model = train_lib.build_model(c, (784,))
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (8, 784)).astype(
      jnp.float32)
  return c, model, x


def _run(model, config, x, **variant):
  tx, fn = bench_throughput.plain_step(model, config.learning_rate, **variant)
  params = model.init(jax.random.key(0))
  return fn(params, tx.init(params), jax.random.key(1), x)


def _assert_trees_equal(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _assert_trees_close(a, b):
  # The update inside a lax.cond may fuse (and round) differently.
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6,
                               atol=1e-9)


def test_guarded_plain_step_equals_plain_on_finite_batch():
  config, model, x = _setup()
  _assert_trees_close(_run(model, config, x, guard=True),
                      _run(model, config, x))


def test_guarded_plain_step_skips_a_non_finite_batch():
  config, model, x = _setup()
  params, opt_state, loss = _run(model, config, x.at[0, 0].set(jnp.nan),
                                 guard=True)
  assert not np.isfinite(float(loss))
  fresh = model.init(jax.random.key(0))
  tx = bench_throughput.plain_step(model, config.learning_rate)[0]
  _assert_trees_equal((params, opt_state), (fresh, tx.init(fresh)))
  # Unguarded, the same batch reaches the parameters.
  unguarded, _, _ = _run(model, config, x.at[0, 0].set(jnp.nan))
  assert not all(np.isfinite(np.asarray(p)).all()
                 for p in jax.tree.leaves(unguarded))
