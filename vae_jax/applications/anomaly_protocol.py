"""The anomaly-detection protocol: every class held out in turn × seeds,
baselines, and paired DeLong tests.

One AUROC of one model says little: it moves by ±0.05 between training
seeds, and likelihood scores fail on some classes (a held-out digit 1 is
"simple", so every density model finds it likely). The protocol therefore

  * trains one VAE per (held-out class, training seed) — a "run";
  * scores every test example of a run with the VAE's −ELBO (M samples) and
    −L_K (K samples), and with the baselines of `anomaly_baselines`
    (Gaussian/Mahalanobis, probabilistic PCA, and for discrete images the
    compressor-corrected −L_K of Serrà et al. 2020), all on the same test
    inputs (the run's binarization), so the scores are paired; for
    binarized images also a Gaussian on the grey levels before
    binarization (same test examples, more information than the VAE gets);
  * gets each AUROC from sklearn.metrics and compares −L_K with every other
    score on the same test set by DeLong's paired test;
  * reports, per held-out class, the mean ± sd of each AUROC across seeds
    and how many seeds found −L_K significantly better or worse (p < 0.05).

Training is delegated to `train_fn(job, workdir)` (a CLI subprocess in
`experiments/anomaly_protocol.py`, an in-process tiny run in the tests); a
workdir whose final metrics report the last step is not retrained.
"""

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import numpy as np
from sklearn import metrics as sk_metrics

from vae_jax.applications import anomaly
from vae_jax.applications import anomaly_baselines as baselines
from vae_jax.applications import common
from vae_jax.applications import metrics

REFERENCE = "nll_iwae"  # the score every other one is tested against
SIGNIFICANCE = 0.05  # two-sided level of the per-seed DeLong tests


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run of the protocol.

  Attributes:
    name: folder name under the protocol's root, e.g. "digits/class3_seed1".
    config: the resolved runner ConfigDict (holdout_class and seed set).
    config_file: the config file it came from (for a CLI run).
    overrides: the parameter string that turns config_file into `config`.
  """

  name: str
  config: Any
  config_file: str = ""
  overrides: str = ""


def score_names(trained):
  """The scores of a run, with their labels for tables (units included)."""
  c = trained.config
  names = {
      "neg_elbo": "−ELBO",
      "nll_iwae": "−L_K",
      "gaussian": "Gaussian",
  }
  if has_stored_values(trained):
    names["gaussian_grey"] = "Gaussian grey"
  names["ppca"] = f"PPCA L={c.latent_dim}"
  if complexity_levels(trained) is not None:
    names["complexity"] = "−L_K − DEFLATE"
  return names


def has_stored_values(trained):
  """Whether the model sees a random transform of stored image values.

  Binarized digits lose their 17 grey levels; a Gaussian fitted to the grey
  levels themselves is a stronger baseline than one on the model's binary
  inputs (and the one a reader would try first), so both are reported.
  """
  return (trained.config.transform != "none"
          and trained.dataset.kind == "image8bit")


def _stored_values(trained, split):
  """[N, *event] the split's examples as stored (scaled, untransformed)."""
  source = trained.dataset.split(split)
  return np.stack([np.asarray(source[i]) for i in range(len(source))])


def complexity_levels(trained):
  """Quantization levels for the compressor, or None for continuous inputs.

  The model's inputs are compressed as the model sees them: binarized
  pixels (2 levels) or integer intensities. Continuous features have no
  code length until a bin width is chosen, and that choice would dominate
  the score, so they get no complexity score.
  """
  transform = trained.config.transform
  if transform == "dynamic_binarize" or trained.dataset.kind == "binary":
    return 2
  if transform == "none" and trained.dataset.kind == "image8bit":
    return trained.dataset.levels
  return None


