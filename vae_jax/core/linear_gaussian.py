"""The linear-Gaussian VAE of paper §3, where everything has a closed form.

Data:     x ~ N(μ, σ² I),                x ∈ R^d
Prior:    z ~ N(0, I),                   z ∈ R^d
Encoder:  q_φ(z|x) = N(a x + b, t² I),   φ = {a, b, log_t}
Decoder:  p_θ(x|z) = N(c z + v, s² I),   θ = {c, v, log_s}

The paper takes a, c, t, s scalar; here every parameter may also be a vector
of length d (the model factorizes over dimensions), so scalars and the
per-dimension generalization share one code path. Because all distributions
are Gaussian:

  p_θ(x)   = N(v, (c² + s²) I)
  p_θ(z|x) = N(c (x − v)/(c² + s²), s²/(c² + s²) I)
  ELBO(x)  = −½ Σ_j [log 2πs² + ((x − v − c m)² + c² t²)/s²
                     + t² + m² − 1 − log t²],   m = a x + b

These are the ground truth for the tests and the gradient-variance study:
`jax.grad` of `exact_elbo` is the exact ELBO gradient.
"""

import jax
import jax.numpy as jnp

from vae_jax.core.distributions import LOG_2PI, DiagGaussian
from vae_jax.core.likelihoods import gaussian_log_likelihood


def init_params(key, d, scale=0.5):
  """Random (encoder, decoder) parameters; each leaf has shape [d].

  Returns:
    (encoder_params, decoder_params) dicts.
  """
  k = jax.random.split(key, 6)
  normal = lambda kk: scale * jax.random.normal(kk, (d,))
  enc = {"a": 1.0 + normal(k[0]), "b": normal(k[1]), "log_t": normal(k[2])}
  dec = {"c": 1.0 + normal(k[3]), "v": normal(k[4]), "log_s": normal(k[5])}
  return enc, dec


def sample_data(key, mu, sigma, num_examples):
  """x ~ N(μ, σ² I). mu: [d]; returns [num_examples, d]."""
  eps = jax.random.normal(key, (num_examples,) + jnp.shape(mu))
  return mu + sigma * eps


def encoder_apply(enc_params, x):
  """q_φ(z|x) = N(a x + b, t² I). x: [..., d] -> (mean, log_var) [..., d]."""
  mean = enc_params["a"] * x + enc_params["b"]
  log_var = jnp.broadcast_to(2.0 * enc_params["log_t"], mean.shape)
  return mean, log_var


def decoder_mean(dec_params, z):
  """c z + v. z: [..., d] -> [..., d]."""
  return dec_params["c"] * z + dec_params["v"]


def log_likelihood(dec_params, x, z):
  """log p_θ(x|z) = log N(x | c z + v, s² I). x, z: [..., d] -> [...] nats."""
  return gaussian_log_likelihood(x, decoder_mean(dec_params, z),
                                 dec_params["log_s"])


def _marginal_var(dec_params):
  return jnp.square(dec_params["c"]) + jnp.exp(2.0 * dec_params["log_s"])


def log_marginal(dec_params, x):
  """Exact log p_θ(x) = log N(x | v, (c² + s²) I). x: [..., d] -> [...]."""
  var = _marginal_var(dec_params)
  sq = jnp.square(x - dec_params["v"]) / var
  return -0.5 * jnp.sum(sq + jnp.log(var) + LOG_2PI, axis=-1)


def exact_posterior(dec_params, x):
  """p_θ(z|x) = N(c (x − v)/(c² + s²), s²/(c² + s²) I) as a DiagGaussian."""
  var = _marginal_var(dec_params)
  mean = dec_params["c"] * (x - dec_params["v"]) / var
  log_var = 2.0 * dec_params["log_s"] - jnp.log(var)
  return DiagGaussian(mean, jnp.broadcast_to(log_var, mean.shape))


def exact_elbo(enc_params, dec_params, x):
  """ELBO(x) in closed form (module docstring). x: [..., d] -> [...] nats."""
  m = enc_params["a"] * x + enc_params["b"]
  t2 = jnp.exp(2.0 * enc_params["log_t"])
  log_s2 = 2.0 * dec_params["log_s"]
  c, v = dec_params["c"], dec_params["v"]
  expected_sq = jnp.square(x - v - c * m) + jnp.square(c) * t2
  reconstruction = -0.5 * (LOG_2PI + log_s2 + expected_sq * jnp.exp(-log_s2))
  kl = 0.5 * (t2 + jnp.square(m) - 1.0 - 2.0 * enc_params["log_t"])
  per_dim = reconstruction - kl
  return jnp.sum(jnp.broadcast_to(per_dim, jnp.shape(x)), axis=-1)


def expected_log_marginal(dec_params, mu, sigma):
  """E_{x~N(μ,σ²I)}[log p_θ(x)] in nats: the population log-likelihood."""
  var = _marginal_var(dec_params)
  sq = (sigma**2 + jnp.square(mu - dec_params["v"])) / var
  per_dim = -0.5 * (sq + jnp.log(var) + LOG_2PI)
  return jnp.sum(jnp.broadcast_to(per_dim, jnp.shape(mu)))


def optimal_params(mu, sigma, s):
  """A maximizer of the expected ELBO under x ~ N(μ, σ² I).

  The ELBO's maximum is max_θ E[log p_θ(x)] = −(d/2)(log 2πσ² + 1), reached
  when the model marginal matches the data (v = μ, c² + s² = σ²) and q is the
  exact posterior, which lies in the encoder family. The maximizers form a
  one-parameter family, indexed by the decoder noise s ∈ (0, σ):

    c = √(σ² − s²),  v = μ,  a = c/σ²,  b = −c μ/σ²,  t = s/σ.

  As s → 0 this tends to the paper's trivial solution z = (x − μ)/σ,
  x̂ = μ + σ z, where q and p(x|z) become delta functions.

  Args:
    mu: [d] data mean.
    sigma: data standard deviation (scalar).
    s: decoder noise standard deviation, 0 < s < σ.

  Returns:
    (encoder_params, decoder_params) dicts of [d] arrays.
  """
  mu = jnp.asarray(mu)
  ones = jnp.ones_like(mu)
  c = jnp.sqrt(sigma**2 - s**2)
  enc = {"a": c / sigma**2 * ones, "b": -c * mu / sigma**2,
         "log_t": jnp.log(s / sigma) * ones}
  dec = {"c": c * ones, "v": mu, "log_s": jnp.log(s) * ones}
  return enc, dec


def optimal_expected_elbo(d, sigma):
  """The ELBO's population optimum −(d/2)(log 2πσ² + 1) in nats."""
  return -0.5 * d * (LOG_2PI + 2.0 * jnp.log(sigma) + 1.0)


def trivial_encode(x, mu, sigma):
  """The paper's trivial encoder z = (x − μ)/σ (a delta posterior)."""
  return (x - mu) / sigma


def trivial_decode(z, mu, sigma):
  """The paper's trivial decoder x̂ = μ + σ z; inverts `trivial_encode`."""
  return mu + sigma * z
