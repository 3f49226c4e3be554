"""Every shipped runner config trains a few steps end to end, offline.

TFDS configs run under `tfds.testing.mock_data` through the same
`tfds.data_source` path real data takes; the MNIST IDX config reads small
IDX files written here (the real ones are for benchmarks only).
"""

import importlib
import json
import os

import numpy as np
import pytest

from tiny_runs import shrink, train, write_tiny_mnist_idx


def run(config, workdir):
  final = train(config, workdir)
  assert np.isfinite(final["elbo"]) and final["step"] == 2
  assert os.path.isfile(os.path.join(workdir, "final_metrics.json"))
  return final


@pytest.mark.parametrize("module, name", [
    ("mnist", "mnist"), ("binarized_mnist", "binarized_mnist"),
    ("celeba", "celeb_a"), ("cifar10", "cifar10")])
def test_tfds_config_runs_under_mock_data(module, name, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = shrink(importlib.import_module(f"configs.{module}").get_config(),
                  steps=2, images=2, batch=8)
  config.data_dir = str(tmp_path / "tfds")
  kwargs = {}
  if name == "binarized_mnist":  # the stock mock's pixels are not binary
    images = np.random.default_rng(0).integers(0, 2, (16, 28, 28, 1))
    kwargs["as_data_source_fn"] = lambda self, split, **kw: [
        {"image": im.astype(np.uint8)} for im in images]
  if config.architecture == "conv":  # the same net, narrow: fast CPU compile
    config.channels = (8,) * len(config.channels)
  with tfds.testing.mock_data(num_examples=16,
                              policy=tfds.testing.MockPolicy.USE_CODE,
                              **kwargs):
    final = run(config, tmp_path / "run")
  if name in ("celeb_a", "cifar10"):
    # Dequantized 8-bit data: bits/dim includes D ln 256.
    d = 64 * 64 * 3 if name == "celeb_a" else 32 * 32 * 3
    assert final["bits_per_dim_elbo"] == pytest.approx(
        (-final["elbo"] + d * np.log(256)) / (d * np.log(2)), rel=1e-6)


def test_mnist_idx_config_reads_idx_files(tmp_path):
  write_tiny_mnist_idx(str(tmp_path))
  config = shrink(importlib.import_module("configs.mnist_idx").get_config(),
                  steps=2, images=2, batch=8)
  config.idx_dir = str(tmp_path)
  final = run(config, tmp_path / "run")
  assert final["num_examples"] == 16


def test_linear_gaussian_config_runs(tmp_path):
  config = shrink(importlib.import_module("configs.linear_gaussian")
                  .get_config(), steps=2, images=2, batch=8)
  final = run(config, tmp_path / "run")
  report = final["linear_gaussian"]
  saved = json.load(open(tmp_path / "run" / "final_metrics.json"))
  assert saved["linear_gaussian"] == report
  assert report["test exact ELBO"] <= report["test exact log p(x)"]


@pytest.mark.parametrize("likelihood", ["discretized_logistic_mixture",
                                        "discretized_gaussian"])
def test_discretized_likelihood_runs_with_bits_per_dim_without_constant(
    likelihood, tmp_path):
  """A discretized likelihood on integer pixels through the runner: its
  bits/dim is −ELBO / (D ln 2), no dequantization term; bf16 compute."""
  tfds = pytest.importorskip("tensorflow_datasets")
  config = shrink(importlib.import_module("configs.cifar10").get_config(
      f"likelihood={likelihood},transform=none,compute_dtype=bfloat16"),
                  steps=2, images=2, batch=8)
  config.data_dir = str(tmp_path / "tfds")
  config.channels = (8,) * len(config.channels)
  with tfds.testing.mock_data(num_examples=16,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    final = run(config, tmp_path / "run")
  d = 32 * 32 * 3
  assert final["bits_per_dim_elbo"] == pytest.approx(
      -final["elbo"] / (d * np.log(2)), rel=1e-6)
  assert final["bits_per_dim_iwae"] == pytest.approx(
      final["nll_iwae"] / (d * np.log(2)), rel=1e-6)
