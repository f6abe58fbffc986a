"""The pure clustering engine (mlcore.engine.clustering): features, k by silhouette, K-means,
MiniBatchKMeans and DBSCAN recovering planted customer groups, readable profiles, and proof
that it imports no Django. No database needed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, silhouette_score

from mlcore.engine.clustering import (
    DBSCAN_MAX_ROWS,
    KMEANS_MAX_ROWS,
    choose_k,
    cluster,
    feature_words,
    prepare_features,
    profile_clusters,
    silhouette,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Planted customer groups in RFM-like space, largest first:
# (share, recency_days, frequency, monetary, email_open_rate, tenure_days), centres of the raw values.
PLANTED = {
    "lapsed": (0.40, 320, 1.5, 40, 0.05, 700),
    "new": (0.30, 15, 1.5, 35, 0.30, 40),
    "loyal": (0.20, 90, 7, 400, 0.15, 1500),
    "champions": (0.10, 3, 5, 3000, 0.30, 800),
}


def planted_customers(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """n customers drawn from the PLANTED groups (shares exact) -> (raw features, group index per row)."""
    rng = np.random.default_rng(seed)
    params = np.array(list(PLANTED.values()))
    sizes = np.floor(params[:, 0] * n).astype(int)
    sizes[0] += n - sizes.sum()
    truth = rng.permutation(np.repeat(np.arange(len(PLANTED)), sizes))
    p = params[truth]
    frame = pd.DataFrame(
        {
            "recency_days": np.clip(rng.normal(p[:, 1], 2 + 0.1 * p[:, 1]), 0, None).round(),
            "frequency": np.maximum(1, np.round(p[:, 2] * np.exp(rng.normal(0, 0.15, n)))),
            "monetary": (p[:, 3] * np.exp(rng.normal(0, 0.25, n))).round(2),
            "email_open_rate": np.clip(rng.normal(p[:, 4], 0.04), 0, 1),
            "tenure_days": np.clip(rng.normal(p[:, 5], 60), 0, None).round(),
        },
        index=pd.RangeIndex(1, n + 1, name="customer_id"),
    )
    return frame, truth


def group_of_cluster(labels: np.ndarray, truth: np.ndarray) -> dict[int, str]:
    """Each cluster's majority planted group."""
    names = list(PLANTED)
    return {
        int(c): names[np.bincount(truth[labels == c], minlength=len(names)).argmax()]
        for c in np.unique(labels)
        if c >= 0
    }


