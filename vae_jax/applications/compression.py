"""Data compression (§7): the ELBO as a code length, and a coder that
writes it.

With bits-back coding, −ELBO(x) is the expected length of a lossless code
for x, and its two terms are the two parts of the message:
  rate       R(x) = KL(q(z|x) ‖ p(z)) / ln 2 bits: what the latent costs;
  distortion D(x) = −E_q[log p(x|z)] / ln 2 bits: what coding x given z costs.
−L_K / ln 2 is the tighter code length that importance weighting approaches.
Every figure in bits here is a code length of the discrete data:
  * binary pixels: as above;
  * dequantized intensities (`levels` of them): a density on [0, 1)^D gives
    the cell probabilities of the integers, and −log P(p) ≤ E_u[−log q(x')]
    + D ln(levels), so D·log2(levels) bits are added to the distortion (and
    to −ELBO, −L_K); without them the "bits" can be negative;
  * continuous data (tabular): D is a differential quantity and no bits/dim
    is reported.
`vae_jax.applications.bits_back` writes these codes; `bits_back_report`
measures what it achieves against the bounds and against baselines.

A σ_dec sweep (`experiments.sweep`) traces a rate–distortion curve: a small
σ_dec makes distortion expensive, so the encoder spends more rate. Each
model's own −E_q log p(x|z) is not comparable across σ_dec (at a too-large
σ_dec it is dominated by D log σ_dec, not by the error), so the curve's
distortion is the code length of x given z under one rule for every point:
a Gaussian at the point's measured test MSE, the best single-σ code for its
decoder means, plus D·log2(levels):
  D_cal = (D/2) log2(2πe·MSE) + D log2(levels)   bits per example,
monotone in the MSE, so the curve agrees with the sweep's MSE plot.
"""

import csv
import json
import math
import os

import jax
import numpy as np

from vae_jax.applications import common
from vae_jax.core.diagnostics import bits_per_dim
from vae_jax.training import evaluate as eval_lib

LN2 = common.LN2


def example_bits(terms, num_dims, dequantization_nats=None):
  """Per-example code lengths in bits from bound terms in nats.

  Args:
    terms: {"elbo", "reconstruction", "kl", "iwae"}: [N] nats, e.g. from
      `common.per_example_terms`.
    num_dims: D.
    dequantization_nats: D ln(levels) for dequantized data, 0 for binary
      data, None for continuous data (no bits/dim).

  Returns:
    {"rate_bits", "distortion_bits", "neg_elbo_bits", "nll_iwae_bits"}: [N]
    bits per example, and "bits_per_dim_elbo", "bits_per_dim_iwae" [N] when
    dequantization_nats is not None. The distortion, −ELBO and −L_K include
    the dequantization (they are code lengths of the integer data);
    rate + distortion = neg_elbo.
  """
  kl = np.asarray(terms["kl"], np.float64)
  rec = np.asarray(terms["reconstruction"], np.float64)
  iwae = np.asarray(terms["iwae"], np.float64)
  deq = dequantization_nats or 0.0
  out = {"rate_bits": kl / LN2, "distortion_bits": (deq - rec) / LN2,
         "neg_elbo_bits": (kl - rec + deq) / LN2,
         "nll_iwae_bits": (deq - iwae) / LN2}
  if dequantization_nats is not None:
    out["bits_per_dim_elbo"] = bits_per_dim(kl - rec, num_dims,
                                            dequantization_nats)
    out["bits_per_dim_iwae"] = bits_per_dim(-iwae, num_dims,
                                            dequantization_nats)
  return out


def run(trained, out_dir, seed=0, elbo_samples=16, iwae_samples=None,
        batch_size=None):
  """Rate, distortion and IWAE bits of every test example.

  Writes out_dir/compression.csv (one row per test example) and
  out_dir/summary.json (the averages).

  Args:
    trained: from `common.load_trained`.
    out_dir: output folder (exists).
    seed: seed of the Monte Carlo estimates.
    elbo_samples: M of the distortion's Monte Carlo estimate.
    iwae_samples: K of L_K; default the run's final_iwae_samples.
    batch_size: default config.eval_batch_size.

  Returns:
    The averages: {"rate_bits", "distortion_bits", "neg_elbo_bits",
    "nll_iwae_bits", ["bits_per_dim_elbo", "bits_per_dim_iwae"],
    "num_examples", "num_dims", "dequantization_nats", "iwae_samples",
    "elbo_samples"}.
  """
  k = iwae_samples or trained.config.final_iwae_samples
  fn = common.per_example_terms(trained.model, elbo_samples, k,
                                trained.config.iwae_chunk_size)
  terms = common.map_split(fn, trained, "test", batch_size,
                           jax.random.key(seed))
  # With the likelihood: a discretized one on integer levels is a mass
  # (0 nats), not continuous data.
  deq = eval_lib.dequantization_nats(trained.dataset, trained.config.transform,
                                     trained.config.get("likelihood"))
  bits = example_bits(terms, trained.num_dims, deq)
  common.write_csv(os.path.join(out_dir, "compression.csv"),
                   {"index": np.arange(len(terms["kl"])), **bits})
  summary = {name: float(np.mean(v)) for name, v in bits.items()}
  summary.update(num_examples=int(len(terms["kl"])),
                 num_dims=trained.num_dims, dequantization_nats=deq,
                 iwae_samples=k, elbo_samples=elbo_samples,
                 dataset=trained.dataset.name)
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


