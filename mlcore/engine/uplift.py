"""Uplift (incremental conversion) from treated and held-out customers, numpy + scikit-learn.

`fit_uplift(X, treated, y, method)` learns tau(x) = P(goal | x, treated) - P(goal | x, held out):
- "t_learner": one HistGradientBoostingClassifier per arm; tau = mu1(x) - mu0(x).
- "x_learner" (Kuenzel et al. 2019): the same two outcome models, then imputed effects
  D1 = y - mu0(x) on treated rows and D0 = mu1(x) - y on held-out rows, a
  HistGradientBoostingRegressor for each, blended as tau = e * tau0(x) + (1 - e) * tau1(x) where e
  is the propensity of treatment. Holdouts are assigned at random, so e is the treated share of
  the data (a constant), not a fitted model.

`uplift_metrics(uplift, treated, y)` scores a ranking by predicted uplift on held-out data: the
Qini curve (incremental conversions among the top k), its area above the random line (qini),
the area under the uplift curve (auuc) and the observed uplift per decile.

Artifacts are pickles of the fitted scikit-learn models (scikit-learn has no other format):
load only blobs this system wrote (the model registry's own storage), never user uploads.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

__all__ = ["METHODS", "UpliftModel", "fit_uplift", "synthetic_uplift_data", "uplift_metrics"]

METHODS = ("t_learner", "x_learner")
ARTIFACT_FORMAT = "mlcore.uplift/1"


# A leaf minimum: the effect is a small difference of two noisy models, and over-fitted arms
# turn noise into uplift. Early stopping (on by default above 10,000 rows) picks the tree count.
BASE_PARAMS = {"max_iter": 200, "learning_rate": 0.1, "min_samples_leaf": 100}


def _classifier(seed: int, params: dict | None) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(**{**BASE_PARAMS, **(params or {})}, random_state=seed)


def _regressor(seed: int, params: dict | None) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(**{**BASE_PARAMS, **(params or {})}, random_state=seed)


@dataclass
class UpliftModel:
    method: str
    models: dict = field(default_factory=dict)  # name -> fitted sklearn estimator
    treated_share: float = 0.5
    n_features: int = 0
    n_treated: int = 0
    n_control: int = 0

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted uplift (incremental P(goal)) per row, float64 (n,)."""
        X = _check_X(X)
        if X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features}")
        if self.method == "t_learner":
            return self.models["mu1"].predict_proba(X)[:, 1] - self.models["mu0"].predict_proba(X)[:, 1]
        e = self.treated_share
        return e * self.models["tau0"].predict(X) + (1.0 - e) * self.models["tau1"].predict(X)

    def predict_arms(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(goal | treated), P(goal | held out)) per row from the outcome models."""
        X = _check_X(X)
        return self.models["mu1"].predict_proba(X)[:, 1], self.models["mu0"].predict_proba(X)[:, 1]

    def to_bytes(self) -> bytes:
        """A pickle (scikit-learn models have no safer format): load only blobs this system wrote."""
        return pickle.dumps(
            {
                "format": ARTIFACT_FORMAT,
                "method": self.method,
                "models": self.models,
                "treated_share": self.treated_share,
                "n_features": self.n_features,
                "n_treated": self.n_treated,
                "n_control": self.n_control,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> UpliftModel:
        payload = pickle.loads(blob)  # our own artifact store only, see to_bytes
        if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
            raise ValueError("not an uplift artifact")
        payload.pop("format")
        return cls(**payload)


def _check_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features), got shape {X.shape}")
    return X


def fit_uplift(
    X: np.ndarray,
    treated: np.ndarray,
    y: np.ndarray,
    method: str = "t_learner",
    seed: int = 0,
    params: dict | None = None,
) -> UpliftModel:
    """Fit a T- or X-learner; treated 1 = got the campaign, 0 = held out; y 0/1 outcome.

    params: HistGradientBoosting keyword arguments for every base learner, over BASE_PARAMS."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    X = _check_X(X)
    treated = np.asarray(treated).reshape(-1).astype(bool)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if treated.shape[0] != X.shape[0] or y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows, treated {treated.shape[0]}, y {y.shape[0]}")
    for name, mask in (("treated", treated), ("held-out", ~treated)):
        rows = int(mask.sum())
        if rows < 2 or len(np.unique(y[mask])) < 2:
            raise ValueError(f"the {name} rows need both converted and not converted customers (got {rows} rows)")

    mu1 = _classifier(seed, params).fit(X[treated], y[treated])
    mu0 = _classifier(seed, params).fit(X[~treated], y[~treated])
    model = UpliftModel(
        method=method,
        models={"mu1": mu1, "mu0": mu0},
        treated_share=float(treated.mean()),
        n_features=X.shape[1],
        n_treated=int(treated.sum()),
        n_control=int((~treated).sum()),
    )
    if method == "x_learner":
        d1 = y[treated] - mu0.predict_proba(X[treated])[:, 1]
        d0 = mu1.predict_proba(X[~treated])[:, 1] - y[~treated]
        model.models["tau1"] = _regressor(seed, params).fit(X[treated], d1)
        model.models["tau0"] = _regressor(seed, params).fit(X[~treated], d0)
    return model


