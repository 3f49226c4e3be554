"""ROC analysis of anomaly scores in numpy: AUROC, its standard error, ROC.

Convention everywhere: a higher score means "more anomalous", and the
positives (label True) are the anomalies.
"""

import math

import numpy as np


def _check(scores, is_positive):
  scores = np.asarray(scores, np.float64).reshape(-1)
  is_positive = np.asarray(is_positive).reshape(-1).astype(bool)
  if scores.shape != is_positive.shape:
    raise ValueError(f"scores {scores.shape} and labels {is_positive.shape} "
                     "differ in length")
  if not np.isfinite(scores).all():
    raise ValueError("scores hold NaN or inf")
  n_pos = int(is_positive.sum())
  if n_pos == 0 or n_pos == len(scores):
    raise ValueError(f"AUROC needs both classes; got {n_pos} positives of "
                     f"{len(scores)}")
  return scores, is_positive


def midranks(values):
  """1-based ranks of `values` with ties given the mean of their ranks.

  Args:
    values: [N] numbers.

  Returns:
    [N] float64 ranks; tied values share (first + last) / 2 of their block.
  """
  values = np.asarray(values, np.float64).reshape(-1)
  order = np.argsort(values, kind="mergesort")
  sorted_values = values[order]
  # Block boundaries: where the sorted value changes.
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  ends = np.r_[starts[1:], len(values)]  # exclusive
  block_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(len(values), np.float64)
  ranks[order] = np.repeat(block_rank, ends - starts)
  return ranks


def auroc(scores, is_positive):
  """Area under the ROC curve by the Mann–Whitney U statistic.

  AUROC = P(score of a random positive > score of a random negative)
  + ½ P(tie) = U / (n₊ n₋), with U = R₊ − n₊(n₊ + 1)/2 and R₊ the sum of the
  positives' mid-ranks. Equals the trapezoidal area under `roc_curve`.

  Args:
    scores: [N] anomaly scores (higher = more anomalous).
    is_positive: [N] bool, True for anomalies.

  Returns:
    AUROC in [0, 1]: 1 for a perfect scorer, 0 for a reversed one, ≈ ½ for
    a random one.
  """
  scores, is_positive = _check(scores, is_positive)
  n_pos = int(is_positive.sum())
  n_neg = len(scores) - n_pos
  rank_sum = midranks(scores)[is_positive].sum()
  u = rank_sum - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def auroc_standard_error(auc, n_pos, n_neg):
  """Standard error of an AUROC estimate (Hanley & McNeil 1982, eq 2).

  Args:
    auc: the estimate.
    n_pos, n_neg: numbers of positives and negatives.

  Returns:
    The standard error; at auc = ½ it is close to √((n₊+n₋+1)/(12 n₊ n₋)),
    the null-hypothesis SE of the Mann–Whitney statistic.
  """
  q1 = auc / (2.0 - auc)
  q2 = 2.0 * auc * auc / (1.0 + auc)
  var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc)
         + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
  return math.sqrt(max(var, 0.0))


def roc_curve(scores, is_positive):
  """The ROC curve: flag "anomaly" when score >= threshold.

  Args:
    scores: [N] anomaly scores.
    is_positive: [N] bool.

  Returns:
    (fpr [T+1], tpr [T+1], thresholds [T]) for the T distinct scores in
    decreasing order; fpr and tpr start at 0 (threshold +inf) and end at 1.
  """
  scores, is_positive = _check(scores, is_positive)
  order = np.argsort(-scores, kind="mergesort")
  s, y = scores[order], is_positive[order]
  # The last index of each block of equal scores: a threshold there flags
  # the whole block at once, which is how ties enter the curve.
  last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
  tp = np.cumsum(y)[last]
  fp = (last + 1) - tp
  tpr = np.r_[0.0, tp / y.sum()]
  fpr = np.r_[0.0, fp / (~y).sum()]
  return fpr, tpr, s[last]


def placement_values(scores, is_positive):
  """DeLong's structural components of the AUROC, from mid-ranks.

  V₁₀(xᵢ) = P(score of positive i > score of a random negative) + ½ P(tie),
  V₀₁(yⱼ) = P(score of a random positive > score of negative j) + ½ P(tie);
  both average to the AUROC. Mid-ranks give them in O(N log N) (Sun & Xu
  2014) instead of the O(n₊ n₋) pairwise count.

  Args:
    scores: [N] anomaly scores (higher = more anomalous).
    is_positive: [N] bool, True for anomalies.

  Returns:
    (v10 [n₊] for the positives, v01 [n₋] for the negatives), in the order
    they appear in `scores`.
  """
  scores, is_positive = _check(scores, is_positive)
  n_pos = int(is_positive.sum())
  n_neg = len(scores) - n_pos
  all_ranks = midranks(scores)
  # A positive's rank among all scores minus its rank among the positives
  # counts the negatives below it (ties ½).
  v10 = (all_ranks[is_positive] - midranks(scores[is_positive])) / n_neg
  v01 = 1.0 - (all_ranks[~is_positive] - midranks(scores[~is_positive])) / n_pos
  return v10, v01


def delong_covariance(score_sets, is_positive):
  """AUROCs of several scores of one test set and their joint covariance.

  DeLong, DeLong & Clarke-Pearson (1988): with the placement values of each
  score, Cov(AUC_r, AUC_s) ≈ S₁₀[r, s] / n₊ + S₀₁[r, s] / n₋, where S₁₀
  and S₀₁ are the sample covariances (ddof 1) of the placement values
  over positives and over negatives. Scores of the same examples are
  correlated; this covariance is what a paired comparison needs.

  Args:
    score_sets: [k, N] (or a list of k [N] arrays): k scores of the same N
      examples.
    is_positive: [N] bool.

  Returns:
    (aucs [k], cov [k, k]) float64.
  """
  score_sets = np.atleast_2d(np.asarray(score_sets, np.float64))
  v10, v01 = zip(*(placement_values(s, is_positive) for s in score_sets))
  v10, v01 = np.stack(v10), np.stack(v01)  # [k, n₊], [k, n₋]
  aucs = v10.mean(axis=1)
  cov = (np.atleast_2d(np.cov(v10)) / v10.shape[1]
         + np.atleast_2d(np.cov(v01)) / v01.shape[1])
  return aucs, cov


def delong_test(scores_a, scores_b, is_positive):
  """Paired two-sided test of AUROC(a) = AUROC(b) on one test set (DeLong).

  z = (AUC_a − AUC_b) / √(Var_a + Var_b − 2 Cov_ab), referred to N(0, 1).

  Args:
    scores_a, scores_b: [N] two scores of the same examples.
    is_positive: [N] bool.

  Returns:
    {"auroc_a", "auroc_b", "difference" (a − b), "se" (of the difference),
    "z", "p"}; identical scores give difference 0, se 0, z 0, p 1.
  """
  aucs, cov = delong_covariance([scores_a, scores_b], is_positive)
  diff = float(aucs[0] - aucs[1])
  var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
  se = math.sqrt(max(var, 0.0))
  if se == 0.0:
    z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
  else:
    z = diff / se
  return {"auroc_a": float(aucs[0]), "auroc_b": float(aucs[1]),
          "difference": diff, "se": se, "z": z,
          "p": math.erfc(abs(z) / math.sqrt(2.0))}
