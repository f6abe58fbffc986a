"""scikit-learn baselines for the propensity model, on the same split and with the same metrics,
so a model version's page can show whether the MLP earns its keep:

- logistic_regression: LogisticRegression (lbfgs) on standardised features plus one-hot channel
  and creative. Linear in the features: it cannot see interactions.
- hist_gradient_boosting: HistGradientBoostingClassifier with channel and creative as native
  categorical features (above 254 categories, more than its 255 bins hold, the index goes in as
  a number instead).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from mlcore.engine.metrics import classification_metrics
from mlcore.engine.propensity import PropensityData

__all__ = ["train_baselines"]

# HistGradientBoosting bins categories like values: at most max_bins (255) - 1 of them.
HGB_MAX_CATEGORIES = 254


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((index.size, size), dtype=np.float32)
    out[np.arange(index.size), index] = 1.0
    return out


def _subsample(train_idx: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or train_idx.size <= max_rows:
        return train_idx
    return np.sort(np.random.default_rng(seed).choice(train_idx, size=max_rows, replace=False))


def train_baselines(
    data: PropensityData,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    max_train_rows: int | None = None,
    seed: int = 0,
    which: tuple[str, ...] = ("logistic_regression", "hist_gradient_boosting"),
) -> dict[str, dict]:
    """Fit each baseline on train_idx (or a random max_train_rows of it), score valid_idx.

    Each value: classification_metrics(...) plus fit_seconds, predict_seconds, n_train, n_valid.
    """
    train_idx = _subsample(np.asarray(train_idx, dtype=np.int64), max_train_rows, seed)
    valid_idx = np.asarray(valid_idx, dtype=np.int64)
    n_channels = int(data.channel.max()) + 1
    n_creatives = int(data.creative.max()) + 1
    y_train = data.y[train_idx]
    y_valid = data.y[valid_idx]
    results: dict[str, dict] = {}

    if "logistic_regression" in which:
        mean = data.X[train_idx].mean(axis=0, dtype=np.float64)
        std = data.X[train_idx].std(axis=0, dtype=np.float64)
        std[std < 1e-12] = 1.0

        def design(idx: np.ndarray) -> np.ndarray:
            z = ((data.X[idx] - mean) / std).astype(np.float32)
            return np.hstack([z, _one_hot(data.channel[idx], n_channels), _one_hot(data.creative[idx], n_creatives)])

        started = time.perf_counter()
        model = LogisticRegression(max_iter=300, random_state=seed).fit(design(train_idx), y_train)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        p = model.predict_proba(design(valid_idx))[:, 1]
        results["logistic_regression"] = _result(y_valid, p, fit_seconds, time.perf_counter() - started, train_idx)

    if "hist_gradient_boosting" in which:
        categorical = [data.X.shape[1], data.X.shape[1] + 1]
        categorical = [
            c for c, size in zip(categorical, (n_channels, n_creatives), strict=True) if size <= HGB_MAX_CATEGORIES
        ]

        def design_hgb(idx: np.ndarray) -> np.ndarray:
            return np.hstack([data.X[idx], data.channel[idx, None], data.creative[idx, None]]).astype(np.float32)

        started = time.perf_counter()
        model = HistGradientBoostingClassifier(
            max_iter=300, categorical_features=categorical or None, random_state=seed
        ).fit(design_hgb(train_idx), y_train)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        p = model.predict_proba(design_hgb(valid_idx))[:, 1]
        results["hist_gradient_boosting"] = _result(y_valid, p, fit_seconds, time.perf_counter() - started, train_idx)
        results["hist_gradient_boosting"]["iterations"] = int(model.n_iter_)
    return results


def _result(y: np.ndarray, p: np.ndarray, fit_seconds: float, predict_seconds: float, train_idx: np.ndarray) -> dict:
    metrics = classification_metrics(y, p)
    metrics.update(
        {
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "n_train": int(train_idx.size),
            "n_valid": int(y.size),
        }
    )
    return metrics
