r"""Anomaly detection with a trained VAE: −ELBO and −L_K scores, ROC AUC.

    python -m vae_jax.main --config=configs/digits_anomaly.py \
        --workdir=runs/digits_anomaly
    python -m experiments.anomaly --workdir=runs/digits_anomaly

    python -m vae_jax.main --config=configs/breast_cancer.py \
        --workdir=runs/breast_cancer
    python -m experiments.anomaly --workdir=runs/breast_cancer

Scores the test split of the run's dataset; the anomalies are the class the
run held out of training (config.holdout_class; malignant cases for
breast_cancer with train_on_benign_only), or --positive_class. Prints the
AUROC of both scores with its standard error, and writes to
WORKDIR/anomaly/ (or --output_dir): scores.csv, histograms.png, roc.png,
summary.json.
"""


from absl import flags

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir.",
                               required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Output folder; default WORKDIR/anomaly.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the Monte Carlo estimates.")
_ELBO_SAMPLES = flags.DEFINE_integer(
    "elbo_samples", 16, "M samples of the −ELBO score's reconstruction term.")
_IWAE_SAMPLES = flags.DEFINE_integer(
    "iwae_samples", None, "K of the −L_K score; default the run's "
    "final_iwae_samples.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None,
                                   "Examples per batch; default the run's "
                                   "eval_batch_size.")
_POSITIVE_CLASS = flags.DEFINE_integer(
    "positive_class", -1, "Label of the anomalies; -1 takes it from the "
    "run's config.")


def main(argv):
  cli.reject_extra_args(argv)
  # Imports after flag parsing keep --help fast.
  from vae_jax.applications import anomaly, common  # pylint: disable=g-import-not-at-top

  cli.quiet_library_logs()
  with common.one_line_errors():
    trained = common.load_trained(_WORKDIR.value)
    # Fails (one line) before any output is written.
    anomaly.anomaly_labels(trained, _POSITIVE_CLASS.value)
    out_dir = common.output_dir(_WORKDIR.value, "anomaly", _OUTPUT_DIR.value)
    summary = anomaly.run(trained, out_dir, seed=_SEED.value,
                          elbo_samples=_ELBO_SAMPLES.value,
                          iwae_samples=_IWAE_SAMPLES.value,
                          batch_size=_BATCH_SIZE.value,
                          positive_class=_POSITIVE_CLASS.value)
  print(f"{summary['dataset']}: {summary['anomaly_name']} (label "
        f"{summary['anomaly_class']}) as anomalies, {summary['num_anomalies']}"
        f" anomalous and "
        f"{summary['num_normal']} normal test examples")
  for name in anomaly.SCORES:
    s = summary[name]
    k = (f"M={summary['elbo_samples']}" if name == "neg_elbo" else
         f"K={summary['iwae_samples']}")
    print(f"  {name:9s} ({k}): AUROC {s['auroc']:.4f} ± {s['auroc_se']:.4f}"
          f"   median score normal {s['median_normal']:.2f} / anomalous "
          f"{s['median_anomaly']:.2f} nats")
  # The ± is one model's sampling SE over test examples; it says nothing of
  # how the AUROC moves between training seeds or held-out classes.
  print("  (± = Hanley–McNeil SE of this one model on this test set; for the "
        "spread over training seeds and classes, with baselines, run "
        "python -m experiments.anomaly_protocol)")
  print(f"wrote {out_dir}/scores.csv, histograms.png, roc.png, summary.json")


if __name__ == "__main__":
  cli.run(main, config_flag=None)
