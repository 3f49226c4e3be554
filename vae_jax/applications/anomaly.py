"""Anomaly detection (§7): a VAE trained on normal data scores each input by
how badly the model explains it.

Two scores, both in nats per example (higher = more anomalous):
  neg_elbo: −ELBO, with an M-sample reconstruction term and analytic KL;
  nll_iwae: −L_K, the importance-weighted estimate of −log p(x) (Burda et
    al. 2015), the tighter of the two.
Their quality is the ROC AUC (sklearn.metrics) against labels that mark the
anomalies: the class held out of training (`config.holdout_class`), or the
malignant cases of breast_cancer trained with `train_on_benign_only`.

This module scores one trained run; its ± is the Hanley–McNeil SE of that
one model on the test set. How the AUROC moves across training seeds and
held-out classes, against baselines and with paired tests, is
`anomaly_protocol`'s job.
"""

import json
import os

import jax
import numpy as np
from sklearn import metrics as sk_metrics

from vae_jax.applications import common
from vae_jax.applications import metrics
from vae_jax.data.preprocess import config_value
from vae_jax.data.sklearn_data import MALIGNANT

SCORES = {"neg_elbo": "−ELBO", "nll_iwae": "−L_K (IWAE NLL)"}


def anomaly_class(config, positive_class=None):
  """The label that marks anomalies in the test split.

  Args:
    config: the run's config.
    positive_class: an explicit choice; None or negative takes it from the
      config: holdout_class, else malignant for breast_cancer trained on
      benign cases only.

  Raises:
    ApplicationError: the run held nothing out and no class was given.
  """
  if positive_class is not None and positive_class >= 0:
    return int(positive_class)
  holdout = int(config_value(config, "holdout_class", -1))
  if holdout >= 0:
    return holdout
  if config.dataset == "breast_cancer" and config_value(
      config, "train_on_benign_only", False):
    return MALIGNANT
  raise common.ApplicationError(
      f"the run on {config.dataset!r} held no class out of training; train "
      "with config.holdout_class=K (or train_on_benign_only for "
      "breast_cancer), or pass --positive_class=K")


def class_name(dataset_name, label):
  """A readable name of a label: "malignant", "digit 0", "class 2"."""
  if dataset_name == "breast_cancer":
    return "malignant" if label == MALIGNANT else "benign"
  if dataset_name in ("digits", "mnist", "binarized_mnist", "mnist_idx"):
    return f"digit {label}"
  return f"class {label}"


def anomaly_labels(trained, positive_class=None):
  """(is_anomaly [N_test] bool, the anomaly class) for the test split."""
  labels = trained.dataset.test_labels
  if labels is None:
    raise common.ApplicationError(
        f"dataset {trained.dataset.name!r} has no test labels to evaluate "
        "anomaly scores against (set config.label_column for tabular data)")
  cls = anomaly_class(trained.config, positive_class)
  is_anomaly = labels == cls
  if is_anomaly.all() or not is_anomaly.any():
    raise common.ApplicationError(
        f"class {cls} makes {int(is_anomaly.sum())} of {len(labels)} test "
        "examples anomalies; ROC analysis needs both kinds")
  return is_anomaly, cls


def score_split(trained, key, elbo_samples, iwae_samples, chunk_size=None,
                batch_size=None, split="test"):
  """Anomaly scores of every example of a split.

  Args:
    trained: from `common.load_trained`.
    key: PRNG key of the Monte Carlo estimates.
    elbo_samples: M of the −ELBO score.
    iwae_samples: K of the −L_K score.
    chunk_size: IWAE samples per chunk; default config.iwae_chunk_size.
    batch_size: examples per batch; default config.eval_batch_size.
    split: "test" or "train".

  Returns:
    {"neg_elbo": [N], "nll_iwae": [N]} float64 nats, in split order.
  """
  fn = common.per_example_terms(
      trained.model, elbo_samples, iwae_samples,
      chunk_size or trained.config.iwae_chunk_size)
  out = common.map_split(fn, trained, split, batch_size, key)
  return {"neg_elbo": -out["elbo"].astype(np.float64),
          "nll_iwae": -out["iwae"].astype(np.float64)}