# ------------------------------------------------------------- σ_dec sweep


def read_sweep(path):
  """Rows of a sweep's results.csv, numbers parsed (other cells kept as text).

  Args:
    path: results.csv, or the sweep folder holding it.

  Returns:
    list of {column: float | str}.
  """
  if os.path.isdir(path):
    path = os.path.join(path, "results.csv")
  if not os.path.isfile(path):
    raise common.ApplicationError(f"no sweep results at {path}: run "
                                  "python -m experiments.sweep first")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  return [{k: _number_or_text(v) for k, v in row.items()} for row in rows]


def _number_or_text(text):
  try:
    return float(text)
  except (TypeError, ValueError):
    return text


# Columns of a sweep's results.csv (see vae_jax/sweep.py) that are not
# settings of a point: what it measured, how it ran, and the seed, over
# which the points of one setting are averaged.
OUTCOME_COLUMNS = (
    "index", "seed", "elbo", "reconstruction", "kl", "nll_iwae",
    "bits_per_dim_elbo", "bits_per_dim_iwae", "active_units",
    "sigma_dec_final", "mse", "steps", "iwae_samples", "num_examples",
    "skipped_updates", "group_size", "train_time_s", "eval_time_s")


def _sort_key(cells):
  # Numbers before text, empty cells last: a mixed column still sorts.
  return tuple((0, c, "") if isinstance(c, float) else
               (2, 0.0, "") if c in ("", None) else (1, 0.0, str(c))
               for c in cells)


def calibrated_distortion_bits(mse, num_dims, levels):
  """Code length of dequantized x given z under N(f(z), MSE·I), bits.

  E[−log2 N(x'|f(z), σ²)] at σ² = MSE is (D/2) log2(2πe·MSE); the D·log2
  (levels) of the dequantization makes it a code length of the integers.

  Args:
    mse: mean squared error per dimension (pixels in [0, 1)).
    num_dims: D.
    levels: intensity levels of the data.
  """
  return (0.5 * num_dims * math.log2(2.0 * math.pi * math.e * mse)
          + num_dims * math.log2(levels))


