"""Off-policy evaluation: what would a target policy have earned on the logged sends?

Pure numpy (no Django). Every estimator takes the same arrays, so a caller can run them all
with one call shape:

    rewards             (n,)   observed reward of the logged action (e.g. 1 = converted)
    actions             (n,)   int, the logged action (column index 0..k-1)
    logged_propensities (n,)   the probability the logging policy gave that action, in (0, 1]
    target_probs        (n, k) the target policy's action probabilities per row (rows sum to 1)
    reward_predictions  (n, k) a reward model's prediction for every action (DM and DR only)

and returns an `OPEResult`: the estimate, a normal-approximation confidence interval from the
per-row terms (the delta method for the self-normalised ratio), n and the effective sample
size of the importance weights. No clipping unless `clip=` is given: clipping trades an
unknown bias for variance, which a marketer comparing policies should opt into knowingly.

The direct method's interval covers only the sampling noise over customers, not the reward
model's bias; doubly robust is unbiased when either the propensities or the reward model
are right, and its interval is honest when the propensities are (they are logged exactly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "ESTIMATORS",
    "OPEResult",
    "direct_method",
    "doubly_robust",
    "evaluate_all",
    "ips",
    "snips",
]

# How far a target row may be from summing to 1 (float32 policies, JSON round trips).
ROW_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class OPEResult:
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    n: int
    # Effective sample size of the importance weights, (sum w)^2 / sum w^2: how many logged rows
    # the estimate is really worth (n for the direct method, which uses no weights).
    ess: float
    confidence: float
    # Largest importance weight (after clipping) and how many rows clipping changed.
    max_weight: float
    clipped: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Logged:
    rewards: np.ndarray
    actions: np.ndarray
    logged_propensities: np.ndarray
    target_probs: np.ndarray
    reward_predictions: np.ndarray | None
    weights: np.ndarray
    clipped: int


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_float(name: str, values: object, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {'(n,)' if ndim == 1 else '(n, k)'}, got shape {array.shape}")
    return array


def _validate(
    rewards: object,
    actions: object,
    logged_propensities: object,
    target_probs: object,
    reward_predictions: object | None,
    clip: float | None,
    need_predictions: bool,
) -> _Logged:
    rewards = _as_float("rewards", rewards, 1)
    n = len(rewards)
    if n < 2:
        raise ValueError(f"need at least 2 logged rows for an estimate with a confidence interval, got {n}")
    bad = ~np.isfinite(rewards)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"rewards[{i}] = {rewards[i]} is not finite")

    actions_in = np.asarray(actions)
    if actions_in.shape != (n,):
        raise ValueError(f"actions must be ({n},) like rewards, got shape {actions_in.shape}")
    if not np.issubdtype(actions_in.dtype, np.integer):
        raise ValueError(f"actions must be integers (column indices), got dtype {actions_in.dtype}")
    actions = actions_in.astype(np.int64)

    propensities = _as_float("logged_propensities", logged_propensities, 1)
    if propensities.shape != (n,):
        raise ValueError(f"logged_propensities must be ({n},) like rewards, got shape {propensities.shape}")
    bad = ~((propensities > 0) & (propensities <= 1))
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"logged_propensities[{i}] = {propensities[i]} is not in (0, 1]")

    target = _as_float("target_probs", target_probs, 2)
    if target.shape[0] != n or target.shape[1] == 0:
        raise ValueError(f"target_probs must be ({n}, k) with k >= 1, got shape {target.shape}")
    k = target.shape[1]
    bad_action = (actions < 0) | (actions >= k)
    if bad_action.any():
        i = _first_bad(bad_action)
        raise ValueError(f"actions[{i}] = {actions[i]} is not a column of target_probs (0..{k - 1})")
    bad = ~(np.isfinite(target) & (target >= 0) & (target <= 1 + ROW_SUM_TOLERANCE)).all(axis=1)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"target_probs row {i} has a value outside [0, 1]: {target[i].tolist()}")
    sums = target.sum(axis=1)
    bad = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"target_probs row {i} sums to {float(sums[i])!r}, not 1")

    predictions = None
    if need_predictions:
        if reward_predictions is None:
            raise ValueError("reward_predictions (n, k) is required by this estimator")
        predictions = _as_float("reward_predictions", reward_predictions, 2)
        if predictions.shape != target.shape:
            raise ValueError(f"reward_predictions must be {target.shape} like target_probs, got {predictions.shape}")
        bad = ~np.isfinite(predictions).all(axis=1)
        if bad.any():
            raise ValueError(f"reward_predictions row {_first_bad(bad)} is not finite")

    weights = target[np.arange(n), actions] / propensities
    clipped = 0
    if clip is not None:
        clip = float(clip)
        if not (clip > 0 and np.isfinite(clip)):
            raise ValueError(f"clip must be a positive number, got {clip}")
        over = weights > clip
        clipped = int(over.sum())
        weights = np.minimum(weights, clip)
    return _Logged(rewards, actions, propensities, target, predictions, weights, clipped)


def _z(confidence: float) -> float:
    confidence = float(confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _ess(weights: np.ndarray) -> float:
    square_sum = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / square_sum if square_sum > 0 else 0.0


def _result(
    estimator: str, value: float, std_error: float, logged: _Logged, confidence: float, ess: float | None = None
) -> OPEResult:
    z = _z(confidence)
    weights = logged.weights
    return OPEResult(
        estimator=estimator,
        value=float(value),
        ci_low=float(value - z * std_error),
        ci_high=float(value + z * std_error),
        std_error=float(std_error),
        n=len(logged.rewards),
        ess=_ess(weights) if ess is None else float(ess),
        confidence=float(confidence),
        max_weight=float(weights.max()),
        clipped=logged.clipped,
    )


def _mean_result(estimator: str, terms: np.ndarray, logged: _Logged, confidence: float, ess=None) -> OPEResult:
    """An estimator that is the mean of independent per-row terms: CLT interval."""
    std_error = float(np.std(terms, ddof=1)) / np.sqrt(len(terms))
    return _result(estimator, float(np.mean(terms)), std_error, logged, confidence, ess)


def ips(
    rewards: np.ndarray,
    actions: np.ndarray,
    logged_propensities: np.ndarray,
    target_probs: np.ndarray,
    reward_predictions: np.ndarray | None = None,
    *,
    clip: float | None = None,
    confidence: float = 0.95,
) -> OPEResult:
    """Inverse propensity scoring: mean of r * pi(a|x) / mu(a|x). Unbiased when every action
    the target can take had a positive logging probability. `reward_predictions` is accepted
    and ignored (one call shape for all estimators)."""
    _z(confidence)
    logged = _validate(rewards, actions, logged_propensities, target_probs, None, clip, need_predictions=False)
    return _mean_result("ips", logged.rewards * logged.weights, logged, confidence)


def snips(
    rewards: np.ndarray,
    actions: np.ndarray,
    logged_propensities: np.ndarray,
    target_probs: np.ndarray,
    reward_predictions: np.ndarray | None = None,
    *,
    clip: float | None = None,
    confidence: float = 0.95,
) -> OPEResult:
    """Self-normalised IPS: sum(r * w) / sum(w). Slightly biased, much lower variance when
    the weights are large; its interval is the delta-method (ratio estimator) one:
    se^2 = sum(w_i^2 (r_i - V)^2) / (sum w)^2 (with the n/(n-1) small-sample factor)."""
    _z(confidence)
    logged = _validate(rewards, actions, logged_propensities, target_probs, None, clip, need_predictions=False)
    weights, n = logged.weights, len(logged.rewards)
    total = float(weights.sum())
    if total <= 0:
        raise ValueError(
            "target_probs gives probability 0 to every logged action: the logs say nothing about this policy"
        )
    value = float(np.sum(logged.rewards * weights)) / total
    residuals = weights * (logged.rewards - value)
    std_error = float(np.sqrt(np.sum(residuals**2) * n / (n - 1))) / total
    return _result("snips", value, std_error, logged, confidence)


def direct_method(
    rewards: np.ndarray,
    actions: np.ndarray,
    logged_propensities: np.ndarray,
    target_probs: np.ndarray,
    reward_predictions: np.ndarray | None = None,
    *,
    clip: float | None = None,
    confidence: float = 0.95,
) -> OPEResult:
    """Direct method: mean over rows of sum_a pi(a|x) * r_hat(x, a). Uses no logged rewards
    (the inputs are still validated so a bad batch fails the same way everywhere); as good
    as the reward model, and its interval ignores that model's bias."""
    _z(confidence)
    logged = _validate(rewards, actions, logged_propensities, target_probs, reward_predictions, clip, True)
    terms = np.sum(logged.target_probs * logged.reward_predictions, axis=1)
    return _mean_result("direct_method", terms, logged, confidence, ess=len(terms))


