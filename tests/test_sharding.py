"""How host batches reach the jitted train step (`sharding.step_input`)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from vae_jax import config_base
from vae_jax.training import sharding
from vae_jax.training import step as step_lib


def test_one_device_feeds_the_numpy_batch_with_the_same_step_results():
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = config_base.base_config()
  config.hidden, config.latent_dim = (16,), 3
  model = step_lib.build_model(config, (12,))
  optimizer = step_lib.make_optimizer(config)
  step = jax.jit(step_lib.TrainStep(model, optimizer, config))
  state = jax.device_put(step_lib.init_state(model, optimizer, 0),
                         sharding.replicated(mesh))
  batch = (np.random.default_rng(0).random((8, 12)) < 0.3).astype(np.float32)
  fed = sharding.step_input(batch, mesh)
  assert fed is batch  # no transfer of its own: jit's dispatch moves it
  got, _ = step(state, fed)
  want, _ = step(state, sharding.global_batch(batch, mesh))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


_EIGHT_DEVICES = textwrap.dedent('''
    import jax
    import numpy as np
    from vae_jax.training import sharding
    assert jax.device_count() == 8
    mesh = sharding.make_mesh()
    batch = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    fed = sharding.step_input(batch, mesh)
    assert isinstance(fed, jax.Array), type(fed)
    assert fed.sharding.is_equivalent_to(sharding.batch_sharded(mesh), 2)
    np.testing.assert_array_equal(np.asarray(fed), batch)
    print("sharded over", len(fed.sharding.device_set), "devices")
''')


def test_several_devices_get_the_batch_split_over_the_data_axis():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", _EIGHT_DEVICES], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sharded over 8 devices" in proc.stdout