def uplift_metrics(uplift: np.ndarray, treated: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """How well a predicted uplift ranks customers, on data with random treatment assignment.

    Rows sorted by predicted uplift, highest first (ties in input order). For the top k rows:
    qini_curve(k) = Y_t(k) - Y_c(k) * N_t(k) / N_c(k) (incremental conversions, the held-out
    conversions scaled to the treated count; 0 while N_c(k) = 0), and
    uplift_curve(k) = (Y_t(k)/N_t(k) - Y_c(k)/N_c(k)) * k (0 while either arm is empty).
    - qini: mean over k = 1..n of (qini_curve(k) - k/n * qini_curve(n)), divided by n: the area
      between the Qini curve and the random-targeting line, per customer; > 0 beats random.
    - auuc: mean over k of uplift_curve(k), divided by n; auuc_random is the same for the line
      from 0 to uplift_curve(n).
    - deciles: for each of `bins` equal groups (np.array_split of the sorted rows, top first):
      n, n_treated, n_control, conversion rates, observed uplift (None if an arm is empty) and
      the mean predicted uplift.
    - qini_points: the Qini curve at 0, 10%, ..., 100% of the rows, for a chart.
    """
    u = np.asarray(uplift, dtype=np.float64).reshape(-1)
    t = np.asarray(treated).reshape(-1).astype(bool)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = u.size
    if n == 0 or t.size != n or y.size != n:
        raise ValueError(f"uplift, treated and y need the same non-zero length, got {n}, {t.size}, {y.size}")
    order = np.argsort(-u, kind="mergesort")
    ts, ys = t[order], y[order]
    n_t = np.cumsum(ts)
    n_c = np.cumsum(~ts)
    y_t = np.cumsum(ys * ts)
    y_c = np.cumsum(ys * ~ts)
    with np.errstate(divide="ignore", invalid="ignore"):
        qini_curve = np.where(n_c > 0, y_t - y_c * n_t / n_c, y_t)
        both = (n_t > 0) & (n_c > 0)
        k = np.arange(1, n + 1)
        uplift_curve = np.where(both, (y_t / n_t - y_c / n_c) * k, 0.0)
    qini = float(np.mean(qini_curve - k / n * qini_curve[-1]) / n)
    auuc = float(np.mean(uplift_curve) / n)
    auuc_random = float(np.mean(k / n * uplift_curve[-1]) / n)

    deciles = []
    for d, rows in enumerate(np.array_split(np.arange(n), bins), start=1):
        if rows.size == 0:
            continue
        tt, yy = ts[rows], ys[rows]
        nt, nc = int(tt.sum()), int((~tt).sum())
        rate_t = float(yy[tt].mean()) if nt else None
        rate_c = float(yy[~tt].mean()) if nc else None
        deciles.append(
            {
                "decile": d,
                "n": int(rows.size),
                "n_treated": nt,
                "n_control": nc,
                "rate_treated": rate_t,
                "rate_control": rate_c,
                "observed_uplift": rate_t - rate_c if nt and nc else None,
                "predicted_uplift": float(u[order][rows].mean()),
            }
        )
    points = [0.0] + [float(qini_curve[max(round(float(f) * n) - 1, 0)]) for f in np.linspace(0.1, 1.0, 10)]
    n_treated, n_control = int(t.sum()), int((~t).sum())
    overall = float(y[t].mean() - y[~t].mean()) if n_treated and n_control else None
    return {
        "qini": qini,
        "auuc": auuc,
        "auuc_random": auuc_random,
        "deciles": deciles,
        "qini_points": points,
        "overall_uplift": overall,
        "n": int(n),
        "n_treated": n_treated,
        "n_control": n_control,
    }


def synthetic_uplift_data(
    n: int, d: int = 6, treated_share: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random-holdout data with a planted heterogeneous effect: (X, treated, y, true_uplift).

    Baseline P(goal) depends on x0 and x1; the campaign adds up to +12 points for customers with
    high x2 (persuadables), nothing around x2 = -0.5, and takes up to 4 points from those with
    low x2 ("sleeping dogs"); x3 widens the effect. Needs d >= 4; the rest is noise.
    """
    if d < 4:
        raise ValueError("synthetic uplift data needs at least 4 features")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    treated = rng.random(n) < treated_share
    p0 = 1.0 / (1.0 + np.exp(-(-1.6 + 0.6 * X[:, 0] - 0.4 * X[:, 1])))
    tau = (0.16 / (1.0 + np.exp(-2.0 * (X[:, 2] + 0.25 * X[:, 3]))) - 0.04).clip(-p0, 1.0 - p0)
    y = (rng.random(n) < p0 + treated * tau).astype(np.float64)
    return X, treated.astype(np.int64), y, tau
