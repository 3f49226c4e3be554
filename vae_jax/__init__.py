"""vae_jax: variational autoencoders in JAX, in nats, with closed-form checks.

The math core (this namespace) is jax-only and pure: explicit PRNG keys,
per-example outputs, composable under jit / vmap / grad / pmap / shard_map.
"""

from vae_jax.core.diagnostics import (active_units, bits_per_dim,
                                 dequantization_nats_8bit, latent_activity)
from vae_jax.core.distributions import (DiagGaussian, diag_gaussian_log_prob,
                                   diag_gaussian_log_prob_standardized,
                                   kl_diag_gaussians, kl_diag_to_std_normal,
                                   kl_diag_to_std_normal_per_dim, kl_mvn,
                                   mvn_log_prob, std_normal_log_prob)
from vae_jax.core.likelihoods import (
    bernoulli_log_likelihood, calibrated_gaussian_log_likelihood,
    discretized_gaussian_log_likelihood,
    discretized_logistic_mixture_log_likelihood, gaussian_log_likelihood,
    optimal_sigma_sq)
from vae_jax.core.objectives import (ElboTerms, SampleTerms, elbo, encode,
                                iwae_bound, iwae_bound_chunked, log_mean_exp,
                                reparam, reparam_with_noise, sample_terms)

__all__ = [
    "DiagGaussian", "ElboTerms", "SampleTerms", "active_units",
    "bernoulli_log_likelihood", "bits_per_dim",
    "calibrated_gaussian_log_likelihood", "dequantization_nats_8bit",
    "diag_gaussian_log_prob", "diag_gaussian_log_prob_standardized",
    "discretized_gaussian_log_likelihood",
    "discretized_logistic_mixture_log_likelihood", "elbo", "encode", "gaussian_log_likelihood",
    "iwae_bound", "iwae_bound_chunked", "kl_diag_gaussians",
    "kl_diag_to_std_normal", "kl_diag_to_std_normal_per_dim", "kl_mvn",
    "latent_activity", "log_mean_exp", "mvn_log_prob", "optimal_sigma_sq",
    "reparam", "reparam_with_noise", "sample_terms", "std_normal_log_prob",
]