class PrepareFeaturesTests(unittest.TestCase):
    def test_it_logs_money_and_counts_then_standardises(self):
        frame = pd.DataFrame(
            {"frequency": [0, 1, 3, 7], "monetary": [0.0, 10.0, 100.0, 1000.0], "age": [20, 30, 40, 50]}
        )
        X, names, scaling = prepare_features(frame)

        self.assertEqual(names, ["frequency", "monetary", "age"])
        self.assertEqual(X.dtype, np.float32)
        self.assertEqual(scaling.log_columns, ("frequency", "monetary"))
        logged = np.log1p(frame["frequency"].to_numpy(float))
        np.testing.assert_allclose(X[:, 0], (logged - logged.mean()) / logged.std(), rtol=1e-6)
        age = frame["age"].to_numpy(float)  # not logged
        np.testing.assert_allclose(X[:, 2], (age - 35) / age.std(), rtol=1e-6)
        np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-6)

    def test_missing_and_odd_values_are_imputed_with_the_median_and_flagged(self):
        frame = pd.DataFrame(
            {
                "recency_days": [10.0, np.nan, 30.0, 50.0],
                "tier": ["1", "gold", None, "3"],  # an odd attribute value counts as missing
                "tenure_days": [100, 200, 300, 400],
            }
        )
        X, names, scaling = prepare_features(frame, log_columns=())

        self.assertEqual(names, ["recency_days", "tier", "tenure_days", "recency_days_missing", "tier_missing"])
        self.assertEqual(scaling.medians, (30.0, 2.0, 250.0))
        self.assertTrue(np.isfinite(X).all())
        self.assertEqual(X[1, 0], X[2, 0])  # the missing recency got the median, 30
        self.assertEqual(X[:, 3].tolist(), [0.0, 1.0, 0.0, 0.0])
        self.assertEqual(X[:, 4].tolist(), [0.0, 1.0, 1.0, 0.0])

    def test_indicator_columns_can_be_left_out(self):
        frame = pd.DataFrame({"recency_days": [10.0, np.nan, 30.0]})
        X, names, _ = prepare_features(frame, missing_indicators=False)
        self.assertEqual(names, ["recency_days"])
        self.assertEqual(X.shape, (3, 1))

    def test_negative_money_keeps_its_sign_and_a_constant_column_becomes_zero(self):
        frame = pd.DataFrame({"monetary": [-99.0, 0.0, 99.0], "country_code": [7, 7, 7]})
        X, _, scaling = prepare_features(frame)
        self.assertAlmostEqual(float(X[0, 0]), -float(X[2, 0]), places=6)
        self.assertEqual(X[:, 1].tolist(), [0.0, 0.0, 0.0])
        self.assertEqual(scaling.scales[1], 1.0)

    def test_whales_are_clipped(self):
        frame = pd.DataFrame({"points": [1.0] * 999 + [1e9]})
        X, _, _ = prepare_features(frame, clip=5.0)
        self.assertEqual(float(X[-1, 0]), 5.0)

    def test_a_scaling_transforms_new_rows_exactly_as_the_population(self):
        frame, _ = planted_customers(1000)
        frame.iloc[::7, 3] = np.nan
        X, names, scaling = prepare_features(frame)
        some = frame.iloc[[5, 7, 500]]
        X_some, names_some, same = prepare_features(some, scaling=scaling)
        self.assertEqual(names_some, names)
        self.assertIs(same, scaling)
        np.testing.assert_array_equal(X_some, X[[5, 7, 500]])

    def test_it_is_deterministic(self):
        frame, _ = planted_customers(2000)
        first, _, _ = prepare_features(frame)
        second, _, _ = prepare_features(frame.copy())
        np.testing.assert_array_equal(first, second)

    def test_an_empty_frame_is_refused(self):
        with self.assertRaisesRegex(ValueError, "no rows"):
            prepare_features(pd.DataFrame({"monetary": []}))


class ChooseKTests(unittest.TestCase):
    def test_it_picks_the_four_planted_groups(self):
        frame, _ = planted_customers(20_000)
        X, _, _ = prepare_features(frame)
        k, scores = choose_k(X)
        self.assertEqual(k, 4)
        self.assertEqual(sorted(scores), list(range(2, 11)))
        self.assertEqual(max(scores, key=scores.get), 4)
        self.assertGreater(scores[4], 0.7)

    def test_our_silhouette_is_sklearns(self):
        frame, truth = planted_customers(3000, seed=5)
        X, _, _ = prepare_features(frame)
        labels = truth.copy()
        labels[:2] = 9  # a two-point cluster
        labels[2] = 10  # and a singleton, which scores 0
        self.assertAlmostEqual(silhouette(X, labels), silhouette_score(X, labels), places=4)
        # Sampled: the same rows give the same value; noise (-1) is left out.
        noisy = labels.copy()
        noisy[100:200] = -1
        kept = noisy >= 0
        self.assertAlmostEqual(silhouette(X, noisy), silhouette_score(X[kept], noisy[kept]), places=4)
        self.assertIsNone(silhouette(X, np.zeros(len(X), dtype=int)))


class ClusterTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.frame, cls.truth = planted_customers(20_000)
        cls.X, cls.names, _ = prepare_features(cls.frame)
        cls.result = cluster(cls.X)

    def test_auto_uses_kmeans_below_the_threshold_and_recovers_the_planted_groups(self):
        self.assertLessEqual(len(self.X), KMEANS_MAX_ROWS)
        self.assertEqual(self.result.method, "kmeans")
        self.assertEqual(self.result.k, 4)
        self.assertGreaterEqual(adjusted_rand_score(self.truth, self.result.labels), 0.95)
        self.assertEqual(self.result.centers.shape, (4, 5))
        self.assertGreater(self.result.silhouette, 0.7)
        self.assertGreater(self.result.inertia, 0)
        self.assertEqual(sorted(self.result.silhouettes), list(range(2, 11)))

    def test_clusters_are_numbered_by_size(self):
        sizes = np.bincount(self.result.labels).tolist()
        self.assertEqual(sizes, [8000, 6000, 4000, 2000])
        self.assertEqual(
            group_of_cluster(self.result.labels, self.truth), {0: "lapsed", 1: "new", 2: "loyal", 3: "champions"}
        )

    def test_a_given_k_is_used(self):
        result = cluster(self.X, k=3, method="kmeans")
        self.assertEqual(result.k, 3)
        self.assertEqual(result.silhouettes, {})
        self.assertEqual(sorted(np.unique(result.labels).tolist()), [0, 1, 2])

    def test_the_same_seed_gives_the_same_labels(self):
        again = cluster(self.X)
        np.testing.assert_array_equal(again.labels, self.result.labels)
        np.testing.assert_array_equal(again.centers, self.result.centers)

    def test_auto_uses_minibatch_above_the_threshold_and_recovers_the_planted_groups(self):
        frame, truth = planted_customers(120_000, seed=1)
        X, _, _ = prepare_features(frame)
        result = cluster(X)
        self.assertGreater(len(X), KMEANS_MAX_ROWS)
        self.assertEqual(result.method, "minibatch")
        self.assertEqual(result.k, 4)
        self.assertGreaterEqual(adjusted_rand_score(truth, result.labels), 0.9)
        np.testing.assert_array_equal(cluster(X, k=4, method="minibatch").labels, result.labels)

    def test_missing_values_are_handled(self):
        frame, truth = planted_customers(5000, seed=2)
        rng = np.random.default_rng(2)
        frame.loc[rng.random(len(frame)) < 0.05, "email_open_rate"] = np.nan
        frame.loc[rng.random(len(frame)) < 0.05, "tenure_days"] = np.nan
        X, names, _ = prepare_features(frame)
        self.assertEqual(names[-2:], ["email_open_rate_missing", "tenure_days_missing"])
        result = cluster(X, k=4)
        self.assertGreaterEqual(adjusted_rand_score(truth, result.labels), 0.95)

    def test_unknown_method_is_refused(self):
        with self.assertRaisesRegex(ValueError, "unknown method 'hdbscan'"):
            cluster(self.X, k=4, method="hdbscan")


