"""Names shared by every stage: sweeps, models, states and CSV columns."""

# Pairing references, by bound: unbiased, and the usual choice of each.
PAIRED_REFERENCES = {"elbo": "reparam_analytic_kl", "iwae": "iwae_reparam"}
SWEEPS = ("num_samples", "latent_dim", "sigma_dec", "iwae_k")
MODELS = ("linear", "vae")
LINEAR_STATES = ("init", "near_optimum", "optimum")
VAE_STATES = ("init", "trained")
PARTS = ("enc", "dec")  # φ = params["encoder"]; θ = every other entry.
# snr_q10 / snr_median / snr_q90: quantiles over parameters (std > 0) of
# |mean|/std, the spread the mean of ratios hides.
# paired_*: the row's estimator against the group's `paired_reference` on
# the same keys (see paired.paired_summary).
SNR_QUANTILES = (("snr_q10", 0.1), ("snr_median", 0.5), ("snr_q90", 0.9))
STAT_FIELDS = (("num_params", "var_trace", "var_mean", "var_max", "mean_norm",
                "snr_mean_of_ratios", "snr_ratio_of_means",
                "snr_debiased_mean_of_ratios")
               + tuple(name for name, _ in SNR_QUANTILES)
               + ("bias_norm", "bias_noise_norm", "bias_rel",
                  "bias_max_abs_z", "bias_chi2_per_param",
                  "closed_form_var_trace", "paired_max_abs_z",
                  "paired_var_ratio"))
# init_draw: which random initialization (0, 1, ...) a VAE latent_dim row
# is; the sweep averages several draws per L (empty elsewhere).
# paired_reference: the estimator every row of its group is paired with
# (reparam_analytic_kl for the ELBO, iwae_reparam for L_K), if it ran.
# seconds_group: wall time of the one compiled program that ran every
# estimator of the row's setting and M (or K), compilation included.
# ess: mean over the batch of 1/Σ_k w̃_k², the effective sample size of the
# K importance weights (K sweep only); a small ess/K means heavy-tailed
# weights, where the large-K theory of the SNR does not apply yet.
COLUMNS = (("sweep", "model", "dataset", "state", "estimator", "bound",
            "num_samples", "latent_dim", "sigma_dec", "batch_size",
            "num_replicates", "chunk_size", "truth", "ess", "init_draw",
            "paired_reference")
           + tuple(f"{p}_{f}" for p in PARTS for f in STAT_FIELDS)
           + ("seconds_group",))
# float32 round-off of a gradient that should be exactly zero: the bias
# z-score divides by √(SE² + atol²) so an estimator with (nearly) zero
# variance is not flagged for a 1e-7 difference.
ROUNDOFF_ATOL = 1e-5
