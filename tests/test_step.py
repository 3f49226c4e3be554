"""The training step's NaN policy, exactly, and its agreement with an
independent optax step and with N single steps under vmap.

A small Bernoulli MLP VAE (6 inputs, 2 latents) keeps every test at a
fraction of a second after compilation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import config_base
from vae_jax.core import distributions
from vae_jax.core import objectives
from vae_jax.training import config_validation
from vae_jax.training import stack as stack_lib
from vae_jax.training import step as train_lib

D = 6


def _config(policy="skip"):
  c = config_base.base_config()
  c.hidden, c.latent_dim, c.activation = (8,), 2, "tanh"
  c.nan_policy = policy
  return c


def _setup(policy="skip", optimizer=None, update_bound=None):
  """The runner's step (Adam with its update bound), or a TrainStep of
  `optimizer` with `update_bound`."""
  config = _config(policy)
  model = train_lib.build_model(config, (D,))
  if optimizer is None:
    train_step = train_lib.make_train_step(model, config)
  else:
    train_step = train_lib.TrainStep(model, optimizer, config, update_bound)
  return model, train_step.optimizer, config, jax.jit(train_step)


def _batch(seed, nan=False):
  x = (np.random.default_rng(seed).random((5, D)) < 0.4).astype(np.float32)
  if nan:
    x[2, 3] = np.nan
  return jnp.asarray(x)


def _assert_trees_equal(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _leaves_differ(a, b):
  return any(not np.array_equal(np.asarray(u), np.asarray(v))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_tree_all_finite_matches_numpy():
  rng = np.random.default_rng(0)
  for bad in (None, np.inf, -np.inf, np.nan):
    tree = {"a": rng.normal(size=(3, 4)).astype(np.float32) * 1e30,
            "b": [rng.normal(size=7).astype(np.float32)]}
    if bad is not None:
      tree["b"][0][4] = bad
    expected = all(np.isfinite(x).all() for x in jax.tree.leaves(tree))
    assert bool(jax.jit(train_lib.tree_all_finite)(tree)) == expected
  # Finite values whose sum overflows: the exact fallback decides.
  big = {"a": np.full((3, 4), 3e38, np.float32),
         "b": [np.float32([-3e38, 1.0])]}
  assert bool(jax.jit(train_lib.tree_all_finite)(big))
  big["b"][0][1] = np.nan
  assert not bool(jax.jit(train_lib.tree_all_finite)(big))
  # Under vmap (a sweep group) each tree gets its own answer.
  stacked = {"a": np.stack([big["a"], big["a"] * 0]),
             "b": [np.stack([np.float32([1.0, 2.0]), big["b"][0]])]}
  np.testing.assert_array_equal(
      jax.jit(jax.vmap(train_lib.tree_all_finite))(stacked), [True, False])


def test_finite_step_is_the_optax_step_on_the_same_samples():
  """Independent computation: grad of −mean ELBO at key fold_in(key, step),
  then optax's Adam update, outside TrainStep."""
  model, optimizer, config, step = _setup()
  state = train_lib.init_state(model, optimizer, 0)
  x = _batch(0)
  new, metrics = step(state, x)

  @jax.jit  # eager op-by-op dispatch would take seconds
  def reference(state):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), 0)
    loss_fn = lambda p: -jnp.mean(model.elbo(p, key, x).elbo)
    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"],
                                          state["params"])
    return (loss, grads, optax.apply_updates(state["params"], updates),
            opt_state)

  loss, grads, params, opt_state = reference(state)
  assert bool(metrics["finite"]) and int(new["step"]) == 1
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads),
                             rtol=1e-5)
  for a, b in zip(jax.tree.leaves((new["params"], new["opt_state"])),
                  jax.tree.leaves((params, opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert _leaves_differ(new["params"], state["params"])


@pytest.mark.parametrize("likelihood,sigma_mode", [
    ("bernoulli", "fixed"), ("gaussian", "learned"), ("gaussian", "optimal")])
def test_one_sample_objective_is_the_vmapped_one_bit_for_bit(likelihood,
                                                             sigma_mode):
  """At M = 1 `sample_terms` decodes without vmap (faster on CPU); the
  step's values and gradients must be those of the vmapped form of eq 3 on
  the same key, exactly."""
  config = _config()
  config.likelihood, config.sigma_dec_mode = likelihood, sigma_mode
  model = train_lib.build_model(config, (D,))
  params = model.init(jax.random.key(0))
  key, x = jax.random.key(3), _batch(1)

  def ours(p):
    terms = train_lib.objective_terms(model, config, p, key, x)
    return jnp.mean(terms["objective"]), terms

  def vmapped(p):
    posterior = model.posterior(p, x)
    z = objectives.reparam(key, posterior, 1)  # [1, B, L]
    rec = jnp.mean(jax.vmap(model.log_likelihood_fn(p, x))(z), axis=0)
    kl = distributions.kl_diag_to_std_normal(posterior.mean,
                                             posterior.log_var)
    return jnp.mean(rec - kl), {"objective": rec - kl,
                                "reconstruction": rec, "kl": kl}

  # Two programs, so that XLA cannot share work between them.
  (value, terms), grads = jax.jit(jax.value_and_grad(ours, has_aux=True))(
      params)
  (ref_value, ref), ref_grads = jax.jit(jax.value_and_grad(
      vmapped, has_aux=True))(params)
  np.testing.assert_array_equal(value, ref_value)
  for k in ("objective", "reconstruction", "kl"):
    np.testing.assert_array_equal(terms[k], ref[k])
  _assert_trees_equal(grads, ref_grads)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nonfinite_batch_leaves_params_and_opt_state_unchanged(policy):
  model, optimizer, _, step = _setup(policy)
  state = train_lib.init_state(model, optimizer, 0)
  new, metrics = step(state, _batch(0, nan=True))
  assert not bool(metrics["finite"])
  assert not np.isfinite(float(metrics["loss"]))
  _assert_trees_equal(new["params"], state["params"])
  _assert_trees_equal(new["opt_state"], state["opt_state"])
  _assert_trees_equal(new["key"], state["key"])
  assert int(new["step"]) == 1  # the counter advances: fresh samples next


def test_skip_count_and_resulting_state_match_a_run_without_the_bad_batches():
  """Batches 1 and 3 of 5 are non-finite: exactly two skips, and the final
  state equals applying only the good batches at their own step numbers."""
  model, optimizer, _, step = _setup("skip")
  state = train_lib.init_state(model, optimizer, 0)
  bad = {1, 3}
  reference = state
  skips = 0
  for t in range(5):
    state, metrics = step(state, _batch(t, nan=t in bad))
    skips += int(not bool(metrics["finite"]))
    if t not in bad:
      reference, _ = step(dict(reference, step=jnp.int32(t)), _batch(t))
  assert skips == len(bad)
  _assert_trees_equal(state["params"], reference["params"])
  _assert_trees_equal(state["opt_state"], reference["opt_state"])


def _overflowing_sgd():
  """SGD with a step of 1e40 (two finite factors): the update overflows
  float32 although the loss and the gradients are finite."""
  return optax.chain(optax.scale(-1e30), optax.scale(1e10))


def test_update_that_makes_params_nonfinite_is_caught_at_that_step_skip():
  model, optimizer, _, step = _setup("skip", _overflowing_sgd())
  state = train_lib.init_state(model, optimizer, 0)
  x = _batch(0)
  new, metrics = step(state, x)
  # The loss and the gradients were finite: only the update overflowed.
  assert np.isfinite(float(metrics["loss"]))
  assert np.isfinite(float(metrics["grad_norm"]))
  assert not bool(metrics["finite"])
  _assert_trees_equal(new["params"], state["params"])
  _assert_trees_equal(new["opt_state"], state["opt_state"])
  # Without the check the same update would have produced inf parameters.
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), 0)
  grads = jax.jit(jax.grad(lambda p: -jnp.mean(model.elbo(p, key, x).elbo)))(
      state["params"])
  plain = optax.apply_updates(state["params"], optimizer.update(
      grads, state["opt_state"])[0])
  assert not all(np.isfinite(np.asarray(v)).all()
                 for v in jax.tree.leaves(plain))


def test_update_that_makes_params_nonfinite_is_flagged_at_that_step_stop():
  model, optimizer, _, step = _setup("stop", _overflowing_sgd())
  state = train_lib.init_state(model, optimizer, 0)
  _, metrics = step(state, _batch(0))
  assert np.isfinite(float(metrics["loss"]))
  assert not bool(metrics["finite"])
  # An ordinary learning rate on the same batch passes.
  model, optimizer, _, step = _setup("stop", optax.sgd(1e-2))
  _, metrics = step(train_lib.init_state(model, optimizer, 0), _batch(0))
  assert bool(metrics["finite"])


def test_parameter_check_runs_unless_the_update_bound_rules_it_out():
  """The overflowing SGD update is caught when the bound says an update may
  reach FLOAT32_SAFE_MOVE, and passes unchecked under a (false) bound of
  0: the bound, not the parameters, decides whether the check runs."""
  safe = train_lib.FLOAT32_SAFE_MOVE
  for bound, caught in ((safe, True), (jnp.inf, True), (0.0, False)):
    model, optimizer, _, step = _setup(
        "stop", _overflowing_sgd(), update_bound=lambda _, b=bound: b)
    new, metrics = step(train_lib.init_state(model, optimizer, 0), _batch(0))
    assert np.isfinite(float(metrics["grad_norm"]))
    assert bool(metrics["finite"]) == (not caught)
    finite_params = all(np.isfinite(np.asarray(v)).all()
                        for v in jax.tree.leaves(new["params"]))
    assert not finite_params  # 'stop' returns the state as computed


def test_runner_step_equals_the_always_checked_step():
  """With and without the bound, five steps (one of them a NaN batch)
  give the same states bit for bit: the skipped check changes no value."""
  model, optimizer, config, step = _setup("skip")
  checked = jax.jit(train_lib.TrainStep(model, optimizer, config))
  a = b = train_lib.init_state(model, optimizer, 0)
  for i in range(5):
    x = _batch(i, nan=(i == 2))
    a, ma = step(a, x)
    b, mb = checked(b, x)
    assert bool(ma["finite"]) == bool(mb["finite"]) == (i != 2)
    _assert_trees_equal(a, b)


def test_make_optimizer_is_optax_adam():
  """`adam_update_bound` holds for Adam alone: the runner's optimizer must
  make Adam's updates (here with clipping that never binds). A change to
  make_optimizer (weight decay, another optimizer) fails here first."""
  config = _config()
  config.grad_clip_norm = 1e9
  ours = train_lib.make_optimizer(config)
  adam = optax.adam(config.learning_rate, config.adam_b1, config.adam_b2)
  params = {"w": jnp.zeros((3, 4))}
  a, b = ours.init(params), adam.init(params)
  rng = np.random.default_rng(0)
  for _ in range(5):
    g = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    (ua, a), (ub, b) = ours.update(g, a, params), adam.update(g, b, params)
    # optax.adam with Python floats takes 1 - b2 in float64 but b2^t in
    # float32: v̂ differs by (1 - 0.999)/(1 - float32(0.999)) - 1 = 1.3e-5.
    np.testing.assert_allclose(ua["w"], ub["w"], rtol=2e-5)


@pytest.mark.parametrize("schedule,clip", [("constant", 0.0),
                                           ("cosine", 1.0),
                                           ("warmup_cosine", 0.0)])
def test_adam_update_bound_reads_the_rate_each_update_used(schedule, clip):
  """After each update the state holds the rate that update used, so the
  bound is 1024 · schedule(i) · (adam_step_bound + f)."""
  config = _config()
  config.lr_schedule, config.grad_clip_norm = schedule, clip
  config.num_train_steps, config.warmup_steps = 20, 5
  optimizer = train_lib.make_optimizer(config)
  rates = train_lib.learning_rate_schedule(config)
  params = {"w": jnp.ones((3,))}
  state = optimizer.init(params)
  step_bound = float(train_lib.adam_step_bound(0.9, 0.999))
  for i in range(8):
    _, state = optimizer.update({"w": jnp.full((3,), 0.5)}, state, params)
    np.testing.assert_allclose(
        float(train_lib.adam_update_bound(state)),
        1024 * float(rates(i)) * step_bound, rtol=1e-5, atol=1e-30)


def test_adam_update_bound_is_small_only_for_safe_settings():
  config = _config()
  model = train_lib.build_model(config, (D,))

  def bound(**fields):
    c = _config()
    c.update(fields)
    optimizer = train_lib.make_optimizer(c)
    return float(train_lib.adam_update_bound(
        train_lib.init_state(model, optimizer, 0)["opt_state"]))

  safe = train_lib.FLOAT32_SAFE_MOVE
  assert bound(learning_rate=1e-3) < safe
  assert bound(learning_rate=1e20) < safe
  assert bound(learning_rate=1e30) >= safe
  assert bound(adam_b1=0.9, adam_b2=0.5) == np.inf  # b1² ≥ b2
  # b2 = 1 - 2^-26 is a float64 below 1 but 1.0 in float32, where Adam
  # runs (v̂ = 0/0): no bound, and validation refuses it.
  assert bound(adam_b2=1 - 2.0**-26) == np.inf
  config.adam_b2 = 1 - 2.0**-26
  with pytest.raises(config_validation.ConfigError, match="adam_b2"):
    config_validation.validate(config)
  # A state without the hyperparameters of make_optimizer: no bound.
  plain = optax.sgd(1e-3).init({"w": jnp.ones(2)})
  assert float(train_lib.adam_update_bound(plain)) == np.inf
  adamw = optax.inject_hyperparams(optax.adamw)(1e-3).init({"w": jnp.ones(2)})
  assert float(train_lib.adam_update_bound(adamw)) == np.inf


@pytest.mark.parametrize("field,value", [
    ("b2", -0.5), ("b1", -0.5), ("eps", -1.0), ("eps", 0.0),
    ("eps_root", -1.0), ("learning_rate", np.nan), ("b1", np.nan)])
def test_adam_update_bound_refuses_values_outside_its_proof(field, value):
  """Negative b's (v can turn negative, 1 − b1 grows), ε ≤ 0 or
  eps_root < 0 (the denominator can vanish) and NaN: no bound."""
  config = _config()
  model = train_lib.build_model(config, (D,))
  state = train_lib.init_state(model, train_lib.make_optimizer(config), 0)
  inject = state["opt_state"][-1]
  hyper = dict(inject.hyperparams, **{field: jnp.float32(value)})
  opt_state = state["opt_state"][:-1] + (inject._replace(hyperparams=hyper),)
  assert not float(train_lib.adam_update_bound(opt_state)) < (
      train_lib.FLOAT32_SAFE_MOVE)
  assert train_lib.make_train_step(model, _config()).update_bound is (
      train_lib.adam_update_bound)


def test_stack_step_uses_the_runner_step(monkeypatch):
  """make_stack_step builds its step with make_train_step (the bound)."""
  made = []
  real = train_lib.make_train_step
  monkeypatch.setattr(train_lib, "make_train_step",
                      lambda *a: made.append(a) or real(*a))
  config = _config()
  model = train_lib.build_model(config, (D,))
  stack_lib.make_stack_step(model, config, [0])
  stack_lib.make_stack_step(model, config, [0, 0])
  assert len(made) == 2


def test_vmapped_runner_step_checks_the_member_whose_rate_overflows():
  """Members at learning rates 1e-3 and inf (a sweep group): the second
  update makes parameters inf, its bound is not below FLOAT32_SAFE_MOVE,
  and only that member is flagged."""
  config = _config("stop")
  model = train_lib.build_model(config, (D,))
  optimizer = train_lib.make_optimizer(config)
  states = [train_lib.init_state(model, optimizer, s) for s in range(2)]
  states[1]["opt_state"] = stack_lib.set_learning_rate(
      states[1]["opt_state"], np.inf)
  step = stack_lib.make_stack_step(model, config, [0, 1])
  _, metrics = step(stack_lib.stack_trees(states),
                    jnp.stack([_batch(0), _batch(1)]))
  np.testing.assert_array_equal(metrics["finite"], [True, False])


def _adam_ratios(gradients, b1, b2):
  """|update| / learning rate of the runner's Adam (learning rate 1) fed
  `gradients` [T, N] in turn: [T, N]."""
  config = _config()
  config.learning_rate, config.adam_b1, config.adam_b2 = 1.0, b1, b2
  optimizer = train_lib.make_optimizer(config)
  params = jnp.zeros(gradients.shape[1:], jnp.float32)

  def one(state, g):
    updates, state = optimizer.update(g, state, params)
    return state, jnp.abs(updates)

  return np.asarray(jax.jit(lambda g: jax.lax.scan(
      one, optimizer.init(params), g)[1])(gradients))


@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)])
def test_adam_step_bound_is_attained_where_cauchy_schwarz_is_tight(b1, b2):
  """Gradients g_{t−k} ∝ (b1/b2)^k (growing as (b2/b1)^s) make the
  Cauchy-Schwarz step of `adam_step_bound` an equality: |update|/lr must
  equal (1 − b1)/(1 − b1ᵗ) √((1 − b2ᵗ)(1 − ρᵗ)/((1 − b2)(1 − ρ))), and
  approach the bound, (1 − b1)/√((1 − b2)(1 − ρ)), from below."""
  t = np.arange(1, 1001 if b1 == 0 else 61)
  rho = b1 * b1 / b2
  closed = lambda t: ((1 - b1) / (1 - b1**t) * np.sqrt(
      (1 - b2**t) * (1 - rho**t) / ((1 - b2) * (1 - rho))))
  if b1 == 0:  # m̂ = g_t: the extremal sequence is 0, ..., 0, g_t
    g = np.zeros((len(t), 2), np.float32)
    g[-1] = [1e-3, -7.0]
    ratios, expected = _adam_ratios(jnp.asarray(g), b1, b2)[-1:], closed(t)[-1:]
  else:
    g = ((b2 / b1) ** t)[:, None].astype(np.float32) * np.float32(
        [[1e-3, -7.0]])
    ratios, expected = _adam_ratios(jnp.asarray(g), b1, b2), closed(t)
  np.testing.assert_allclose(ratios, np.repeat(expected[:, None], 2, 1),
                             rtol=1e-4)
  bound = float(train_lib.adam_step_bound(b1, b2))
  assert ratios.max() <= bound * (1 + 1e-5)
  # The supremum: the closed form tends to the bound (float64; the growing
  # sequence leaves float32 after a few hundred steps). The bound is
  # computed from float32 b's, as Adam runs: 1 - float32(0.999) is 1.3e-5
  # below 0.001.
  assert closed(np.float64(1e6)) == pytest.approx(bound, rel=2e-5)