def doubly_robust(
    rewards: np.ndarray,
    actions: np.ndarray,
    logged_propensities: np.ndarray,
    target_probs: np.ndarray,
    reward_predictions: np.ndarray | None = None,
    *,
    clip: float | None = None,
    confidence: float = 0.95,
) -> OPEResult:
    """Doubly robust: the direct method plus an importance-weighted correction of the reward
    model's error on the logged action, w * (r - r_hat(x, a))."""
    _z(confidence)
    logged = _validate(rewards, actions, logged_propensities, target_probs, reward_predictions, clip, True)
    n = len(logged.rewards)
    predictions = logged.reward_predictions
    baseline = np.sum(logged.target_probs * predictions, axis=1)
    correction = logged.weights * (logged.rewards - predictions[np.arange(n), logged.actions])
    return _mean_result("doubly_robust", baseline + correction, logged, confidence)


ESTIMATORS = {
    "ips": ips,
    "snips": snips,
    "direct_method": direct_method,
    "doubly_robust": doubly_robust,
}


def evaluate_all(
    rewards: np.ndarray,
    actions: np.ndarray,
    logged_propensities: np.ndarray,
    target_probs: np.ndarray,
    reward_predictions: np.ndarray | None = None,
    *,
    clip: float | None = None,
    confidence: float = 0.95,
) -> dict[str, OPEResult]:
    """Every estimator the inputs allow (the model-based two only with reward_predictions)."""
    names = ["ips", "snips"] + (["direct_method", "doubly_robust"] if reward_predictions is not None else [])
    return {
        name: ESTIMATORS[name](
            rewards, actions, logged_propensities, target_probs, reward_predictions, clip=clip, confidence=confidence
        )
        for name in names
    }
