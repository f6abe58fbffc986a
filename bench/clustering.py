"""Clustering benchmark, standalone (no Django, no database): the engine part of issue 3's
"clustering 1M customers (MiniBatchKMeans, features to stored memberships) <= 45 s".

    python bench/clustering.py [--customers 1000000] [--seed 0]

Generates synthetic customers x 8 features drawn from five planted groups (with missing values,
as the glue delivers them: never-buyers without recency, some rates unknown), then times each
engine stage: prepare_features, choose_k on a 10,000-row sample, cluster(method="minibatch")
with that k over everyone, profile_clusters. Reading features from and writing memberships to
PostgreSQL is timed later by bench/segments.py.
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
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from mlcore.engine.clustering import choose_k, cluster, prepare_features, profile_clusters  # noqa: E402

# share, recency_days, frequency, monetary, email_open_rate, sms_click_rate, push_open_rate, tenure_days,
# attributes.loyalty_points (centres of the raw values); recency NaN = never purchased.
GROUPS = {
    "lapsed": (0.35, 320, 1.5, 40, 0.05, 0.01, 0.02, 700, 50),
    "new": (0.25, 15, 1.5, 35, 0.30, 0.05, 0.20, 40, 10),
    "loyal": (0.15, 90, 7, 400, 0.15, 0.10, 0.05, 1500, 900),
    "champions": (0.10, 3, 5, 3000, 0.30, 0.20, 0.30, 800, 3000),
    "never bought": (0.15, np.nan, 0, 0, 0.10, 0.02, 0.10, 200, 0),
}
FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "email_open_rate",
    "sms_click_rate",
    "push_open_rate",
    "tenure_days",
    "loyalty_points",
]


def synthetic_customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = np.array(list(GROUPS.values()), dtype=float)
    sizes = np.floor(params[:, 0] * n).astype(int)
    sizes[0] += n - sizes.sum()
    truth = rng.permutation(np.repeat(np.arange(len(GROUPS)), sizes))
    p = params[truth]

    def rate(column: int) -> np.ndarray:
        values = np.clip(rng.normal(p[:, column], 0.04), 0, 1)
        values[rng.random(n) < 0.05] = np.nan  # channel never used: rate unknown
        return values

    frame = pd.DataFrame(
        {
            "recency_days": np.clip(rng.normal(p[:, 1], 2 + 0.1 * np.nan_to_num(p[:, 1])), 0, None).round(),
            "frequency": np.round(p[:, 2] * np.exp(rng.normal(0, 0.15, n))),
            "monetary": (p[:, 3] * np.exp(rng.normal(0, 0.25, n))).round(2),
            "email_open_rate": rate(4),
            "sms_click_rate": rate(5),
            "push_open_rate": rate(6),
            "tenure_days": np.clip(rng.normal(p[:, 7], 60), 0, None).round(),
            "loyalty_points": np.round(p[:, 8] * np.exp(rng.normal(0, 0.3, n))),
        },
        index=pd.RangeIndex(1, n + 1, name="customer_id"),
    )
    frame.loc[frame["frequency"] > 0, "frequency"] = frame["frequency"].clip(lower=1)
    return frame, truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}  numpy {np.__version__}  pandas {pd.__version__}  "
        f"scikit-learn {sklearn.__version__}  cpus {os.cpu_count()}"
    )
    started = time.perf_counter()
    frame, truth = synthetic_customers(args.customers, args.seed)
    print(f"generated {len(frame):,} customers x {frame.shape[1]} features in {time.perf_counter() - started:.2f} s")

    times = {}
    started = time.perf_counter()
    X, names, _ = prepare_features(frame, log_columns=("frequency", "monetary", "loyalty_points"))
    times["prepare_features"] = time.perf_counter() - started

    started = time.perf_counter()
    k, scores = choose_k(X, sample_size=10_000, random_state=args.seed)
    times["choose_k (10,000-row sample, k 2-10)"] = time.perf_counter() - started

    started = time.perf_counter()
    result = cluster(X, k=k, method="minibatch", random_state=args.seed)
    times[f"cluster (minibatch, k={k})"] = time.perf_counter() - started

    started = time.perf_counter()
    profiles = profile_clusters(frame, result.labels, names)
    times["profile_clusters"] = time.perf_counter() - started

    print(f"features: {len(names)} ({', '.join(names)})")
    print("silhouette by k: " + "  ".join(f"{k}: {s:.3f}" for k, s in sorted(scores.items())))
    print(
        f"k: {result.k}  silhouette: {result.silhouette:.3f}  "
        f"ARI against the {len(GROUPS)} planted groups: {adjusted_rand_score(truth, result.labels):.4f}"
    )
    for profile in profiles:
        print(f"  cluster {profile.cluster}: {profile.size:,} ({profile.share:.1%})  {profile.label}")
    width = max(len(stage) for stage in times)
    for stage, seconds in times.items():
        print(f"{stage:<{width}}  {seconds:7.2f} s")
    total = sum(times.values())
    print(f"{'engine total (features -> labels -> profiles)':<{width}}  {total:7.2f} s  (budget with the DB: 45 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
