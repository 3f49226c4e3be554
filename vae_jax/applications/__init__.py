"""The paper's applications of a trained VAE (§7), on a runner checkpoint.

  generation   prior samples (means and draws, with a temperature),
               reconstructions, interpolations, latent traversals
  anomaly      −ELBO and −L_K scores, ROC AUC, score histograms
  compression  rate (KL) and distortion in bits per example, IWAE bits/dim,
               rate–distortion points of a σ_dec sweep
  metrics      AUROC (Mann–Whitney U with ties) and the ROC curve
  common       `load_trained(workdir)` and per-example maps over a split

Medicine and biology: a CSV or .npy of continuous features trains through
the runner (configs/tabular.py, configs/breast_cancer.py) and every
application above then works on it. Commands: experiments/generate.py,
experiments/anomaly.py, experiments/compress.py.
"""

from vae_jax.applications.common import (ApplicationError, Trained,
                                         load_trained)

__all__ = ["ApplicationError", "Trained", "load_trained"]
