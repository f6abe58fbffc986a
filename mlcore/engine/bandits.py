"""Bandit picks for a whole audience at once, each with the exact probability it was made.

Pure numpy (no Django): arrays in, arrays out. Every picker takes one uniform draw in
[0, 1) per customer (the launch derives them from a hash of the run and the customer, so a
relaunch picks the same) and returns `(choice, probability)`: the column picked per
customer and the probability the policy gave that pick. Off-policy evaluation divides by
that probability, so it must be the true probability of the pick, not a score.

Thompson sampling (Beta-Bernoulli). Sampling one posterior draw per customer and logging the
sampled value would log a number that is not a probability. Instead, per batch, we estimate
by Monte Carlo the probability that each arm is the argmax of the posterior draws,
P(arm i is best), and pick each customer's arm from exactly that distribution by inverse
CDF on the customer's uniform. The logged probability is then *the* probability of the pick
under the policy that was run (sampling from the estimated argmax distribution), with no
estimation error between what was logged and what was done; the Monte Carlo error (standard
error <= 0.5/sqrt(draws), 0.005 at the default 10,000 draws) only makes that policy differ
slightly from ideal Thompson sampling, which is harmless.

Speed: the Monte Carlo runs once per distinct (posterior row, eligibility pattern) in the
batch, never per customer; customers are grouped by that pair in O(n). The estimates are
cached per (alpha, beta, eligibility, draws, seed): the posterior changes only when rewards
are folded in, so a single-customer pick between updates is a cache hit plus an inverse-CDF
step (tens of microseconds); the first pick after an update pays one Monte Carlo (10,000
draws x k Beta samples, about 1-3 ms for k = 4). A single-pick caller meets the 1 ms goal by
warming the cache with `argmax_probabilities` when it loads the posterior, or by passing
draws=2000 (standard error <= 0.011, about 0.3-0.5 ms cold). See bench/decide.py.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

__all__ = [
    "argmax_probabilities",
    "beta_posterior",
    "clear_argmax_cache",
    "epsilon_greedy",
    "pick_from_probabilities",
    "softmax_pick",
    "thompson_pick",
]

DEFAULT_DRAWS = 10_000
# Dense (group, pattern) keys up to this many distinct values are grouped with a lookup table
# (O(n)); beyond it, np.unique (a sort).
_DENSE_KEYS = 1 << 22
# Eligibility patterns are packed into int64 bits (and grouped without a sort) when k is this small.
_PATTERN_BITS = 20
# Largest (masks x draws x arms) bool temporary when ranking draws for many masks at once.
_RANKING_CELLS = 1 << 24

_CACHE_SIZE = 4096
_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


# --- posteriors ------------------------------------------------------------------------------


def beta_posterior(
    successes: np.ndarray, trials: np.ndarray, prior: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Beta-Bernoulli posterior: alpha = prior_a + successes, beta = prior_b + failures.

    Works elementwise on any shape ((k,) arms or (g, k) groups x arms). Successes must lie
    in [0, trials]: a reward join that counts more conversions than sends is a bug upstream,
    not something to clip silently."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if successes.shape != trials.shape:
        raise ValueError(f"successes {successes.shape} and trials {trials.shape} must have the same shape")
    prior_a, prior_b = (float(value) for value in prior)
    if not (prior_a > 0 and prior_b > 0 and np.isfinite(prior_a) and np.isfinite(prior_b)):
        raise ValueError(f"prior must be two positive numbers, got {prior!r}")
    if not (np.all(np.isfinite(successes)) and np.all(np.isfinite(trials))):
        raise ValueError("successes and trials must be finite")
    if np.any(successes < 0) or np.any(successes > trials):
        bad = np.argwhere((successes < 0) | (successes > trials))[0]
        raise ValueError(
            f"successes must lie in [0, trials]: at {tuple(int(i) for i in bad)} "
            f"successes={successes[tuple(bad)]:g}, trials={trials[tuple(bad)]:g}"
        )
    return prior_a + successes, prior_b + (trials - successes)


# --- P(arm is the argmax) ----------------------------------------------------------------------


def clear_argmax_cache() -> None:
    """Forget cached argmax probabilities (benchmarks measure a cold batch with this)."""
    with _cache_lock:
        _cache.clear()


def _check_posterior(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if alpha.shape != beta.shape:
        raise ValueError(f"alpha {alpha.shape} and beta {beta.shape} must have the same shape")
    if alpha.ndim not in (1, 2) or alpha.shape[-1] == 0:
        raise ValueError(f"alpha and beta must be (k,) or (g, k) with k >= 1, got shape {alpha.shape}")
    for name, values in (("alpha", alpha), ("beta", beta)):
        if not np.all(np.isfinite(values) & (values > 0)):
            bad = np.argwhere(~(np.isfinite(values) & (values > 0)))[0]
            raise ValueError(f"{name} must be positive and finite: {name}{list(bad)} = {values[tuple(bad)]}")
    return alpha, beta


def _check_draws(draws: int) -> int:
    draws = int(draws)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    return draws


def _masked_argmax_frequencies(samples: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """samples (draws, k) posterior draws; masks (m, k) bool -> (m, k) share of draws in which
    each eligible arm is the largest among the eligible ones.

    Many masks (eligibility patterns) of one posterior: rank the arms of every draw once;
    a mask's winner in a draw is its first eligible arm in that ranking. A tie (possible
    only when floats coincide, e.g. draws that round to 1.0) splits its draw equally between
    the tied arms instead, so rows still sum to 1 and column order favours no arm."""
    draws, k = samples.shape
    m = len(masks)
    ranking = np.argsort(-samples, axis=1, kind="stable")
    ordered = np.take_along_axis(samples, ranking, axis=1)
    if k == 1 or not np.any(ordered[:, 1:] == ordered[:, :-1]):
        out = np.empty((m, k), dtype=np.float64)
        chunk = max(1, _RANKING_CELLS // (draws * k))  # bounds the (masks, draws, k) temporary
        for start in range(0, m, chunk):
            part = masks[start : start + chunk]
            # first eligible position in each draw's ranking, for every mask: (chunk, draws)
            first = np.argmax(part[:, ranking], axis=2)
            winners = np.take_along_axis(ranking[None, :, :], first[:, :, None], axis=2)[:, :, 0]
            offsets = (np.arange(len(part)) * k)[:, None]
            counts = np.bincount((winners + offsets).ravel(), minlength=len(part) * k)
            out[start : start + chunk] = counts.reshape(len(part), k) / draws
        return out
    out = np.zeros(masks.shape, dtype=np.float64)
    for row, mask in enumerate(masks):
        sub = np.where(mask, samples, -np.inf)
        at_best = sub == sub.max(axis=1)[:, None]
        out[row] = (at_best / at_best.sum(axis=1)[:, None]).sum(axis=0) / draws
    return out


def _argmax_table(
    alpha: np.ndarray, beta: np.ndarray, rows: np.ndarray, masks: np.ndarray, draws: int, seed: int
) -> np.ndarray:
    """P(argmax) for each (posterior row, mask) pair: rows (m,), masks (m, k) -> (m, k).

    Cached per (alpha row, beta row, mask, draws, seed); the Beta draws of one posterior
    row are made once and shared by all its masks (common random numbers: two eligibility
    patterns of the same posterior get consistent estimates)."""
    k = alpha.shape[1]
    out = np.empty((len(rows), k), dtype=np.float64)
    missing: dict[int, list[int]] = {}
    keys = []
    with _cache_lock:
        for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
            key = (alpha[row].tobytes(), beta[row].tobytes(), np.packbits(mask).tobytes(), k, draws, seed)
            keys.append(key)
            cached = _cache.get(key)
            if cached is None:
                missing.setdefault(int(row), []).append(i)
            else:
                _cache.move_to_end(key)
                out[i] = cached
    for row, positions in missing.items():
        rng = np.random.default_rng(seed)
        samples = rng.beta(alpha[row], beta[row], size=(draws, k))
        out[positions] = _masked_argmax_frequencies(samples, masks[positions])
        with _cache_lock:
            for i in positions:
                value = out[i].copy()
                value.flags.writeable = False
                _cache[keys[i]] = value
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return out


def argmax_probabilities(
    alpha: np.ndarray,
    beta: np.ndarray,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """Monte Carlo P(arm i is the argmax of independent Beta(alpha_i, beta_i) draws).

    alpha/beta: (k,) or (g, k) (one posterior per group, e.g. per segment). eligible: None
    (all arms), (k,) or (g, k) bool; an ineligible arm gets probability 0 and the argmax
    is taken over the eligible arms only. Returns the shape of alpha; rows sum to 1.
    Deterministic for a given seed."""
    alpha, beta = _check_posterior(alpha, beta)
    draws = _check_draws(draws)
    squeeze = alpha.ndim == 1
    alpha2, beta2 = np.atleast_2d(alpha), np.atleast_2d(beta)
    g, k = alpha2.shape
    if eligible is None:
        masks = np.ones((g, k), dtype=bool)
    else:
        eligible = np.asarray(eligible)
        if eligible.dtype != bool:
            raise ValueError(f"eligible must be a bool array, got dtype {eligible.dtype}")
        if eligible.shape not in ((k,), (g, k)):
            raise ValueError(f"eligible must have shape ({k},) or ({g}, {k}), got {eligible.shape}")
        masks = np.broadcast_to(eligible, (g, k))
    empty = ~masks.any(axis=1)
    if empty.any():
        raise ValueError(f"row {int(np.flatnonzero(empty)[0])} of eligible has no eligible arm")
    table = _argmax_table(alpha2, beta2, np.arange(g), np.ascontiguousarray(masks), draws, int(seed))
    return table[0] if squeeze else table


# --- picking from a probability table ----------------------------------------------------------


def _check_uniforms(uniforms: np.ndarray) -> np.ndarray:
    uniforms = np.asarray(uniforms, dtype=np.float64)
    if uniforms.ndim != 1:
        raise ValueError(f"uniforms must be a 1-d array (one per customer), got shape {uniforms.shape}")
    bad = ~((uniforms >= 0.0) & (uniforms < 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"uniforms must lie in [0, 1): uniforms[{i}] = {uniforms[i]}")
    return uniforms


def _cdf_table(table: np.ndarray) -> np.ndarray:
    """Row-wise CDF whose last positive step is exactly 1.0, so every u in [0, 1) lands on an
    arm of positive probability (a float cumsum can end at 0.9999999999999999) and an arm
    of probability 0 (an empty interval) is never picked."""
    cdf = np.cumsum(table, axis=1)
    positive = table > 0
    last = table.shape[1] - 1 - np.argmax(positive[:, ::-1], axis=1)
    after_last = np.arange(table.shape[1])[None, :] >= last[:, None]
    cdf[after_last] = 1.0
    return cdf


def pick_from_probabilities(
    table: np.ndarray, uniforms: np.ndarray, index: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF picks: customer c takes the arm j with cdf[j-1] <= u_c < cdf[j] of the row
    `index[c]` of `table` (m, k) (all customers use row 0 when index is None). Returns the
    chosen columns and table[row, choice], the exact probability of that pick."""
    table = np.asarray(table, dtype=np.float64)
    if table.ndim == 1:
        table = table[None, :]
    uniforms = _check_uniforms(uniforms)
    if index is not None:
        index = np.asarray(index)
        if index.shape != uniforms.shape or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must be {uniforms.shape} integers like uniforms, got {index.dtype} {index.shape}")
        if len(index) and (index.min() < 0 or index.max() >= table.shape[0]):
            raise ValueError(f"index must point at rows 0..{table.shape[0] - 1} of the table")
    if np.any(table < 0) or not np.all(np.isfinite(table)):
        raise ValueError("probabilities must be finite and non-negative")
    sums = table.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-9):
        raise ValueError(f"probability row {int(np.flatnonzero(np.abs(sums - 1.0) > 1e-9)[0])} does not sum to 1")
    return _pick(table, uniforms, index)


