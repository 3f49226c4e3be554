"""Decoder likelihoods log p_θ(x|z) in nats, with every constant kept (§6.5).

The paper drops −(D/2) log(2πσ_dec²) for optimization; we keep it so that
ELBOs at different σ_dec can be compared. Each function sums over the last
`event_ndims` axes of x: 1 for vectors [.., D], 3 for images [.., H, W, C].
"""

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from vae_jax.core.distributions import LOG_2PI


def _sum_event(values, event_ndims):
  if event_ndims == 0:
    return values
  return jnp.sum(values, axis=tuple(range(-event_ndims, 0)))


def _event_size(x, event_ndims):
  size = 1
  for n in x.shape[x.ndim - event_ndims:]:
    size *= n
  return size


def gaussian_log_likelihood(x, mean, log_sigma, event_ndims=1):
  """log N(x | mean, σ² I) with σ = exp(log_sigma), summed over the event.

  Args:
    x, mean: [..., *event].
    log_sigma: log σ_dec; a scalar (fixed or one learned scale) or an array
      broadcastable to the event (a learned scale per dimension).
    event_ndims: number of trailing axes of x forming one observation.

  Returns:
    [...] nats: −‖x − mean‖²/(2σ²) − Σ_dims log σ − (D/2) log 2π.
  """
  log_sigma = jnp.broadcast_to(log_sigma, jnp.broadcast_shapes(
      jnp.shape(log_sigma), x.shape))
  sq = jnp.square(x - mean) * jnp.exp(-2.0 * log_sigma)
  return -0.5 * _sum_event(sq + 2.0 * log_sigma + LOG_2PI, event_ndims)


def optimal_sigma_sq(x, mean, event_ndims=1, min_sigma_sq=1e-6):
  """Closed-form maximizer of the Gaussian likelihood over one shared σ²:
  σ*² = mean squared error over the event (Rybkin et al. 2021).

  Args:
    x, mean: [..., *event].
    min_sigma_sq: floor, so a perfect reconstruction does not give log 0.

  Returns:
    [...] σ*² per example.
  """
  mse = _sum_event(jnp.square(x - mean), event_ndims) / _event_size(
      x, event_ndims)
  return jnp.maximum(mse, min_sigma_sq)


def calibrated_gaussian_log_likelihood(x, mean, event_ndims=1,
                                       min_sigma_sq=1e-6, sigma_sq=None):
  """Gaussian log-likelihood at the optimal σ_dec² = MSE ("calibrated decoder").

  Substituting σ*² into the Gaussian gives −(D/2)(log(2π σ*²) + 1).

  Args:
    x, mean: [..., *event].
    sigma_sq: optional precomputed σ*² broadcastable to [...], e.g. one value
      shared by a whole batch; by default it is `optimal_sigma_sq` per example.

  Returns:
    [...] nats.
  """
  if sigma_sq is None:
    sigma_sq = optimal_sigma_sq(x, mean, event_ndims, min_sigma_sq)
  log_sigma = 0.5 * jnp.log(sigma_sq)
  log_sigma = jnp.reshape(log_sigma, jnp.shape(log_sigma) + (1,) * event_ndims)
  return gaussian_log_likelihood(x, mean, log_sigma, event_ndims)


def _bernoulli_terms(x, logits):
  """(log-probability, e^{−|l|}): the value and what its derivative reuses."""
  e = jnp.exp(-jnp.abs(logits))
  return x * logits - jnp.maximum(logits, 0.0) - jnp.log1p(e), e


@jax.custom_jvp
def _bernoulli_log_prob(x, logits):
  """x·l − max(l, 0) − log1p(e^{−|l|}) per value: log σ(l) at x = 1 and
  log(1 − σ(l)) = log σ(−l) at x = 0, the cross-entropy for x in [0, 1].

  For binary x the first two terms cancel exactly (x = 1, l > 0 and x = 0,
  l < 0 give 0) or leave the one linear term, so no large terms cancel and
  a tiny log-probability −log1p(e^{−|l|}) keeps all its digits, with one exp
  and one log1p per value. The derivative (x − σ(l), below) is given by
  hand: max and |·| have no useful derivative at l = 0.
  """
  return _bernoulli_terms(x, logits)[0]


