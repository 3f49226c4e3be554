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
