"""Bits-back coding (vae_jax/applications/bits_back.py).

Bit-exact round trips of held-out images for three trained models (a
Bernoulli decoder on binarized digits, a Gaussian decoder trained on
dequantized digits and coded over their 17 intensities, and one trained
with the discretized Gaussian likelihood), with the file length accounted for to
the bit by the float64 code lengths of the drawn symbols; the latents that
bits-back decodes from the stack are posterior samples; the discretized
code lengths against scipy and against the model's own ELBO; and the
discretization overhead shrinks as the latent grid is refined.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import default as default_config
from vae_jax.applications import bits_back
from vae_jax.applications import common
from tiny_runs import shrink, train

# 100 steps move the models well away from their initialization in a few
# seconds; the round trips do not depend on how well they are trained.
STEPS = 100


def _trained(tmp_path_factory, name, **overrides):
  config = shrink(default_config.get_config(), steps=STEPS, images=0)
  for key, value in overrides.items():
    config[key] = value
  workdir = tmp_path_factory.mktemp(name)
  train(config, workdir)
  return common.load_trained(str(workdir))


@pytest.fixture(scope="module")
def bernoulli(tmp_path_factory):
  return _trained(tmp_path_factory, "bb_bernoulli")


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory):
  """Dequantized digits, one learned σ_dec: coded as a discretized Gaussian
  over the 17 intensities."""
  return _trained(tmp_path_factory, "bb_gaussian", likelihood="gaussian",
                  transform="dequantize", sigma_dec_mode="learned",
                  sigma_dec=0.1)


@pytest.fixture(scope="module")
def discretized_gaussian(tmp_path_factory):
  """The model's own likelihood is a Gaussian integrated over the 17
  levels, which the coder codes as it is."""
  return _trained(tmp_path_factory, "bb_discretized", likelihood=
                  "discretized_gaussian", transform="none", num_levels=17,
                  sigma_dec_mode="learned", sigma_dec=0.1)


def _held_out(trained, codec, num=100):
  return bits_back.symbols_from_inputs(
      codec, common.split_inputs(trained, "test", num))


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("which", ["bernoulli", "gaussian",
                                   "discretized_gaussian"])
def test_round_trip_is_bit_exact_and_its_length_is_accounted_for(
    which, request):
  trained = request.getfixturevalue(which)
  # 100 examples in batches of 32: three full batches and a partial one.
  codec = bits_back.codec_from_trained(trained, batch_size=32)
  x = _held_out(trained, codec)
  assert x.shape == (100, 64)
  if which != "bernoulli":
    assert codec.levels == 17 and x.max() > 1  # real intensities
  stats_ = {}
  data = bits_back.encode(codec, x, stats_)
  decoded = bits_back.decode(codec, data)
  assert decoded.dtype == np.int32
  np.testing.assert_array_equal(decoded, x)
  # A fresh codec (new jit, same parameters) decodes it too.
  np.testing.assert_array_equal(bits_back.decode(
      bits_back.codec_from_trained(trained, batch_size=32), data), x)
  # The file = header + consumed initial words + the message, and the
  # message is the ideal code length of the drawn symbols to within the
  # 24-bit quantization of their probabilities and the last word.
  ideal = bits_back.message_bits(codec, x, stats_["latents"])
  written = 8 * len(data) - 96 - 32 * stats_["pool_words_consumed"]
  assert abs(written - ideal["net"].sum()) < 64 + 1e-3 * ideal["net"].sum()
  # bits-back pays off: the posterior bits are given back.
  assert ideal["posterior"].sum() > 1000
  assert 0 < stats_["pool_words_consumed"] <= codec.pool_words


def test_a_trained_run_can_stand_for_its_codec(bernoulli):
  codec = bits_back.codec_from_trained(bernoulli)
  x = _held_out(bernoulli, codec, 10)
  data = bits_back.encode(bernoulli, x)
  assert data == bits_back.encode(codec, x)
  np.testing.assert_array_equal(bits_back.decode(bernoulli, data), x)


def test_batching_changes_the_initial_bits_not_the_decoded_images(
    bernoulli):
  x = None
  consumed = {}
  for b, ramp in ((50, 0.0), (50, 0.25), (1, 0.0)):
    codec = bits_back.codec_from_trained(bernoulli, batch_size=b, ramp=ramp)
    x = _held_out(bernoulli, codec, 50) if x is None else x
    stats_ = {}
    data = bits_back.encode(codec, x, stats_)
    np.testing.assert_array_equal(bits_back.decode(codec, data), x)
    consumed[b, ramp] = stats_["pool_words_consumed"]
  # One batch of 50 borrows the posterior bits of 50 images from the
  # initial pool; one image at a time borrows once and then lives on the
  # bits the earlier images wrote; the ramp comes close to that.
  assert consumed[1, 0.0] < consumed[50, 0.0] / 5
  assert consumed[50, 0.25] < consumed[50, 0.0] / 5
  assert bits_back.coding_schedule(10, 4, 0.5) == [
      (0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (6, 9), (9, 10)]
  assert bits_back.coding_schedule(5, 2, 0.0) == [(0, 2), (2, 4), (4, 5)]


def test_decoded_latents_are_posterior_samples(bernoulli):
  # One batch of 100 (ramp 0) pops every latent from the pseudo-random
  # pool. Chained batches (the default ramp) pop from bits earlier batches
  # pushed, which are not random (module docstring): on this model one
  # latent's variance came out 2.66 that way.
  codec = bits_back.codec_from_trained(bernoulli, batch_size=100, ramp=0.0)
  x = _held_out(bernoulli, codec, 100)
  stats_ = {}
  bits_back.encode(codec, x, stats_)
  mean, std = codec.latent_params(x)  # bin units
  # ANS decoding of (pseudo-)random bits draws from Q: standardized
  # draws are N(0, 1) up to the grid (δ ≪ σ here).
  u = (stats_["latents"].reshape(-1) - mean) / std
  assert np.median(std) > 5  # the grid is fine against the posterior
  n = u.size
  assert abs(u.mean()) < 4 / math.sqrt(n)
  assert abs(u.var() - 1) < 4 * math.sqrt(2 / n) + 0.01
  assert stats.kstest(u, "norm").pvalue > 1e-3
  # Chained (the default ramp), the latents are only approximately
  # posterior draws (module docstring): their standardized variance came
  # out 1.28 over all latents, against 1 for exact draws; a coder popping
  # them with the wrong posterior would leave that range. Their net code
  # length per example stays that of exact draws on the same images
  # (41.0 against 40.5 bits; paired standard error).
  chained = bits_back.codec_from_trained(bernoulli, batch_size=100)
  chained_stats = {}
  bits_back.encode(chained, x, chained_stats)
  assert chained_stats["pool_words_consumed"] < stats_["pool_words_consumed"]
  chained_u = (chained_stats["latents"].reshape(-1) - mean) / std
  assert abs(chained_u.mean()) < 4 / math.sqrt(n)
  assert 0.7 < chained_u.var() < 1.6
  net = bits_back.message_bits(codec, x, stats_["latents"])["net"]
  chained_net = bits_back.message_bits(chained, x,
                                       chained_stats["latents"])["net"]
  diff = chained_net - net
  assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))


def test_the_coders_posterior_widens_with_many_bins():
  """Why the default grid is not finer: constriction keeps every bin at
  ≥ 2^−24, so over 8001 bins ~5e-4 of the mass is spread evenly across
  ±8σ, which adds ~0.01 to the variance of what it samples."""
  import constriction  # pylint: disable=g-import-not-at-top
  n = 2_000_000
  words = np.random.default_rng(0).integers(1, 2**32, n, dtype=np.uint32)
  var, se = {}, {}
  for bins_each_side, std in ((4000, 500.0), (160, 20.0)):
    coder = constriction.stream.stack.AnsCoder(words.copy())
    model = constriction.stream.model.QuantizedGaussian(-bins_each_side,
                                                        bins_each_side)
    u = coder.decode(model, np.zeros(n), np.full(n, std)) / std
    var[bins_each_side] = np.mean(u**2)
    se[bins_each_side] = np.std(u**2) / math.sqrt(n)
  # Mixture: (1 − m)·N(0, 1) + m·U(−8, 8), variance 1 + m(64/3 − 1).
  floor_mass = 8001 * 2.0**-24
  assert var[4000] - 1 == pytest.approx(floor_mass * (64 / 3 - 1), rel=0.3)
  assert var[4000] - 1 > 5 * se[4000]
  assert abs(var[160] - 1) < 4 * se[160] + 1e-3


def test_a_changed_stream_or_model_is_refused(bernoulli):
  codec = bits_back.codec_from_trained(bernoulli, batch_size=32)
  x = _held_out(bernoulli, codec, 40)
  data = bytearray(bits_back.encode(codec, x))
  data[-3] ^= 0x10  # the top of the stack: the first symbols decoded
  with pytest.raises(ValueError):
    bits_back.decode(codec, bytes(data))
  other = jax.tree.map(lambda a: a * 1.01, bernoulli.params)
  with pytest.raises(ValueError, match="initial bits"):
    bits_back.decode(bits_back.Codec(codec.model, other, batch_size=32),
                     bits_back.encode(codec, x))
  with pytest.raises(ValueError, match="symbols"):
    bits_back.encode(codec, np.full((2, 64), 2))
  with pytest.raises(ValueError, match="shape"):
    bits_back.encode(codec, np.zeros((2, 63), np.int32))


def test_continuous_data_has_no_lossless_code(bernoulli):
  config = bernoulli.config.copy_and_resolve_references()
  config.transform = "none"
  trained = dataclasses.replace(bernoulli, config=config)
  with pytest.raises(common.ApplicationError, match="binary"):
    bits_back.codec_from_trained(trained)


# ------------------------------------------------------------ code lengths


def test_quantized_gaussian_matches_scipy_and_sums_to_one():
  rng = np.random.default_rng(0)
  mean = rng.normal(0, 30, 50)
  std = np.exp(rng.uniform(-3, 3, 50))
  low, high = -40, 40
  k = np.arange(low, high + 1)[:, None]
  log_p = bits_back.quantized_gaussian_log_prob(k, mean, std, low, high)
  cdf = lambda t: stats.norm.cdf(t, mean, std)
  sf = lambda t: stats.norm.sf(t, mean, std)
  # The tails go to the edge symbols. Above the mean, differences of
  # survival functions keep their digits.
  below = (np.where(k == high, 1.0, cdf(k + 0.5))
           - np.where(k == low, 0.0, cdf(k - 0.5)))
  above = (np.where(k == low, 1.0, sf(k - 0.5))
           - np.where(k == high, 0.0, sf(k + 0.5)))
  brute = np.where(k > mean, above, below)
  big = brute > 1e-12
  np.testing.assert_allclose(np.exp(log_p)[big], brute[big], rtol=1e-9)
  np.testing.assert_allclose(np.exp(log_p).sum(0), 1.0, rtol=1e-12)
  # Deep in either tail, where 1 − Φ rounds to 0: log Φ differences from
  # scipy's survival function in log space.
  far = bits_back.quantized_gaussian_log_prob(np.array([30, -30]), 0.0, 1.0,
                                              -40, 40)
  expect = stats.norm.logsf(29.5) + np.log1p(-np.exp(
      stats.norm.logsf(30.5) - stats.norm.logsf(29.5)))
  np.testing.assert_allclose(far, [expect, expect], rtol=1e-10)


def test_code_lengths_are_what_constriction_writes():
  """The float64 code lengths against the coder itself: many copies of one
  symbol on a non-empty stack (constriction codes a symbol of an empty
  stack's lowest value for free)."""
  import constriction  # pylint: disable=g-import-not-at-top
  pool = np.arange(1, 101, dtype=np.uint32)
  model = constriction.stream.model.QuantizedGaussian(0, 16)
  n = 20000
  for symbol, mean, std in ((0, 0.3, 1.7), (16, 14.0, 2.0), (7, 5.5, 0.8),
                            (3, 3.0, 0.05)):
    coder = constriction.stream.stack.AnsCoder(pool.copy())
    before = coder.num_bits()
    coder.encode_reverse(np.full(n, symbol, np.int32), model,
                         np.full(n, mean), np.full(n, std))
    bits = (coder.num_bits() - before) / n
    ours = -bits_back.quantized_gaussian_log_prob(symbol, mean, std, 0, 16)
    # 24-bit probabilities: within 1e-3 bits, plus 32 bits of last word.
    assert bits == pytest.approx(ours / math.log(2), abs=1e-3 + 32 / n)


def test_expected_code_length_is_the_models_elbo(bernoulli):
  """The coder's continuous −ELBO is the model's ELBO in bits (Bernoulli:
  the same likelihood), up to Monte Carlo error."""
  codec = bits_back.codec_from_trained(bernoulli, batch_size=64)
  x = _held_out(bernoulli, codec, 64)
  expected = bits_back.expected_bits(codec, x, num_samples=8, seed=0)
  terms = bernoulli.model.elbo(bernoulli.params, jax.random.key(0),
                               jnp.asarray(x, jnp.float32), num_samples=256)
  ours = expected["neg_elbo"]
  theirs = -np.asarray(terms.elbo, np.float64) / math.log(2)
  # Per-example MC spread of the reconstruction term, from 256 draws.
  z = bernoulli.model.posterior(bernoulli.params, jnp.asarray(x, jnp.float32))
  rec = jax.vmap(bernoulli.model.log_likelihood_fn(
      bernoulli.params, jnp.asarray(x, jnp.float32)))(
          z.mean + jnp.exp(0.5 * z.log_var) * jax.random.normal(
              jax.random.key(1), (256,) + z.mean.shape))
  sd = np.asarray(rec).std(0) / math.log(2)
  se = math.sqrt(np.sum(sd**2 * (1 / 8 + 1 / 256)))
  assert abs(ours.sum() - theirs.sum()) < 4 * se + 1e-3 * abs(theirs.sum())


def test_discretization_overhead_vanishes_as_the_grid_is_refined(bernoulli):
  x = None
  mean, se = {}, {}
  for step in (4.0, 0.1, 0.01):
    codec = bits_back.codec_from_trained(
        bernoulli, bits_back.Discretization(latent_step=step), batch_size=64)
    x = _held_out(bernoulli, codec, 64) if x is None else x
    d = bits_back.expected_bits(codec, x, num_samples=4, seed=0)[
        "discretization"]
    mean[step], se[step] = d.mean(), d.std(ddof=1) / math.sqrt(len(d))
  # A grid coarser than the prior (z on {0, ±4, ±8}) costs bits, clearly.
  assert mean[4.0] > 3 * se[4.0]
  # Paired with the continuous ELBO, the overhead's spread falls like δ and
  # what is left is within it: < 0.02 bits per image (~30 bits coded).
  assert se[0.01] < se[0.1] / 3 < se[4.0] / 9
  assert abs(mean[0.01]) < 4 * se[0.01] + 1e-3
  assert se[0.01] < 5e-3


@pytest.mark.parametrize("levels", [17, 100, 256])
def test_dequantized_pixels_give_back_their_level_at_the_cell_edges(levels):
  """Dequantize clips x' to the float32 values inside [p/levels,
  (p+1)/levels); at levels = 100 a float32 product x'·levels rounds 58 of
  the top edges up to p + 1, so the coder must recover p in float64."""
  from types import SimpleNamespace
  from vae_jax.data.transforms import Dequantize
  d = Dequantize(levels)
  edges = np.concatenate([d._lo, d._hi])[None]
  codec = SimpleNamespace(levels=levels, transform="dequantize")
  p = np.arange(levels)
  np.testing.assert_array_equal(bits_back.symbols_from_inputs(codec, edges),
                                np.concatenate([p, p])[None])