def _bernoulli_log_prob_jvp(primals, tangents):
  """d/dl = x σ(−l) − (1 − x) σ(l), d/dx = l.

  x − σ(l) written this way has no cancellation for binary x (x = 1 gives
  σ(−l), which stays ≈ e^{−l} at large l instead of 1 − 1 = 0), and σ(±l)
  come from the value's e^{−|l|}: σ(|l|) = 1/(1 + e), σ(−|l|) = e/(1 + e).
  """
  x, logits = primals
  x_dot, logits_dot = tangents
  out, e = _bernoulli_terms(x, logits)
  big = 1.0 / (1.0 + e)
  small = e * big
  positive = logits >= 0
  tangent = jnp.zeros_like(out)
  if type(logits_dot) is not SymbolicZero:
    slope = (x * jnp.where(positive, small, big)
             - (1.0 - x) * jnp.where(positive, big, small))
    tangent = slope * logits_dot
  if type(x_dot) is not SymbolicZero:
    tangent = tangent + logits * x_dot
  return out, tangent


_bernoulli_log_prob.defjvp(_bernoulli_log_prob_jvp, symbolic_zeros=True)


def bernoulli_log_likelihood(x, logits, event_ndims=1):
  """log Bernoulli(x | sigmoid(logits)), exact for any |logit|.

  Per value x·l − max(l, 0) − log1p(e^{−|l|}) (`_bernoulli_log_prob`): no
  exp overflows and, for binary x, no large terms cancel, so logits of
  ±1e4 and log-probabilities of −2e−22 stay exact in float32. One exp and
  one log1p per value, like plain x·l − softplus(l), which loses small
  log-probabilities to cancellation (log σ(10) comes out 0.8% off in
  float32, log σ(17) as 0).

  Args:
    x: [..., *event] in {0, 1} (values in [0, 1] give the cross-entropy).
    logits: [..., *event] (broadcastable against x).

  Returns:
    [...] nats.
  """
  return _sum_event(_bernoulli_log_prob(x, logits), event_ndims)


# ---- Discretized likelihoods for integer-valued images ----------------------
#
# Data convention: x = k / (num_levels − 1) ∈ [0, 1] for integer levels
# k ∈ {0, …, num_levels − 1} (what the loaders give with transform='none').
# Level k owns the bin [x − h, x + h] with h = 1 / (2 (num_levels − 1)); the
# first and last bins extend to −∞ and +∞, so the num_levels probabilities
# of a continuous distribution on the real line sum to exactly 1. The result
# is a probability mass, so −log P / (D ln 2) is bits/dim with no
# dequantization constant.

@jax.custom_jvp
def _log_ndtr(x):
  """log Φ(x), jax's value, with a derivative that stays accurate for x ≪ 0.

  jax differentiates log Φ as exp(log φ(x) − log Φ(x)): for x ≪ 0 both logs
  are near −x²/2 and their float32 difference loses |x|² · 6e-8 nats, so
  the derivative was 0.15% off at x = −10³ and 70% off at −10⁴ (against
  float64). Below x = −10 the derivative is taken from the Mills ratio,
    φ(x)/Φ(x) = −x / (1 − x⁻² + 3x⁻⁴ − 15x⁻⁶ + 105x⁻⁸ − …),
  whose first omitted term is below 1e-7 there (measured: within 1.4e-7 of
  float64 down to −10⁶). From −10 up it is jax's rule, within 1e-5.
  """
  return jax.scipy.special.log_ndtr(x)


@_log_ndtr.defjvp
def _log_ndtr_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  y = _log_ndtr(x)
  tail = x < -10.0
  x_tail = jnp.where(tail, x, -10.0)  # a finite stand-in where unused
  u = 1.0 / jnp.square(x_tail)
  mills = -x_tail / (1.0 + u * (-1.0 + u * (3.0 + u * (-15.0 + 105.0 * u))))
  direct = jnp.exp(-0.5 * (jnp.square(x) + LOG_2PI) - y)
  return y, jnp.where(tail, mills, direct) * t


