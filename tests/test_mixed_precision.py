"""bfloat16 compute with float32 parameters, optimizer state and reductions.

Tolerances come from bfloat16's 8-bit significand: round-to-nearest has unit
roundoff u = 2⁻⁹ ≈ 0.002 (relative error of one rounding, uniform in ±u, so
RMS u/√3). A hidden layer rounds its input, its weights and its output:
3 roundings per layer, 6 along any path through the two hidden layers of
these networks. If the six errors added coherently the output's RMS relative
error would be 6u/√3 ≈ 3.5u; it must not exceed that. The ELBO sums D
dimensions whose errors mostly cancel, so it must agree far better, within
one rounding of the ELBO itself (relative u); the same bound after training
says bf16 compute costs less than storing the trained ELBO in bf16 would.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets

from vae_jax import config_base
from vae_jax.models.vae import build_vae
from vae_jax.training import evaluate, sharding
from vae_jax.training import step

U_BF16 = 2.0 ** -9  # unit roundoff of bfloat16 (8 significant bits)
ROUNDINGS_PER_PATH = 6  # 2 hidden layers x (input, weights, output)


def _config(compute_dtype, architecture="mlp", likelihood="bernoulli"):
  c = config_base.base_config()
  c.latent_dim = 8
  c.hidden = (32, 32)
  c.channels = (4, 8)
  c.architecture = architecture
  c.activation = "gelu" if architecture == "conv" else "tanh"
  c.likelihood = likelihood
  c.compute_dtype = compute_dtype
  return c


@pytest.fixture(scope="module")
def digits():
  """scikit-learn digits as intensities k/16 in [0, 1], [1797, 64]."""
  return jnp.asarray(datasets.load_digits().data / 16.0, jnp.float32)


def _rms_relative(a, b):
  return float(jnp.sqrt(jnp.mean(jnp.square(a - b)) / jnp.mean(jnp.square(a))))


@pytest.mark.parametrize("architecture, event", [("mlp", (64,)),
                                                 ("conv", (8, 8, 3))])
def test_bf16_networks_agree_with_f32_to_their_rounding(architecture, event):
  m32 = build_vae(_config("float32", architecture), event)
  m16 = build_vae(_config("bfloat16", architecture), event)
  params = m32.init(jax.random.key(0))   # the same float32 parameters
  x = jax.random.uniform(jax.random.key(1), (128,) + event)
  z = jax.random.normal(jax.random.key(2), (128, 8))
  outputs = {
      "decoder": lambda m: m.decode(params, z),
      "mean": lambda m: m.posterior(params, x).mean,
      "log_var": lambda m: m.posterior(params, x).log_var}
  for name, fn in outputs.items():
    a, b = jax.jit(lambda: fn(m32))(), jax.jit(lambda: fn(m16))()
    assert b.dtype == jnp.float32, name
    err = _rms_relative(a, b)
    # Above u/4: the hidden layers really compute in bf16 (float32 would be
    # ~1e-4 u); below the coherent sum of the path's roundings.
    assert U_BF16 / 4 < err < ROUNDINGS_PER_PATH * U_BF16 / np.sqrt(3), (
        name, err / U_BF16)
  elbo = lambda m: jnp.mean(m.elbo(params, jax.random.key(3), x).elbo)
  e32, e16 = jax.jit(lambda: elbo(m32))(), jax.jit(lambda: elbo(m16))()
  assert abs(float(e16 - e32)) < U_BF16 * abs(float(e32))


def test_bf16_parameters_and_optimizer_state_stay_float32(digits):
  config = _config("bfloat16")
  model = build_vae(config, (64,))
  optimizer = step.make_optimizer(config)
  state = step.init_state(model, optimizer, 0)
  text = jax.jit(lambda p: model.decode(p, jnp.zeros((2, 8)))).lower(
      state["params"]).as_text()
  assert "bf16" in text  # the switch reaches the compiled program
  state, metrics = jax.jit(step.TrainStep(model, optimizer, config))(
      state, digits[:64])
  floats = [leaf for leaf in jax.tree.leaves((state["params"],
                                              state["opt_state"]))
            if jnp.issubdtype(leaf.dtype, jnp.floating)]
  assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
  for name, value in metrics.items():
    if name != "finite":
      assert value.dtype == jnp.float32, name


def test_bf16_evaluation_metrics_are_float32(digits):
  config = _config("bfloat16", likelihood="discretized_gaussian")
  config.num_levels = 17   # digits are k/16
  model = build_vae(config, (64,))
  params = model.init(jax.random.key(0))
  eval_fn = evaluate.make_eval_fn(model, 4, 4, sharding.make_mesh())
  out = eval_fn(params, jax.random.key(1), digits[:8], jnp.ones((8,)))
  for name, value in out.items():
    assert value.dtype == jnp.float32, name


def _train(config, x, steps, bf16_params=False):
  """Trains from seed 0 on fixed batches; returns the test ELBO [] (nats)
  at 10 samples per example, computed by the run's own model."""
  model = build_vae(config, (64,))
  optimizer = step.make_optimizer(config)
  state = step.init_state(model, optimizer, 0)
  if bf16_params:  # what the switch must not do: parameters in bf16
    state["params"] = jax.tree.map(lambda p: p.astype(jnp.bfloat16),
                                   state["params"])
    state["opt_state"] = optimizer.init(state["params"])
  train_step = jax.jit(step.TrainStep(model, optimizer, config))
  rows = np.random.default_rng(0).integers(0, 1500, (steps, 100))
  for i in range(steps):
    state, _ = train_step(state, x[rows[i]])
  params = jax.tree.map(lambda p: p.astype(jnp.float32), state["params"])
  return float(jnp.mean(model.elbo(params, jax.random.key(5), x[1500:],
                                   10).elbo))


def test_bf16_training_matches_f32_and_float32_parameters_matter(digits):
  steps = 150
  start = _train(_config("float32"), digits, 0)
  f32 = _train(_config("float32"), digits, steps)
  bf16 = _train(_config("bfloat16"), digits, steps)
  assert f32 > start + 10  # training moved the ELBO by many nats
  assert abs(bf16 - f32) < U_BF16 * abs(f32), (bf16, f32)
  # The control: with bf16 parameters Adam's steps (lr 1e-3) fall below the
  # spacing 2⁻⁸|w| of the weights and are rounded away (or the run breaks
  # down to NaN), so the same comparison fails: float32 parameters are what
  # makes it pass.
  lost = _train(_config("float32"), digits, steps, bf16_params=True)
  assert not abs(lost - f32) < U_BF16 * abs(f32), (lost, f32)
