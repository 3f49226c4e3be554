"""Sweeps over σ_dec × latent_dim × seed: grid, groups, runs, table, plots."""