def _log1mexp(a):
  """log(1 − exp(a)) for a < 0, accurate for a near 0 and for a ≪ 0.

  Mächler (2012): log(−expm1(a)) loses nothing near 0, log1p(−exp(a))
  nothing in the far left; switch at −ln 2.
  """
  near_zero = a > -0.6931471805599453
  # Each branch gets a stand-in of -1 where the other is taken: jnp.where
  # differentiates both branches, and log1p(−exp(a)) at a ≈ 0 (exp(a)
  # rounds to 1) has an infinite derivative that 0 · inf turns into a NaN
  # gradient (discretized likelihoods at log-scales ≥ 11).
  a_near = jnp.where(near_zero, a, -1.0)
  a_far = jnp.where(near_zero, -1.0, a)
  return jnp.where(near_zero, jnp.log(-jnp.expm1(a_near)),
                   jnp.log1p(-jnp.exp(a_far)))


def _levels_and_half_width(x, num_levels):
  """Snaps x to its level: (k [...] int32, x on the grid [...], h)."""
  top = num_levels - 1
  k = jnp.clip(jnp.round(x * top), 0, top).astype(jnp.int32)
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
  return k, k.astype(dtype) / top, 0.5 / top


def discretized_logistic_log_prob(x, mean, log_scale, num_levels=256):
  """log P(level of x) under a logistic(mean, s = exp(log_scale)), per value.

  With a = (x − h − mean)/s and b = (x + h − mean)/s, the identity
    σ(b) − σ(a) = σ(b) σ(−a) (1 − e^(a−b))
  gives log P = log σ(b) + log σ(−a) + log(1 − e^(−2h/s)): every term is
  computed without cancellation in float32, at any distance from the mean
  and for any bin width relative to s (no fallback branch needed). Edge
  bins: P(0) = σ(b), P(num_levels − 1) = σ(−a).

  Args:
    x: [...] values k / (num_levels − 1) (rounded to the nearest level).
    mean, log_scale: broadcastable to x, in the same units as x.
    num_levels: number of levels (256 for 8-bit images).

  Returns:
    [...] log-probabilities in nats (≤ 0).
  """
  k, x, h = _levels_and_half_width(x, num_levels)
  inv_s = jnp.exp(-log_scale)
  centre = (x - mean) * inv_s
  lower = jax.nn.log_sigmoid(-(centre - h * inv_s))   # log(1 − σ(a))
  upper = jax.nn.log_sigmoid(centre + h * inv_s)      # log σ(b)
  width = _log1mexp(-2.0 * h * inv_s)
  first, last = k == 0, k == num_levels - 1
  return (jnp.where(last, 0.0, upper) + jnp.where(first, 0.0, lower)
          + jnp.where(first | last, 0.0, width))


def discretized_gaussian_log_prob(x, mean, log_sigma, num_levels=256):
  """log P(level of x) under N(mean, σ²), σ = exp(log_sigma), per value.

  log(Φ(b) − Φ(a)) is taken on the side of the mean where both CDFs are
  small (a bin above the mean uses Φ(−a) − Φ(−b)), as
  log Φ(b) + log(1 − e^(log Φ(a) − log Φ(b))), so no two numbers near 1 are
  subtracted. For a narrow bin (Δ = 2h/σ < 0.1) near the mean
  (|c| Δ < 0.1, c the standardized centre) that difference of two log Φ's
  would lose float32 digits (relative error ≈ 1e-7 |log Φ| / Δ); there the
  bin's integral is expanded about its centre,
    P = φ(c) Δ (1 + (c² − 1) Δ²/24 + (c⁴ − 6c² + 3) Δ⁴/1920 + …),
  whose first omitted term, He₆(c) Δ⁶ / 322560, is below 3e-10 there. Edge bins: P(0) = Φ(b), P(num_levels − 1) = Φ(−a).

  Args:
    x: [...] values k / (num_levels − 1) (rounded to the nearest level).
    mean, log_sigma: broadcastable to x, in the same units as x.
    num_levels: number of levels (256 for 8-bit images).

  Returns:
    [...] log-probabilities in nats (≤ 0).
  """
  k, x, h = _levels_and_half_width(x, num_levels)
  inv_s = jnp.exp(-log_sigma)
  centre = (x - mean) * inv_s
  half = h * inv_s
  a, b = centre - half, centre + half
  above = centre > 0
  lo, hi = jnp.where(above, -b, a), jnp.where(above, -a, b)
  log_hi = _log_ndtr(hi)
  # Keep the argument of _log1mexp strictly negative so its gradient is
  # finite on the branch that the midpoint rule replaces.
  diff = jnp.minimum(_log_ndtr(lo) - log_hi, -1e-30)
  exact = log_hi + _log1mexp(diff)
  width = 2.0 * half
  c2, w2 = jnp.square(centre), jnp.square(width)
  # ∫ φ over the bin = φ(c) Δ Σ_m He_2m(c) (Δ/2)^2m / (2m + 1)!  (Hermite).
  series = (c2 - 1.0) * w2 / 24 + (c2 * c2 - 6.0 * c2 + 3.0) * w2 * w2 / 1920
  midpoint = -0.5 * (c2 + LOG_2PI) + jnp.log(width) + jnp.log1p(series)
  interior = jnp.where((width < 0.1) & (jnp.abs(centre) * width < 0.1),
                       midpoint, exact)
  return jnp.where(k == 0, _log_ndtr(b),
                   jnp.where(k == num_levels - 1,
                             _log_ndtr(-a), interior))