def test_adam_step_bound_holds_for_wild_gradients():
  """Heavy-tailed gradients over 48 orders of magnitude, sign flips,
  zeros and tiny ones whose terms in v flush to zero: no update exceeds
  the bound, plus the flushed part adam_update_bound adds."""
  rng = np.random.default_rng(0)
  t, n = 300, 64
  g = rng.standard_cauchy((t, n)) * 10.0**rng.uniform(-30, 18, (t, n))
  g[rng.random((t, n)) < 0.1] = 0.0
  g[rng.random((t, n)) < 0.05] = 1e-18  # (1 − b2)·g² flushes in float32
  for b1, b2 in ((0.9, 0.999), (0.99, 0.999), (0.5, 0.9)):
    ratios = _adam_ratios(jnp.asarray(g.astype(np.float32)), b1, b2)
    assert np.isfinite(ratios).all()
    config = _config()
    config.learning_rate, config.adam_b1, config.adam_b2 = 1.0, b1, b2
    state = train_lib.make_optimizer(config).init({"w": jnp.ones(1)})
    # adam_update_bound without its margin of 1024: the step bound plus
    # the flushed part.
    assert ratios.max() <= float(train_lib.adam_update_bound(state)) / 1024


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_vmapped_step_equals_single_steps(policy):
  """A sweep group of 3 models, the middle one fed a NaN batch: the vmapped
  step (lax.cond becomes a select) gives each model its single-step values;
  the skipped one bit-identical to its input."""
  model, optimizer, config, step = _setup(policy)
  states = [train_lib.init_state(model, optimizer, s) for s in range(3)]
  batches = [_batch(s, nan=(s == 1)) for s in range(3)]
  stack = lambda trees: jax.tree.map(lambda *v: jnp.stack(v), *trees)
  vstep = jax.jit(jax.vmap(train_lib.TrainStep(model, optimizer, config)))
  vnew, vmetrics = vstep(stack(states), stack(batches))
  for i, (s, b) in enumerate(zip(states, batches)):
    new, metrics = step(s, b)
    assert bool(vmetrics["finite"][i]) == bool(metrics["finite"]) == (i != 1)
    mine = jax.tree.map(lambda v: v[i], vnew)
    for a, c in zip(jax.tree.leaves(mine), jax.tree.leaves(new)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=2e-6,
                                 atol=1e-7)
  _assert_trees_equal(jax.tree.map(lambda v: v[1], vnew["params"]),
                      states[1]["params"])
  _assert_trees_equal(jax.tree.map(lambda v: v[1], vnew["opt_state"]),
                      states[1]["opt_state"])
