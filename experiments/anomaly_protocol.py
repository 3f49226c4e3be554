r"""Anomaly detection, every class held out in turn × training seeds, with
baselines and paired DeLong tests.

    python -m experiments.anomaly_protocol --workdir=runs/anomaly_protocol

Trains, through `python -m vae_jax.main` in a subprocess each,
configs/digits_anomaly.py once per held-out digit (--classes) and training
seed (--seeds), and configs/breast_cancer.py (benign-only training) once per
seed (--breast_cancer_seeds); the data split is the configs' fixed one
(data_seed 0), so seeds vary initialization, minibatch order and
binarization. Scores each test split with −ELBO (M = --elbo_samples), −L_K
(K = --iwae_samples), a Ledoit–Wolf Gaussian on the inputs (Mahalanobis),
probabilistic PCA with the VAE's latent dimension, and for digits −L_K
corrected by the DEFLATE code length (Serrà et al. 2020); tests −L_K against
each on the same test set with DeLong's paired test. Prints and writes
WORKDIR/table.md (per class: AUROC mean ± sd over seeds; DeLong
summaries), WORKDIR/records.json (every run's AUROCs and tests), and each
run's scores under WORKDIR/<dataset>/<run>/anomaly_protocol/. A rerun skips
finished trainings; --report_only reprints the tables from records.json.
"""

import json
import os
import subprocess
import sys
import time

from absl import flags

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", "runs/anomaly_protocol",
                               "Root folder of all runs and the tables.")
_CLASSES = flags.DEFINE_list("classes", [str(i) for i in range(10)],
                             "Digits held out, one per run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"],
                           "Training seeds of every digits run.")
_DIGITS_STEPS = flags.DEFINE_integer(
    "digits_steps", 2000, "Training steps of each digits run (the "
    "configs/digits_anomaly.py default).")
_BC_SEEDS = flags.DEFINE_list("breast_cancer_seeds", ["0", "1", "2", "3",
                                                      "4"],
                              "Training seeds of the breast-cancer runs; "
                              "empty skips them.")
_BC_STEPS = flags.DEFINE_integer(
    "breast_cancer_steps", 3000, "Training steps of each breast-cancer run "
    "(the configs/breast_cancer.py default).")
_ELBO_SAMPLES = flags.DEFINE_integer("elbo_samples", 16, "M of −ELBO.")
_IWAE_SAMPLES = flags.DEFINE_integer("iwae_samples", 1000, "K of −L_K.")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Print the tables of WORKDIR/records.json again "
    "without training or scoring.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the scores' Monte Carlo "
                             "estimates.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jobs():
  """Job per (dataset, held-out class, seed), with its CLI parameter string."""
  from configs import breast_cancer, digits_anomaly  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import anomaly_protocol as protocol  # pylint: disable=g-import-not-at-top

  # Evaluate and checkpoint only at the end, no image grids, and a small K
  # in the runner's own final report: none of it changes the trained model,
  # and the protocol scores with its own K.
  def overrides(steps):
    return (f"num_train_steps={steps},eval_every_steps={steps},"
            f"checkpoint_every_steps={steps},num_image_examples=0,"
            "final_iwae_samples=100,iwae_chunk_size=100")

  jobs = []
  for cls in _CLASSES.value:
    for seed in _SEEDS.value:
      params = f"holdout_class={cls},seed={seed}," + overrides(
          _DIGITS_STEPS.value)
      jobs.append(protocol.Job(f"digits/class{cls}_seed{seed}",
                               digits_anomaly.get_config(params),
                               "configs/digits_anomaly.py", params))
  for seed in _BC_SEEDS.value:
    params = f"seed={seed}," + overrides(_BC_STEPS.value)
    jobs.append(protocol.Job(f"breast_cancer/seed{seed}",
                             breast_cancer.get_config(params),
                             "configs/breast_cancer.py", params))
  return jobs


def _train_cli(cache_dir):
  """train_fn: `python -m vae_jax.main` in a subprocess, as a user runs it."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

  def train(job, workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "vae_jax.main",
         f"--config={os.path.join(_REPO, job.config_file)}:{job.overrides}",
         f"--workdir={workdir}"], cwd=_REPO, env=env, capture_output=True,
        text=True)
    if proc.returncode:
      cli.fail(f"training {job.name} failed (exit {proc.returncode}): "
               + proc.stderr.strip().splitlines()[-1])

  return train


def main(argv):
  cli.reject_extra_args(argv)
  from vae_jax.applications import anomaly_protocol as protocol  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import common  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  cli.quiet_library_logs()
  root = os.path.abspath(_WORKDIR.value)
  os.makedirs(root, exist_ok=True)
  # 35 trainings and scorings compile the same programs: one persistent
  # cache, shared with the training subprocesses.
  cache_dir = os.path.join(root, ".jax_cache")
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  start = time.time()
  records_path = os.path.join(root, "records.json")
  if _REPORT_ONLY.value:
    if not os.path.exists(records_path):
      cli.fail(f"{records_path} does not exist: run without --report_only")
    with open(records_path) as f:
      _report(protocol, json.load(f), root)
    return
  with common.one_line_errors():
    records = protocol.run_protocol(
        _jobs(), root, _train_cli(cache_dir),
        _ELBO_SAMPLES.value, _IWAE_SAMPLES.value, seed=_SEED.value,
        log=lambda line: print(f"{time.time() - start:6.0f} s  {line}",
                               flush=True))
  with open(records_path, "w") as f:
    json.dump(records, f, indent=1)
  _report(protocol, records, root)
  print(f"{len(records)} runs in {time.time() - start:.0f} s; wrote "
        f"{root}/table.md, records.json")


def _report(protocol, records, root):
  """Prints the tables and what fails; writes them to root/table.md."""
  rows = protocol.aggregate(records)
  failing = protocol.failures(rows)
  text = protocol.format_table(rows, records) + "\nWhat fails:\n" + "\n".join(
      f"- {line}" for line in failing or ["nothing flagged"]) + "\n"
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  cli.run(main, config_flag=None)
