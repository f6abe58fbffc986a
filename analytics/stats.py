"""Two-group comparisons for holdout lift, from aggregates only (SQL returns counts, sums
and sums of squares; no per-customer rows travel to Python).

- Conversion rate (a proportion): the absolute difference p1 - p0 with Newcombe's hybrid
  score interval (his method 10: built from the two Wilson score intervals), which stays
  inside [-1, 1] and behaves with 0 or n conversions where the Wald interval collapses;
  the p-value is the two-sided pooled two-proportion z test (the textbook test of
  p1 = p0). The relative lift p1/p0 - 1 gets a delta-method interval on the log of the
  risk ratio (Katz), which needs conversions in both groups.
- Revenue per customer (a mean of a skewed, mostly-zero variable): Welch's unequal-
  variance t with Welch-Satterthwaite degrees of freedom, from n, sum and sum of squares
  per group. The sums come as exact Decimals from PostgreSQL's NUMERIC, so the variance
  (sumsq - sum^2/n) is computed in Decimal before it is rounded to a float: in float64
  that difference cancels catastrophically at a million customers. The relative lift
  m1/m0 - 1 gets a delta-method interval on the log of the ratio of means.

Degenerate inputs (no control group, n < 2, no conversions anywhere, zero variance) give
None for what cannot be computed and a `reason` that says why; nothing raises.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal, localcontext

from scipy import stats as sps

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    """Treated minus control. `ci_low`/`ci_high` bound the absolute difference;
    `relative_ci_*` bound the relative lift. None where undefined, with `reason`."""

    absolute: float | None
    relative: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    relative_ci_low: float | None = None
    relative_ci_high: float | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _z(confidence: float) -> float:
    return float(sps.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (n >= 1)."""
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_ratio_interval(ratio: float, log_se: float, confidence: float) -> tuple[float, float]:
    z = _z(confidence)
    return ratio * math.exp(-z * log_se) - 1, ratio * math.exp(z * log_se) - 1


def compare_proportions(
    treated_successes: int, treated_n: int, control_successes: int, control_n: int, confidence: float = CONFIDENCE
) -> Comparison:
    """Treated minus control conversion rate (see the module docstring for the methods)."""
    if treated_n < 1 or control_n < 1:
        return Comparison(None, None, None, None, None, reason=_no_group(treated_n, control_n))
    x1, n1, x0, n0 = treated_successes, treated_n, control_successes, control_n
    p1, p0 = x1 / n1, x0 / n0
    difference = p1 - p0
    l1, u1 = wilson_interval(x1, n1, confidence)
    l0, u0 = wilson_interval(x0, n0, confidence)
    # Newcombe (1998), method 10.
    ci_low = difference - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    ci_high = difference + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    reasons = []
    pooled = (x1 + x0) / (n1 + n0)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if se0 > 0:
        p_value = float(2 * sps.norm.sf(abs(difference) / se0))
    else:
        p_value = None
        reasons.append("no test: every customer in both groups " + ("converted" if pooled else "did not convert"))
    relative = relative_low = relative_high = None
    if x0 > 0:
        relative = p1 / p0 - 1
        if x1 > 0:
            log_se = math.sqrt((1 - p1) / x1 + (1 - p0) / x0)  # (1-p)/(n p) = (1-p)/x
            relative_low, relative_high = _log_ratio_interval(p1 / p0, log_se, confidence)
        else:
            reasons.append("no relative interval: the treated group has no conversions")
    else:
        reasons.append("no relative lift: the control group has no conversions")
    return Comparison(
        difference, relative, ci_low, ci_high, p_value, relative_low, relative_high, reason="; ".join(reasons)
    )


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a group: count, sum and sum of squares."""

    n: int
    total: Decimal
    squares: Decimal

    @property
    def mean(self) -> float | None:
        return float(Decimal(self.total) / self.n) if self.n else None

    def variance(self) -> float | None:
        """Sample variance (n - 1), computed exactly in Decimal first."""
        if self.n < 2:
            return None
        with localcontext() as context:
            context.prec = 60
            total, squares = Decimal(self.total), Decimal(self.squares)
            value = (squares - total * total / self.n) / (self.n - 1)
        return max(0.0, float(value))


def welch(treated: Moments, control: Moments, confidence: float = CONFIDENCE) -> Comparison:
    """Treated minus control mean with Welch's t interval and two-sided p-value."""
    if treated.n < 1 or control.n < 1:
        return Comparison(None, None, None, None, None, reason=_no_group(treated.n, control.n))
    m1, m0 = treated.mean, control.mean
    difference = m1 - m0
    reasons = []
    relative = relative_low = relative_high = None
    if m0 > 0:
        relative = m1 / m0 - 1
    else:
        reasons.append("no relative lift: the control group's mean is not positive")
    if treated.n < 2 or control.n < 2:
        reasons.append("no interval: a group has fewer than 2 customers")
        return Comparison(difference, relative, None, None, None, reason="; ".join(reasons))
    v1, v0 = treated.variance(), control.variance()
    a, b = v1 / treated.n, v0 / control.n
    se = math.sqrt(a + b)
    if se == 0:
        reasons.append("no interval: zero variance in both groups")
        return Comparison(difference, relative, None, None, None, reason="; ".join(reasons))
    # Welch-Satterthwaite degrees of freedom.
    df = (a + b) ** 2 / (a * a / (treated.n - 1) + b * b / (control.n - 1))
    t = float(sps.t.ppf(0.5 + confidence / 2, df))
    p_value = float(2 * sps.t.sf(abs(difference) / se, df))
    if relative is not None:
        if m1 > 0:
            log_se = math.sqrt(a / (m1 * m1) + b / (m0 * m0))
            relative_low, relative_high = _log_ratio_interval(m1 / m0, log_se, confidence)
        else:
            reasons.append("no relative interval: the treated group's mean is not positive")
    return Comparison(
        difference,
        relative,
        difference - t * se,
        difference + t * se,
        p_value,
        relative_low,
        relative_high,
        reason="; ".join(reasons),
    )


def _no_group(treated_n: int, control_n: int) -> str:
    if control_n < 1 and treated_n < 1:
        return "no treated and no control customers"
    return "no control group (no held_out customers)" if control_n < 1 else "no treated customers"
