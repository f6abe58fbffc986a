"""Decision benchmark, standalone (numpy only: no Django, no database, runs on the GPU box
too; bench/train.py imports `decisions_benchmark`): issue 5's "decisions: >= 1M picks/s
batched, one pick <= 1 ms".

    python bench/decide.py [--customers 1000000] [--arms 4] [--repeat 3] [--single 2000]

Measures, on synthetic posteriors and scores:
- batched Thompson sampling over n customers (cold: the argmax cache is cleared first, so the
  Monte Carlo estimate of P(argmax) is inside the timing), plain and with a per-customer
  eligibility mask and 8 segment posteriors (every (segment, pattern) pair estimated);
- batched epsilon-greedy over an (n, k) score matrix (e.g. propensity model scores);
- one-pick latency: single-customer Thompson picks between posterior updates (the argmax
  cache is warm), median and p99; the cold first pick after an update (one Monte Carlo,
  paid once per update; a policy warms the cache with argmax_probabilities when it loads
  the posterior) is reported separately, at 10,000 and at 2,000 draws.
Beside them, the same run's "machine limit": one bare inverse-CDF pass (np.searchsorted of
n uniforms into one CDF), the least any picker must do, and the goal ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from mlcore.engine.bandits import (  # noqa: E402
    argmax_probabilities,
    clear_argmax_cache,
    epsilon_greedy,
    thompson_pick,
)

GOAL_PICKS_PER_S = 1_000_000
GOAL_ONE_PICK_MS = 1.0
# What a single-customer caller may pass as draws when it cannot warm the cache first:
# standard error of P(argmax) <= 0.5/sqrt(2000) = 0.011.
SINGLE_PICK_DRAWS = 2_000


def _best_of(repeat: int, run) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def decisions_benchmark(
    n: int = 1_000_000, k: int = 4, repeat: int = 3, single: int = 2000, seed: int = 0, verbose: bool = True
) -> dict:
    """Time the pickers and return the figures (picks/s, one-pick ms, ratios to the goals)."""
    rng = np.random.default_rng(seed)
    # Posteriors after some traffic: conversion rates 2-5 %, a few thousand sends per arm.
    trials = rng.integers(2_000, 5_000, size=k).astype(float)
    rates = np.linspace(0.02, 0.05, k)
    successes = np.round(trials * rates)
    alpha, beta = 1 + successes, 1 + trials - successes
    uniforms = rng.random(n)
    segments = 8
    seg_alpha = alpha + rng.integers(0, 50, size=(segments, k))
    seg_beta = beta + rng.integers(0, 500, size=(segments, k))
    group = rng.integers(0, segments, size=n)
    eligible = rng.random((n, k)) < 0.8
    eligible[np.arange(n), rng.integers(0, k, size=n)] = True  # everyone reachable somewhere
    scores = rng.random((n, k))

    def thompson_cold() -> None:
        clear_argmax_cache()
        thompson_pick(alpha, beta, uniforms)

    def thompson_segments_cold() -> None:
        clear_argmax_cache()
        thompson_pick(seg_alpha, seg_beta, uniforms, group=group, eligible=eligible)

    # The least any picker must do: one inverse-CDF pass into the very table Thompson uses.
    bare_cdf = np.cumsum(argmax_probabilities(alpha, beta))
    bare_s = _best_of(repeat, lambda: np.searchsorted(bare_cdf, uniforms, side="right"))
    thompson_s = _best_of(repeat, thompson_cold)
    segments_s = _best_of(repeat, thompson_segments_cold)
    greedy_s = _best_of(repeat, lambda: epsilon_greedy(scores, 0.1, uniforms))
    greedy_eligible_s = _best_of(repeat, lambda: epsilon_greedy(scores, 0.1, uniforms, eligible=eligible))

    # One customer at a time, as a triggered campaign or an API call picks.
    def cold_pick_ms(draws: int, times: int = 21) -> float:
        """Median first pick after a posterior update (cache cleared: one Monte Carlo)."""
        spent = []
        for _ in range(times):
            clear_argmax_cache()
            started = time.perf_counter()
            thompson_pick(alpha, beta, uniforms[:1], draws=draws)
            spent.append((time.perf_counter() - started) * 1e3)
        return float(np.median(spent))

    cold_ms = cold_pick_ms(10_000)
    cold_small_ms = cold_pick_ms(SINGLE_PICK_DRAWS)
    latencies = np.empty(single)
    for i in range(single):
        started = time.perf_counter()
        thompson_pick(alpha, beta, uniforms[i : i + 1])
        latencies[i] = time.perf_counter() - started
    latencies_ms = latencies * 1e3
    # Sanity: the batch picks follow the logged probabilities (frequency vs P(argmax)).
    choice, probability = thompson_pick(alpha, beta, uniforms)
    expected = argmax_probabilities(alpha, beta)
    observed = np.bincount(choice, minlength=k) / n
    result = {
        "n": n,
        "k": k,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "bare_inverse_cdf_picks_per_s": n / bare_s,
        "thompson_picks_per_s": n / thompson_s,
        "thompson_segments_eligibility_picks_per_s": n / segments_s,
        "epsilon_greedy_picks_per_s": n / greedy_s,
        "epsilon_greedy_eligibility_picks_per_s": n / greedy_eligible_s,
        "one_pick_median_ms": float(np.median(latencies_ms)),
        "one_pick_p99_ms": float(np.percentile(latencies_ms, 99)),
        "one_pick_cold_ms": cold_ms,
        "one_pick_cold_small_draws_ms": cold_small_ms,
        "single_pick_draws": SINGLE_PICK_DRAWS,
        "max_frequency_error": float(np.max(np.abs(observed - expected))),
        "logged_matches_table": bool(np.allclose(probability, expected[choice])),
        "goal_picks_per_s": GOAL_PICKS_PER_S,
        "goal_one_pick_ms": GOAL_ONE_PICK_MS,
    }
    result["thompson_goal_ratio"] = result["thompson_picks_per_s"] / GOAL_PICKS_PER_S
    result["epsilon_greedy_goal_ratio"] = result["epsilon_greedy_picks_per_s"] / GOAL_PICKS_PER_S
    result["one_pick_p99_goal_ratio"] = result["one_pick_p99_ms"] / GOAL_ONE_PICK_MS
    if verbose:
        print_report(result)
    return result


def print_report(r: dict) -> None:
    bare = r["bare_inverse_cdf_picks_per_s"]
    print(f"decisions: n={r['n']:,} customers, k={r['k']} arms, {r['cpus']} CPUs ({r['machine']})")
    print(f"  machine limit (bare inverse-CDF pass)      {bare:>14,.0f} picks/s")
    for label, key in (
        ("Thompson, batched (cold MC)", "thompson_picks_per_s"),
        ("Thompson, 8 segments + eligibility", "thompson_segments_eligibility_picks_per_s"),
        ("epsilon-greedy over scores", "epsilon_greedy_picks_per_s"),
        ("epsilon-greedy + eligibility", "epsilon_greedy_eligibility_picks_per_s"),
    ):
        rate = r[key]
        print(
            f"  {label:<42} {rate:>14,.0f} picks/s  goal >= {r['goal_picks_per_s']:,}: "
            f"{rate / r['goal_picks_per_s']:.1f}x the goal, {rate / bare:.2f} of the machine limit"
        )
    print(
        f"  one pick (warm cache): median {r['one_pick_median_ms']:.3f} ms, p99 {r['one_pick_p99_ms']:.3f} ms "
        f"(goal <= {r['goal_one_pick_ms']:g} ms: p99 at {r['one_pick_p99_goal_ratio']:.2f} of it); "
        f"first pick after an update (one Monte Carlo, median) {r['one_pick_cold_ms']:.2f} ms at 10,000 draws, "
        f"{r['one_pick_cold_small_draws_ms']:.2f} ms at {r['single_pick_draws']:,}"
    )
    print(
        f"  check: pick frequencies vs logged P(argmax), max error {r['max_frequency_error']:.4f}; "
        f"logged probabilities match the table: {r['logged_matches_table']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--arms", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single", type=int, default=2000)
    args = parser.parse_args()
    result = decisions_benchmark(args.customers, args.arms, repeat=args.repeat, single=args.single)
    ok = (
        result["thompson_picks_per_s"] >= GOAL_PICKS_PER_S
        and result["epsilon_greedy_picks_per_s"] >= GOAL_PICKS_PER_S
        and result["one_pick_p99_ms"] <= GOAL_ONE_PICK_MS
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
