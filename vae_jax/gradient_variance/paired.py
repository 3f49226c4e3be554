"""Every estimator of a group on the same keys, and their paired differences.

Replicate r of every estimator uses the same key (`jax.random.split(key,
R)[r]`, as in `estimators.replicate_moments`), so the estimators share their
random numbers. Two estimators with the same expectation are then compared
through the R differences g_a,r − g_ref,r (a paired test): the noise that the
two share cancels in the difference, where an unpaired two-sample test would
add both variances.
"""

import jax
import jax.numpy as jnp

from vae_jax.core import estimators as est_lib
from vae_jax.core import gradient_stats


def joint_replicate_moments(estimators, reference, params, key, x,
                            num_replicates, chunk_size):
  """Moments of each estimator and of its difference from a reference.

  Each gradient is computed once per replicate; the differences come from
  the same evaluations. Memory is one chunk's gradients of every estimator.
  `estimators.replicate_moments` shapes its running totals from `params`
  and keeps one estimator; this keeps a list of them, with the same chunking
  (vmap inside a chunk, a scan over chunks, per-leaf moments until the end).

  Args:
    estimators: list of `(params, key, x) -> grads` (see `get_estimator`).
    reference: index into `estimators` of the reference, or None (no
      differences).
    params, key, x: as `estimators.replicate_moments`.
    num_replicates: R ≥ 2.
    chunk_size: replicates per vmapped chunk; 1 scans without vmap.

  Returns:
    (moments, diffs): moments[i] = (encoder Moments [P_φ], decoder Moments
    [P_θ]) of estimator i, identical to `replicate_moments` with the same key;
    diffs[i] the same for g_i − g_reference (None for the reference itself
    and for every i when reference is None).
  """
  if num_replicates < 2 or chunk_size < 1:
    raise ValueError(f"need num_replicates >= 2 and chunk_size >= 1, got "
                     f"{num_replicates}, {chunk_size}")
  chunk_size = min(chunk_size, num_replicates)
  keys = jax.random.split(key, num_replicates)

  def one(k):
    grads = [e(params, k, x) for e in estimators]
    if reference is None:
      return grads, [None] * len(grads)
    ref = grads[reference]
    diffs = [None if i == reference else jax.tree.map(jnp.subtract, g, ref)
             for i, g in enumerate(grads)]
    return grads, diffs

  def chunk_moments(chunk_keys):
    n = chunk_keys.shape[0]
    # No vmap for single replicates: XLA:CPU runs batched products of a
    # batch of one several times slower than plain ones.
    out = one(chunk_keys[0]) if n == 1 else jax.vmap(one)(chunk_keys)
    return gradient_stats.tree_moments_from_samples(out, n)

  def step(carry, chunk_keys):
    return gradient_stats.combine_tree_moments(carry,
                                               chunk_moments(chunk_keys)), None

  num_full = num_replicates // chunk_size
  empty = gradient_stats.empty_tree_moments(jax.eval_shape(one, keys[0]))
  full = keys[:num_full * chunk_size].reshape(
      (num_full, chunk_size) + keys.shape[1:])
  totals, _ = jax.lax.scan(step, empty, full)
  if num_replicates % chunk_size:
    totals = gradient_stats.combine_tree_moments(
        totals, chunk_moments(keys[num_full * chunk_size:]))

  def split(tree):
    if tree is None:
      return None
    phi, theta = est_lib.split_params(tree)
    return (gradient_stats.concat_tree_moments(phi),
            gradient_stats.concat_tree_moments(theta))

  grads, diffs = totals
  return [split(g) for g in grads], [split(d) for d in diffs]


def paired_summary(diff, var_a, var_b, atol):
  """Paired test of E g_a = E g_ref from the moments of their differences.

  Args:
    diff: Moments [P] of g_a − g_ref over R shared-key replicates.
    var_a, var_b: [P] per-parameter variances of g_a and g_ref.
    atol: round-off tolerance added in quadrature to each SE (see
      `gradient_stats.bias_z_scores`).

  Returns:
    dict of floats: paired_max_abs_z (max_p |mean Δ_p| / SE_p, SE from the
    differences' own variance), paired_var_ratio (Σ_p Var Δ_p / Σ_p (Var a_p
    + Var ref_p): 1 for independent draws, < 1 where the shared random
    numbers make the two estimates move together, which is what pairing
    gains over a two-sample test).
  """
  z = gradient_stats.bias_z_scores(diff, jnp.zeros_like(diff.mean), atol)
  total = jnp.sum(var_a + var_b)
  ratio = jnp.where(total > 0, jnp.sum(diff.variance) /
                    jnp.where(total > 0, total, 1.0), jnp.nan)
  return {"paired_max_abs_z": float(jnp.max(jnp.abs(z))),
          "paired_var_ratio": float(ratio)}
