"""Where a sweep keeps its files and which columns its results.csv has.

Shared by the sweep (which writes them) and its plots (which read them).
"""

import glob
import os

# Columns that say how a point was run, not what it computed: they differ
# between an interrupted and an uninterrupted sweep, or a split and a whole
# one. Everything else in results.csv is reproducible.
EXECUTION_COLUMNS = ("group_size", "train_time_s", "eval_time_s")

# Config columns every results.csv has, then the other swept fields.
CONFIG_COLUMNS = ("latent_dim", "sigma_dec_mode", "sigma_dec", "seed",
                  "learning_rate")
METRIC_COLUMNS = ("elbo", "reconstruction", "kl", "nll_iwae",
                  "bits_per_dim_elbo", "bits_per_dim_iwae", "active_units",
                  "sigma_dec_final", "mse", "steps", "iwae_samples",
                  "num_examples", "skipped_updates")


def point_dir(workdir, index):
  """The runner-style workdir of grid point `index`."""
  return os.path.join(workdir, "points", str(index))


def latest_image(folder, kind):
  """The newest images/<kind>_<step>.png a run wrote in `folder`, or None.

  kind: "samples" or "reconstructions".
  """
  paths = sorted(glob.glob(os.path.join(folder, "images", f"{kind}_*.png")))
  return paths[-1] if paths else None
