r"""Compression with a trained VAE: rate and distortion in bits per example.

    python -m experiments.compress --workdir=runs/digits_anomaly
    python -m experiments.compress --sweep_dir=runs/sweep   # R–D per σ_dec
    python -m experiments.compress --workdir=RUN --sweep_dir=SWEEP

With --workdir: for every test example, rate = KL(q‖p)/ln 2 bits,
distortion = −E_q log p(x|z)/ln 2 bits (their sum is the bits-back code
length −ELBO/ln 2), −L_K/ln 2 bits and, for discrete data, bits/dim of both
bounds. Prints the averages and writes WORKDIR/compression/ (or
--output_dir): compression.csv (per example) and summary.json.

With --sweep_dir: reads the σ_dec sweep's results.csv (columns sigma_dec,
kl and reconstruction in nats, and any other settings such as latent_dim
or sigma_dec_mode), prints one rate–distortion point in bits per σ_dec and
setting (seeds averaged) and writes rate_distortion.csv and
rate_distortion.png to --output_dir (default SWEEP_DIR/compression, or
WORKDIR/compression when both are given).
"""

import sys

from absl import app
from absl import flags

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir.")
_SWEEP_DIR = flags.DEFINE_string(
    "sweep_dir", None, "A σ_dec sweep's folder (or its results.csv).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Output folder; default WORKDIR/compression or "
    "SWEEP_DIR/compression.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the Monte Carlo estimates.")
_ELBO_SAMPLES = flags.DEFINE_integer(
    "elbo_samples", 16, "M samples of the distortion's Monte Carlo estimate.")
_IWAE_SAMPLES = flags.DEFINE_integer(
    "iwae_samples", None, "K of L_K; default the run's final_iwae_samples.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None,
                                   "Examples per batch; default the run's "
                                   "eval_batch_size.")


def _print_run(summary, out_dir):
  print(f"{summary['dataset']}: {summary['num_examples']} test examples, "
        f"D = {summary['num_dims']}, averages in bits per example")
  print(f"  rate        KL(q‖p)/ln2          {summary['rate_bits']:10.3f}")
  print(f"  distortion  −E_q log p(x|z)/ln2  "
        f"{summary['distortion_bits']:10.3f}   (M={summary['elbo_samples']})")
  print(f"  −ELBO/ln2 = rate + distortion    {summary['neg_elbo_bits']:10.3f}")
  print(f"  −L_K/ln2                         {summary['nll_iwae_bits']:10.3f}"
        f"   (K={summary['iwae_samples']})")
  if "bits_per_dim_iwae" in summary:
    print(f"  bits/dim: ELBO {summary['bits_per_dim_elbo']:.4f}, IWAE "
          f"{summary['bits_per_dim_iwae']:.4f} (dequantization "
          f"{summary['dequantization_nats']:.4g} nats)")
  else:
    print("  bits/dim: not defined for continuous data (the distortion is a "
          "differential code length)")
  print(f"wrote {out_dir}/compression.csv, summary.json")


def _print_sweep(points, out_dir, compression):
  print("rate–distortion per σ_dec, bits per example (seeds averaged):")
  # The settings that tell the points apart, σ_dec shown by its label.
  shown = [k for k in points[0] if k not in compression.OUTCOME_COLUMNS and
           k not in ("sigma_dec", "sigma_dec_mode", "rate_bits",
                     "distortion_bits", "neg_elbo_bits", "num_runs") and
           len({str(p.get(k)) for p in points}) > 1]
  cell = lambda v: f"{v:g}" if isinstance(v, (int, float)) else str(v)
  print("  " + "".join(f"{k:>14s}" for k in shown) +
        f"{'sigma_dec':>22s}{'rate':>10s}{'distortion':>12s}{'−ELBO':>10s}"
        f"{'runs':>6s}")
  for p in points:
    print("  " + "".join(f"{cell(p.get(k)):>14s}" for k in shown) +
          f"{compression.point_label(p):>22s}{p['rate_bits']:10.3f}"
          f"{p['distortion_bits']:12.3f}{p['neg_elbo_bits']:10.3f}"
          f"{p['num_runs']:6d}")
  print(f"wrote {out_dir}/rate_distortion.csv, rate_distortion.png")


def main(argv):
  cli.reject_extra_args(argv)
  if not (_WORKDIR.value or _SWEEP_DIR.value):
    print("error: give --workdir (a trained run), --sweep_dir (a σ_dec "
          "sweep), or both", file=sys.stderr)
    sys.exit(2)
  # Imports after flag parsing keep --help fast.
  from vae_jax.applications import common, compression  # pylint: disable=g-import-not-at-top

  cli.quiet_library_logs()
  with common.one_line_errors():
    out_dir = common.output_dir(_WORKDIR.value or _SWEEP_DIR.value,
                                "compression", _OUTPUT_DIR.value)
    if _WORKDIR.value:
      trained = common.load_trained(_WORKDIR.value)
      _print_run(compression.run(trained, out_dir, seed=_SEED.value,
                                 elbo_samples=_ELBO_SAMPLES.value,
                                 iwae_samples=_IWAE_SAMPLES.value,
                                 batch_size=_BATCH_SIZE.value), out_dir)
    if _SWEEP_DIR.value:
      _print_sweep(compression.sweep_report(_SWEEP_DIR.value, out_dir),
                   out_dir, compression)


if __name__ == "__main__":
  app.run(main)
