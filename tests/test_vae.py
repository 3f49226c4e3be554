"""The VAE wiring: likelihood modes, σ_dec in the pytree, masks, images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.core import likelihoods
from vae_jax.models.networks import make_networks
from vae_jax.models.vae import VAE, build_vae


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


def _config(**fields):
  from vae_jax import config_base  # pylint: disable=g-import-not-at-top
  c = config_base.base_config()
  c.latent_dim, c.hidden, c.channels = 3, (8,), (4,)
  for name, value in fields.items():
    c[name] = value
  return c


def _levels(key, shape, num_levels=256):
  return jax.random.randint(key, shape, 0, num_levels) / (num_levels - 1)


@pytest.mark.parametrize("mode, shape", [("fixed", ()), ("learned", ()),
                                         ("learned_per_channel", (3,)),
                                         ("learned_per_dim", (4, 4, 3))])
def test_discretized_gaussian_wiring_and_sigma_shapes(mode, shape):
  model = build_vae(_config(architecture="conv", activation="gelu",
                            likelihood="discretized_gaussian",
                            sigma_dec_mode=mode, sigma_dec=0.05), (4, 4, 3))
  params = model.init(jax.random.key(0))
  assert params["log_sigma_dec"].shape == shape
  x = _levels(jax.random.key(1), (2, 4, 4, 3))
  z = jax.random.normal(jax.random.key(2), (2, 3))
  expected = likelihoods.discretized_gaussian_log_likelihood(
      x, model.decode(params, z), jnp.log(0.05), 3)
  np.testing.assert_allclose(model.log_likelihood_fn(params, x)(z), expected,
                             rtol=1e-6)
  grads = jax.jit(jax.grad(lambda p: jnp.mean(
      model.elbo(p, jax.random.key(3), x).elbo)))(params)
  assert np.all(np.asarray(grads["log_sigma_dec"]) == 0) == (mode == "fixed")
  mean = model.decoder_mean(params, z)
  assert mean.shape == (2, 4, 4, 3)
  assert float(mean.min()) >= 0.0 and float(mean.max()) <= 1.0


@pytest.mark.parametrize("arch, event, decoder_shape", [
    ("conv", (4, 4, 3), (4, 4, 20)),   # RGB: 10 K parameters per pixel
    ("mlp", (6,), (6, 6))])            # vectors: 6 one-channel pixels, 3 K
def test_logistic_mixture_decoder_gives_its_parameters(arch, event,
                                                       decoder_shape):
  model = build_vae(_config(architecture=arch, activation="gelu",
                            likelihood="discretized_logistic_mixture",
                            num_mixtures=2), event)
  assert model.decoder_shape == decoder_shape
  params = model.init(jax.random.key(0))
  assert "log_sigma_dec" not in params
  x = _levels(jax.random.key(1), (2,) + event)
  z = jax.random.normal(jax.random.key(2), (2, 3))
  out = model.decode(params, z)
  assert out.shape == (2,) + decoder_shape
  xc = x if len(event) == 3 else x[..., None]
  expected = likelihoods.discretized_logistic_mixture_log_likelihood(
      xc, out, len(event) if len(event) == 3 else 2)
  np.testing.assert_allclose(model.log_likelihood_fn(params, x)(z), expected,
                             rtol=1e-6)
  mean = model.decoder_mean(params, z)
  assert mean.shape == (2,) + event
  assert float(mean.min()) >= 0.0 and float(mean.max()) <= 1.0


def test_discretized_elbo_is_a_bound_on_a_probability():
  # log P(x) ≤ 0 for a mass, so ELBO ≤ L_K ≤ 0 (a density could exceed 0).
  for likelihood in ("discretized_gaussian", "discretized_logistic_mixture"):
    model = build_vae(_config(likelihood=likelihood, sigma_dec=0.01,
                              num_levels=17), (5,))
    params = model.init(jax.random.key(0))
    x = _levels(jax.random.key(1), (4, 5), 17)
    l_k = jax.jit(lambda p: model.iwae(p, jax.random.key(2), x, 64))(params)
    assert np.all(np.asarray(l_k) <= 0.0), likelihood


def test_build_vae_refuses_what_cannot_work():
  with pytest.raises(ValueError, match="optimal"):
    build_vae(_config(likelihood="discretized_gaussian",
                      sigma_dec_mode="optimal"), (6,))
  with pytest.raises(ValueError, match="learned_per_channel"):
    build_vae(_config(likelihood="gaussian",
                      sigma_dec_mode="learned_per_channel"), (6,))
  # A decoder built for the event, not for the mixture's parameters.
  enc, dec = make_networks("mlp", 3, (6,), hidden=(8,))
  model = VAE(enc, dec, (6,), 3, "discretized_logistic_mixture")
  with pytest.raises(ValueError, match="build_vae"):
    model.init(jax.random.key(0))


def test_optimal_sigma_scoring_with_a_fixed_sigma_is_per_example():
  """With σ² fixed (from the training split, as evaluation does) an
  example's score depends on nothing else in its batch; the batch-MSE σ²
  of training does depend on the other rows."""
  model, params = make(mode="optimal")
  x = jax.random.uniform(jax.random.key(1), (8, 6))
  z = jax.random.normal(jax.random.key(2), (8, model.latent_dim))
  fixed = lambda rows: model.log_likelihood_fn(
      params, x[rows], sigma_sq=jnp.float32(0.04))(z[rows])
  np.testing.assert_allclose(fixed(slice(0, 3)), fixed(slice(None))[:3],
                             rtol=1e-6)
  batch = lambda rows: model.log_likelihood_fn(params, x[rows])(z[rows])
  assert not np.allclose(batch(slice(0, 3)), batch(slice(None))[:3])
  # The fixed-σ score is the Gaussian log-density at σ² = 0.04, in nats.
  mean = model.decode(params, z)
  expected = np.sum(-0.5 * np.log(2 * np.pi * 0.04)
                    - np.square(np.asarray(x) - np.asarray(mean)) / 0.08,
                    axis=1)
  np.testing.assert_allclose(fixed(slice(None)), expected, rtol=1e-5)
