"""Names shared by every stage: sweeps, models, states and CSV columns."""

SWEEPS = ("num_samples", "latent_dim", "sigma_dec", "iwae_k")
MODELS = ("linear", "vae")
LINEAR_STATES = ("init", "near_optimum", "optimum")
VAE_STATES = ("init", "trained")
PARTS = ("enc", "dec")  # φ = params["encoder"]; θ = every other entry.
STAT_FIELDS = ("num_params", "var_trace", "var_mean", "var_max", "mean_norm",
               "snr_mean_of_ratios", "snr_ratio_of_means",
               "snr_debiased_mean_of_ratios", "bias_norm",
               "bias_noise_norm", "bias_rel", "bias_max_abs_z",
               "bias_chi2_per_param", "closed_form_var_trace",
               "vs_iwae_reparam_max_abs_z")
# seconds_group: wall time of the one compiled program that ran every
# estimator of the row's setting and M (or K), compilation included.
# ess: mean over the batch of 1/Σ_k w̃_k², the effective sample size of the
# K importance weights (K sweep only); a small ess/K means heavy-tailed
# weights, where the large-K theory of the SNR does not apply yet.
COLUMNS = (("sweep", "model", "dataset", "state", "estimator", "bound",
            "num_samples", "latent_dim", "sigma_dec", "batch_size",
            "num_replicates", "chunk_size", "truth", "ess")
           + tuple(f"{p}_{f}" for p in PARTS for f in STAT_FIELDS)
           + ("seconds_group",))
# float32 round-off of a gradient that should be exactly zero: the bias
# z-score divides by √(SE² + atol²) so an estimator with (nearly) zero
# variance is not flagged for a 1e-7 difference.
ROUNDOFF_ATOL = 1e-5
