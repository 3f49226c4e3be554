r"""Compression with a trained VAE: the code lengths the ELBO promises, and
a bits-back coder (BB-ANS) that writes them.

    python -m experiments.compress --workdir=runs/digits
    python -m experiments.compress --sweep_dir=runs/sweep   # R–D per σ_dec
    python -m experiments.compress --workdir=RUN --sweep_dir=SWEEP

With --workdir: for every test example, rate = KL(q‖p)/ln 2 bits,
distortion = −E_q log p(x|z)/ln 2 bits (plus D·log2(levels) for dequantized
data: their sum is the bits-back code length −ELBO/ln 2), −L_K/ln 2 bits and
bits/dim of both bounds; writes compression.csv and summary.json. Then, for
discrete data, it codes the test split with `vae_jax.applications.bits_back`
(latents on a grid of step --latent_step), checks the round trip is
bit-exact, and prints the achieved bits/dim against −ELBO and −L_K, the
overhead split into discretization, the draw of ẑ, ANS precision, initial
bits and header, baselines (independent pixels, gzip, PNG), encode/decode
images/s, and a table of the overhead as the latent grid is refined
(--refine_steps). Writes bits_back.json. All to WORKDIR/compression/ (or
--output_dir).

With --sweep_dir: reads the σ_dec sweep's results.csv (and its sweep.json
for the data's dimension and levels), prints one rate–distortion point in
bits per σ_dec and setting (seeds averaged), the distortion being the code
length of x given z under a Gaussian at the point's test MSE (comparable
across σ_dec), and writes rate_distortion.csv and rate_distortion.png to
--output_dir (default SWEEP_DIR/compression, or WORKDIR/compression when
both are given).
"""

import sys

from absl import flags
import numpy as np

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
_BITS_BACK = flags.DEFINE_boolean(
    "bits_back", True, "Code the test split with the bits-back coder.")
_LATENT_STEP = flags.DEFINE_float(
    "latent_step", 0.05, "δ: latent grid step of the coder (prior std 1).")
_LATENT_RANGE = flags.DEFINE_float(
    "latent_range", 8.0, "The latent grid covers ±latent_range.")
_CODER_BATCH = flags.DEFINE_integer(
    "coder_batch_size", None, "Examples per vectorized coder step; default "
    "the run's eval_batch_size.")
_CODER_RAMP = flags.DEFINE_float(
    "coder_ramp", 0.25, "Coder batches grow from 1 example by this fraction "
    "of the examples coded so far (fewer initial bits); 0: full batches.")
_REFINE = flags.DEFINE_list(
    "refine_steps", ["2", "1", "0.5", "0.2", "0.1", "0.05", "0.02", "0.01",
                     "0.002"],
    "Latent steps δ of the refinement table; empty for none.")
_CODER_SAMPLES = flags.DEFINE_integer(
    "coder_samples", 4, "Monte Carlo draws per example of the expected code "
    "lengths (continuous and discretized −ELBO).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Throughput rounds (after one "
                               "warm-up).")


def _print_run(summary, out_dir):
  print(f"{summary['dataset']}: {summary['num_examples']} test examples, "
        f"D = {summary['num_dims']}, averages in bits per example")
  print(f"  rate        KL(q‖p)/ln2          {summary['rate_bits']:10.3f}")
  deq = summary["dequantization_nats"] or 0.0
  print(f"  distortion  −E_q log p(x|z)/ln2  "
        f"{summary['distortion_bits']:10.3f}   (M={summary['elbo_samples']})"
        + (f", with D log2 levels = {deq / np.log(2):.3f}" if deq else ""))
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


