"""Classification metrics for probability models, numpy only (the GPU box and the Django glue
both call these, so they take plain arrays and return JSON-ready dicts of floats).

- `auc`: ROC AUC as the Mann-Whitney rank statistic, ties counted as half (average ranks), so it
  equals sklearn's roc_auc_score without needing sklearn; None when only one class is present.
- `log_loss`: mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15] so a
  confident mistake costs about 34.5 nats instead of infinity.
- `brier`: mean squared error of the probability.
- `calibration`: 10 equal-width bins of the predicted probability ([0, 0.1), ..., [0.9, 1.0]);
  one entry per non-empty bin with the mean prediction, the observed rate and the row count, and
  `ece` (expected calibration error: the count-weighted mean |predicted - observed|).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CALIBRATION_BINS", "LOG_LOSS_EPS", "auc", "brier", "calibration", "classification_metrics", "log_loss"]

CALIBRATION_BINS = 10
LOG_LOSS_EPS = 1e-15


def _as_arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"y has {y.size} rows but p has {p.size}")
    return y, p


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks (scipy's rankdata
    'average', without scipy)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], sorted_values.size]  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties half; None if one class."""
    y, p = _as_arrays(y, p)
    positives = y > 0.5
    n_pos = int(positives.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = average_ranks(p)[positives].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _as_arrays(y, p)
    p = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _as_arrays(y, p)
    return float(np.mean((p - y) ** 2))


def calibration(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Reliability table: [{bin, lower, upper, predicted, observed, count}] for non-empty bins."""
    y, p = _as_arrays(y, p)
    # p == 1.0 belongs to the last bin, not to an eleventh one.
    index = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    table = []
    for b in np.flatnonzero(counts):
        table.append(
            {
                "bin": int(b),
                "lower": int(b) / bins,
                "upper": (int(b) + 1) / bins,
                "predicted": float(sum_p[b] / counts[b]),
                "observed": float(sum_y[b] / counts[b]),
                "count": int(counts[b]),
            }
        )
    return table


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    """auc, log_loss, brier, calibration (10 bins), ece, n and the positive rate of y."""
    y, p = _as_arrays(y, p)
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    table = calibration(y, p)
    ece = sum(row["count"] * abs(row["predicted"] - row["observed"]) for row in table) / y.size
    return {
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "calibration": table,
        "ece": float(ece),
        "n": int(y.size),
        "positive_rate": float(y.mean()),
    }