def score_run(trained, seed, elbo_samples, iwae_samples, batch_size=None):
  """Every score of every test example of one trained run.

  Args:
    trained: from `common.load_trained`; its config names the anomaly class.
    seed: seed of the VAE scores' Monte Carlo estimates.
    elbo_samples: M of −ELBO.
    iwae_samples: K of −L_K.
    batch_size: evaluation batch; default the run's eval_batch_size.

  Returns:
    (scores {name: [N_test] float64}, is_anomaly [N_test] bool, class).
    −ELBO, −L_K, gaussian, gaussian_grey and ppca are in nats; complexity
    in bits.
  """
  is_anomaly, cls = anomaly.anomaly_labels(trained)
  scores = anomaly.score_split(trained, jax.random.key(seed), elbo_samples,
                               iwae_samples, batch_size=batch_size)
  # The inputs the VAE scored (same transform seed, keyed on example index),
  # so every score below ranks the very same test vectors.
  train_x = common.split_inputs(trained, "train")
  test_x = common.split_inputs(trained, "test")
  scores["gaussian"] = baselines.gaussian_nll(train_x, test_x)
  if has_stored_values(trained):
    scores["gaussian_grey"] = baselines.gaussian_nll(
        _stored_values(trained, "train"), _stored_values(trained, "test"))
  scores["ppca"] = baselines.ppca_nll(train_x, test_x,
                                      trained.config.latent_dim)
  levels = complexity_levels(trained)
  if levels is not None:
    scores["complexity"] = baselines.complexity_corrected(
        scores["nll_iwae"], baselines.deflate_bits(test_x, levels))
  return scores, is_anomaly, cls


def evaluate_scores(scores, is_anomaly, reference=REFERENCE):
  """AUROCs (sklearn) and DeLong tests of `reference` against the others.

  Args:
    scores: {name: [N]}; higher = more anomalous.
    is_anomaly: [N] bool.
    reference: the score compared with each other one.

  Returns:
    {"auroc": {name: float}, "delong": {other: `metrics.delong_test` of
    (reference, other)}}.
  """
  out = {"auroc": {n: float(sk_metrics.roc_auc_score(is_anomaly, s))
                   for n, s in scores.items()},
         "delong": {}}
  for name, s in scores.items():
    if name != reference:
      out["delong"][name] = metrics.delong_test(scores[reference], s,
                                                is_anomaly)
  return out


