"""The §3 linear-Gaussian run's report: learned parameters vs the optimum.

For `architecture='linear'` on `dataset='linear_gaussian'` the final
metrics carry this report beside the usual ones, in nats.
"""

import jax.numpy as jnp
import numpy as np

from vae_jax.core import linear_gaussian


def report(params, config, dataset):
  """Learned §3 parameters beside the closed-form optimum, in nats.

  The optimum family: v = μ, c² + s² = σ², q = the exact posterior; its
  expected ELBO is −(d/2)(log 2πσ² + 1).
  """
  lg = config.linear_gaussian
  enc = params["encoder"]["params"]
  dec = {"c": params["decoder"]["params"]["c"],
         "v": params["decoder"]["params"]["v"],
         "log_s": params["log_sigma_dec"]}
  enc = {"a": enc["a"], "b": enc["b"], "log_t": enc["log_t"]}
  x = jnp.stack([dataset.test[i] for i in range(len(dataset.test))])
  mu = jnp.full((lg.dim,), lg.mu)
  posterior_at = lambda xx: linear_gaussian.exact_posterior(dec, xx)
  post = posterior_at(x)
  c2s2 = jnp.square(dec["c"]) + jnp.exp(2 * dec["log_s"])
  out = {
      "learned": {k: np.asarray(v).tolist() for k, v in
                  {**enc, **dec}.items()},
      "c^2+s^2 (optimum: sigma^2)": np.asarray(c2s2).tolist(),
      "sigma^2": lg.sigma**2, "mu": lg.mu,
      "encoder mean slope a vs exact c/(c^2+s^2)":
          [np.asarray(enc["a"]).tolist(),
           np.asarray(dec["c"] / c2s2).tolist()],
      "test exact log p(x)": float(jnp.mean(
          linear_gaussian.log_marginal(dec, x))),
      "test exact ELBO": float(jnp.mean(
          linear_gaussian.exact_elbo(enc, dec, x))),
      "expected log p(x) at learned params": float(
          linear_gaussian.expected_log_marginal(dec, mu, lg.sigma)),
      "optimum expected log p(x) = ELBO": float(
          linear_gaussian.optimal_expected_elbo(lg.dim, lg.sigma)),
      "test mean |posterior mean error|": float(jnp.mean(jnp.abs(
          post.mean - (enc["a"] * x + enc["b"])))),
  }
  return out
