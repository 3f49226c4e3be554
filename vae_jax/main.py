"""The experiment runner.

  python -m vae_jax.main --config=configs/default.py --workdir=runs/digits
  python -m vae_jax.main --config=configs/celeba.py:sigma_dec=0.1 --config.latent_dim=64

Without --config it runs configs/default.py (offline digits); without
--workdir it writes under ./runs/<config name>. Rerunning the same command
in a workdir that holds checkpoints resumes from the newest readable one.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vae_jax import cli

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "default.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Config file, optionally with a parameter "
    "string: configs/celeba.py:sigma_dec=0.1", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory; default ./runs/<config name>.")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  # Imports after flag parsing keep `--help` fast and let jax see XLA_FLAGS.
  import jax
  from vae_jax.training import checkpointing
  from vae_jax.training import config_validation
  from vae_jax.training import runner
  from vae_jax.training import sharding
  from vae_jax import data as data_lib

  sharding.maybe_initialize_distributed()
  config = _CONFIG.value
  config_path = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or runner.default_workdir(config_path)
  try:
    config_validation.validate(config, jax.device_count(),
                               jax.process_count())
    dataset = data_lib.get_dataset(config)
  except (config_validation.ConfigError, data_lib.DataError) as e:
    cli.fail(str(e))
  logging.info("config %s, workdir %s, %d devices (%s)", config_path,
               workdir, jax.device_count(), jax.devices()[0].platform)
  try:
    final = runner.train_and_evaluate(config, workdir, dataset)
  except (FloatingPointError, checkpointing.CheckpointError,
          data_lib.DataError) as e:
    cli.fail(str(e))
  if jax.process_index() == 0:
    printable = {k: v for k, v in final.items() if k != "kl_per_dim"}
    print(json.dumps(printable, indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