def is_finished(workdir, num_steps):
  """Whether a workdir holds final metrics at step num_steps."""
  path = os.path.join(workdir, "final_metrics.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get("step") == num_steps


def run_job(job, root, train_fn, elbo_samples, iwae_samples, seed=0):
  """Trains (unless finished) and scores one run; writes its scores and record.

  Writes under root/job.name/anomaly_protocol/: scores.csv (index, label,
  is_anomaly, one column per score) and record.json.

  Returns:
    The record: job, dataset, anomaly class, training seed, counts, M, K,
    score labels, AUROCs and DeLong tests (see `evaluate_scores`).
  """
  workdir = os.path.join(root, job.name)
  if not is_finished(workdir, job.config.num_train_steps):
    train_fn(job, workdir)
  trained = common.load_trained(workdir)
  scores, is_anomaly, cls = score_run(trained, seed, elbo_samples,
                                      iwae_samples)
  record = dict(
      job=job.name, dataset=trained.dataset.name, anomaly_class=cls,
      anomaly_name=anomaly.class_name(trained.dataset.name, cls),
      train_seed=int(trained.config.seed),
      num_train_steps=int(trained.config.num_train_steps),
      num_anomalies=int(is_anomaly.sum()),
      num_normal=int((~is_anomaly).sum()), elbo_samples=elbo_samples,
      iwae_samples=iwae_samples, score_names=score_names(trained),
      **evaluate_scores(scores, is_anomaly))
  out = common.output_dir(workdir, "anomaly_protocol")
  common.write_csv(os.path.join(out, "scores.csv"), {
      "index": np.arange(len(is_anomaly)),
      "label": trained.dataset.test_labels, "is_anomaly": is_anomaly,
      **scores})
  with open(os.path.join(out, "record.json"), "w") as f:
    json.dump(record, f, indent=2)
  return record


def run_protocol(jobs, root, train_fn: Callable[[Job, str], Any],
                 elbo_samples, iwae_samples, seed=0, log=print):
  """`run_job` for every job, in order; returns their records."""
  records = []
  for i, job in enumerate(jobs):
    log(f"[{i + 1}/{len(jobs)}] {job.name}")
    records.append(run_job(job, root, train_fn, elbo_samples, iwae_samples,
                           seed))
  return records


def aggregate(records):
  """Per (dataset, anomaly class): AUROC mean ± sd across training seeds.

  Args:
    records: from `run_job`.

  Returns:
    List of rows in first-seen order, each {"dataset", "anomaly_class",
    "anomaly_name", "score_names", "seeds" [S], "num_anomalies",
    "num_normal",
    "auroc": {name: (mean, sd)} (sd with ddof 1; NaN for one seed),
    "delong": {other: {"difference": mean of (reference − other),
    "better": seeds with reference significantly higher, "worse": seeds
    with it significantly lower}}}.
  """
  groups = {}
  for r in records:
    groups.setdefault((r["dataset"], r["anomaly_class"]), []).append(r)
  rows = []
  for (dataset, cls), group in groups.items():
    names = group[0]["auroc"].keys()
    auroc = {}
    for n in names:
      v = np.array([r["auroc"][n] for r in group])
      auroc[n] = (float(v.mean()),
                  float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
    delong = {}
    for n in group[0]["delong"]:
      tests = [r["delong"][n] for r in group]
      delong[n] = {
          "difference": float(np.mean([t["difference"] for t in tests])),
          "better": sum(t["p"] < SIGNIFICANCE and t["difference"] > 0
                        for t in tests),
          "worse": sum(t["p"] < SIGNIFICANCE and t["difference"] < 0
                       for t in tests)}
    rows.append(dict(dataset=dataset, anomaly_class=cls,
                     anomaly_name=group[0]["anomaly_name"],
                     score_names=group[0]["score_names"],
                     seeds=[r["train_seed"] for r in group],
                     num_anomalies=group[0]["num_anomalies"],
                     num_normal=group[0]["num_normal"], auroc=auroc,
                     delong=delong))
  return rows


def _mean_sd(pair):
  mean, sd = pair
  return f"{mean:.3f}" if np.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


def format_table(rows, records):
  """Markdown: one AUROC table and one DeLong table per dataset.

  Returns:
    The tables as one string (what the protocol prints and the README shows).
  """
  lines = []
  for dataset in dict.fromkeys(r["dataset"] for r in rows):
    sub = [r for r in rows if r["dataset"] == dataset]
    rec = next(r for r in records if r["dataset"] == dataset)
    labels = rec["score_names"]
    seeds = sorted({s for r in sub for s in r["seeds"]})
    lines.append(
        f"{dataset}: AUROC mean ± sd over training seeds {seeds} "
        f"({rec['num_train_steps']} steps; −ELBO with M = "
        f"{rec['elbo_samples']}, −L_K with K = {rec['iwae_samples']})")
    lines.append("")
    lines.append("| anomaly | n anom / normal | "
                 + " | ".join(labels.values()) + " |")
    lines.append("|---|---|" + "---|" * len(labels))
    for r in sub:
      lines.append(f"| {r['anomaly_name']} | {r['num_anomalies']} / "
                   f"{r['num_normal']} | "
                   + " | ".join(_mean_sd(r["auroc"][n]) for n in labels)
                   + " |")
    if len(sub) > 1:
      means = {n: np.array([r["auroc"][n][0] for r in sub]) for n in labels}
      lines.append("| mean over classes | | " + " | ".join(
          f"{means[n].mean():.3f}" for n in labels) + " |")
    lines.append("")
    others = [n for n in labels if n != REFERENCE]
    lines.append(
        f"{dataset}: paired DeLong tests, {labels[REFERENCE]} minus each "
        f"score on the same test set: mean ΔAUROC over seeds [seeds with "
        f"two-sided p < {SIGNIFICANCE}, uncorrected for the many tests: "
        f"{labels[REFERENCE]} better / worse]")
    lines.append("")
    lines.append("| anomaly | " + " | ".join(
        f"vs {labels[n]}" for n in others) + " |")
    lines.append("|---|" + "---|" * len(others))
    for r in sub:
      cells = [f"{r['delong'][n]['difference']:+.3f} "
               f"[{r['delong'][n]['better']}/{r['delong'][n]['worse']}]"
               for n in others]
      lines.append(f"| {r['anomaly_name']} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def failures(rows, chance_margin=0.1):
  """Plain-language lines on what fails: scores whose mean AUROC on a class
  is below ½ + chance_margin, and classes where another score beats −L_K
  significantly (DeLong, p < 0.05) in most seeds."""
  out = []
  for r in rows:
    labels = r["score_names"]
    for n, (mean, _) in r["auroc"].items():
      if mean < 0.5 + chance_margin:
        out.append(f"{r['dataset']} {r['anomaly_name']}: {labels[n]} AUROC "
                   f"{_mean_sd(r['auroc'][n])}, near or below chance")
    for n, d in r["delong"].items():
      if 2 * d["worse"] > len(r["seeds"]):
        out.append(f"{r['dataset']} {r['anomaly_name']}: {labels[n]} beats "
                   f"{labels[REFERENCE]} "
                   f"significantly in {d['worse']} of {len(r['seeds'])} "
                   f"seeds (ΔAUROC {d['difference']:+.3f})")
  return out