def summarize(scores, is_anomaly):
  """AUROC (with its Hanley–McNeil SE) and class means of each score.

  Args:
    scores: {name: [N]} (higher = more anomalous).
    is_anomaly: [N] bool.

  Returns:
    {name: {"auroc", "auroc_se", "mean_normal", "mean_anomaly",
    "median_normal", "median_anomaly"}} in nats, plus
    "num_normal" and "num_anomalies".
  """
  is_anomaly = np.asarray(is_anomaly, bool)
  n_pos, n_neg = int(is_anomaly.sum()), int((~is_anomaly).sum())
  summary = {"num_normal": n_neg, "num_anomalies": n_pos}
  for name, s in scores.items():
    auc = float(sk_metrics.roc_auc_score(is_anomaly, s))
    summary[name] = {
        "auroc": auc,
        "auroc_se": metrics.auroc_standard_error(auc, n_pos, n_neg),
        "mean_normal": float(np.mean(s[~is_anomaly])),
        "mean_anomaly": float(np.mean(s[is_anomaly])),
        # Medians too: a few far-off anomalies dominate the means.
        "median_normal": float(np.median(s[~is_anomaly])),
        "median_anomaly": float(np.median(s[is_anomaly])),
    }
  return summary


def plot_histograms(path, scores, is_anomaly, title=""):
  """One panel per score: normal and anomalous examples' score histograms."""
  plt = common.pyplot()
  fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.6),
                           squeeze=False)
  for ax, (name, s) in zip(axes[0], scores.items()):
    # Shared bins, so the two histograms are directly comparable; a score
    # spanning decades (a far-off anomaly) gets log-spaced bins.
    log_x = s.min() > 0 and s.max() / s.min() > 20
    bins = (np.geomspace(s.min(), s.max(), 41) if log_x else
            np.histogram_bin_edges(s, bins=40))
    # Fractions of each class per bin: comparable across classes of very
    # different sizes, and honest on log-spaced bins (a density is not).
    for group, label in ((~is_anomaly, "normal"), (is_anomaly, "anomaly")):
      ax.hist(s[group], bins=bins, alpha=0.6,
              weights=np.full(int(group.sum()), 1.0 / group.sum()),
              label=f"{label} (n={int(group.sum())})")
    if log_x:
      ax.set_xscale("log")
    ax.set_xlabel(f"{SCORES.get(name, name)}, nats per example")
    ax.set_ylabel("fraction of the class")
    ax.set_title(f"{name}: AUROC "
                 f"{sk_metrics.roc_auc_score(is_anomaly, s):.3f}")
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_roc(path, scores, is_anomaly):
  """ROC curves of every score on one axis, with the chance diagonal."""
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  for name, s in scores.items():
    fpr, tpr, _ = sk_metrics.roc_curve(is_anomaly, s)
    auc = sk_metrics.roc_auc_score(is_anomaly, s)
    ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
  ax.plot([0, 1], [0, 1], "k:", lw=0.8)
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run(trained, out_dir, seed=0, elbo_samples=16, iwae_samples=None,
        batch_size=None, positive_class=None):
  """Scores the test split and writes the anomaly-detection report.

  Writes to out_dir: scores.csv (index, label, is_anomaly, neg_elbo,
  nll_iwae), histograms.png, roc.png, summary.json.

  Args:
    trained: from `common.load_trained`.
    out_dir: output folder (exists).
    seed: seed of the Monte Carlo estimates.
    elbo_samples: M of the −ELBO score.
    iwae_samples: K of −L_K; default the run's final_iwae_samples.
    batch_size: default config.eval_batch_size.
    positive_class: anomaly label; default from the config.

  Returns:
    The `summarize` dict, with "anomaly_class", "elbo_samples",
    "iwae_samples" added.
  """
  is_anomaly, cls = anomaly_labels(trained, positive_class)
  k = iwae_samples or trained.config.final_iwae_samples
  scores = score_split(trained, jax.random.key(seed), elbo_samples, k,
                       batch_size=batch_size)
  summary = summarize(scores, is_anomaly)
  summary.update(anomaly_class=cls,
                 anomaly_name=class_name(trained.dataset.name, cls),
                 elbo_samples=elbo_samples,
                 iwae_samples=k, dataset=trained.dataset.name)
  labels = trained.dataset.test_labels
  common.write_csv(os.path.join(out_dir, "scores.csv"), {
      "index": np.arange(len(labels)), "label": labels,
      "is_anomaly": is_anomaly, **scores})
  plot_histograms(os.path.join(out_dir, "histograms.png"), scores, is_anomaly,
                  title=f"{trained.dataset.name}: "
                  f"{summary['anomaly_name']} as anomalies")
  plot_roc(os.path.join(out_dir, "roc.png"), scores, is_anomaly)
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