def discretized_gaussian_log_likelihood(x, mean, log_sigma, event_ndims=1,
                                        num_levels=256):
  """log P(x) of a Gaussian discretized to num_levels bins, summed over the event.

  Args:
    x: [..., *event] levels k / (num_levels − 1).
    mean: [..., *event] decoder mean, in the units of x.
    log_sigma: log σ, a scalar or broadcastable to the event (one per
      channel [C], or one per dimension [*event]).
    event_ndims: trailing axes of x forming one observation.
    num_levels: levels per dimension (256 for 8-bit images).

  Returns:
    [...] nats: a log-probability, so −result / (D ln 2) is bits/dim.
  """
  return _sum_event(
      discretized_gaussian_log_prob(x, mean, log_sigma, num_levels),
      event_ndims)


# PixelCNN++ (Salimans et al. 2017) bounds log s from below.
MIN_LOG_SCALE = -7.0


def logistic_mixture_num_params(channels, num_mixtures):
  """P, the parameters per pixel: K logits, K·C means, K·C log scales and
  K·C(C−1)/2 coupling coefficients (10 K for RGB, as in PixelCNN++)."""
  return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def _split_mixture_params(params, channels):
  """[..., P] -> logits [..., K], means, log_scales [..., C, K], coeffs [..., C(C−1)/2, K]."""
  num_pairs = channels * (channels - 1) // 2
  k = params.shape[-1] // (1 + 2 * channels + num_pairs)
  if params.shape[-1] != logistic_mixture_num_params(channels, k):
    raise ValueError(f"{params.shape[-1]} mixture parameters do not fit "
                     f"{channels} channels")
  logits = params[..., :k]
  rest = params[..., k:].reshape(params.shape[:-1] + (-1, k))
  means = rest[..., :channels, :]
  log_scales = jnp.maximum(rest[..., channels:2 * channels, :], MIN_LOG_SCALE)
  coeffs = jnp.tanh(rest[..., 2 * channels:, :])
  return logits, means, log_scales, coeffs


def _coupled_means(means, coeffs, x):
  """Channel c's mean + Σ_{j<c} coeff_{c,j} x_j (PixelCNN++ order: G|R, B|R, B|G).

  means: [..., C, K]; coeffs: [..., C(C−1)/2, K]; x: [..., C].
  """
  channels = means.shape[-2]
  out, pair = [means[..., 0, :]], 0
  for c in range(1, channels):
    m = means[..., c, :]
    for j in range(c):
      m = m + coeffs[..., pair, :] * x[..., j, None]
      pair += 1
    out.append(m)
  return jnp.stack(out, axis=-2)


