"""Models: Flax Linen networks, and the VAE that joins them to a likelihood.

  networks  encoder x -> (mean, log_var) and decoder z -> likelihood
            parameters: MLP, conv and the §3 linear model
  vae       networks + likelihood -> ELBO, L_K, samples, reconstructions
"""