class DbscanTests(unittest.TestCase):
    def blobs_and_outliers(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(3)
        centres = np.array([[0, 0, 0, 0], [6, 0, 0, 0], [0, 6, 0, 0], [0, 0, 6, 6]], dtype=float)
        sizes = [800, 500, 400, 300]
        X = np.vstack([rng.normal(c, 0.5, (size, 4)) for c, size in zip(centres, sizes, strict=True)])
        outliers = rng.uniform(-12, 18, (20, 4))  # each at least 4 away from every centre
        self.assertGreater(np.linalg.norm(outliers[:, None] - centres[None], axis=2).min(), 4)
        truth = np.concatenate([np.repeat(np.arange(4), sizes), np.full(20, -1)])
        return np.vstack([X, outliers]), truth

    def test_it_finds_the_blobs_and_marks_outliers_as_noise(self):
        X, truth = self.blobs_and_outliers()
        result = cluster(X, method="dbscan")

        self.assertEqual(result.method, "dbscan")
        self.assertEqual(result.k, 4)
        self.assertIsNone(result.centers)
        self.assertIsNone(result.inertia)
        self.assertEqual(result.min_samples, 8)  # 2 x 4 features
        self.assertTrue((result.labels[truth == -1] == -1).all())
        self.assertLessEqual(int((result.labels == -1).sum()), 30)  # the 20 and a few blob edges
        in_blobs = truth >= 0
        self.assertGreaterEqual(adjusted_rand_score(truth[in_blobs], result.labels[in_blobs]), 0.95)
        self.assertEqual(np.bincount(result.labels[result.labels >= 0]).argmax(), 0)  # largest is 0

    def test_a_given_eps_is_used(self):
        X, _ = self.blobs_and_outliers()
        result = cluster(X, method="dbscan", eps=0.01, min_samples=5)
        self.assertEqual(result.eps, 0.01)
        self.assertEqual(result.k, 0)  # nothing is that dense
        self.assertTrue((result.labels == -1).all())
        self.assertIsNone(result.silhouette)

    def test_it_is_refused_above_the_size_limit(self):
        X = np.zeros((DBSCAN_MAX_ROWS + 1, 2), dtype=np.float32)
        with self.assertRaisesRegex(ValueError, "DBSCAN is limited to 50,000 customers"):
            cluster(X, method="dbscan")


class ProfileTests(unittest.TestCase):
    def test_planted_groups_get_the_expected_words(self):
        frame, truth = planted_customers(20_000)
        X, names, _ = prepare_features(frame)
        result = cluster(X, k=4)
        profiles = profile_clusters(frame, result.labels, names)
        group = group_of_cluster(result.labels, truth)
        labels = {group[p.cluster]: p.label for p in profiles}

        self.assertEqual(
            labels,
            {
                "lapsed": "lapsed, email-disengaged",
                "new": "new, email-engaged",
                "loyal": "long-standing, frequent",
                "champions": "high value, recent",
            },
        )
        champions = next(p for p in profiles if group[p.cluster] == "champions")
        self.assertEqual((champions.size, champions.share), (2000, 0.1))
        self.assertEqual([f.feature for f in champions.features[:2]], ["monetary", "recency_days"])
        monetary = champions.features[0]
        self.assertAlmostEqual(monetary.mean, frame["monetary"][truth == 3].mean())
        self.assertAlmostEqual(monetary.population_mean, frame["monetary"].mean())
        self.assertAlmostEqual(monetary.ratio, monetary.mean / monetary.population_mean)
        self.assertGreater(monetary.percentile, 0.9)

    def test_sizes_means_and_scores_on_a_hand_built_population(self):
        frame = pd.DataFrame({"monetary": [10.0, 20.0, 100.0, 200.0, 300.0, np.nan]})
        labels = np.array([1, 1, 0, 0, 0, -1])
        profiles = profile_clusters(frame, labels, ["monetary", "monetary_missing"])

        self.assertEqual(
            [(p.cluster, p.size, p.label) for p in profiles],
            [(0, 3, "high value"), (1, 2, "low value"), (-1, 1, "outliers")],
        )
        high = profiles[0]
        self.assertEqual(high.share, 0.5)
        m = high.features[0]
        self.assertEqual((m.feature, m.mean, m.population_mean), ("monetary", 200.0, 126.0))
        self.assertAlmostEqual(m.ratio, 200 / 126)
        self.assertAlmostEqual(m.z_score, (200 - 126) / np.std([10, 20, 100, 200, 300]))
        self.assertAlmostEqual(m.percentile, (0.6 + 0.8 + 1.0) / 3)  # ranks 3-5 of the 5 known
        self.assertEqual(m.word, "high value")
        flag = high.features[1]
        self.assertEqual((flag.feature, flag.mean, flag.population_mean), ("monetary_missing", 0.0, 1 / 6))
        self.assertEqual(flag.ratio, 0.0)
        # Five 0s share rank 3 of 6: percentile 0.5, typical, no word.
        self.assertEqual((flag.percentile, flag.word), (0.5, None))
        noise = {f.feature: f for f in profiles[2].features}
        self.assertEqual(noise["monetary_missing"].mean, 1.0)  # the noise row is the one without monetary
        self.assertIsNone(noise["monetary"].mean)

    def test_clashing_labels_get_the_next_word_then_a_number(self):
        # Clusters 0 and 1 are both high value; only tenure, not distinctive enough by itself, parts them.
        frame = pd.DataFrame(
            {
                "monetary": [500, 510, 520, 530, 501, 511, 521, 531, *range(1, 13)],
                "tenure_days": [52, 53, 54, 55, 45, 46, 47, 48, 10, 20, 30, 40, 41, 42, 60, 61, 62, 90, 100, 110],
            }
        )
        labels = np.array([0] * 4 + [1] * 4 + [2] * 12)
        profiles = profile_clusters(frame, labels, ["monetary", "tenure_days"])
        self.assertEqual([p.label for p in profiles], ["low value", "high value, long-standing", "high value, new"])
        self.assertEqual([f.word for f in profiles[1].features], ["high value", None])  # tenure: 0.625

        twins = pd.DataFrame({"monetary": [500, 500, 500, 500, 1, 2]})
        profiles = profile_clusters(twins, np.array([0, 0, 1, 1, 2, 2]), ["monetary"])
        self.assertEqual([p.label for p in profiles], ["high value", "high value (2)", "low value"])

    def test_feature_words(self):
        self.assertEqual(feature_words("monetary"), ("high value", "low value"))
        self.assertEqual(feature_words("recency_days"), ("lapsed", "recent"))
        self.assertEqual(feature_words("frequency"), ("frequent", "occasional"))
        self.assertEqual(feature_words("tenure_days"), ("long-standing", "new"))
        self.assertEqual(feature_words("email_open_rate"), ("email-engaged", "email-disengaged"))
        self.assertEqual(feature_words("sms_click_rate"), ("sms-engaged", "sms-disengaged"))
        self.assertEqual(feature_words("recency_days_missing"), ("no purchases", "has recency days"))
        self.assertEqual(feature_words("age_missing"), ("missing age", "has age"))
        self.assertEqual(feature_words("loyalty_points"), ("high loyalty points", "low loyalty points"))

    def test_customers_without_purchases_are_labelled_so(self):
        # As the glue encodes them: no recency, zero orders, zero money.
        frame, _ = planted_customers(4000, seed=4)
        never = frame.index.isin(frame.sample(frac=0.2, random_state=4).index)
        frame.loc[never, "recency_days"] = np.nan
        frame.loc[never, ["frequency", "monetary"]] = 0
        X, names, _ = prepare_features(frame)
        result = cluster(X)
        profiles = profile_clusters(frame, result.labels, names)

        nobuy = [p.cluster for p in profiles if p.label.startswith("no purchases")]
        self.assertGreaterEqual(len(nobuy), 1)
        self.assertTrue(np.array_equal(np.isin(result.labels, nobuy), never))  # exactly the never-buyers
        self.assertEqual(len({p.label for p in profiles}), len(profiles))  # unique labels

    def test_labels_must_match_rows(self):
        with self.assertRaisesRegex(ValueError, "2 labels for 3 rows"):
            profile_clusters(pd.DataFrame({"monetary": [1, 2, 3]}), np.array([0, 1]), ["monetary"])


class CommandLineTests(unittest.TestCase):
    def clean_env(self) -> dict[str, str]:
        # No DJANGO_SETTINGS_MODULE: the engine must not need it.
        return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)}

    def test_the_command_line_prints_k_sizes_and_labels(self):
        frame, _ = planted_customers(2000)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "features.csv"
            frame.to_csv(path)  # with its customer_id column
            result = subprocess.run(
                [sys.executable, "-m", "mlcore.engine.clustering", str(path), "--k", "4"],
                cwd=REPO_ROOT,
                env=self.clean_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(
            lines[0], "customers: 2000  features: recency_days, frequency, monetary, email_open_rate, tenure_days"
        )
        self.assertTrue(lines[1].startswith("method: kmeans  k: 4  silhouette: 0."), lines[1])
        self.assertEqual(
            [line.split("  ")[1:3] for line in lines[2:]],
            [
                ["cluster 0: 800 (40.0%)", "lapsed, email-disengaged"],
                ["cluster 1: 600 (30.0%)", "new, email-engaged"],
                ["cluster 2: 400 (20.0%)", "long-standing, frequent"],
                ["cluster 3: 200 (10.0%)", "high value, recent"],
            ],
        )
