"""Running every estimator on one setting and reducing it to CSV rows."""

import functools
import math
import time

from absl import logging
import jax
import jax.numpy as jnp

from vae_jax.core import estimators as est_lib
from vae_jax.core import gradient_stats
from vae_jax.core import objectives
from vae_jax.gradient_variance import paired
from vae_jax.gradient_variance.schema import (COLUMNS, PAIRED_REFERENCES,
                                              PARTS, ROUNDOFF_ATOL,
                                              SNR_QUANTILES)
from vae_jax.gradient_variance.settings import derive_key

# Estimators whose encoder gradient is zero for every sample when q is the
# exact posterior (∇z [log p(x, z) − log q(z|x)] = 0 there).
ZERO_AT_OPTIMUM = ("stl", "iwae_stl", "iwae_dreg")


def effective_sample_size(setting, key, num_samples):
  """Mean over the batch of 1/Σ_k w̃_k² for one draw of K samples."""
  return float(_ess(setting.model, num_samples, setting.params, key,
                    setting.x))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _ess(model, num_samples, params, key, x):
  terms = objectives.sample_terms(key, model.posterior(params, x),
                                  model.log_likelihood_fn(params, x),
                                  num_samples)
  w = jax.nn.softmax(terms.log_weights, axis=0)
  return jnp.mean(1.0 / jnp.sum(jnp.square(w), axis=0))


@jax.jit
def snr_quantiles(moments):
  """Quantiles over parameters of |mean|/std, as `schema.SNR_QUANTILES`.

  Parameters with std = 0 (none of the batch's signal reaches them, or the
  gradient is exactly zero) have no ratio and are left out, as in
  `gradient_stats.snr`. NaN where every std is 0.

  Returns:
    [len(SNR_QUANTILES)] dimensionless.
  """
  std = jnp.sqrt(moments.variance)
  ratio = jnp.where(std > 0, jnp.abs(moments.mean) /
                    jnp.where(std > 0, std, 1.0), jnp.nan)
  return jnp.nanquantile(ratio, jnp.array([q for _, q in SNR_QUANTILES]))


# Jitted so that each is one compiled program, not dozens of eager ops.
@jax.jit
def _exact_flat(params, x):
  return est_lib.flatten_split(est_lib.exact_gradient(params, x))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _closed_form_traces(params, x, name, num_samples):
  _, var = gradient_stats.linear_gaussian_gradient_moments(params, x, name,
                                                           num_samples)
  return [jnp.sum(v) for v in est_lib.flatten_split(var)]


