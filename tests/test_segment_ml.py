"""Segments from models, on hand-built data with exact expected members: cluster segments
(a clustering run recovers planted customer groups, keeps its segments in step run after
run, retires a cluster that disappears, records failures), the cluster leaf, association
rules mined from purchase baskets (checked by hand and against the pure engine), affinity
segments ("likely buyers of X") and the likely_buyers leaf, and the Celery tasks and
schedules around them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import numpy as np
from django.test import TestCase, override_settings
from django_celery_beat.models import PeriodicTask
from sklearn.metrics import silhouette_score

from campaigns.models import Segment, SegmentChange, SegmentMembership
from campaigns.segments.clusterings import clustering_refresh
from campaigns.segments.rebuild import segment_rebuild
from campaigns.segments.rules import RuleInvalid, segment_customers, validate_definition
from campaigns.segments.services import segment_create, segment_definition_check, segment_preview
from campaigns.tasks import clustering_refresh_task, clusterings_refresh_all, segment_rebuild_all, segment_rebuild_task
from marketing.errors import NotFound
from marketing.models import Customer, Touchpoint
from marketing.rfm import rfm_refresh
from mlcore import registry
from mlcore.affinity import KEEP_VERSIONS, rules_mine, rules_params
from mlcore.clusters import ClusteringFailed
from mlcore.engine.clustering import prepare_features
from mlcore.engine.rules import association_rules, frequent_itemsets, likely_buyers
from mlcore.features import LOG_FEATURES, customer_features
from mlcore.models import AssociationRule, Clustering, CustomerCluster, ModelVersion, items_text
from mlcore.tasks import association_rules_mine

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RFM = ["recency_days", "frequency", "monetary"]

_event_ids = iter(range(1, 10**9))


def buy(customer: Customer, order_id: str, skus: list[str], at: datetime, revenue: int = 10) -> list[Touchpoint]:
    """One order: a purchase touchpoint per line (unsaved, for bulk_create)."""
    return [
        Touchpoint(
            customer=customer,
            kind="purchase",
            event_id=f"m{next(_event_ids)}",
            order_id=order_id,
            sku=sku,
            revenue=Decimal(revenue),
            occurred_at=at,
        )
        for sku in skus
    ]


def member_names(segment_id: int) -> set[str]:
    rows = SegmentMembership.objects.filter(segment_id=segment_id)
    return set(rows.values_list("customer__external_id", flat=True))


def change_log(segment_id: int) -> list[tuple[str, str]]:
    rows = SegmentChange.objects.filter(segment_id=segment_id).order_by("id")
    return list(rows.values_list("customer__external_id", "change"))


def errors(exc: RuleInvalid) -> list[tuple[str, str]]:
    return [(error.path, error.message) for error in exc.errors]


# --- clustering ------------------------------------------------------------------------

# Three planted groups, far apart in RFM (the i-th customer of a group varies a little):
# group: (customers, days since the last order + i, orders a week apart, revenue per order + i)
PLANTED = {
    "lapsed": (10, 300, 1, 20),
    "regular": (8, 60, 3, 70),
    "vip": (6, 1, 9, 130),
}
# Sizes differ, so cluster numbers (0 = largest) follow the groups in this order.
CLUSTER_OF = {"lapsed": 0, "regular": 1, "vip": 2}
LABEL_OF = {"lapsed": "lapsed, occasional", "regular": "typical", "vip": "high value, frequent"}


def group(name: str) -> set[str]:
    return {f"{name}-{i}" for i in range(PLANTED[name][0])}


class ClusterSegmentTestCase(TestCase):
    """The planted groups, plus an erased customer who bought like a vip."""

    @classmethod
    def setUpTestData(cls) -> None:
        rows = []
        for name, (count, recency, orders, revenue) in PLANTED.items():
            for i in range(count):
                customer = Customer.objects.create(external_id=f"{name}-{i}")
                for n in range(orders):
                    at = NOW - timedelta(days=recency + i + 7 * n)
                    rows += buy(customer, f"{name}-{i}-{n}", ["A-1"], at, revenue + i)
        ghost = Customer.objects.create(external_id="ghost", erased_at=NOW - timedelta(days=1))
        for n in range(9):
            rows += buy(ghost, f"ghost-{n}", ["A-1"], NOW - timedelta(days=1 + 7 * n), 130)
        Touchpoint.objects.bulk_create(rows)
        rfm_refresh(NOW.date())
        cls.clustering = Clustering.objects.create(name="Planted", features=RFM, k=3)
        cls.ids = dict(Customer.objects.values_list("external_id", "pk"))

    def cluster_segments(self) -> dict[int, tuple[str, dict]]:
        segments = Segment.objects.filter(kind=Segment.Kind.CLUSTER).order_by("pk")
        return {segment.pk: (segment.name, segment.definition) for segment in segments}

    def segment_of(self, group_name: str) -> int:
        return Segment.objects.get(name=f"Planted: {LABEL_OF[group_name]}").pk

    def assignments(self, version_id: int) -> dict[str, int]:
        rows = CustomerCluster.objects.filter(model_version_id=version_id)
        names = {pk: external_id for external_id, pk in self.ids.items()}
        return {names[customer_id]: cluster for customer_id, cluster in rows.values_list("customer_id", "cluster")}


class ClusteringRunTests(ClusterSegmentTestCase):
    def test_a_run_recovers_the_planted_groups_with_k_chosen_by_silhouette(self) -> None:
        Clustering.objects.filter(pk=self.clustering.pk).update(k=None)

        result = clustering_refresh(self.clustering.pk)

        version = ModelVersion.objects.get()
        segments = self.cluster_segments()
        self.assertEqual(len(segments), 3)
        ids = {name: self.segment_of(name) for name in PLANTED}
        self.assertEqual(
            segments,
            {
                ids[name]: (
                    f"Planted: {LABEL_OF[name]}",
                    {"clustering": self.clustering.pk, "cluster": CLUSTER_OF[name]},
                )
                for name in PLANTED
            },
        )
        for name in PLANTED:
            self.assertEqual(member_names(ids[name]), group(name), name)
            self.assertEqual(Segment.objects.get(pk=ids[name]).member_count, len(group(name)))
            # the change log: everyone entered, in customer id order
            self.assertEqual(change_log(ids[name]), [(n, "entered") for n in sorted(group(name))])
        # timings are reported, not asserted
        timings = {key: result.pop(key) for key in ("features_s", "cluster_s", "store_s", "segments_s", "total_s")}
        self.assertTrue(all(value >= 0 for value in timings.values()), timings)
        silhouette = result.pop("silhouette")
        self.assertEqual(
            result,
            {
                "clustering_id": self.clustering.pk,
                "model_version_id": version.pk,
                "k": 3,
                "customers": 24,
                "segments": [
                    {
                        "segment_id": ids[name],
                        "name": f"Planted: {LABEL_OF[name]}",
                        "cluster": CLUSTER_OF[name],
                        "members": len(group(name)),
                        "entered": len(group(name)),
                        "exited": 0,
                    }
                    for name in PLANTED
                ],
            },
        )

        # the version: the clustering's champion, with its metrics and profiles
        self.assertEqual(
            (version.task, version.scope, version.algorithm, version.status, version.is_champion, version.error),
            ("clusters", f"clustering:{self.clustering.pk}", "kmeans", "succeeded", True, ""),
        )
        self.assertEqual(version.params, {"features": RFM, "k": None, "method": "auto"})
        self.assertIsNotNone(version.trained_at)
        self.assertGreaterEqual(version.duration_ms, 0)
        metrics = dict(version.metrics)
        silhouettes, inertia = metrics.pop("silhouettes"), metrics.pop("inertia")
        self.assertEqual(
            metrics,
            {
                "customers": 24,
                "k": 3,
                "silhouette": silhouette,
                "eps": None,
                "min_samples": None,
            },
        )
        self.assertEqual(sorted(silhouettes, key=int), [str(k) for k in range(2, 11)])
        self.assertEqual(max(silhouettes, key=silhouettes.get), "3")
        self.assertEqual(
            [(p["cluster"], p["label"], p["size"]) for p in version.result["profiles"]],
            [(CLUSTER_OF[name], LABEL_OF[name], len(group(name))) for name in PLANTED],
        )
        self.assertEqual(version.result["feature_names"], RFM)

        # one assignment per customer (the erased ghost left out), exactly the planted groups
        self.assertEqual(CustomerCluster.objects.count(), 24)
        self.assertEqual(self.assignments(version.pk), {n: CLUSTER_OF[name] for name in PLANTED for n in group(name)})
        # the silhouette is sklearn's on the same scaled features
        X, _names, _scaling = prepare_features(customer_features(RFM), log_columns=LOG_FEATURES)
        labels = [self.assignments(version.pk)[n] for n in sorted(self.ids, key=self.ids.get) if n != "ghost"]
        self.assertAlmostEqual(silhouette, silhouette_score(X, labels), places=4)
        self.assertGreater(silhouette, 0.9)
        # and the inertia the squared distances to the cluster means
        X, labels = X.astype(np.float64), np.asarray(labels)
        spread = sum(((X[labels == c] - X[labels == c].mean(axis=0)) ** 2).sum() for c in range(3))
        self.assertAlmostEqual(inertia, spread, places=4)

    def test_a_segment_describes_its_cluster(self) -> None:
        version_id = clustering_refresh(self.clustering.pk)["model_version_id"]
        self.assertEqual(
            Segment.objects.get(pk=self.segment_of("lapsed")).description,
            f"Cluster 0 of clustering 'Planted' (version {version_id}): 10 customers, 41.7% of all. "
            "recency_days: 304.5 against 148.9 overall (percentile 0.81). "
            "frequency: 1 against 3.667 overall (percentile 0.23). "
            "monetary: 24.5 against 381.8 overall (percentile 0.23).",
        )

    def test_a_second_run_keeps_the_segments_and_changes_nothing(self) -> None:
        first = clustering_refresh(self.clustering.pk)
        segments, log = self.cluster_segments(), list(SegmentChange.objects.order_by("id").values_list("id"))

        second = clustering_refresh(self.clustering.pk)

        self.assertEqual(self.cluster_segments(), segments)
        self.assertEqual(
            [(s["segment_id"], s["cluster"], s["members"], s["entered"], s["exited"]) for s in second["segments"]],
            [(s["segment_id"], s["cluster"], s["members"], 0, 0) for s in first["segments"]],
        )
        self.assertEqual(list(SegmentChange.objects.order_by("id").values_list("id")), log)
        # the new version is the champion; the old one's assignments are gone
        old, new = (
            ModelVersion.objects.get(pk=first["model_version_id"]),
            ModelVersion.objects.get(pk=second["model_version_id"]),
        )
        self.assertEqual(
            (old.is_champion, old.status, new.is_champion, new.status), (False, "succeeded", True, "succeeded")
        )
        self.assertEqual(CustomerCluster.objects.filter(model_version=old).count(), 0)
        self.assertEqual(CustomerCluster.objects.filter(model_version=new).count(), 24)
        self.assertEqual(CustomerCluster.objects.count(), 24)

    def test_a_cluster_that_disappears_retires_its_segment_and_one_that_appears_gets_a_new_one(self) -> None:
        first = clustering_refresh(self.clustering.pk)
        lapsed, regular, vip = (self.segment_of(name) for name in PLANTED)
        old_description = Segment.objects.get(pk=regular).description
        Clustering.objects.filter(pk=self.clustering.pk).update(k=2)

        second = clustering_refresh(self.clustering.pk)

        # k=2 merges lapsed and regular into cluster 0: it keeps the segment it shares most
        # with (lapsed, 10 of its 18), the regular segment is retired, vip's is renumbered.
        v2 = second["model_version_id"]
        retired_name = f"Planted: typical (retired by version {v2})"
        self.assertEqual(
            second["segments"],
            [
                {
                    "segment_id": lapsed,
                    "name": "Planted: typical",
                    "cluster": 0,
                    "members": 18,
                    "entered": 8,
                    "exited": 0,
                },
                {"segment_id": regular, "name": retired_name, "cluster": None, "members": 0, "entered": 0, "exited": 8},
                {
                    "segment_id": vip,
                    "name": "Planted: high value, frequent",
                    "cluster": 1,
                    "members": 6,
                    "entered": 0,
                    "exited": 0,
                },
            ],
        )
        self.assertEqual(
            self.cluster_segments(),
            {
                lapsed: ("Planted: typical", {"clustering": self.clustering.pk, "cluster": 0}),
                regular: (retired_name, {"clustering": self.clustering.pk, "cluster": None}),
                vip: ("Planted: high value, frequent", {"clustering": self.clustering.pk, "cluster": 1}),
            },
        )
        self.assertEqual(member_names(lapsed), group("lapsed") | group("regular"))
        self.assertEqual(member_names(regular), set())
        self.assertEqual(member_names(vip), group("vip"))
        self.assertEqual(
            change_log(regular),
            [(n, "entered") for n in sorted(group("regular"))] + [(n, "exited") for n in sorted(group("regular"))],
        )
        self.assertEqual(change_log(lapsed)[10:], [(n, "entered") for n in sorted(group("regular"))])
        self.assertEqual(
            Segment.objects.get(pk=regular).description,
            f"Retired by version {v2}: its members went to other clusters' segments. {old_description}",
        )
        self.assertEqual(Segment.objects.get(pk=regular).member_count, 0)
        self.assertEqual(CustomerCluster.objects.filter(model_version_id=first["model_version_id"]).count(), 0)

        # Back to k=3: the retired segment stays retired; the cluster that reappears gets a
        # new segment, and the lapsed segment gives the regulars back.
        Clustering.objects.filter(pk=self.clustering.pk).update(k=3)
        third = clustering_refresh(self.clustering.pk)

        new = Segment.objects.get(name="Planted: typical").pk
        self.assertNotIn(new, (lapsed, regular, vip))
        self.assertEqual(
            [(s["segment_id"], s["name"], s["cluster"], s["entered"], s["exited"]) for s in third["segments"]],
            [
                (lapsed, "Planted: lapsed, occasional", 0, 0, 8),
                (vip, "Planted: high value, frequent", 2, 0, 0),
                (new, "Planted: typical", 1, 8, 0),
            ],
        )
        self.assertEqual(Segment.objects.get(pk=regular).name, retired_name)
        self.assertEqual(Segment.objects.get(pk=regular).definition["cluster"], None)
        self.assertEqual(len(self.cluster_segments()), 4)
        self.assertEqual(member_names(new), group("regular"))
        self.assertEqual(member_names(lapsed), group("lapsed"))

    def test_a_failed_run_is_recorded_and_keeps_the_champion(self) -> None:
        first = clustering_refresh(self.clustering.pk)
        segments, log = self.cluster_segments(), list(SegmentChange.objects.values_list("id", flat=True))
        keep = sorted(group("vip"))[:6] + sorted(group("regular"))[:3]
        Customer.objects.exclude(external_id__in=keep).update(erased_at=NOW)

        with self.assertRaises(ClusteringFailed) as raised:
            clustering_refresh(self.clustering.pk)

        self.assertEqual(str(raised.exception), "9 customers; a clustering needs at least 10")
        failed = ModelVersion.objects.exclude(pk=first["model_version_id"]).get()
        self.assertEqual(
            (failed.status, failed.is_champion, failed.error, failed.trained_at),
            ("failed", False, "ClusteringFailed: 9 customers; a clustering needs at least 10", None),
        )
        self.assertGreaterEqual(failed.duration_ms, 0)
        self.assertEqual(
            registry.champion_id(ModelVersion.Task.CLUSTERS, f"clustering:{self.clustering.pk}"),
            first["model_version_id"],
        )
        self.assertEqual(CustomerCluster.objects.filter(model_version_id=first["model_version_id"]).count(), 24)
        self.assertEqual(CustomerCluster.objects.count(), 24)
        self.assertEqual(self.cluster_segments(), segments)
        self.assertEqual(list(SegmentChange.objects.values_list("id", flat=True)), log)

    def test_an_unknown_clustering_is_not_found_and_nothing_is_written(self) -> None:
        with self.assertRaises(NotFound):
            clustering_refresh(10**9)
        self.assertFalse(ModelVersion.objects.exists())
        self.assertEqual(self.cluster_segments(), {})

    def test_a_cluster_segment_rebuild_reads_the_champion(self) -> None:
        clustering_refresh(self.clustering.pk)
        vip = self.segment_of("vip")
        result = segment_rebuild(vip)
        self.assertEqual((result.entered, result.exited, result.members), (0, 0, 6))
        # a customer erased since leaves it, although the champion still lists them
        Customer.objects.filter(external_id="vip-0").update(erased_at=NOW)
        result = segment_rebuild(vip)
        self.assertEqual((result.entered, result.exited, result.members), (0, 1, 5))
        self.assertEqual(member_names(vip), group("vip") - {"vip-0"})


class ClusterDefinitionTests(ClusterSegmentTestCase):
    def test_the_cluster_leaf_selects_the_champion_clusters(self) -> None:
        other = Clustering.objects.create(name="Never run")
        leaf = {"cluster": {"clustering": self.clustering.pk, "in": [0, 2]}}
        self.assertEqual(set(segment_customers(leaf).values_list("external_id", flat=True)), set())  # no run yet

        clustering_refresh(self.clustering.pk)

        def members(tree) -> set[str]:
            self.assertEqual(validate_definition(tree), [])
            return set(segment_customers(tree, now=NOW).values_list("external_id", flat=True))

        self.assertEqual(members(leaf), group("lapsed") | group("vip"))
        self.assertEqual(members({"not": leaf}), group("regular"))
        self.assertEqual(members({"cluster": {"clustering": self.clustering.pk, "in": [-1]}}), set())
        self.assertEqual(members({"cluster": {"clustering": other.pk, "in": [0]}}), set())
        self.assertEqual(
            members(
                {
                    "all": [
                        {"cluster": {"clustering": self.clustering.pk, "in": [1]}},
                        {"field": "external_id", "op": "lt", "value": "regular-3"},
                    ]
                }
            ),
            {"regular-0", "regular-1", "regular-2"},
        )

    def test_preview_of_a_cluster_definition(self) -> None:
        clustering_refresh(self.clustering.pk)
        preview = segment_preview({"clustering": self.clustering.pk, "cluster": 2}, 2, kind="cluster")
        self.assertEqual(
            preview,
            {
                "count": 6,
                "sample": [
                    {"id": self.ids["vip-0"], "external_id": "vip-0", "email": ""},
                    {"id": self.ids["vip-1"], "external_id": "vip-1", "email": ""},
                ],
            },
        )
        self.assertEqual(
            segment_preview({"clustering": self.clustering.pk, "cluster": None}, kind="cluster"),
            {"count": 0, "sample": []},
        )

    def test_bad_cluster_segment_definitions(self) -> None:
        cases = [
            (
                {"clustering": 10**9, "cluster": -2, "extra": 1},
                [
                    ("/extra", "unknown key"),
                    ("/clustering", "unknown clustering 1000000000"),
                    ("/cluster", "must be a cluster number (0, 1, …; -1 for DBSCAN noise)"),
                ],
            ),
            (
                {"clustering": str(self.clustering.pk), "cluster": True},
                [
                    ("/clustering", "must be a clustering id (an integer)"),
                    ("/cluster", "must be a cluster number (0, 1, …; -1 for DBSCAN noise)"),
                ],
            ),
            ({}, [("", "clustering is required"), ("", "cluster is required (null for nobody)")]),
            ([0], [("", 'must be an object {"clustering": id, "cluster": n}')]),
        ]
        for definition, expected in cases:
            with self.subTest(definition=definition), self.assertRaises(RuleInvalid) as raised:
                segment_create(name="bad", kind=Segment.Kind.CLUSTER, definition=definition)
            self.assertEqual(errors(raised.exception), expected)
        self.assertFalse(Segment.objects.filter(kind=Segment.Kind.CLUSTER).exists())
        # valid: a cluster number, or null (nobody)
        segment_definition_check("cluster", {"clustering": self.clustering.pk, "cluster": -1})
        segment_definition_check("cluster", {"clustering": self.clustering.pk, "cluster": None})

    def test_bad_cluster_leaves_have_pointers(self) -> None:
        tree = {
            "all": [
                {"cluster": {"clustering": self.clustering.pk, "in": []}},
                {"cluster": {"clustering": 10**9, "in": [0, "x"], "k": 3}},
                {"cluster": {"in": [-2]}},
                {"cluster": 3},
            ]
        }
        self.assertEqual(
            [(e.path, e.message) for e in validate_definition(tree)],
            [
                ("/all/0/cluster/in", "must be a non-empty list of cluster numbers"),
                ("/all/1/cluster/k", "unknown key"),
                ("/all/1/cluster/clustering", "unknown clustering 1000000000"),
                ("/all/1/cluster/in", "must be a non-empty list of cluster numbers"),
                ("/all/2/cluster", "clustering is required"),
                ("/all/2/cluster/in", "must be a non-empty list of cluster numbers"),
                ("/all/3/cluster", 'must be an object {"clustering": id, "in": [n, ...]}'),
            ],
        )


# --- association rules and affinity segments ---------------------------------------------

# Ten orders (n = 10), "days ago" when bought. Supports: bread 5/10, butter 3/10 (o1-o3), jam
# 3/10 (o3, o4, o10), milk 3/10 (o6-o8), cereal 3/10 (o6, o7, o9); pairs: bread+butter 3/10,
# bread+jam 2/10, milk+cereal 2/10, butter+jam 1/10. eve is erased (her order still counts).
BASKETS = {
    "o1": ("ann", ["bread", "butter"], 10),
    "o2": ("ben", ["bread", "butter"], 10),
    "o3": ("cat", ["bread", "butter", "jam"], 10),
    "o4": ("dan", ["bread", "jam"], 100),
    "o5": ("eve", ["bread"], 5),
    "o6": ("fay", ["milk", "cereal"], 10),
    "o7": ("gus", ["milk", "cereal"], 10),
    "o8": ("hal", ["milk"], 10),
    "o9": ("ivy", ["cereal"], 50),
    "o10": ("joe", ["jam"], 3),
}
# At min support 0.2 and min confidence 0.5 (bread → jam has 0.4): lift desc, then
# confidence desc, then the items. (antecedents, consequents, antecedent support,
# consequent support, support, confidence, lift, leverage, conviction)
EXPECTED_RULES = [
    (["cereal"], ["milk"], 0.3, 0.3, 0.2, 2 / 3, 20 / 9, 0.11, 2.1),
    (["milk"], ["cereal"], 0.3, 0.3, 0.2, 2 / 3, 20 / 9, 0.11, 2.1),
    (["butter"], ["bread"], 0.3, 0.5, 0.3, 1.0, 2.0, 0.15, None),
    (["bread"], ["butter"], 0.5, 0.3, 0.3, 0.6, 2.0, 0.15, 1.75),
    (["jam"], ["bread"], 0.3, 0.5, 0.2, 2 / 3, 4 / 3, 0.05, 1.5),
]
MINED = {"min_support": 0.2, "min_confidence": 0.5}


def stored_rules(version_id: int) -> list[tuple]:
    rows = AssociationRule.objects.filter(model_version_id=version_id).order_by("rank")
    self_check = list(rows.values_list("rank", flat=True))
    assert self_check == list(range(1, len(self_check) + 1)), self_check
    return [
        (
            r.antecedents,
            r.consequents,
            r.antecedent_support,
            r.consequent_support,
            r.support,
            r.confidence,
            r.lift,
            r.leverage,
            r.conviction,
        )
        for r in rows
    ]


class AffinityTestCase(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.customers = {
            name: Customer.objects.create(external_id=name, erased_at=NOW if name == "eve" else None)
            for name in ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "joe", "kim"]
        }
        rows = []
        for order_id, (name, skus, days) in BASKETS.items():
            rows += buy(cls.customers[name], order_id, skus, NOW - timedelta(days=days))
        Touchpoint.objects.bulk_create(rows)
        # Touchpoints that are not purchases are no basket and no "bought": dan viewed butter.
        Touchpoint.objects.create(
            customer=cls.customers["dan"], kind="view", sku="butter", event_id="dan-view", occurred_at=NOW
        )

    def members(self, definition: dict) -> set[str]:
        self.assertEqual(validate_definition({"likely_buyers": definition}), [])
        tree = segment_customers({"likely_buyers": definition}, now=NOW)
        return set(tree.values_list("external_id", flat=True))


class RulesMiningTests(AffinityTestCase):
    def test_it_stores_exactly_the_expected_rules_as_the_champion(self) -> None:
        version = rules_mine(now=NOW, **MINED)

        version.refresh_from_db()
        self.assertEqual(
            (version.task, version.scope, version.algorithm, version.status, version.is_champion, version.error),
            ("rules", "", "eclat", "succeeded", True, ""),
        )
        self.assertEqual(
            version.params,
            {"min_support": 0.2, "min_confidence": 0.5, "min_lift": 1.0, "max_len": None, "days": None},
        )
        self.assertEqual(version.metrics, {"baskets": 10, "items": 5, "itemsets": 8, "rules": 5, "rules_stored": 5})
        self.assertIsNotNone(version.trained_at)
        rules = stored_rules(version.pk)
        self.assertEqual([(a, c) for a, c, *_ in rules], [(a, c) for a, c, *_ in EXPECTED_RULES])
        for got, expected in zip(rules, EXPECTED_RULES, strict=True):
            for value, want in zip(got[2:], expected[2:], strict=True):
                if want is None:
                    self.assertIsNone(value, got)
                else:
                    self.assertAlmostEqual(value, want, places=12, msg=got)
        self.assertEqual(
            list(
                AssociationRule.objects.filter(model_version=version).values_list(
                    "antecedent_items", "consequent_items"
                )
            ),
            [
                ("|cereal|", "|milk|"),
                ("|milk|", "|cereal|"),
                ("|butter|", "|bread|"),
                ("|bread|", "|butter|"),
                ("|jam|", "|bread|"),
            ],
        )
        self.assertEqual(AssociationRule.objects.count(), 5)

    def test_the_stored_rules_are_the_pure_engines_on_the_same_baskets(self) -> None:
        for params in (
            MINED,
            {"min_support": 0.1, "min_confidence": 0.3},
            {"min_support": 0.1, "min_confidence": 0.1, "max_len": 2},
        ):
            with self.subTest(params=params):
                version = rules_mine(now=NOW, **params)
                baskets = [skus for _name, skus, _days in BASKETS.values()]
                engine = association_rules(
                    frequent_itemsets(baskets, params["min_support"], params.get("max_len")),
                    params["min_confidence"],
                    1.0,
                )
                expected = [
                    (sorted(a), sorted(c), sa, sc, s, conf, lift, lev, conv if math.isfinite(conv) else None)
                    for a, c, sa, sc, s, conf, lift, lev, conv in engine.itertuples(index=False)
                ]
                self.assertEqual(stored_rules(version.pk), expected)
                self.assertEqual(version.metrics["rules"], len(expected))
        self.assertEqual(len(stored_rules(version.pk)), version.metrics["rules_stored"])
        self.assertGreater(version.metrics["rules"], 5)

    def test_days_limits_the_baskets_to_recent_orders(self) -> None:
        # o4 (100 days ago) and o9 (50) drop out: 8 baskets; bread 4, butter 3, jam 2, milk 3,
        # cereal 2; pairs bread+butter 3, milk+cereal 2 (bread+jam, butter+jam 1: below 0.2)
        version = rules_mine(now=NOW, days=30, **MINED)
        self.assertEqual(version.metrics, {"baskets": 8, "items": 5, "itemsets": 7, "rules": 4, "rules_stored": 4})
        self.assertEqual(
            [
                (a, c, round(conf, 6), round(lift, 6))
                for a, c, _sa, _sc, _s, conf, lift, _l, _v in stored_rules(version.pk)
            ],
            [
                (["cereal"], ["milk"], 1.0, 2.666667),
                (["milk"], ["cereal"], 0.666667, 2.666667),
                (["butter"], ["bread"], 1.0, 2.0),
                (["bread"], ["butter"], 0.75, 2.0),
            ],
        )

    def test_no_baskets_makes_an_empty_champion(self) -> None:
        Touchpoint.objects.filter(kind="purchase").update(kind="visit")
        version = rules_mine(now=NOW, **MINED)
        self.assertEqual(version.metrics, {"baskets": 0, "items": 0, "itemsets": 0, "rules": 0, "rules_stored": 0})
        self.assertEqual((version.status, version.is_champion), ("succeeded", True))
        self.assertFalse(AssociationRule.objects.exists())

    def test_each_run_becomes_the_champion_and_old_rules_are_dropped(self) -> None:
        versions = [rules_mine(now=NOW, **MINED).pk]
        versions.append(rules_mine(now=NOW, min_support=0.2, min_confidence=0.7).pk)

        self.assertEqual(registry.champion_id("rules"), versions[1])
        self.assertEqual(
            list(ModelVersion.objects.order_by("pk").values_list("pk", "is_champion", "status")),
            [(versions[0], False, "succeeded"), (versions[1], True, "succeeded")],
        )
        # only butter → bread has confidence 0.7 or more
        self.assertEqual([(a, c) for a, c, *_ in stored_rules(versions[1])], [(["butter"], ["bread"])])
        self.assertEqual(len(stored_rules(versions[0])), 5)  # kept for comparison

        versions += [rules_mine(now=NOW, **MINED).pk for _ in range(KEEP_VERSIONS - 1)]

        self.assertEqual(KEEP_VERSIONS, 3)
        counts = {pk: AssociationRule.objects.filter(model_version_id=pk).count() for pk in versions}
        self.assertEqual(counts, {versions[0]: 0, versions[1]: 1, versions[2]: 5, versions[3]: 5})
        self.assertEqual(
            list(ModelVersion.objects.filter(is_champion=True).values_list("pk", flat=True)), [versions[3]]
        )

    def test_failed_runs_do_not_count_among_the_versions_kept(self) -> None:
        first = rules_mine(now=NOW, **MINED)
        for _ in range(KEEP_VERSIONS - 1):
            with (
                mock.patch("mlcore.affinity.frequent_itemsets", side_effect=MemoryError("itemsets too large")),
                self.assertRaises(MemoryError),
            ):
                rules_mine(now=NOW, **MINED)
        second = rules_mine(now=NOW, **MINED)

        self.assertEqual(
            list(ModelVersion.objects.order_by("pk").values_list("status", "is_champion")),
            [("succeeded", False), ("failed", False), ("failed", False), ("succeeded", True)],
        )
        # the champion and the successful version before it both keep their rules
        self.assertEqual(AssociationRule.objects.filter(model_version=first).count(), 5)
        self.assertEqual(AssociationRule.objects.filter(model_version=second).count(), 5)

    def test_bad_parameters_raise_and_write_nothing(self) -> None:
        cases = [
            ({"min_support": 0}, "min_support must be a number in (0, 1]"),
            ({"min_support": 1.5}, "min_support must be a number in (0, 1]"),
            ({"min_confidence": "high"}, "min_confidence must be a number in (0, 1]"),
            ({"min_lift": -1}, "min_lift must be a number >= 0"),
            ({"max_len": 0}, "max_len must be a whole number >= 1"),
            ({"days": 1.5}, "days must be a whole number >= 1"),
            ({"min_supp": 0.1, "x": 1}, "unknown parameter(s) ['min_supp', 'x']"),
        ]
        for given, message in cases:
            with self.subTest(given=given), self.assertRaises(ValueError) as raised:
                rules_mine(now=NOW, **given)
            self.assertEqual(str(raised.exception), message)
        self.assertFalse(ModelVersion.objects.exists())

    def test_parameters_default_to_the_settings_then_the_built_in_values(self) -> None:
        defaults = {"min_support": 0.01, "min_confidence": 0.2, "min_lift": 1.0, "max_len": None, "days": None}
        self.assertEqual(rules_params(), defaults)
        self.assertEqual(rules_params(min_support=None, days=None), defaults)  # None: not given
        with override_settings(AFFINITY_RULES={"min_support": 0.3, "days": 90}):
            self.assertEqual(rules_params(), {**defaults, "min_support": 0.3, "days": 90})
            self.assertEqual(rules_params(min_support=0.05), {**defaults, "min_support": 0.05, "days": 90})

    def test_a_failed_run_is_recorded_and_keeps_the_champion(self) -> None:
        champion = rules_mine(now=NOW, **MINED)
        # An engine failure injected where only a pathological input could cause one.
        with (
            mock.patch("mlcore.affinity.frequent_itemsets", side_effect=MemoryError("itemsets too large")),
            self.assertRaises(MemoryError),
        ):
            rules_mine(now=NOW, min_support=0.001, min_confidence=0.5)

        failed = ModelVersion.objects.exclude(pk=champion.pk).get()
        self.assertEqual(
            (failed.status, failed.is_champion, failed.error, failed.trained_at, failed.metrics),
            ("failed", False, "MemoryError: itemsets too large", None, {}),
        )
        self.assertGreaterEqual(failed.duration_ms, 0)
        self.assertEqual(registry.champion_id("rules"), champion.pk)
        self.assertEqual(AssociationRule.objects.count(), 5)
        self.assertEqual(self.members({"sku": "butter"}), {"dan"})

    def test_the_task_mines_and_returns_the_metrics(self) -> None:
        result = association_rules_mine.apply(kwargs=MINED).get()
        version = ModelVersion.objects.get()
        self.assertEqual(
            result,
            {"model_version_id": version.pk, "baskets": 10, "items": 5, "itemsets": 8, "rules": 5, "rules_stored": 5},
        )
        self.assertTrue(version.is_champion)
        # bad parameters fail the task (logged by Celery) and record nothing
        with self.assertLogs("celery.app.trace", "ERROR"), self.assertRaises(ValueError) as raised:
            association_rules_mine.apply(kwargs={"min_support": 2}).get()
        self.assertEqual(str(raised.exception), "min_support must be a number in (0, 1]")
        self.assertEqual(ModelVersion.objects.count(), 1)


class AffinitySegmentTests(AffinityTestCase):
    def test_likely_buyers_bought_the_antecedents_and_never_the_item(self) -> None:
        rules_mine(now=NOW, **MINED)
        # bread → butter: bread buyers without butter are dan and eve (erased)
        self.assertEqual(self.members({"sku": "butter"}), {"dan"})
        # butter → bread and jam → bread: joe bought jam, never bread
        self.assertEqual(self.members({"sku": "bread"}), {"joe"})
        self.assertEqual(self.members({"sku": "milk"}), {"ivy"})  # cereal → milk
        self.assertEqual(self.members({"sku": "cereal"}), {"hal"})  # milk → cereal
        self.assertEqual(self.members({"sku": "jam"}), set())  # bread → jam has confidence 0.4
        self.assertEqual(self.members({"sku": "unknown"}), set())

    def test_the_filters(self) -> None:
        rules_mine(now=NOW, **MINED)
        # jam → bread has confidence 2/3 and lift 4/3; butter → bread 1.0 and 2.0
        self.assertEqual(self.members({"sku": "bread", "min_confidence": 0.6}), {"joe"})
        self.assertEqual(self.members({"sku": "bread", "min_confidence": 0.7}), set())
        self.assertEqual(self.members({"sku": "bread", "min_lift": 4 / 3}), {"joe"})
        self.assertEqual(self.members({"sku": "bread", "min_lift": 1.5}), set())
        # within_days counts back from now for the antecedents: ivy bought cereal 50 days ago
        self.assertEqual(self.members({"sku": "milk", "within_days": 50}), {"ivy"})
        self.assertEqual(self.members({"sku": "milk", "within_days": 49}), set())
        self.assertEqual(self.members({"sku": "butter", "within_days": 99}), set())  # dan: 100 days ago

    def test_every_item_agrees_with_the_pure_engine(self) -> None:
        version = rules_mine(now=NOW, min_support=0.1, min_confidence=0.3)
        rules = association_rules(frequent_itemsets([s for _n, s, _d in BASKETS.values()], 0.1), 0.3, 1.0)
        self.assertEqual(len(rules), version.metrics["rules"])
        bought: dict[str, set[str]] = {}
        for name, skus, _days in BASKETS.values():
            bought.setdefault(name, set()).update(skus)
        for sku in ["bread", "butter", "cereal", "jam", "milk"]:
            with self.subTest(sku=sku):
                self.assertEqual(self.members({"sku": sku}), set(likely_buyers(bought, rules, sku)) - {"eve"})

    def test_every_antecedent_item_is_needed_and_items_match_whole(self) -> None:
        # A hand-made champion: {bread, jam} → milk; cereal → milkshake (not milk);
        # butter → {cereal, milk} with a low confidence.
        version = ModelVersion.objects.create(task="rules", algorithm="hand", status="succeeded")
        registry.promote(version)
        for rank, (a, c, confidence, lift) in enumerate(
            [
                (["bread", "jam"], ["milk"], 0.9, 3.0),
                (["cereal"], ["milkshake"], 0.95, 4.0),
                (["butter"], ["cereal", "milk"], 0.4, 1.2),
            ],
            start=1,
        ):
            AssociationRule.objects.create(
                model_version=version,
                rank=rank,
                antecedents=a,
                consequents=c,
                antecedent_items=items_text(a),
                consequent_items=items_text(c),
                antecedent_support=0.1,
                consequent_support=0.1,
                support=0.1,
                confidence=confidence,
                lift=lift,
                leverage=0.0,
            )
        # bread and jam: cat (one order), dan (two lines of one order); ann bought bread and
        # joe jam only. butter: ann, ben, cat (eve is erased).
        self.assertEqual(self.members({"sku": "milk"}), {"ann", "ben", "cat", "dan"})
        self.assertEqual(self.members({"sku": "milk", "min_confidence": 0.5}), {"cat", "dan"})
        self.assertEqual(self.members({"sku": "milk", "min_lift": 2}), {"cat", "dan"})
        self.assertEqual(self.members({"sku": "milk", "within_days": 30}), {"ann", "ben", "cat"})
        self.assertEqual(self.members({"sku": "milkshake"}), {"fay", "gus", "ivy"})
        self.assertEqual(self.members({"sku": "cereal"}), {"ann", "ben", "cat"})
        # LIKE wildcards in a sku are plain characters
        self.assertEqual(self.members({"sku": "mil_"}), set())
        self.assertEqual(self.members({"sku": "%"}), set())

    # SQLite's LIKE ignores ASCII case, so there "MILK" picks the rules of "milk" (and
    # everyone who bought their antecedents but never the sku "MILK").
    def test_skus_are_case_sensitive(self) -> None:
        version = ModelVersion.objects.create(task="rules", algorithm="hand", status="succeeded")
        registry.promote(version)
        AssociationRule.objects.create(
            model_version=version,
            rank=1,
            antecedents=["bread"],
            consequents=["milk"],
            antecedent_items="|bread|",
            consequent_items="|milk|",
            antecedent_support=0.5,
            consequent_support=0.3,
            support=0.1,
            confidence=0.2,
            lift=1.0,
            leverage=0.0,
        )
        self.assertEqual(self.members({"sku": "milk"}), {"ann", "ben", "cat", "dan"})
        self.assertEqual(self.members({"sku": "MILK"}), set())

    def test_an_affinity_segment_is_empty_without_a_champion_then_fills(self) -> None:
        segment = segment_create(name="likely butter", kind=Segment.Kind.AFFINITY, definition={"sku": "butter"})
        result = segment_rebuild(segment.pk, now=NOW)
        self.assertEqual((result.entered, result.exited, result.members), (0, 0, 0))
        self.assertEqual(segment_preview({"sku": "butter"}, kind="affinity", now=NOW), {"count": 0, "sample": []})

        rules_mine(now=NOW, **MINED)

        result = segment_rebuild(segment.pk, now=NOW)
        self.assertEqual((result.entered, result.exited, result.members), (1, 0, 1))
        self.assertEqual(change_log(segment.pk), [("dan", "entered")])
        # dan buys butter: he leaves
        Touchpoint.objects.bulk_create(buy(self.customers["dan"], "o11", ["butter"], NOW))
        result = segment_rebuild(segment.pk, now=NOW)
        self.assertEqual((result.entered, result.exited, result.members), (0, 1, 0))
        self.assertEqual(change_log(segment.pk), [("dan", "entered"), ("dan", "exited")])

    def test_preview_of_an_affinity_definition(self) -> None:
        rules_mine(now=NOW, **MINED)
        dan = self.customers["dan"]
        self.assertEqual(
            segment_preview({"sku": "butter"}, kind="affinity", now=NOW),
            {"count": 1, "sample": [{"id": dan.pk, "external_id": "dan", "email": ""}]},
        )
        self.assertFalse(Segment.objects.filter(kind=Segment.Kind.AFFINITY).exists())

    def test_the_likely_buyers_leaf_in_a_rules_tree(self) -> None:
        rules_mine(now=NOW, **MINED)
        tree = {
            "any": [
                {"likely_buyers": {"sku": "butter"}},
                {"likely_buyers": {"sku": "milk"}},
                {"all": [{"likely_buyers": {"sku": "bread"}}, {"field": "external_id", "op": "ne", "value": "joe"}]},
            ]
        }
        self.assertEqual(validate_definition(tree), [])
        self.assertEqual(set(segment_customers(tree, now=NOW).values_list("external_id", flat=True)), {"dan", "ivy"})
        negated = segment_customers({"not": {"likely_buyers": {"sku": "butter"}}}, now=NOW)
        self.assertEqual(
            set(negated.values_list("external_id", flat=True)),
            {"ann", "ben", "cat", "fay", "gus", "hal", "ivy", "joe", "kim"},
        )

    def test_bad_affinity_definitions_have_pointers(self) -> None:
        with self.assertRaises(RuleInvalid) as raised:
            segment_create(
                name="bad",
                kind=Segment.Kind.AFFINITY,
                definition={"sku": " ", "min_confidence": 1.5, "min_lift": True, "within_days": 0, "top": 5},
            )
        self.assertEqual(
            errors(raised.exception),
            [
                ("/top", "unknown key"),
                ("/sku", "must be a non-empty string (the product whose buyers to find)"),
                ("/min_confidence", "must be a number between 0 and 1"),
                ("/min_lift", "must be a number >= 0"),
                ("/within_days", "must be a whole number from 1 to 36500"),
            ],
        )
        self.assertFalse(Segment.objects.filter(name="bad").exists())
        tree = {
            "all": [
                {"likely_buyers": {"sku": "a|b", "within_days": 36501}},
                {"likely_buyers": "butter"},
                {"likely_buyers": {}},
            ]
        }
        self.assertEqual(
            [(e.path, e.message) for e in validate_definition(tree)],
            [
                ("/all/0/likely_buyers/sku", "must not contain '|'"),
                ("/all/0/likely_buyers/within_days", "must be a whole number from 1 to 36500"),
                (
                    "/all/1/likely_buyers",
                    'must be an object {"sku": "…", "min_confidence"?, "min_lift"?, "within_days"?}',
                ),
                ("/all/2/likely_buyers/sku", "must be a non-empty string (the product whose buyers to find)"),
            ],
        )


# --- tasks and schedules ---------------------------------------------------------------


class ModelSegmentTaskTests(ClusterSegmentTestCase):
    def test_rebuild_all_includes_cluster_and_affinity_segments(self) -> None:
        rfm = list(Segment.objects.filter(name__startswith="RFM: ").order_by("pk").values_list("pk", flat=True))
        clustering_refresh(self.clustering.pk)
        clusters = [self.segment_of(name) for name in PLANTED]
        affinity = segment_create(name="likely A-1", kind=Segment.Kind.AFFINITY, definition={"sku": "A-1"})
        Segment.objects.create(name="list", kind=Segment.Kind.STATIC, definition={})
        with mock.patch.object(segment_rebuild_task, "delay") as delay:
            self.assertEqual(segment_rebuild_all.apply().get(), 14)
        self.assertEqual([call.args[0] for call in delay.call_args_list], [*rfm, *clusters, affinity.pk])

    def test_the_clustering_task_runs_a_refresh(self) -> None:
        result = clustering_refresh_task.apply(args=[self.clustering.pk]).get()
        version = ModelVersion.objects.get()
        self.assertEqual(
            (result["clustering_id"], result["model_version_id"], result["k"], result["customers"]),
            (self.clustering.pk, version.pk, 3, 24),
        )
        self.assertEqual(
            [(s["name"], s["members"], s["entered"]) for s in result["segments"]],
            [(f"Planted: {LABEL_OF[name]}", len(group(name)), len(group(name))) for name in PLANTED],
        )
        again = clustering_refresh_task.apply(args=[self.clustering.pk]).get()
        self.assertEqual([(s["entered"], s["exited"]) for s in again["segments"]], [(0, 0)] * 3)
        # a clustering deleted after the run was queued is nothing to do
        self.assertIsNone(clustering_refresh_task.apply(args=[10**9]).get())
        self.assertEqual(ModelVersion.objects.count(), 2)

    def test_refresh_all_queues_every_enabled_clustering(self) -> None:
        second = Clustering.objects.create(name="Second")
        Clustering.objects.create(name="Off", enabled=False)
        with mock.patch.object(clustering_refresh_task, "delay") as delay:
            self.assertEqual(clusterings_refresh_all.apply().get(), 2)
        self.assertEqual([call.args[0] for call in delay.call_args_list], [self.clustering.pk, second.pk])
        self.assertFalse(ModelVersion.objects.exists())

    def test_beat_runs_clusterings_and_rules_mining_nightly(self) -> None:
        for name, task, minute, hour in (
            ("clusterings-refresh-all", "campaigns.tasks.clusterings_refresh_all", "30", "3"),
            ("association-rules-mine", "mlcore.tasks.association_rules_mine", "0", "3"),
        ):
            periodic = PeriodicTask.objects.select_related("crontab").get(name=name)
            crontab = periodic.crontab
            self.assertEqual(
                (periodic.task, periodic.enabled, periodic.interval_id, str(crontab.timezone)),
                (task, True, None, "UTC"),
            )
            self.assertEqual(
                (crontab.minute, crontab.hour, crontab.day_of_week, crontab.day_of_month, crontab.month_of_year),
                (minute, hour, "*", "*", "*"),
            )