def rate_distortion_points(rows, num_dims=None, levels=None):
  """One rate–distortion point per σ_dec (and per other swept setting).

  Args:
    rows: from `read_sweep`; need columns sigma_dec, kl (rate, nats) and
      reconstruction (E_q log p(x|z), nats), and mse for Gaussian points.
      Every column that is not an outcome (`OUTCOME_COLUMNS`) is a setting:
      rows that share all settings (several seeds) are averaged. Rows with
      a non-finite kl or reconstruction (diverged runs) are left out. σ_dec
      is empty for a learned or optimal σ_dec; its trained value is in
      sigma_dec_final. A row without sigma_dec_mode is a Bernoulli model.
    num_dims: D, needed for Gaussian points.
    levels: intensity levels of dequantized data; None for binary data.

  Returns:
    list of {<settings>, "rate_bits", "distortion_bits", "total_bits",
    "neg_elbo_bits", ["sigma_dec_final", "mse"] (when in the table),
    "num_runs"}, sorted by the settings in column order; empty cells become
    None. Bits per example. distortion is `calibrated_distortion_bits` of the
    mean MSE for a Gaussian point (comparable across σ_dec) and
    −reconstruction/ln 2 for a Bernoulli one; total = rate + distortion;
    neg_elbo is the model's own −ELBO plus D·log2(levels).

  Raises:
    common.ApplicationError: missing columns, or Gaussian points without
      num_dims and levels (continuous data has no code length).
  """
  if not rows:
    raise common.ApplicationError("the sweep results hold no rows")
  missing = [c for c in ("sigma_dec", "kl", "reconstruction")
             if c not in rows[0]]
  if missing:
    raise common.ApplicationError(
        f"sweep results lack column(s) {', '.join(missing)} (have "
        f"{', '.join(rows[0])})")
  settings = [c for c in rows[0] if c not in OUTCOME_COLUMNS]
  groups = {}
  for row in rows:
    if not all(isinstance(row[c], float) and math.isfinite(row[c])
               for c in ("kl", "reconstruction")):
      continue
    groups.setdefault(tuple(row[c] for c in settings), []).append(row)
  points = []
  for key in sorted(groups, key=_sort_key):
    group = groups[key]
    kl = float(np.mean([r["kl"] for r in group]))
    rec = float(np.mean([r["reconstruction"] for r in group]))
    point = {c: (None if v == "" else v) for c, v in zip(settings, key)}
    if isinstance(point.get("latent_dim"), float):
      point["latent_dim"] = int(point["latent_dim"])
    for name in ("sigma_dec_final", "mse"):
      values = [r.get(name) for r in group]
      if values and all(isinstance(v, float) for v in values):
        point[name] = float(np.mean(values))
    gaussian = bool(point.get("sigma_dec_mode"))
    if gaussian:
      if num_dims is None or levels is None:
        raise common.ApplicationError(
            "a Gaussian sweep's distortion is a code length only for "
            "discrete data: give the data's dimension and levels")
      if "mse" not in point:
        raise common.ApplicationError("the sweep results lack the mse column")
      deq = num_dims * math.log(levels)
      distortion = calibrated_distortion_bits(point["mse"], num_dims, levels)
    else:
      deq = 0.0
      distortion = -rec / LN2
    point.update(rate_bits=kl / LN2, distortion_bits=distortion,
                 total_bits=kl / LN2 + distortion,
                 neg_elbo_bits=(kl - rec + deq) / LN2)
    point["num_runs"] = len(group)
    points.append(point)
  return points


def sweep_data(sweep_path):
  """(D, levels) of a sweep's data, from the sweep.json next to its table.

  levels is None for binary data (or binarized images).

  Raises:
    common.ApplicationError: no sweep.json, or continuous data.
  """
  folder = sweep_path if os.path.isdir(sweep_path) else os.path.dirname(
      sweep_path)
  meta = os.path.join(folder, "sweep.json")
  if not os.path.isfile(meta):
    raise common.ApplicationError(
        f"no sweep.json in {folder}: the data's dimension and levels, which "
        "make the distortion a code length, come from it")
  with open(meta) as f:
    base = json.load(f)["config"]["base"]
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(base)
  dataset = data_lib.get_dataset(config)
  if config.transform == "dynamic_binarize" or dataset.kind == "binary":
    return dataset.dim, None
  if dataset.kind == "image8bit" and config.transform == "dequantize":
    return dataset.dim, dataset.levels
  raise common.ApplicationError(
      f"{dataset.name!r} with transform {config.transform!r} is continuous "
      "data: its distortion is not a code length")


def point_label(point):
  """σ_dec as a plot label: the fixed value, or the mode and trained value.

  A sweep records a learned σ_dec's starting value in sigma_dec and its
  trained value in sigma_dec_final; the optimal mode has no sigma_dec.
  """
  mode = point.get("sigma_dec_mode")
  if mode in (None, "fixed") and point.get("sigma_dec") is not None:
    return f"σ={point['sigma_dec']:g}"
  if not mode:
    return "bernoulli"
  final = point.get("sigma_dec_final")
  return mode if final is None else f"{mode} σ≈{final:.3g}"


_RESULT_FIELDS = ("rate_bits", "distortion_bits", "total_bits",
                  "neg_elbo_bits",
                  "sigma_dec_final", "mse", "num_runs")