class Evaluator:
  """Runs estimators on settings; caches compiled programs and rows.

  All estimators of one setting and one M (or K) run in a single compiled
  program on the same keys (common random numbers): compiling them together
  is about 2.5× faster than one by one, and compilation dominates the
  small settings.
  """

  def __init__(self, config):
    self.config = config
    self._compiled = {}
    self._rows = {}

  def _plan(self, setting, bound, evals_per_replicate):
    """(R, chunk): R within the budget, rounded up to a multiple of chunk.

    A whole number of chunks keeps one copy of each estimator in the
    compiled program (no ragged last chunk).
    """
    b = setting.budget
    cap = b.max_sample_evals if bound == "elbo" else b.iwae_max_sample_evals
    r = max(b.min_replicates, min(b.num_replicates,
                                  cap // evals_per_replicate))
    by_memory = self.config.max_chunk_evals // evals_per_replicate
    chunk = max(1, min(self.config.chunk_size, by_memory, r))
    return int(chunk * math.ceil(r / chunk)), int(chunk)

  def _function(self, setting, names, reference, num_samples,
                num_replicates, chunk):
    key = (id(setting.model), names, num_samples, num_replicates, chunk)
    if key not in self._compiled:
      estimators = [est_lib.get_estimator(n, setting.model, num_samples)
                    for n in names]
      self._compiled[key] = jax.jit(
          lambda params, rng, x: paired.joint_replicate_moments(
              estimators, reference, params, rng, x, num_replicates, chunk))
    return self._compiled[key]

  def run(self, setting, sweep, names, num_samples):
    """Rows (dicts of COLUMNS) of `names` on `setting` with M (or K) samples.

    Every estimator of the group is also compared, paired on the same keys,
    with the group's reference of `schema.PAIRED_REFERENCES` when that ran
    (columns paired_reference and *_paired_*).
    """
    names = tuple(names)
    todo = tuple(n for n in names
                 if (setting.tag(), n, num_samples) not in self._rows)
    if todo:
      self._compute(setting, sweep, todo, num_samples)
    return [dict(self._rows[(setting.tag(), n, num_samples)], sweep=sweep,
                 init_draw=setting.init_draw_label()) for n in names]

  def _compute(self, setting, sweep, names, num_samples):
    batch = setting.x.shape[0]
    bounds = {"elbo" if n in est_lib.ELBO_ESTIMATORS else "iwae"
              for n in names}
    if len(bounds) != 1:
      raise ValueError(f"mixed ELBO and L_K estimators in one group: {names}")
    bound = bounds.pop()
    num_replicates, chunk = self._plan(setting, bound, num_samples * batch)
    ref_name = PAIRED_REFERENCES[bound]
    reference = names.index(ref_name) if ref_name in names else None
    fn = self._function(setting, names, reference, num_samples,
                        num_replicates, chunk)
    start = time.perf_counter()
    key = derive_key(self.config.seed, "mc", setting.tag(), num_samples)
    results, diffs = jax.block_until_ready(
        fn(setting.params, key, setting.x))
    seconds = time.perf_counter() - start

    # The exact ELBO gradient is the truth for ELBO estimators, for L_1 = ELBO,
    # and for every K at the exact posterior, where ∇E[L_K] = ∇ELBO
    # (tests/test_estimators.py derives this).
    has_truth = setting.exact and (bound == "elbo" or num_samples == 1 or
                                   setting.state == "optimum")
    truths = _exact_flat(setting.params, setting.x) if has_truth else (None,
                                                                        None)
    ess = (effective_sample_size(setting, key, num_samples)
           if bound == "iwae" else "")
    moments = dict(zip(names, results))
    for name, (enc, dec), diff in zip(names, results, diffs):
      row = {c: "" for c in COLUMNS}
      row.update(sweep=sweep, model=setting.model_kind,
                 dataset=setting.dataset, state=setting.state, estimator=name,
                 bound=bound, num_samples=num_samples,
                 latent_dim=setting.latent_dim, sigma_dec=setting.sigma_dec,
                 batch_size=batch, num_replicates=num_replicates,
                 chunk_size=chunk,
                 truth="exact_elbo_gradient" if has_truth else "none",
                 ess=ess, init_draw=setting.init_draw_label(),
                 paired_reference=ref_name if reference is not None else "",
                 seconds_group=round(seconds, 3))
      closed = None
      if setting.exact and name in gradient_stats.PATHWISE_CLOSED_FORM:
        closed = [float(v) for v in _closed_form_traces(
            setting.params, setting.x, name, num_samples)]
      for i, (part, m, truth) in enumerate(zip(PARTS, (enc, dec), truths)):
        atol = 0.0
        if truth is not None:
          atol = ROUNDOFF_ATOL * max(1.0, float(jnp.max(jnp.abs(truth))))
        for field, value in gradient_stats.summarize(m, truth, atol).items():
          row[f"{part}_{field}"] = value
        for (field, _), value in zip(SNR_QUANTILES, snr_quantiles(m)):
          row[f"{part}_{field}"] = float(value)
        if closed is not None:
          row[f"{part}_closed_form_var_trace"] = closed[i]
        if diff is not None:
          ref = moments[ref_name][i]
          atol = ROUNDOFF_ATOL * max(1.0, float(jnp.max(jnp.abs(ref.mean))))
          for field, value in paired.paired_summary(
              diff[i], m.variance, ref.variance, atol).items():
            row[f"{part}_{field}"] = value
      if setting.state == "optimum" and name in ZERO_AT_OPTIMUM:
        # Exactly zero encoder gradient in exact arithmetic: |mean|/std is
        # round-off over round-off, not a signal-to-noise ratio.
        for field in ("snr_mean_of_ratios", "snr_ratio_of_means",
                      "snr_debiased_mean_of_ratios") + tuple(
                          f for f, _ in SNR_QUANTILES):
          row[f"enc_{field}"] = float("nan")
      self._rows[(setting.tag(), name, num_samples)] = row
    logging.info("%-11s %-6s %-12s M/K=%-5d R=%-5d %d estimators in %.2fs",
                 sweep, setting.model_kind, setting.state, num_samples,
                 num_replicates, len(names), seconds)
