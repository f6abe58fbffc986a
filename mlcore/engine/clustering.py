"""Clustering segments: customer feature vectors in, cluster labels and readable profiles out.

Pure numpy/pandas/scikit-learn, no Django, so it runs on arrays in tests and from the command line:

    python -m mlcore.engine.clustering FEATURES.csv [--k K] [--method auto|kmeans|minibatch|dbscan] [--id-column ID]

where FEATURES.csv holds one customer per row and one numeric feature per column (a column named
customer_id, external_id or id is taken as the row id rather than as a feature).

The steps, each a function the Django glue calls in turn:

1. `prepare_features` turns the raw per-customer frame (RFM recency/frequency/monetary,
   engagement rates per channel, tenure days, chosen numeric attributes) into a float32 matrix:
   values coerced to numbers (an odd attribute value becomes missing instead of failing the
   rebuild); each missing value imputed with the column median, plus a 0/1 "<name>_missing"
   column for every column that had any, because "never purchased" (no recency) is a segment in
   itself; heavy-tailed money and count columns through a signed log1p; then standard scaling
   (mean 0, std 1) clipped at +-5. Standard rather than robust (median/IQR) scaling: K-means
   weighs features by their variance, and after the log the remaining spread is what we want it
   to see; an IQR is 0 for a rate that most customers have at 0 and would blow such a column up.
   The clip keeps a handful of whales from pulling a centre of their own. The 0/1 indicators stay
   unscaled: a missing value moves a customer by one unit, one standard deviation of a feature,
   so missingness counts without dominating.
2. `choose_k` picks k by the silhouette on a random sample (MiniBatchKMeans fitted per k).
3. `cluster` runs KMeans below 50,000 rows, MiniBatchKMeans above, or DBSCAN when asked (refused
   above 50,000 rows: its neighbourhoods cost up to O(n^2) memory). Clusters are numbered by size,
   0 the largest; DBSCAN noise is -1.
4. `profile_clusters` describes each cluster against the population on the raw (unscaled) values,
   with a label such as "high value, recent" (wording rules at `feature_words`).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import DBSCAN, KMeans, MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "DBSCAN_MAX_ROWS",
    "DEFAULT_LOG_COLUMNS",
    "KMEANS_MAX_ROWS",
    "ClusterProfile",
    "ClusterResult",
    "FeatureProfile",
    "FeatureScaling",
    "choose_k",
    "cluster",
    "dbscan_eps",
    "feature_words",
    "prepare_features",
    "profile_clusters",
    "silhouette",
]

# Money and counts are heavy-tailed (a few customers order 100x the median); the log keeps
# them from owning the distance. The glue passes its own list when it adds such columns.
DEFAULT_LOG_COLUMNS = ("frequency", "monetary")
MISSING_SUFFIX = "_missing"
# Above this KMeans (full batch, several inits) stops being quick; MiniBatchKMeans takes over.
KMEANS_MAX_ROWS = 50_000
# DBSCAN's radius neighbourhoods can hold O(n^2) pairs when eps is generous: refuse big inputs.
DBSCAN_MAX_ROWS = 50_000
MINIBATCH_BATCH_SIZE = 4096
SILHOUETTE_SAMPLE = 10_000
N_INIT = 3
ID_COLUMNS = ("customer_id", "external_id", "id")


# ---------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureScaling:
    """What `prepare_features` learnt from a population, to transform other rows the same way."""

    columns: tuple[str, ...]  # the raw columns, in order
    log_columns: tuple[str, ...]  # those put through sign(x) * log1p(|x|)
    medians: tuple[float, ...]  # imputation value per raw column (before the log)
    indicator_columns: tuple[str, ...]  # raw columns that get a 0/1 "<name>_missing" column
    means: tuple[float, ...]  # per raw column, after imputation and log
    scales: tuple[float, ...]  # standard deviation (1.0 for a constant column)
    clip: float

    @property
    def feature_names(self) -> list[str]:
        return list(self.columns) + [name + MISSING_SUFFIX for name in self.indicator_columns]


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Columns as float64; anything that is not a number (an odd attribute value) becomes NaN."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values = pd.to_numeric(frame[name], errors="coerce")
        out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    out[~np.isfinite(out)] = np.nan
    return out


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    # Net monetary can be negative (refunds exceed purchases): keep the sign.
    return np.sign(values) * np.log1p(np.abs(values))


def prepare_features(
    frame: pd.DataFrame,
    log_columns: Iterable[str] = DEFAULT_LOG_COLUMNS,
    *,
    missing_indicators: bool = True,
    clip: float = 5.0,
    scaling: FeatureScaling | None = None,
) -> tuple[np.ndarray, list[str], FeatureScaling]:
    """One row per customer, every column a feature -> (X float32, feature names, scaling).

    Deterministic. Pass `scaling` from an earlier call to transform new rows exactly as the
    population was (same medians, means, scales, indicator columns); otherwise it is learnt
    from `frame`. Columns named in `log_columns` that the frame lacks are ignored.
    """
    if scaling is None:
        columns = tuple(str(name) for name in frame.columns)
        if not columns:
            raise ValueError("no feature columns")
        if len(frame) == 0:
            raise ValueError("no rows to learn the feature scaling from")
        wanted_logs = set(log_columns)
        logs = tuple(name for name in columns if name in wanted_logs)
        raw = _numeric(frame, columns)
        missing = np.isnan(raw)
        with np.errstate(all="ignore"):
            medians = np.nanmedian(np.where(missing.all(axis=0), 0.0, raw), axis=0)
        medians = np.where(np.isnan(medians), 0.0, medians)
        indicators = tuple(name for name, any_missing in zip(columns, missing.any(axis=0), strict=True) if any_missing)
        if not missing_indicators:
            indicators = ()
        values = np.where(missing, medians, raw)
        log_mask = np.array([name in logs for name in columns])
        values[:, log_mask] = _signed_log1p(values[:, log_mask])
        means = values.mean(axis=0)
        scales = values.std(axis=0)
        scales = np.where(scales > 1e-12, scales, 1.0)
        scaling = FeatureScaling(
            columns=columns,
            log_columns=logs,
            medians=tuple(float(v) for v in medians),
            indicator_columns=indicators,
            means=tuple(float(v) for v in means),
            scales=tuple(float(v) for v in scales),
            clip=float(clip),
        )
    else:
        absent = [name for name in scaling.columns if name not in frame.columns]
        if absent:
            raise ValueError(f"the frame lacks feature columns {absent}")
        columns = scaling.columns
        raw = _numeric(frame, columns)
        missing = np.isnan(raw)
        values = np.where(missing, np.asarray(scaling.medians), raw)
        log_mask = np.array([name in scaling.log_columns for name in columns])
        values[:, log_mask] = _signed_log1p(values[:, log_mask])

    scaled = (values - np.asarray(scaling.means)) / np.asarray(scaling.scales)
    np.clip(scaled, -scaling.clip, scaling.clip, out=scaled)
    if scaling.indicator_columns:
        position = {name: j for j, name in enumerate(columns)}
        flags = missing[:, [position[name] for name in scaling.indicator_columns]].astype(np.float64)
        scaled = np.hstack([scaled, flags])
    return np.ascontiguousarray(scaled, dtype=np.float32), scaling.feature_names, scaling


# ---------------------------------------------------------------------------- clustering


@dataclass
class ClusterResult:
    labels: np.ndarray  # int64 per row; 0 is the largest cluster; -1 is DBSCAN noise
    k: int  # number of clusters, noise not counted
    centers: np.ndarray | None  # (k, n_features) in the scaled space; None for DBSCAN
    silhouette: float | None  # on a random sample (noise left out); None with fewer than 2 clusters
    method: str  # "kmeans", "minibatch" or "dbscan"
    inertia: float | None  # sum of squared distances to the centres (K-means only)
    eps: float | None = None  # DBSCAN only
    min_samples: int | None = None  # DBSCAN only
    silhouettes: dict[int, float] = field(default_factory=dict)  # per k, when choose_k picked k


def _sample_rows(n: int, size: int, random_state: int) -> np.ndarray | None:
    if n <= size:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n, size=size, replace=False))


def silhouette(
    X: np.ndarray, labels: np.ndarray, sample_size: int = SILHOUETTE_SAMPLE, random_state: int = 0
) -> float | None:
    """The mean silhouette (sklearn's definition, Euclidean) on a random sample of rows; noise (-1) left out.

    None with fewer than 2 clusters, or as many clusters as rows.
    """
    labels = np.asarray(labels)
    kept = np.flatnonzero(labels >= 0)
    rows = _sample_rows(len(kept), sample_size, random_state)
    if rows is not None:
        kept = kept[rows]
    return _silhouettes(np.asarray(X)[kept], [labels[kept]])[0]


def _silhouettes(X: np.ndarray, labelings: Sequence[np.ndarray]) -> list[float | None]:
    """Mean silhouette of each labeling of the same rows, with one pass over the pairwise distances.

    Rather than sklearn's silhouette_score (2 s per call on 10,000 rows here): the distances of a
    chunk of rows to all rows come from one float32 matrix product, and their sums per cluster,
    for every labeling at once, from a second (distances x stacked one-hot labels). Scoring the
    nine k of choose_k thus costs about one silhouette. Agrees with sklearn to ~1e-4.
    """
    n = len(X)
    if n < 3:
        return [None] * len(labelings)
    X = np.asarray(X, dtype=np.float64)
    X = (X - X.mean(axis=0)).astype(np.float32)  # centred: smaller norms, less float32 cancellation
    blocks, codes_list, sizes_list, offsets, valid = [], [], [], [], []
    offset = 0
    for labels in labelings:
        clusters, codes = np.unique(np.asarray(labels), return_inverse=True)
        valid.append(2 <= len(clusters) < n)
        onehot = np.zeros((n, len(clusters)), dtype=np.float32)
        onehot[np.arange(n), codes] = 1.0
        blocks.append(onehot)
        codes_list.append(codes)
        sizes_list.append(onehot.sum(axis=0, dtype=np.float64))
        offsets.append(offset)
        offset += len(clusters)
    if not any(valid):
        return [None] * len(labelings)
    stacked = np.hstack(blocks)
    squares = np.einsum("ij,ij->i", X, X)
    scores = [np.zeros(n) for _ in labelings]
    chunk = 2048
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        here = np.arange(stop - start)
        squared = X[start:stop] @ X.T
        squared *= -2.0
        squared += squares[start:stop, None]
        squared += squares[None, :]
        np.maximum(squared, 0.0, out=squared)
        squared[here, np.arange(start, stop)] = 0.0
        sums_all = (np.sqrt(squared, out=squared) @ stacked).astype(np.float64)
        for j, (codes, sizes, first) in enumerate(zip(codes_list, sizes_list, offsets, strict=True)):
            if not valid[j]:
                continue
            sums = sums_all[:, first : first + len(sizes)]  # (chunk, clusters): total distance to each
            own = codes[start:stop]
            own_size = sizes[own]
            with np.errstate(divide="ignore", invalid="ignore"):
                a = sums[here, own] / (own_size - 1)
                means = sums / sizes
                means[here, own] = np.inf
                b = means.min(axis=1)
                score = (b - a) / np.maximum(a, b)
            # As sklearn: a point alone in its cluster scores 0, so do coincident points (0/0).
            scores[j][start:stop] = np.where((own_size > 1) & np.isfinite(score), score, 0.0)
    return [float(score.mean()) if ok else None for score, ok in zip(scores, valid, strict=True)]


def choose_k(
    X: np.ndarray,
    k_range: Iterable[int] = range(2, 11),
    sample_size: int = SILHOUETTE_SAMPLE,
    random_state: int = 0,
) -> tuple[int, dict[int, float]]:
    """The k with the best silhouette -> (k, {k: silhouette}); ties go to the smaller k.

    MiniBatchKMeans is fitted per k on a random sample of `sample_size` rows (a population of
    a million clusters the same way its 10,000-row sample does, at a hundredth of the cost), and
    the silhouette is measured on that sample. k values that the sample cannot support are skipped.
    """
    X = np.asarray(X)
    rows = _sample_rows(len(X), sample_size, random_state)
    sample = X if rows is None else X[rows]
    ks = [k for k in sorted(set(k_range)) if 2 <= k < len(sample)]
    labelings = [
        MiniBatchKMeans(
            n_clusters=k,
            batch_size=min(MINIBATCH_BATCH_SIZE, len(sample)),
            n_init=N_INIT,
            random_state=random_state,
        ).fit_predict(sample)
        for k in ks
    ]
    scored = _silhouettes(sample, labelings) if ks else []
    scores = {k: score for k, score in zip(ks, scored, strict=True) if score is not None}
    if not scores:
        raise ValueError(f"no k in {list(k_range)} can be scored on {len(sample)} rows")
    best = max(scores.items(), key=lambda item: (round(item[1], 12), -item[0]))[0]
    return best, scores


def dbscan_eps(X: np.ndarray, min_samples: int, sample_size: int = SILHOUETTE_SAMPLE, random_state: int = 0) -> float:
    """eps by the k-distance heuristic: the knee of the sorted distances to the min_samples-th neighbour.

    The knee is the point of the sorted curve farthest from the straight line joining its ends,
    both axes scaled to [0, 1] (the "kneedle" rule): below it the distances grow slowly inside
    dense regions, above it they shoot up for outliers. Measured on a sample of `sample_size`
    rows; the neighbours are looked up in all of X.
    """
    X = np.asarray(X)
    rows = _sample_rows(len(X), sample_size, random_state)
    queries = X if rows is None else X[rows]
    neighbours = NearestNeighbors(n_neighbors=min(min_samples, len(X))).fit(X)
    # The query point is its own first neighbour, as DBSCAN counts it in min_samples too.
    distances = np.sort(neighbours.kneighbors(queries)[0][:, -1])
    span = distances[-1] - distances[0]
    if span <= 0:
        return float(distances[-1]) if distances[-1] > 0 else 1e-6
    x = np.linspace(0.0, 1.0, len(distances))
    y = (distances - distances[0]) / span
    knee = int(np.argmax(x - y))  # a convex rising curve lies below its chord y = x
    return float(max(distances[knee], 1e-6))


def _by_size(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters 0.. by size descending (ties by old number); -1 stays -1. -> (labels, order)."""
    old = np.unique(labels[labels >= 0])
    counts = np.array([np.count_nonzero(labels == c) for c in old])
    order = old[np.lexsort((old, -counts))]
    mapping = np.full(int(old.max()) + 2 if len(old) else 1, -1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    renumbered = np.where(labels >= 0, mapping[np.where(labels >= 0, labels, 0)], -1).astype(np.int64)
    return renumbered, order


def cluster(
    X: np.ndarray,
    k: int | None = None,
    method: str = "auto",
    random_state: int = 0,
    *,
    k_range: Iterable[int] = range(2, 11),
    sample_size: int = SILHOUETTE_SAMPLE,
    eps: float | None = None,
    min_samples: int | None = None,
    batch_size: int = MINIBATCH_BATCH_SIZE,
    n_init: int = N_INIT,
) -> ClusterResult:
    """Cluster the rows of X (from `prepare_features`).

    method "auto": KMeans up to KMEANS_MAX_ROWS rows, MiniBatchKMeans above; "kmeans" and
    "minibatch" force one; "dbscan" only on request, refused above DBSCAN_MAX_ROWS rows, with
    min_samples defaulting to 2 x the number of features and eps to `dbscan_eps`. Without k,
    K-means picks it with `choose_k` over k_range.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"X must be a non-empty 2-d array, got shape {X.shape}")
    n = len(X)
    if method == "auto":
        method = "kmeans" if n <= KMEANS_MAX_ROWS else "minibatch"
    if method == "dbscan":
        return _dbscan(X, eps, min_samples, sample_size, random_state)
    if method not in ("kmeans", "minibatch"):
        raise ValueError(f"unknown method {method!r}: use auto, kmeans, minibatch or dbscan")

    silhouettes: dict[int, float] = {}
    if k is None:
        k, silhouettes = choose_k(X, k_range, sample_size, random_state)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} needs 1 <= k <= {n} rows")
    if method == "kmeans":
        model = KMeans(n_clusters=k, n_init=n_init, random_state=random_state)
    else:
        model = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init=n_init, random_state=random_state)
    model.fit(X)
    labels, order = _by_size(model.labels_.astype(np.int64))
    return ClusterResult(
        labels=labels,
        k=len(order),
        centers=model.cluster_centers_[order],
        silhouette=silhouette(X, labels, sample_size, random_state),
        method=method,
        inertia=float(model.inertia_),
        silhouettes=silhouettes,
    )


def _dbscan(
    X: np.ndarray, eps: float | None, min_samples: int | None, sample_size: int, random_state: int
) -> ClusterResult:
    n = len(X)
    if n > DBSCAN_MAX_ROWS:
        raise ValueError(
            f"DBSCAN is limited to {DBSCAN_MAX_ROWS:,} customers (its neighbourhoods can take O(n^2) memory); "
            f"got {n:,}: use method='minibatch' or 'auto'"
        )
    if min_samples is None:
        min_samples = max(4, 2 * X.shape[1])
    if eps is None:
        eps = dbscan_eps(X, min_samples, sample_size, random_state)
    raw = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(X).astype(np.int64)
    labels, order = _by_size(raw) if (raw >= 0).any() else (raw, np.array([], dtype=np.int64))
    return ClusterResult(
        labels=labels,
        k=len(order),
        centers=None,
        silhouette=silhouette(X, labels, sample_size, random_state),
        method="dbscan",
        inertia=None,
        eps=float(eps),
        min_samples=int(min_samples),
    )


# ---------------------------------------------------------------------------- profiles

# Feature name -> (word when the cluster sits high, word when it sits low).
FEATURE_WORDS: dict[str, tuple[str, str]] = {
    "monetary": ("high value", "low value"),
    "recency_days": ("lapsed", "recent"),  # many days since the last purchase = lapsed
    "frequency": ("frequent", "occasional"),
    "tenure_days": ("long-standing", "new"),
    "r_score": ("recent", "lapsed"),
    "f_score": ("frequent", "occasional"),
    "m_score": ("high value", "low value"),
}
# No recency, frequency or monetary at all means no purchase yet.
MISSING_WORDS: dict[str, str] = {
    "recency_days": "no purchases",
    "frequency": "no purchases",
    "monetary": "no purchases",
}
ENGAGEMENT_RATE = re.compile(r"^(?P<channel>[a-z0-9]+)_(?:open|click|engagement|response|read)_rate$")
# A cluster's mean population percentile must be this far from the middle (0.5) for a word.
DISTINCT_ENOUGH = 0.15
LABEL_WORDS = 2  # a clash adds a third


def feature_words(name: str) -> tuple[str, str]:
    """The (high, low) words for a feature.

    Known names come from FEATURE_WORDS ("monetary" -> "high value" / "low value",
    "recency_days" -> "lapsed" / "recent", ...); "<channel>_open_rate" and its click /
    engagement / response / read kin -> "<channel>-engaged" / "<channel>-disengaged";
    "<name>_missing" -> "no purchases" for the RFM columns, else "missing <name>" / "has <name>";
    anything else -> "high <name>" / "low <name>", underscores as spaces.
    """
    if name in FEATURE_WORDS:
        return FEATURE_WORDS[name]
    if name.endswith(MISSING_SUFFIX):
        base = name[: -len(MISSING_SUFFIX)]
        readable = base.replace("_", " ")
        return MISSING_WORDS.get(base, f"missing {readable}"), f"has {readable}"
    match = ENGAGEMENT_RATE.match(name)
    if match:
        channel = match["channel"]
        return f"{channel}-engaged", f"{channel}-disengaged"
    readable = name.replace("_", " ")
    return f"high {readable}", f"low {readable}"


@dataclass
class FeatureProfile:
    feature: str
    mean: float | None  # over the cluster's members that have a value
    population_mean: float | None
    ratio: float | None  # mean / population_mean; None when the population mean is 0 or missing
    z_score: float | None  # (mean - population_mean) / population std
    percentile: float | None  # the members' mean percentile rank in the population; 0.5 is typical
    word: str | None  # the label word when this feature sits far enough from typical


@dataclass
class ClusterProfile:
    cluster: int  # -1 for DBSCAN noise
    label: str
    size: int
    share: float  # of all customers
    features: list[FeatureProfile]  # most distinctive first


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _profile_values(frame_raw: pd.DataFrame, feature_names: Sequence[str]) -> pd.DataFrame:
    columns = {}
    for name in feature_names:
        if name in frame_raw.columns:
            columns[name] = pd.to_numeric(frame_raw[name], errors="coerce")
        elif name.endswith(MISSING_SUFFIX) and name[: -len(MISSING_SUFFIX)] in frame_raw.columns:
            base = pd.to_numeric(frame_raw[name[: -len(MISSING_SUFFIX)]], errors="coerce")
            columns[name] = base.isna().astype(np.float64)
        else:
            raise ValueError(f"feature {name!r} is neither a column of the frame nor a missing-value indicator")
    values = pd.DataFrame(columns, index=frame_raw.index).astype(np.float64)
    return values.replace([np.inf, -np.inf], np.nan)


def profile_clusters(frame_raw: pd.DataFrame, labels: np.ndarray, feature_names: Sequence[str]) -> list[ClusterProfile]:
    """Each cluster against the population, on the raw (unscaled, unimputed) values.

    Means skip missing values. How distinctive a feature is for a cluster is measured by the
    members' mean percentile rank in the population (average ranks for ties), which neither
    heavy tails nor units distort: a cluster at the 0.9 percentile of monetary is "high value".
    The label joins the words (see `feature_words`) of the LABEL_WORDS most distinctive features
    whose percentile is at least DISTINCT_ENOUGH from 0.5, most distinctive first, or "typical".
    Labels are unique: clusters that would share one get one more word, from the most distinctive
    feature that tells them apart, then a number. Noise (-1) is "outliers". Profiles come largest
    first (noise last).
    """
    labels = np.asarray(labels)
    if len(labels) != len(frame_raw):
        raise ValueError(f"{len(labels)} labels for {len(frame_raw)} rows")
    values = _profile_values(frame_raw, feature_names)
    names = list(values.columns)
    percentiles = values.rank(pct=True, method="average")
    population_means = values.mean()
    population_stds = values.std(ddof=0)
    grouped_means = values.groupby(labels).mean()
    grouped_pct = percentiles.groupby(labels).mean()
    sizes = pd.Series(labels).value_counts()
    total = len(labels)

    profiles: list[ClusterProfile] = []
    for cluster_id in sorted(sizes.index, key=lambda c: (c < 0, -sizes[c], c)):
        features = []
        for name in names:
            mean = _finite(grouped_means.at[cluster_id, name])
            population_mean = _finite(population_means[name])
            std = _finite(population_stds[name])
            pct = _finite(grouped_pct.at[cluster_id, name])
            ratio = mean / population_mean if mean is not None and population_mean else None
            z = (mean - population_mean) / std if mean is not None and population_mean is not None and std else None
            features.append(FeatureProfile(name, mean, population_mean, _finite(ratio), _finite(z), pct, None))
        features.sort(
            key=lambda f: (-abs(f.percentile - 0.5) if f.percentile is not None else 0.0, names.index(f.feature))
        )
        for f in features:
            if f.percentile is not None and abs(f.percentile - 0.5) >= DISTINCT_ENOUGH:
                f.word = _side_word(f)
        distinct = _dedupe_words(f.word for f in features if f.word)
        label = "outliers" if cluster_id < 0 else ", ".join(distinct[:LABEL_WORDS]) or "typical"
        profiles.append(
            ClusterProfile(
                cluster=int(cluster_id),
                label=label,
                size=int(sizes[cluster_id]),
                share=float(sizes[cluster_id] / total),
                features=features,
            )
        )
    _make_labels_unique(profiles)
    return profiles


def _dedupe_words(words: Iterable[str]) -> list[str]:
    # Two features can give the same word (monetary and m_score): say it once.
    return list(dict.fromkeys(words))


def _make_labels_unique(profiles: list[ClusterProfile]) -> None:
    """Clusters sharing a label each get one more word, from their most distinctive feature on which
    the clashing clusters' words differ (e.g. "no purchases, low value" splits into "..., new" and
    "..., long-standing"); clashes left after that get (2), (3)... in size order."""
    clashing: dict[str, list[ClusterProfile]] = {}
    for profile in profiles:
        if profile.cluster >= 0:
            clashing.setdefault(profile.label, []).append(profile)
    for label, group in clashing.items():
        if len(group) < 2:
            continue
        words = [] if label == "typical" else label.split(", ")
        side = {p.cluster: {f.feature: _side_word(f) for f in p.features} for p in group}
        renamed = {}
        for profile in group:
            for f in profile.features:
                word = side[profile.cluster][f.feature]
                others = {side[q.cluster].get(f.feature) for q in group if q is not profile}
                if word is not None and word not in words and others != {word}:
                    renamed[profile.cluster] = ", ".join([*words, word]) if words else f"typical, {word}"
                    break
        for profile in group:
            profile.label = renamed.get(profile.cluster, profile.label)
    seen: dict[str, int] = {}
    for profile in profiles:
        seen[profile.label] = seen.get(profile.label, 0) + 1
        if seen[profile.label] > 1:
            profile.label = f"{profile.label} ({seen[profile.label]})"


def _side_word(feature: FeatureProfile) -> str | None:
    """The feature's word for the side of typical the cluster sits on, distinctive or not."""
    if feature.percentile is None:
        return None
    high, low = feature_words(feature.feature)
    return high if feature.percentile >= 0.5 else low


# ---------------------------------------------------------------------------- command line


def read_features(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """A features CSV, indexed by its id column (given, or the first of customer_id/external_id/id)."""
    frame = pd.read_csv(path)
    if id_column is None:
        id_column = next((name for name in ID_COLUMNS if name in frame.columns), None)
    if id_column is not None:
        if id_column not in frame.columns:
            raise ValueError(f"no column {id_column!r} in {path}")
        frame = frame.set_index(id_column)
    return frame


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.engine.clustering",
        description="Cluster customers from a features CSV (one row per customer, numeric columns) "
        "and print k, cluster sizes and labels.",
    )
    parser.add_argument("features_file", type=Path)
    parser.add_argument("--k", type=int, default=None, help="number of clusters (default: chosen by silhouette)")
    parser.add_argument("--method", choices=["auto", "kmeans", "minibatch", "dbscan"], default="auto")
    parser.add_argument("--id-column", default=None, help="row id column (default: customer_id, external_id or id)")
    parser.add_argument("--log-columns", nargs="*", default=list(DEFAULT_LOG_COLUMNS))
    parser.add_argument("--eps", type=float, default=None, help="DBSCAN radius (default: k-distance knee)")
    parser.add_argument("--min-samples", type=int, default=None, help="DBSCAN core size (default: 2 x features)")
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    frame = read_features(args.features_file, args.id_column)
    X, names, _ = prepare_features(frame, args.log_columns)
    result = cluster(
        X, k=args.k, method=args.method, random_state=args.random_state, eps=args.eps, min_samples=args.min_samples
    )
    profiles = profile_clusters(frame, result.labels, names)
    elapsed = time.perf_counter() - started

    score = "n/a" if result.silhouette is None else f"{result.silhouette:.3f}"
    print(f"customers: {len(frame)}  features: {', '.join(names)}")
    print(f"method: {result.method}  k: {result.k}  silhouette: {score}  ({elapsed:.2f} s)")
    if result.silhouettes:
        print("silhouette by k: " + "  ".join(f"{k}: {s:.3f}" for k, s in sorted(result.silhouettes.items())))
    if result.eps is not None:
        print(f"eps: {result.eps:.4f}  min_samples: {result.min_samples}")
    for profile in profiles:
        top = "; ".join(
            f"{f.feature} {f.mean:.4g} vs {f.population_mean:.4g}"
            for f in profile.features[:3]
            if f.mean is not None and f.population_mean is not None
        )
        print(f"  cluster {profile.cluster}: {profile.size} ({profile.share:.1%})  {profile.label}  [{top}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