def _print_bits_back(report, summary):
  main = report["main"]
  n, d = main["num_examples"], main["num_dims"]
  per_dim = lambda bits: bits / (n * d)
  levels = report["levels"]
  print(f"bits-back coding (BB-ANS, constriction ANS, 24-bit probabilities) "
        f"of {n} test images, D = {d}, "
        + ("binary pixels" if levels is None else f"{levels} levels")
        + f"; batches of {report['batch_size']} (ramp {report['ramp']:g}: "
        f"{report['num_batches']} batches); latents on the grid kδ, "
        f"δ = {report['latent_step']:g}, |kδ| ≤ {report['latent_range']:g}")
  print("  round trip: bit-exact")
  rows = [("−L_K (model)", summary["bits_per_dim_iwae"] * n * d,
           f"K={summary['iwae_samples']}"),
          ("−ELBO (model)", summary["bits_per_dim_elbo"] * n * d,
           f"M={summary['elbo_samples']}")]
  if summary["dequantization_nats"]:
    rows[0] = (rows[0][0] + ", dequantized", *rows[0][1:])
    rows[1] = (rows[1][0] + ", dequantized", *rows[1][1:])
  rows += [
      ("−ELBO, coder's likelihood", main["neg_elbo"],
       "continuous latents, P ≥ 2^−24; the bound"),
      ("achieved", main["achieved"], f"{main['bytes']} bytes"),
      ("overhead = achieved − bound", main["achieved"] - main["neg_elbo"],
       ""),
      ("  discretization of z", main["discretization"],
       f"± {per_dim(main['discretization_se']):.5f} (SE), expected"),
      ("  this draw of ẑ", main["draw"],
       f"± {per_dim(main['draw_se']):.5f} (SE); 0 on average, up to the "
       "24-bit posterior it is drawn from"),
      ("  ANS precision", main["ans"], "written − ideal"),
      ("  initial bits", main["initial"], "pool words consumed"),
      ("  header", main["header"], "12 bytes")]
  names = {"independent_pixels": "independent-pixel "
           + ("Bernoulli" if levels is None else "categorical")
           + " (train marginals)",
           "gzip": "gzip -9 of the same " + ("bits" if levels is None
                                             else "bytes"),
           "png": ("1-bit" if levels is None else "8-bit") + " PNG of the "
           "same images (one mosaic)"}
  for name, bits in report["baselines"].items():
    rows.append((names[name], bits, "baseline"))
  print(f"  {'':44s}{'bits/dim':>10s}{'bits/image':>12s}")
  for name, bits, note in rows:
    print(f"  {name:44s}{per_dim(bits):10.5f}{bits / n:12.3f}  {note}")
  t = report["throughput"]
  med = {k: float(np.median(v)) for k, v in t.items()}
  rounds = len(t["encode_wall"])
  print(f"  throughput, median of {rounds} rounds [min, max], images/s: "
        f"encode {med['encode_wall']:.0f} [{min(t['encode_wall']):.0f}, "
        f"{max(t['encode_wall']):.0f}] wall, {med['encode_cpu']:.0f} CPU; "
        f"decode {med['decode_wall']:.0f} [{min(t['decode_wall']):.0f}, "
        f"{max(t['decode_wall']):.0f}] wall, {med['decode_cpu']:.0f} CPU; "
        f"decode/encode {med['decode_wall'] / med['encode_wall']:.2f}")
  if report["refinement"]:
    print("  refining the latent grid (bits/dim; overhead = achieved − "
          "bound):")
    print(f"  {'δ':>8s}{'bins':>8s}{'achieved':>10s}{'overhead':>10s}"
          f"{'discretization ± SE':>22s}{'draw':>10s}{'ANS':>9s}"
          f"{'initial':>9s}")
    for r in report["refinement"]:
      print(f"  {r['latent_step']:8g}{r['bins']:8d}"
            f"{per_dim(r['achieved']):10.5f}"
            f"{per_dim(r['achieved'] - r['neg_elbo']):10.5f}"
            f"{per_dim(r['discretization']):12.5f} ± "
            f"{per_dim(r['discretization_se']):7.5f}"
            f"{per_dim(r['draw']):10.5f}"
            f"{per_dim(r['ans']):9.5f}{per_dim(r['initial']):9.5f}")
  print("  wrote bits_back.json")


def _print_sweep(points, out_dir, compression):
  print("rate–distortion per σ_dec, bits per example (seeds averaged); "
        "distortion = code length of x given z under N(f(z), MSE) + "
        "D log2 levels, comparable across σ_dec; −ELBO: the model's own, "
        "with D log2 levels:")
  # The settings that tell the points apart, σ_dec shown by its label.
  shown = [k for k in points[0] if k not in compression.OUTCOME_COLUMNS and
           k not in ("sigma_dec", "sigma_dec_mode", "rate_bits",
                     "distortion_bits", "total_bits", "neg_elbo_bits",
                     "num_runs") and
           len({str(p.get(k)) for p in points}) > 1]
  cell = lambda v: f"{v:g}" if isinstance(v, (int, float)) else str(v)
  print("  " + "".join(f"{k:>14s}" for k in shown) +
        f"{'sigma_dec':>22s}{'rate':>10s}{'distortion':>12s}{'total':>10s}"
        f"{'−ELBO':>10s}{'runs':>6s}")
  for p in points:
    print("  " + "".join(f"{cell(p.get(k)):>14s}" for k in shown) +
          f"{compression.point_label(p):>22s}{p['rate_bits']:10.3f}"
          f"{p['distortion_bits']:12.3f}{p['total_bits']:10.3f}"
          f"{p['neg_elbo_bits']:10.3f}"
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
      summary = compression.run(trained, out_dir, seed=_SEED.value,
                                elbo_samples=_ELBO_SAMPLES.value,
                                iwae_samples=_IWAE_SAMPLES.value,
                                batch_size=_BATCH_SIZE.value)
      _print_run(summary, out_dir)
      if _BITS_BACK.value and "bits_per_dim_iwae" in summary:
        from vae_jax.applications import bits_back  # pylint: disable=g-import-not-at-top
        report = compression.bits_back_report(
            trained, out_dir, bits_back.Discretization(
                _LATENT_STEP.value, _LATENT_RANGE.value),
            _CODER_BATCH.value, _CODER_RAMP.value,
            [float(s) for s in _REFINE.value],
            _CODER_SAMPLES.value, _ROUNDS.value, _SEED.value, summary)
        _print_bits_back(report, summary)
    if _SWEEP_DIR.value:
      _print_sweep(compression.sweep_report(_SWEEP_DIR.value, out_dir),
                   out_dir, compression)


if __name__ == "__main__":
  cli.run(main, config_flag=None)
