"""`get_dataset(config)`: the one entry point from a config to a `Dataset`."""

from __future__ import annotations

from vae_jax.data import idx, sklearn_data, synthetic, tabular, tfds_data
from vae_jax.data.base import DataError, Dataset
from vae_jax.data.preprocess import config_value

_LOADERS = {
    "digits": sklearn_data.load_digits,
    "breast_cancer": sklearn_data.load_breast_cancer,
    "linear_gaussian": synthetic.load_linear_gaussian,
    "mnist_idx": idx.load_mnist_idx,
    "tabular": tabular.load_tabular,
    **{name: tfds_data.load_tfds for name in tfds_data.SPECS},
}
DATASETS = tuple(_LOADERS)


def get_dataset(config) -> Dataset:
  """Loads the dataset named by `config.dataset`.

  Args:
    config: ml_collections.ConfigDict (or dict) with `dataset` and the
      fields its loader reads (see each loader's docstring); absent fields
      take their defaults.

  Returns:
    The `Dataset`.

  Raises:
    DataError: unknown name, missing or corrupt data, or a bad option; the
      message is one line that says what to do.
  """
  name = config_value(config, "dataset")
  if name not in _LOADERS:
    raise DataError(f"unknown dataset {name!r}; choose one of "
                    f"{', '.join(DATASETS)}")
  return _LOADERS[name](config)
