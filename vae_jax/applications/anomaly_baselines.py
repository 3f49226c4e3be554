"""Baseline anomaly scores that need no VAE, to judge the VAE's scores by.

All fitted on the training split as the model sees it (normal data only)
and scored on the test split; higher = more anomalous.

  gaussian: −log N(x; μ, Σ) in nats, one full-covariance Gaussian of the
    inputs, Σ shrunk by Ledoit–Wolf (digits have constant-zero pixels, so
    the sample covariance is singular). Monotone in the Mahalanobis
    distance, so its AUROC is the Mahalanobis detector's.
  ppca: −log p(x) in nats under probabilistic PCA with L components
    (Tipping & Bishop 1999): the linear-Gaussian latent model, a VAE with a
    linear decoder and the exact posterior. It says what the nonlinear
    decoder adds.
  complexity: Serrà et al. (2020)'s input-complexity correction
    S(x) = −log₂ p(x) − L(x) in bits, with −log p(x) the VAE's −L_K and L(x)
    the code length of x under a generic lossless compressor (DEFLATE, the
    compressor inside PNG). Likelihood scores are dominated by how simple an
    input is (a digit 1 has few ink pixels, so every model finds it likely);
    S(x) subtracts that.
"""

import math
import zlib

import numpy as np
from sklearn import covariance as sk_covariance
from sklearn import decomposition as sk_decomposition


def _flat(x):
  x = np.asarray(x, np.float64)
  return x.reshape(x.shape[0], -1)


def gaussian_nll(train_x, test_x):
  """−log N(x; μ, Σ_LW) of each test example, fitted on train_x.

  Args:
    train_x: [N_train, *event] normal examples.
    test_x: [N_test, *event].

  Returns:
    [N_test] float64 nats, with the −(D/2) log 2π and −½ log det Σ terms.
  """
  train_x, test_x = _flat(train_x), _flat(test_x)
  fit = sk_covariance.LedoitWolf().fit(train_x)
  _, logdet = np.linalg.slogdet(fit.covariance_)
  dim = train_x.shape[1]
  return 0.5 * (fit.mahalanobis(test_x) + logdet + dim * math.log(2 * math.pi))


def ppca_nll(train_x, test_x, num_components):
  """−log p(x) under probabilistic PCA with `num_components`, fitted on train_x.

  Args:
    train_x: [N_train, *event].
    test_x: [N_test, *event].
    num_components: L, the latent dimension.

  Returns:
    [N_test] float64 nats.
  """
  pca = sk_decomposition.PCA(n_components=num_components).fit(_flat(train_x))
  return -pca.score_samples(_flat(test_x))


def deflate_bits(x, levels=2):
  """Code length of each example under DEFLATE (zlib level 9), in bits.

  Each example is quantized to bytes round(x · (levels − 1)) (x in [0, 1]),
  in row-major order, and compressed alone as a raw DEFLATE stream (no zlib
  header or checksum; a constant per example would not change a ranking
  anyway). Whole bytes: the code length is a multiple of 8 bits.

  Args:
    x: [N, *event] values in [0, 1].
    levels: quantization levels (2 for binary pixels, ≤ 256).

  Returns:
    [N] float64 bits.
  """
  q = np.rint(np.clip(_flat(x), 0.0, 1.0) * (levels - 1)).astype(np.uint8)
  bits = np.empty(len(q))
  for i, row in enumerate(q):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bits[i] = 8 * len(c.compress(row.tobytes()) + c.flush())
  return bits


def complexity_corrected(nll_nats, code_length_bits):
  """Serrà et al. (2020): S(x) = −log₂ p(x) − L(x), in bits.

  Args:
    nll_nats: [N] −log p(x) in nats (e.g. the VAE's −L_K).
    code_length_bits: [N] L(x) from a lossless compressor, in bits.

  Returns:
    [N] bits; higher = more anomalous.
  """
  return np.asarray(nll_nats, np.float64) / math.log(2.0) - code_length_bits
