"""The VAE wiring: likelihood modes, σ_dec in the pytree, masks, images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.core import likelihoods
from vae_jax.models.networks import make_networks
from vae_jax.models.vae import VAE


def make(likelihood="gaussian", mode="fixed", sigma=0.3, event=(6,)):
  enc, dec = make_networks("mlp", 3, event, hidden=(8,))
  model = VAE(enc, dec, event, 3, likelihood, mode, sigma)
  return model, model.init(jax.random.key(0))


def test_fixed_sigma_gets_no_gradient_and_learned_does():
  x = jax.random.uniform(jax.random.key(1), (5, 6))
  for mode, expect_zero in (("fixed", True), ("learned", False),
                            ("learned_per_dim", False)):
    model, params = make(mode=mode)
    grads = jax.grad(lambda p: jnp.mean(
        model.elbo(p, jax.random.key(2), x).elbo))(params)
    g = np.asarray(grads["log_sigma_dec"])
    assert (np.all(g == 0)) == expect_zero, mode
    assert g.shape == (() if mode != "learned_per_dim" else (6,))


def test_gaussian_likelihood_uses_sigma_from_params():
  model, params = make(sigma=0.3)
  x = jax.random.uniform(jax.random.key(1), (4, 6))
  z = jax.random.normal(jax.random.key(2), (4, 3))
  mean = model.decode(params, z)
  expected = likelihoods.gaussian_log_likelihood(x, mean, jnp.log(0.3))
  np.testing.assert_allclose(model.log_likelihood_fn(params, x)(z), expected,
                             rtol=1e-6)


def test_optimal_sigma_ignores_padded_rows():
  model, params = make(mode="optimal")
  x = jax.random.uniform(jax.random.key(1), (4, 6))
  z = jax.random.normal(jax.random.key(2), (4, 3))
  real = model.log_likelihood_fn(params, x[:3])(z[:3])
  padded_x = x.at[3].set(0.0)
  mask = jnp.array([1.0, 1.0, 1.0, 0.0])
  masked = model.log_likelihood_fn(params, padded_x, mask)(z)[:3]
  np.testing.assert_allclose(masked, real, rtol=1e-6)
  unmasked = model.log_likelihood_fn(params, padded_x)(z)[:3]
  assert not np.allclose(unmasked, real, rtol=1e-6)


def test_bernoulli_decoder_mean_is_a_probability():
  model, params = make(likelihood="bernoulli")
  z = 50.0 * jax.random.normal(jax.random.key(3), (4, 3))
  mean = model.decoder_mean(params, z)
  np.testing.assert_allclose(mean, jax.nn.sigmoid(model.decode(params, z)))
  assert float(mean.min()) >= 0.0 and float(mean.max()) <= 1.0


@pytest.mark.parametrize("arch, event", [("mlp", (64,)), ("conv", (32, 32, 3)),
                                         ("linear", (4,))])
def test_networks_map_to_the_declared_shapes(arch, event):
  latent = 4
  enc, dec = make_networks(arch, latent, event, hidden=(8,), channels=(4, 8))
  x = jnp.zeros((2,) + event)
  pe = enc.init(jax.random.key(0), x)
  mean, log_var = enc.apply(pe, x)
  assert mean.shape == log_var.shape == (2, latent)
  pd = dec.init(jax.random.key(1), mean)
  assert dec.apply(pd, mean).shape == (2,) + event
