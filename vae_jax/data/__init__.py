"""Datasets and input pipelines for vae_jax.

    dataset = get_dataset(config)                   # a `Dataset`
    it = train_iterator(dataset, 128, seed=0, transform="dynamic_binarize")
    x = next(it)                                    # [128, *event_shape]
    state = it.get_state()                          # JSON, for checkpoints
    for b in eval_batches(dataset, "test", 128, "dynamic_binarize"):
      ...                                           # b.x, b.mask

Values are scaled as `Dataset.kind` says; random binarization and
dequantization are training-time transforms applied by the pipeline.
"""

from vae_jax.data.base import ArraySource, DataError, Dataset
from vae_jax.data.pipeline import (EvalBatch, TrainIterator, eval_batches,
                                   train_iterator)
from vae_jax.data.preprocess import destandardize, standardize
from vae_jax.data.registry import DATASETS, get_dataset
from vae_jax.data.transforms import TRANSFORMS

__all__ = [
    "ArraySource", "DATASETS", "DataError", "Dataset", "EvalBatch",
    "TRANSFORMS", "TrainIterator", "destandardize", "eval_batches",
    "get_dataset", "standardize", "train_iterator",
]