def plot_rate_distortion(path, points):
  """Distortion against rate in bits; one curve per setting apart from σ_dec.

  Fixed σ_dec values of one setting are joined by a line; a learned or
  optimal σ_dec is a lone marker. Every point is labelled by `point_label`.
  """
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6.0, 4.5))
  # A curve per combination of the settings that vary (σ_dec aside).
  varying = [k for k in points[0] if k not in _RESULT_FIELDS and
             k != "sigma_dec" and len({str(p.get(k)) for p in points}) > 1]
  curves = {}
  for p in points:
    curves.setdefault(tuple((k, p.get(k)) for k in varying), []).append(p)
  for other, pts in curves.items():
    fixed = point_label(pts[0]).startswith("σ=")
    ax.plot([p["rate_bits"] for p in pts], [p["distortion_bits"] for p in pts],
            "o-" if fixed else "D", label=", ".join(
                f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                for k, v in other if v is not None) or None)
    for p in pts:
      ax.annotate(point_label(p), (p["rate_bits"], p["distortion_bits"]),
                  fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax.set_xlabel("rate KL(q‖p) / ln 2, bits per example")
  ax.set_ylabel("distortion: code length of x given z, bits per example\n"
                "(Gaussian at the test MSE + D log2 levels)", fontsize=8)
  ax.set_title("rate–distortion across σ_dec")
  if any(other for other in curves):
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def sweep_report(sweep_path, out_dir):
  """Reads a sweep, writes rate_distortion.csv and .png, returns the points."""
  rows = read_sweep(sweep_path)
  gaussian = any(r.get("sigma_dec_mode") for r in rows)
  num_dims, levels = sweep_data(sweep_path) if gaussian else (None, None)
  points = rate_distortion_points(rows, num_dims, levels)
  if not points:
    raise common.ApplicationError(f"no finite rows in the sweep at "
                                  f"{sweep_path}")
  columns = list(dict.fromkeys(k for p in points for k in p))
  with open(os.path.join(out_dir, "rate_distortion.csv"), "w",
            newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for p in points:
      writer.writerow(["" if p.get(c) is None else p[c] for c in columns])
  plot_rate_distortion(os.path.join(out_dir, "rate_distortion.png"), points)
  return points


# ------------------------------------------------- bits-back coding, measured


def coded_symbols(codec, trained, split="test"):
  """The split's examples as the codec's integer symbols, int32 [N, *event]
  (binarized as the runner evaluated them, or intensities)."""
  from vae_jax.applications import bits_back  # pylint: disable=g-import-not-at-top
  return bits_back.symbols_from_inputs(codec, common.split_inputs(trained,
                                                                  split))


def baseline_bits(train_symbols, test_symbols, levels, image_shape):
  """Code lengths of the test symbols without the VAE, bits in total.

  Args:
    train_symbols, test_symbols: int [N, *event].
    levels: None for binary pixels, else the number of intensities.
    image_shape: (H, W, C) for the PNG, or None (no PNG).

  Returns:
    {"independent_pixels": −log2 of a per-pixel categorical (Bernoulli for
     binary data) fitted to the train split with add-½ counts (its
     parameters not counted), "gzip": gzip -9 of the packed bits (one byte a
     pixel for intensities), "png": one PNG of all test images stacked
     vertically (1-bit for binary, 8-bit grey otherwise; optimize=True)}.
  """
  import gzip  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  alphabet = 2 if levels is None else levels
  train = np.asarray(train_symbols).reshape(len(train_symbols), -1)
  test = np.asarray(test_symbols).reshape(len(test_symbols), -1)
  counts = np.stack([(train == a).sum(0) for a in range(alphabet)], -1)
  probs = (counts + 0.5) / (len(train) + 0.5 * alphabet)  # [D, alphabet]
  indep = -np.log2(np.take_along_axis(probs[None], test[..., None],
                                      -1)).sum()
  raw = (np.packbits(test.astype(np.uint8).reshape(-1)) if levels is None
         else test.astype(np.uint8).reshape(-1)).tobytes()
  out = {"independent_pixels": float(indep),
         "gzip": 8.0 * len(gzip.compress(raw, compresslevel=9, mtime=0))}
  if image_shape is not None and image_shape[-1] == 1:
    h, w = image_shape[:2]
    stacked = test.reshape(-1, w)
    image = (Image.fromarray(stacked.astype(bool)) if levels is None else
             Image.fromarray(stacked.astype(np.uint8), mode="L"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    out["png"] = 8.0 * len(buffer.getvalue())
  return out


def coder_throughput(codec, x, rounds=3):
  """Encode and decode rates of `bits_back`, images per second.

  One warm-up round (compilation), then `rounds` rounds, encode and decode
  interleaved so both see the same machine load.

  Returns:
    {"encode_wall", "decode_wall", "encode_cpu", "decode_cpu"}: lists of
    images/s per round (wall clock; process CPU time over all threads).
  """
  import time  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import bits_back  # pylint: disable=g-import-not-at-top
  bits_back.decode(codec, bits_back.encode(codec, x))
  rates = {k: [] for k in ("encode_wall", "decode_wall", "encode_cpu",
                           "decode_cpu")}
  for _ in range(rounds):
    for name, fn in (("encode", lambda: bits_back.encode(codec, x)),
                     ("decode", lambda: bits_back.decode(codec, data))):
      wall, cpu = time.perf_counter(), time.process_time()
      result = fn()
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      if name == "encode":
        data = result
      rates[f"{name}_wall"].append(len(x) / wall)
      rates[f"{name}_cpu"].append(len(x) / cpu)
  return rates


def coder_overheads(codec, x, num_samples=4, seed=0):
  """Encodes x, checks the round trip, and splits the achieved length.

  achieved = −ELBO (the coder's likelihood, continuous latents)
             + discretization (expected, −ELBO with latents on the grid)
             + this draw of ẑ (realized − expected; 0 on average, and
               it carries the Monte Carlo error of the expectations)
             + ANS (written − ideal code of the drawn symbols)
             + initial bits (pool words the first batches consumed)
             + header (96 bits),
  an identity; every term is in bits for the whole of x.

  Returns:
    dict of those totals ("achieved", "neg_elbo", "discretization", "draw",
    "ans", "initial", "header") plus "draw_se" and "discretization_se"
    (standard errors of those sums), "num_examples", "num_dims", "bytes".

  Raises:
    RuntimeError: the decoded symbols differ from x (never expected).
  """
  from vae_jax.applications import bits_back  # pylint: disable=g-import-not-at-top
  stats = {}
  data = bits_back.encode(codec, x, stats)
  if not np.array_equal(bits_back.decode(codec, data), x):
    raise RuntimeError("bits-back round trip is not lossless")
  header = 8.0 * bits_back._HEADER.size  # pylint: disable=protected-access
  initial = 32.0 * stats["pool_words_consumed"]
  written = 8.0 * len(data) - header - initial
  realized = bits_back.message_bits(codec, x, stats["latents"])["net"]
  expected = bits_back.expected_bits(codec, x, num_samples, seed)
  draw = realized - expected["neg_elbo"] - expected["discretization"]
  return {
      "achieved": 8.0 * len(data), "bytes": len(data),
      "neg_elbo": float(expected["neg_elbo"].sum()),
      "discretization": float(expected["discretization"].sum()),
      "discretization_se": float(expected["discretization"].std(ddof=1)
                                 * math.sqrt(len(x))),
      "draw": float(draw.sum()),
      "draw_se": float(draw.std(ddof=1) * math.sqrt(len(x))),
      "ans": float(written - realized.sum()), "initial": initial,
      "header": header, "num_examples": len(x), "num_dims": codec.num_dims}


def bits_back_report(trained, out_dir, discretization, batch_size=None,
                     ramp=0.25, refine_steps=(), num_samples=4, rounds=3,
                     seed=0, bounds=None):
  """Bits-back codes the test split and measures them; writes bits_back.json.

  Args:
    trained: from `common.load_trained`.
    out_dir: output folder.
    discretization: `bits_back.Discretization` of the main run.
    batch_size: examples per coder step; default config.eval_batch_size.
    ramp: `bits_back.coding_schedule`'s ramp.
    refine_steps: latent steps δ of the refinement table (may be empty).
    num_samples: Monte Carlo draws per example of the expected lengths.
    rounds: throughput rounds.
    seed: Monte Carlo seed.
    bounds: `run`'s summary (−ELBO, −L_K of the model), to print alongside.

  Returns:
    {"main": `coder_overheads`, "baselines": `baseline_bits`, "throughput":
    `coder_throughput`, "refinement": [{"latent_step", "bins", **overheads}],
    "batch_size", "ramp", "num_batches", "latent_step", "latent_range",
    "levels", "bounds"}.
  """
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import bits_back  # pylint: disable=g-import-not-at-top
  from vae_jax.training import images  # pylint: disable=g-import-not-at-top
  codec = bits_back.codec_from_trained(trained, discretization, batch_size,
                                       ramp)
  x = coded_symbols(codec, trained, "test")
  report = {"main": coder_overheads(codec, x, num_samples, seed),
            "baselines": baseline_bits(
                coded_symbols(codec, trained, "train"), x, codec.levels,
                images.image_shape_for(trained.dataset.event_shape)),
            "throughput": coder_throughput(codec, x, rounds),
            "batch_size": codec.batch_size, "ramp": codec.ramp,
            "num_batches": len(bits_back.coding_schedule(
                len(x), codec.batch_size, codec.ramp)),
            "levels": codec.levels,
            "latent_step": discretization.latent_step,
            "latent_range": discretization.latent_range,
            "bounds": bounds, "refinement": []}
  for step in refine_steps:
    d = dc.replace(discretization, latent_step=float(step))
    c = bits_back.codec_from_trained(trained, d, batch_size, ramp)
    report["refinement"].append({"latent_step": float(step),
                                 "bins": 2 * d.max_index + 1,
                                 **coder_overheads(c, x, num_samples, seed)})
  with open(os.path.join(out_dir, "bits_back.json"), "w") as f:
    json.dump(report, f, indent=2)
  return report