def _pick(table: np.ndarray, uniforms: np.ndarray, index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    m, k = table.shape
    cdf = _cdf_table(table)
    if index is None or m == 1:
        choice = np.searchsorted(cdf[0], uniforms, side="right")
        return choice.astype(np.int64), table[0][choice]
    index = np.asarray(index, dtype=np.int64)
    # One pass per column boundary: choice = number of boundaries at or below u. k gathers of
    # n values beat sorting customers by row, and keep a customer's pick independent of the others.
    choice = np.zeros(len(uniforms), dtype=np.int64)
    flat_cdf = cdf.ravel()
    base = index * k
    for j in range(k - 1):
        choice += uniforms >= flat_cdf[base + j]
    return choice, table.ravel()[base + choice]


# --- Thompson sampling -------------------------------------------------------------------------


def _group_keys(
    group: np.ndarray | None, pattern: np.ndarray | None, n_patterns: int, n: int, g: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids for the distinct (group, eligibility pattern) pairs present: (id per customer
    (n,), the keys group * n_patterns + pattern they stand for)."""
    if pattern is None:
        keys = np.zeros(n, dtype=np.int64) if group is None else group
        span = g
    else:
        keys = pattern if group is None else group * n_patterns + pattern
        span = g * n_patterns
    if span <= _DENSE_KEYS:
        # A lookup table instead of np.unique: O(n) rather than a sort of n keys.
        present = np.zeros(span, dtype=bool)
        present[keys] = True
        unique = np.flatnonzero(present)
        remap = np.cumsum(present) - 1
        return remap[keys], unique
    unique, inverse = np.unique(keys, return_inverse=True)
    return inverse.reshape(-1), unique


def _pattern_ids(eligible: np.ndarray) -> tuple[np.ndarray, int, np.ndarray | None]:
    """(n, k) bool -> (pattern id per customer, number of possible ids, the patterns or None).

    For small k the id is the bit pattern itself (built column by column: an integer matmul
    or a sort of n rows would cost more than the picks), decoded later only for the ids
    present; for large k, np.unique over rows."""
    n, k = eligible.shape
    if k <= _PATTERN_BITS:
        bits = np.zeros(n, dtype=np.int64)
        for j in range(k):
            bits |= eligible[:, j].astype(np.int64) << j
        return bits, 1 << k, None
    patterns, ids = np.unique(eligible, axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64), len(patterns), patterns


def thompson_pick(
    alpha: np.ndarray,
    beta: np.ndarray,
    uniforms: np.ndarray,
    group: np.ndarray | None = None,
    eligible: np.ndarray | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Thompson-sampling picks for n customers, vectorised.

    alpha/beta: (k,) posterior for everyone, or (g, k) with `group` (n,) the posterior row
    of each customer. eligible: None, (k,) or (n, k) bool per customer (at least one True
    per customer); the argmax is then over that customer's eligible arms only, estimated
    once per distinct (group, pattern). uniforms: (n,) in [0, 1).

    Returns (choice (n,) int64 column, probability (n,) float64 = P(chosen arm is the argmax)
    among the customer's eligible arms), the exact probability of that pick."""
    alpha, beta = _check_posterior(alpha, beta)
    draws = _check_draws(draws)
    uniforms = _check_uniforms(uniforms)
    n = len(uniforms)
    alpha2, beta2 = np.atleast_2d(alpha), np.atleast_2d(beta)
    g, k = alpha2.shape
    if group is None:
        if g != 1:
            raise ValueError(f"alpha/beta have {g} rows (groups): pass group, one row index per customer")
    else:
        group = np.asarray(group)
        if group.shape != (n,) or not np.issubdtype(group.dtype, np.integer):
            raise ValueError(f"group must be ({n},) integers, got shape {group.shape} dtype {group.dtype}")
        group = group.astype(np.int64, copy=False)
        if n and (group.min() < 0 or group.max() >= g):
            bad = int(np.flatnonzero((group < 0) | (group >= g))[0])
            raise ValueError(f"group[{bad}] = {group[bad]} is not a row of alpha (0..{g - 1})")
    pattern_ids, n_patterns, patterns = None, 1, np.ones((1, k), dtype=bool)
    if eligible is not None:
        eligible = np.asarray(eligible)
        if eligible.dtype != bool:
            raise ValueError(f"eligible must be a bool array, got dtype {eligible.dtype}")
        if eligible.shape == (k,):
            if not eligible.any():
                raise ValueError("eligible has no eligible arm")
            patterns = eligible[None, :]
        elif eligible.shape == (n, k):
            if n:
                pattern_ids, n_patterns, patterns = _pattern_ids(eligible)
                empty = pattern_ids == 0 if patterns is None else ~patterns.any(axis=1)[pattern_ids]
                if empty.any():
                    raise ValueError(f"customer {int(np.flatnonzero(empty)[0])} has no eligible arm")
        else:
            raise ValueError(f"eligible must have shape ({k},) or ({n}, {k}), got {eligible.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    inverse, unique = _group_keys(group, pattern_ids, n_patterns, n, g)
    if pattern_ids is None:
        rows = unique if group is not None else np.zeros(len(unique), dtype=np.int64)
        masks = np.broadcast_to(patterns, (len(unique), k))
    else:
        rows = unique // n_patterns
        ids = unique % n_patterns
        masks = patterns[ids] if patterns is not None else ((ids[:, None] >> np.arange(k)) & 1).astype(bool)
    table = _argmax_table(alpha2, beta2, rows, np.ascontiguousarray(masks), draws, int(seed))
    return _pick(table, uniforms, None if len(unique) == 1 else inverse)


# --- score-based exploration ---------------------------------------------------------------------


def _score_columns(scores: np.ndarray, n: int, eligible: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated scores transposed to (k, n), ineligible entries -inf, and the number of
    eligible arms per customer. Transposed because numpy combines k long contiguous rows
    several times faster than it reduces (n, k) along its short axis 1."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = np.broadcast_to(scores, (n, scores.shape[0]))
    if scores.ndim != 2 or scores.shape[0] != n or scores.shape[1] == 0:
        raise ValueError(f"scores must be ({n}, k) (one row per uniform) or (k,), got shape {scores.shape}")
    k = scores.shape[1]
    columns = np.ascontiguousarray(scores.T)
    if eligible is not None:
        eligible = np.asarray(eligible)
        if eligible.dtype != bool or eligible.shape not in ((k,), (n, k)):
            raise ValueError(
                f"eligible must be bool of shape ({k},) or ({n}, {k}), got {eligible.dtype} {eligible.shape}"
            )
        eligible = np.ascontiguousarray(np.broadcast_to(eligible, (n, k)).T)
    finite = np.isfinite(columns)
    bad = ~finite if eligible is None else eligible & ~finite
    if bad.any():
        col, row = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"scores[{row}, {col}] = {scores[row, col]} is not finite")
    if eligible is None:
        return columns, np.full(n, k, dtype=np.int64)
    columns[~eligible] = -np.inf
    n_eligible = np.zeros(n, dtype=np.int64)
    for row in eligible:
        n_eligible += row
    empty = n_eligible == 0
    if empty.any():
        raise ValueError(f"customer {int(np.flatnonzero(empty)[0])} has no eligible arm")
    return columns, n_eligible


def _row_max(columns: np.ndarray) -> np.ndarray:
    best = columns[0].copy()
    for column in columns[1:]:
        np.maximum(best, column, out=best)
    return best


def _gather(columns: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """columns[choice[c], c] for every customer c."""
    n = columns.shape[1]
    return columns.ravel()[choice * n + np.arange(n)]


def _nth_true(mask: np.ndarray, nth: np.ndarray) -> np.ndarray:
    """Column of the nth (0-based) True of each row of mask."""
    return np.argmax(np.cumsum(mask, axis=1) > nth[:, None], axis=1)


def epsilon_greedy(
    scores: np.ndarray, epsilon: float, uniforms: np.ndarray, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy over scores (n, k) (or (k,) for everyone): with probability epsilon a
    uniformly random eligible arm, else the best-scoring eligible arm (a tie shares the greedy
    mass equally, so the logged probability stays exact and column order favours no arm).

    Customer c explores when u_c < epsilon (arm floor(u/eps * m) of its m eligible arms),
    else exploits (tied best arm floor((u - eps)/(1 - eps) * t)). The returned probability
    is exact: eps/m + (1 - eps)/t for a best arm, eps/m otherwise."""
    epsilon = float(epsilon)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    uniforms = _check_uniforms(uniforms)
    n = len(uniforms)
    columns, n_eligible = _score_columns(scores, n, eligible)
    best = _row_max(columns)
    # choice = the first best arm = how many arms precede it without reaching the best.
    n_best = np.zeros(n, dtype=np.int64)
    choice = np.zeros(n, dtype=np.int64)
    before_best = np.ones(n, dtype=bool)
    for column in columns:
        hit = column == best
        n_best += hit
        before_best &= ~hit
        choice += before_best
    explore = uniforms < epsilon
    tied = ~explore & (n_best > 1)
    if tied.any():
        at_best = (columns[:, tied] == best[tied]).T
        nth = np.floor((uniforms[tied] - epsilon) / (1.0 - epsilon) * n_best[tied]).astype(np.int64)
        choice[tied] = _nth_true(at_best, np.minimum(nth, n_best[tied] - 1))
    if explore.any():
        eligible_rows = np.isfinite(columns[:, explore]).T
        nth = np.floor(uniforms[explore] / epsilon * n_eligible[explore]).astype(np.int64)
        choice[explore] = _nth_true(eligible_rows, np.minimum(nth, n_eligible[explore] - 1))
    probability = epsilon / n_eligible + np.where(_gather(columns, choice) == best, (1.0 - epsilon) / n_best, 0.0)
    return choice, probability


def softmax_pick(
    scores: np.ndarray, temperature: float, uniforms: np.ndarray, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Boltzmann exploration: P(arm j) proportional to exp(score_j / temperature) over the
    customer's eligible arms; inverse-CDF pick on u. Returns the exact probability."""
    temperature = float(temperature)
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")
    uniforms = _check_uniforms(uniforms)
    n = len(uniforms)
    columns, _ = _score_columns(scores, n, eligible)
    # Shift by the row max so exp never overflows; the best eligible arm gets exp(0) = 1.
    weights = np.exp((columns - _row_max(columns)) / temperature)
    total = np.zeros(n)
    last_positive = np.zeros(n, dtype=np.int64)
    for j, weight in enumerate(weights):
        total += weight
        last_positive[weight > 0] = j
    target = uniforms * total
    running = np.zeros(n)
    choice = np.zeros(n, dtype=np.int64)
    for weight in weights[:-1]:
        running += weight
        choice += target >= running
    # u * total can round up to total for u just below 1: never step onto a zero-weight tail.
    np.minimum(choice, last_positive, out=choice)
    return choice, _gather(weights, choice) / total
