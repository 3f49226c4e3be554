"""The sweep plots: variance vs M, latent dimension and σ_dec; SNR vs K."""

import os

import numpy as np

from vae_jax.core import gradient_stats
from vae_jax.gradient_variance import rows as rows_lib
from vae_jax.gradient_variance.schema import MODELS


def write_plots(config, rows, workdir):
  """Writes one PNG per sweep present in `rows`.

  Returns:
    the paths written, in the order variance_vs_M.png, snr_vs_K.png,
    variance_vs_latent_dim.png, variance_vs_sigma_dec.png (absent sweeps
    are skipped).
  """
  files = []
  plots = (
      ("num_samples", "num_samples", "M (samples per estimate)",
       "variance_vs_M.png",
       "Trace of the covariance of one gradient estimate vs M", None),
      ("iwae_k", "num_samples", "K (samples in L_K)", "snr_vs_K.png",
       "SNR of the L_K gradient vs K (mean over parameters of |mean|/std)",
       "snr"),
      ("latent_dim", "latent_dim", "latent dimension",
       "variance_vs_latent_dim.png",
       f"Variance trace vs latent dimension (M = {config.base_num_samples})",
       None),
      ("sigma_dec", "sigma_dec", "σ_dec", "variance_vs_sigma_dec.png",
       f"Variance trace vs σ_dec (M = {config.base_num_samples})", None),
  )
  for sweep, x_key, x_label, name, title, kind in plots:
    if kind == "snr":
      k_rows = [r for r in rows if r["sweep"] == sweep]
      floor = (gradient_stats.snr_noise_floor(
          max(int(r["num_replicates"]) for r in k_rows)) if k_rows else None)
      path = plot_sweep(rows, sweep, x_key, x_label,
                        ("enc_snr_mean_of_ratios", "dec_snr_mean_of_ratios"),
                        ("encoder SNR", "decoder SNR"),
                        os.path.join(workdir, name), title, floor)
    else:
      path = plot_sweep(rows, sweep, x_key, x_label,
                        ("enc_var_trace", "dec_var_trace"),
                        ("encoder variance trace (nats²)",
                         "decoder variance trace (nats²)"),
                        os.path.join(workdir, name), title)
    if path:
      files.append(path)
  return files


def plot_sweep(rows, sweep, x_key, x_label, y_fields, y_labels, path, title,
               floor=None):
  """Log-log plot: one row of panels per model, one column per y field."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  models = [m for m in MODELS if any(r["model"] == m and r["sweep"] == sweep
                                     for r in rows)]
  if not models:
    return None
  fig, axes = plt.subplots(len(models), len(y_fields), squeeze=False,
                           figsize=(5.5 * len(y_fields), 4 * len(models)))
  styles = ["-", "--", ":", "-."]
  for i, model in enumerate(models):
    states = sorted({r["state"] for r in rows
                     if r["model"] == model and r["sweep"] == sweep})
    for j, (field, label) in enumerate(zip(y_fields, y_labels)):
      ax = axes[i][j]
      series = rows_lib.series(rows, sweep, x_key, field, model=model)
      names = sorted({k[2] for k in series})
      colors = {n: f"C{c}" for c, n in enumerate(names)}
      for (_, state, name), (xs, ys) in sorted(series.items()):
        ok = np.isfinite(ys) & (ys > 0)
        if not ok.any():
          continue
        ax.plot(xs[ok], ys[ok], styles[states.index(state) % 4], marker="o",
                ms=3, color=colors[name], label=f"{name} [{state}]")
      if floor is not None:
        ax.axhline(floor, color="gray", lw=0.8, ls=":",
                   label="SNR noise floor √(2/(πR))")
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel(x_label)
      ax.set_ylabel(label)
      ax.set_title(f"{model}: {label}", fontsize=9)
      ax.grid(True, which="both", alpha=0.3)
      if j == 0:
        ax.legend(fontsize=6)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path