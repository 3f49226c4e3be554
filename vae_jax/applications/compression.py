"""Data compression (§7): the ELBO as a code length, split into rate and
distortion.

With bits-back coding, −ELBO(x) is the expected length of a lossless code
for x, and its two terms are the two parts of the message:
  rate       R(x) = KL(q(z|x) ‖ p(z)) / ln 2 bits: what the latent costs;
  distortion D(x) = −E_q[log p(x|z)] / ln 2 bits: what coding x given z costs.
−L_K / ln 2 is the tighter code length that importance weighting approaches.
For discrete data (binarized or dequantized 8-bit) these are real code
lengths and bits/dim is defined; for continuous data (tabular) D is a
differential quantity (it can be negative) and bits/dim is not reported.

A σ_dec sweep (`experiments.sweep`) traces a rate–distortion curve: a small
σ_dec makes distortion expensive, so the encoder spends more rate.
"""

import csv
import json
import math
import os

import jax
import numpy as np

from vae_jax.applications import common
from vae_jax.core.diagnostics import bits_per_dim

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
    dequantization_nats is not None. rate + distortion = −ELBO / ln 2.
  """
  kl = np.asarray(terms["kl"], np.float64)
  rec = np.asarray(terms["reconstruction"], np.float64)
  iwae = np.asarray(terms["iwae"], np.float64)
  out = {"rate_bits": kl / LN2, "distortion_bits": -rec / LN2,
         "neg_elbo_bits": (kl - rec) / LN2, "nll_iwae_bits": -iwae / LN2}
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
  deq = trained.dequantization_nats
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


def rate_distortion_points(rows):
  """One rate–distortion point per σ_dec (and per other swept setting).

  Args:
    rows: from `read_sweep`; need columns sigma_dec, kl (rate, nats) and
      reconstruction (E_q log p(x|z), nats). Every column that is not an
      outcome (`OUTCOME_COLUMNS`) is a setting: rows that share all
      settings (several seeds) are averaged. Rows with a non-finite kl or
      reconstruction (diverged runs) are left out. σ_dec is empty for a
      learned or optimal σ_dec; its trained value is in sigma_dec_final.

  Returns:
    list of {<settings>, "rate_bits", "distortion_bits", "neg_elbo_bits",
    ["sigma_dec_final", "mse"] (when in the table), "num_runs"}, sorted by
    the settings in column order; empty cells become None.
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
    point.update(rate_bits=kl / LN2, distortion_bits=-rec / LN2,
                 neg_elbo_bits=(kl - rec) / LN2)
    for name in ("sigma_dec_final", "mse"):
      values = [r.get(name) for r in group]
      if values and all(isinstance(v, float) for v in values):
        point[name] = float(np.mean(values))
    point["num_runs"] = len(group)
    points.append(point)
  return points


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


_RESULT_FIELDS = ("rate_bits", "distortion_bits", "neg_elbo_bits",
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
  ax.set_ylabel("distortion −E_q log p(x|z) / ln 2, bits per example")
  ax.set_title("rate–distortion across σ_dec")
  if any(other for other in curves):
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def sweep_report(sweep_path, out_dir):
  """Reads a sweep, writes rate_distortion.csv and .png, returns the points."""
  points = rate_distortion_points(read_sweep(sweep_path))
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
