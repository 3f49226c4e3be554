"""The math core on 8 (emulated CPU) devices gives the numbers of one device.

XLA fixes the device count when the backend starts, so the check runs in its
own process with XLA_FLAGS=--xla_force_host_platform_device_count=8 set before
jax is imported. It compares, on a batch of 16, the ELBO, L_K,
the chunked L_K and the KL computed
  * on one device (jit),
  * with jax.pmap over 8 devices (legacy, but users call it),
  * with jax.jit on inputs sharded over a Mesh axis 'data' (NamedSharding),
  * with jax.shard_map over the same mesh,
and also the usual training call (one key for the whole batch) under jit with
the batch sharded versus unsharded.
"""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from vae_jax.core import distributions as dist
    from vae_jax.core import linear_gaussian as lg
    from vae_jax.core import objectives as obj

    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == 8, jax.devices()
    B, D, M = 16, 3, 32

    enc, dec = lg.init_params(jax.random.key(0), D)
    x = lg.sample_data(jax.random.key(1), jnp.zeros(D), 1.5, B)
    keys = jax.random.split(jax.random.key(2), B)

    def core(key, xb):  # xb: [b, D] -> dict of [b]
      q = obj.encode(lg.encoder_apply, enc, xb)
      loglik = lambda z: lg.log_likelihood(dec, xb, z)
      return {
          "elbo": obj.elbo(key, q, loglik, M).elbo,
          "iwae": obj.iwae_bound(key, q, loglik, M),
          "iwae_chunked": obj.iwae_bound_chunked(key, q, loglik, M, 8),
          "kl": dist.kl_diag_to_std_normal(q.mean, q.log_var),
      }

    # One key per example, so that any split of the batch sees the same noise.
    per_example = jax.vmap(
        lambda key, x1: {k: v[0] for k, v in core(key, x1[None]).items()})

    def check(name, got, want):
      for k in want:
        g = got[k]
        assert len(g.sharding.device_set) == 8, (name, k, g.sharding)
        g = np.asarray(g).reshape(B)
        np.testing.assert_allclose(g, np.asarray(want[k]), rtol=1e-12, atol=0,
                                   err_msg=f"{name}/{k}")
      print(f"{name}: equal on 8 devices")

    single = jax.jit(per_example)(keys, x)
    assert len(single["elbo"].sharding.device_set) == 1
    assert np.all(np.isfinite(np.asarray(single["elbo"])))

    pmapped = jax.pmap(per_example)(keys.reshape(8, 2), x.reshape(8, 2, D))
    assert pmapped["elbo"].shape == (8, 2)
    check("pmap", pmapped, single)

    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch = NamedSharding(mesh, P("data"))
    keys_s, x_s = jax.device_put(keys, batch), jax.device_put(x, batch)
    check("jit+NamedSharding", jax.jit(per_example)(keys_s, x_s), single)

    shard_mapped = jax.jit(jax.shard_map(
        per_example, mesh=mesh, in_specs=(P("data"), P("data")),
        out_specs=P("data")))(keys_s, x_s)
    check("shard_map", shard_mapped, single)

    # The training-loop call: one key for the batch, batch sharded on 'data'.
    key = jax.random.key(3)
    want = jax.jit(core)(key, x)
    got = jax.jit(core, out_shardings=batch)(key, x_s)
    check("jit+NamedSharding, one key", got, want)
    print("MULTIDEVICE OK")
''')


def test_core_is_the_same_on_8_devices_as_on_one(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=8").strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300,
                        cwd=tmp_path)
  output = proc.stdout + proc.stderr
  assert proc.returncode == 0, output
  assert "MULTIDEVICE OK" in proc.stdout, output
  for name in ("pmap", "jit+NamedSharding", "shard_map",
               "jit+NamedSharding, one key"):
    assert f"{name}: equal" in proc.stdout, output