def discretized_logistic_mixture_log_likelihood(x, params, event_ndims=3,
                                                num_levels=256):
  """log P(x) under a mixture of discretized logistics per pixel (PixelCNN++).

  For each pixel, with weights π = softmax(logits) shared by its channels,
    P(x_pixel) = Σ_k π_k Π_c DLogistic(x_c | μ_{c,k} + Σ_{j<c} α_{c,j,k} x_j, s_{c,k}),
  each channel conditioned linearly on the ones before it: for every k the
  product is a proper distribution over the num_levels^C colours, so the
  mixture is too. log s is floored at MIN_LOG_SCALE and α = tanh(raw).

  Args:
    x: [..., *event] levels k / (num_levels − 1); the last event axis holds
      the C channels of a pixel (use [..., D, 1] for grey vectors).
    params: [..., *event[:-1], P] with P = logistic_mixture_num_params(C, K).
    event_ndims: trailing axes of x forming one observation (≥ 1).
    num_levels: levels per channel.

  Returns:
    [...] nats (a log-probability).
  """
  channels = x.shape[-1]
  logits, means, log_scales, coeffs = _split_mixture_params(params, channels)
  _, grid, _ = _levels_and_half_width(x, num_levels)
  mu = _coupled_means(means, coeffs, grid)
  per_channel = discretized_logistic_log_prob(x[..., None], mu, log_scales,
                                              num_levels)    # [..., C, K]
  log_pixel = jax.nn.logsumexp(
      jax.nn.log_softmax(logits) + jnp.sum(per_channel, axis=-2), axis=-1)
  return _sum_event(log_pixel, event_ndims - 1)


def snap_to_levels(y, num_levels):
  """The level whose bin holds y: k / (num_levels − 1) [...], k the nearest
  integer to y·(num_levels − 1), clipped to {0, …, num_levels − 1}.

  The bins of the discretized likelihoods here (level k owns
  [x_k − h, x_k + h], the edge bins reaching ±∞), so snapping a draw of the
  continuous distribution draws its discretization exactly.
  """
  return _levels_and_half_width(y, num_levels)[1]


def sample_discretized_gaussian(key, mean, log_sigma, num_levels=256):
  """x ~ the discretized N(mean, σ²) of `discretized_gaussian_log_prob`:
  levels k / (num_levels − 1), shape of mean (log_sigma broadcasts)."""
  y = mean + jnp.exp(log_sigma) * jax.random.normal(key, mean.shape,
                                                    mean.dtype)
  return snap_to_levels(y, num_levels)


def sample_discretized_logistic_mixture(key, params, channels,
                                        num_levels=256):
  """x ~ the mixture of `discretized_logistic_mixture_log_likelihood`.

  Per pixel: a component k ~ softmax(logits), then the channels in order,
  each a discretized logistic whose mean is coupled to the levels already
  drawn for the channels before it (as the likelihood conditions on them).

  Args:
    key: PRNG key.
    params: [..., P] mixture parameters per pixel.
    channels: C.
    num_levels: levels per channel.

  Returns:
    [..., C] levels k / (num_levels − 1).
  """
  logits, means, log_scales, coeffs = _split_mixture_params(params, channels)
  k_comp, k_noise = jax.random.split(key)
  component = jax.random.categorical(k_comp, logits)            # [...]
  pick = lambda a: jnp.take_along_axis(a, component[..., None, None],
                                       axis=-1)[..., 0]         # [..., C]
  means, log_scales = pick(means), pick(log_scales)
  coeffs = pick(coeffs)                        # [..., C(C−1)/2]
  u = jax.random.uniform(k_noise, means.shape, means.dtype,
                         minval=jnp.finfo(means.dtype).tiny, maxval=1.0)
  noise = jnp.log(u) - jnp.log1p(-u)                # standard logistic
  x, pair = [], 0
  for c in range(channels):
    mu = means[..., c]
    for j in range(c):
      mu = mu + coeffs[..., pair] * x[j]
      pair += 1
    x.append(snap_to_levels(mu + jnp.exp(log_scales[..., c]) * noise[..., c],
                            num_levels))
  return jnp.stack(x, axis=-1)


def discretized_logistic_mixture_mean(params, channels):
  """E[x] per channel, ignoring the clipping of the edge bins: [..., C] in [0, 1].

  E[x_c] = Σ_k π_k (μ_{c,k} + Σ_{j<c} α_{c,j,k} E[x_j | k]) with
  E[x_j | k] the component's (coupled) mean; clipped to [0, 1] for images.
  """
  logits, means, _, coeffs = _split_mixture_params(params, channels)
  weights = jax.nn.softmax(logits)[..., None, :]          # [..., 1, K]
  # Within a component, channel j enters channel c through its own mean.
  component, pair = [], 0
  for c in range(channels):
    m = means[..., c, :]
    for j in range(c):
      m = m + coeffs[..., pair, :] * component[j]
      pair += 1
    component.append(m)
  component = jnp.stack(component, axis=-2)                # [..., C, K]
  return jnp.clip(jnp.sum(weights * component, axis=-1), 0.0, 1.0)
