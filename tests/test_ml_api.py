"""The model-output APIs: clusterings (CRUD, runs now or queued, profiles, deletes refused
while segments need them), association rules (the champion's by default, sku and threshold
filters, orderings, mining now or queued), model versions, and segments of the cluster and
affinity kinds. Bad input is a 400 naming the field, unknown ids a 404."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from unittest import mock

from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.models import Segment, SegmentMembership
from campaigns.tasks import clustering_refresh_task
from mlcore.models import AssociationRule, Clustering, CustomerCluster, ModelVersion, items_text
from mlcore.tasks import association_rules_mine
from tests.api_helpers import ApiTestCase, make_customer, make_touchpoint

# Two planted groups on two numeric attributes: 7 big spenders who visit often, 5 who do not.
BIG = [(900 + 10 * i, 20 + i) for i in range(7)]
SMALL = [(10 + 2 * i, 1 + i % 3) for i in range(5)]
FEATURES = ["attributes.spend", "attributes.visits"]


def plant_customers() -> tuple[list, list]:
    big = [make_customer(f"big-{i}", attributes={"spend": s, "visits": v}) for i, (s, v) in enumerate(BIG)]
    small = [make_customer(f"small-{i}", attributes={"spend": s, "visits": v}) for i, (s, v) in enumerate(SMALL)]
    return big, small


def make_clustering(**fields) -> Clustering:
    fields = {"name": "value", "features": FEATURES, "k": 2, "method": "kmeans", **fields}
    return Clustering.objects.create(**fields)


def rules_version(**fields) -> ModelVersion:
    fields = {"task": "rules", "algorithm": "eclat", "status": "succeeded", "trained_at": timezone.now(), **fields}
    return ModelVersion.objects.create(**fields)


def make_rule(version: ModelVersion, rank: int, antecedents: list[str], consequents: list[str], **numbers):
    numbers = {
        "support": 0.1,
        "confidence": 0.5,
        "lift": 2.0,
        "leverage": 0.05,
        "conviction": 1.5,
        "antecedent_support": 0.2,
        "consequent_support": 0.25,
        **numbers,
    }
    return AssociationRule.objects.create(
        model_version=version,
        rank=rank,
        antecedents=antecedents,
        consequents=consequents,
        antecedent_items=items_text(antecedents),
        consequent_items=items_text(consequents),
        **numbers,
    )


class ClusteringCrudTests(ApiTestCase):
    def test_it_needs_a_key(self) -> None:
        anonymous = APIClient()
        for method, path in (
            ("get", "/api/v1/clusterings"),
            ("post", "/api/v1/clusterings"),
            ("get", "/api/v1/association-rules"),
            ("post", "/api/v1/association-rules/mine"),
            ("get", "/api/v1/model-versions"),
        ):
            self.assertIn(getattr(anonymous, method)(path).status_code, (401, 403), path)

    def test_crud_with_and_without_trailing_slash(self) -> None:
        created = self.post_json(
            "/api/v1/clusterings",
            {"name": "value", "description": "by spend", "features": ["monetary", "attributes.spend"], "k": 3},
        )
        self.assertEqual(created.status_code, 201, created.json())
        body = created.json()
        pk = body["id"]
        self.assertEqual(
            {k: v for k, v in body.items() if k not in ("created_at", "updated_at")},
            {
                "id": pk,
                "name": "value",
                "description": "by spend",
                "features": ["monetary", "attributes.spend"],
                "k": 3,
                "method": "auto",
                "enabled": True,
                "champion": None,
                "segments": [],
            },
        )
        self.assertEqual([c["id"] for c in self.api.get("/api/v1/clusterings/").json()["results"]], [pk])
        self.assertEqual(self.api.get(f"/api/v1/clusterings/{pk}").json()["name"], "value")

        patched = self.api.patch(f"/api/v1/clusterings/{pk}/", {"k": None, "enabled": False}, format="json")
        self.assertEqual(patched.status_code, 200, patched.json())
        self.assertEqual((patched.json()["k"], patched.json()["enabled"]), (None, False))
        clustering = Clustering.objects.get(pk=pk)
        self.assertGreater(clustering.updated_at, clustering.created_at)

        put = self.api.put(f"/api/v1/clusterings/{pk}", {"name": "dense", "method": "dbscan"}, format="json")
        self.assertEqual(put.status_code, 200, put.json())
        self.assertEqual(
            Clustering.objects.values_list("name", "method", "k", "features").get(pk=pk),
            ("dense", "dbscan", None, ["monetary", "attributes.spend"]),
        )

        self.assertEqual(self.api.delete(f"/api/v1/clusterings/{pk}/").status_code, 204)
        self.assertFalse(Clustering.objects.exists())

    def test_bad_fields_are_400_with_their_paths_and_nothing_is_written(self) -> None:
        response = self.post_json(
            "/api/v1/clusterings",
            {"features": ["recency_days", "nope", 3, "attributes.bad key", "recency_days"], "k": 1, "method": "x"},
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json(),
            {
                "errors": [
                    {"row": None, "field": "name", "message": "This field is required."},
                    {
                        "row": None,
                        "field": "features",
                        "message": "item 1: unknown feature 'nope'; use one of recency_days, frequency, monetary, "
                        "tenure_days, days_since_seen, email_open_rate, email_click_rate, sms_open_rate, "
                        "sms_click_rate, push_open_rate, push_click_rate or attributes.<key>",
                    },
                    {"row": None, "field": "features", "message": "item 2: must be a string"},
                    {
                        "row": None,
                        "field": "features",
                        "message": "item 3: 'attributes.bad key' is not a valid attribute key",
                    },
                    {"row": None, "field": "features", "message": "features are listed more than once"},
                    {"row": None, "field": "k", "message": "Ensure this value is greater than or equal to 2."},
                    {"row": None, "field": "method", "message": '"x" is not a valid choice.'},
                ]
            },
        )
        for body, field, message in (
            ({"name": "a", "k": 51}, "k", "Ensure this value is less than or equal to 50."),
            ({"name": "a", "features": "monetary"}, "features", "must be a list of feature names"),
            (
                {"name": "a", "method": "dbscan", "k": 4},
                "k",
                "DBSCAN finds the number of clusters itself: leave k empty.",
            ),
        ):
            response = self.post_json("/api/v1/clusterings", body)
            self.assertEqual(response.status_code, 400, body)
            self.assertEqual(response.json()["errors"], [{"row": None, "field": field, "message": message}])
        self.assertFalse(Clustering.objects.exists())

    def test_a_change_is_checked_against_the_stored_method(self) -> None:
        clustering = make_clustering(method="dbscan", k=None)
        response = self.api.patch(f"/api/v1/clusterings/{clustering.pk}", {"k": 3}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["field"], "k")
        self.assertIsNone(Clustering.objects.get(pk=clustering.pk).k)

    def test_names_are_unique(self) -> None:
        make_clustering()
        response = self.post_json("/api/v1/clusterings", {"name": "value"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [{"row": None, "field": "name", "message": "is already taken"}])

    def test_unknown_clusterings_are_404(self) -> None:
        for method, path in (
            ("get", "/api/v1/clusterings/999999"),
            ("patch", "/api/v1/clusterings/999999"),
            ("delete", "/api/v1/clusterings/999999"),
            ("post", "/api/v1/clusterings/999999/run?wait=true"),
            ("get", "/api/v1/clusterings/999999/profiles"),
        ):
            response = getattr(self.api, method)(path)
            self.assertEqual(response.status_code, 404, path)
            self.assertEqual(response.json(), {"detail": "No Clustering matches the given query."})


class ClusteringRunTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.big, self.small = plant_customers()
        self.clustering = make_clustering()
        self.base = f"/api/v1/clusterings/{self.clustering.pk}"

    def run_now(self) -> dict:
        response = self.api.post(f"{self.base}/run?wait=true")
        self.assertEqual(response.status_code, 200, response.json())
        return response.json()

    def test_a_run_with_wait_finds_the_planted_groups_and_makes_a_segment_per_cluster(self) -> None:
        body = self.run_now()
        version = ModelVersion.objects.get(task="clusters", scope=f"clustering:{self.clustering.pk}")
        big_segment = Segment.objects.get(kind="cluster", definition__cluster=0)
        small_segment = Segment.objects.get(kind="cluster", definition__cluster=1)
        self.assertEqual(
            {k: body[k] for k in ("clustering_id", "model_version_id", "k", "customers")},
            {"clustering_id": self.clustering.pk, "model_version_id": version.pk, "k": 2, "customers": 12},
        )
        self.assertGreater(body["silhouette"], 0.8)
        self.assertEqual(
            body["segments"],
            [
                {
                    "segment_id": big_segment.pk,
                    "name": f"value: {big_segment.name.split(': ', 1)[1]}",
                    "cluster": 0,
                    "members": 7,
                    "entered": 7,
                    "exited": 0,
                },
                {
                    "segment_id": small_segment.pk,
                    "name": small_segment.name,
                    "cluster": 1,
                    "members": 5,
                    "entered": 5,
                    "exited": 0,
                },
            ],
        )
        self.assertEqual(
            set(SegmentMembership.objects.filter(segment=big_segment).values_list("customer_id", flat=True)),
            {c.pk for c in self.big},
        )
        self.assertEqual(
            {k for k in body if k.endswith("_s")}, {"features_s", "cluster_s", "store_s", "segments_s", "total_s"}
        )

        detail = self.api.get(self.base).json()
        self.assertEqual(
            detail["champion"],
            {
                "id": version.pk,
                "algorithm": "kmeans",
                "trained_at": detail["champion"]["trained_at"],
                "k": 2,
                "silhouette": body["silhouette"],
                "customers": 12,
            },
        )
        self.assertEqual(
            detail["segments"],
            [
                {"id": big_segment.pk, "name": big_segment.name, "cluster": 0, "member_count": 7},
                {"id": small_segment.pk, "name": small_segment.name, "cluster": 1, "member_count": 5},
            ],
        )
        listed = self.api.get("/api/v1/clusterings").json()["results"]
        self.assertEqual((listed[0]["champion"], listed[0]["segments"]), (detail["champion"], detail["segments"]))

    def test_profiles_describe_each_cluster_with_its_segment(self) -> None:
        self.run_now()
        version = ModelVersion.objects.get(task="clusters")
        segments = dict(Segment.objects.filter(kind="cluster").values_list("definition__cluster", "pk"))
        response = self.api.get(f"{self.base}/profiles/")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual((body["clustering_id"], body["model_version_id"]), (self.clustering.pk, version.pk))
        profiles = body["profiles"]
        self.assertEqual(
            [(p["cluster"], p["size"], round(p["share"], 4), p["segment_id"]) for p in profiles],
            [(0, 7, round(7 / 12, 4), segments[0]), (1, 5, round(5 / 12, 4), segments[1])],
        )
        self.assertEqual(profiles, [{**p, "segment_id": segments[p["cluster"]]} for p in version.result["profiles"]])
        spend = next(f for f in profiles[0]["features"] if f["feature"] == "attributes.spend")
        self.assertEqual(spend["mean"], sum(s for s, _ in BIG) / 7)
        self.assertEqual(spend["population_mean"], sum(s for s, _ in BIG + SMALL) / 12)
        self.assertIsNotNone(spend["word"])

    def test_a_cluster_segment_shows_its_profile_and_the_list_does_not(self) -> None:
        self.run_now()
        segment = Segment.objects.get(kind="cluster", definition__cluster=1)
        detail = self.api.get(f"/api/v1/segments/{segment.pk}").json()
        profile = detail["cluster_profile"]
        self.assertEqual(
            {k: profile[k] for k in ("clustering", "model_version_id", "cluster", "size", "label")},
            {
                "clustering": self.clustering.pk,
                "model_version_id": ModelVersion.objects.get(task="clusters").pk,
                "cluster": 1,
                "size": 5,
                "label": segment.name.split(": ", 1)[1],
            },
        )
        self.assertEqual(detail["definition"], {"clustering": self.clustering.pk, "cluster": 1})
        listed = self.api.get("/api/v1/segments?page_size=1000").json()["results"]
        self.assertTrue(all("cluster_profile" not in row for row in listed))

    def test_a_run_without_wait_is_queued_after_commit_with_its_task_id(self) -> None:
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.api.post(f"{self.base}/run/")
        self.assertEqual(response.status_code, 202)
        body = response.json()
        self.assertEqual(
            body,
            {
                "clustering_id": self.clustering.pk,
                "task_id": body["task_id"],
                "message": "Run queued; see champion on the clustering, or /api/v1/model-versions.",
            },
        )
        self.assertFalse(ModelVersion.objects.exists())  # nothing ran in the request
        self.assertEqual(len(callbacks), 1)
        with mock.patch.object(clustering_refresh_task, "apply_async") as apply_async:
            callbacks[0]()
        apply_async.assert_called_once_with(args=[self.clustering.pk], task_id=body["task_id"])

    def test_a_bad_wait_flag_is_400(self) -> None:
        response = self.api.post(f"{self.base}/run?wait=soon")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"], [{"row": None, "field": "wait", "message": "must be true or false"}]
        )

    def test_a_failed_run_is_409_recorded_and_changes_nothing(self) -> None:
        clustering = make_clustering(name="too many", k=20)
        response = self.api.post(f"/api/v1/clusterings/{clustering.pk}/run?wait=1")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(),
            {
                "detail": f"The run of clustering {clustering.pk} failed: k=20 needs 1 <= k <= 12 rows. It is "
                "recorded as a failed model version; the champion and the segments are unchanged."
            },
        )
        version = ModelVersion.objects.get()
        self.assertEqual(
            (version.status, version.is_champion, version.error),
            ("failed", False, "ValueError: k=20 needs 1 <= k <= 12 rows"),
        )
        self.assertFalse(Segment.objects.filter(kind="cluster").exists())
        self.assertFalse(CustomerCluster.objects.exists())

    def test_profiles_before_a_successful_run_are_404(self) -> None:
        response = self.api.get(f"{self.base}/profiles")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(
            response.json(),
            {"detail": f"Clustering {self.clustering.pk} has no successful run yet: POST {self.base}/run."},
        )

    def test_delete_is_refused_while_a_segment_needs_the_clustering(self) -> None:
        self.run_now()
        cluster_ids = sorted(Segment.objects.filter(kind="cluster").values_list("pk", flat=True))
        rules = Segment.objects.create(
            name="big and german",
            definition={"all": [{"cluster": {"clustering": self.clustering.pk, "in": [0]}}, {"consent": "email"}]},
        )
        response = self.api.delete(self.base)
        self.assertEqual(response.status_code, 409)
        used_by = ", ".join(map(str, [*cluster_ids, rules.pk]))
        self.assertEqual(
            response.json(),
            {
                "detail": f"Clustering {self.clustering.pk} is used by segment(s) {used_by}; delete those first, "
                "or disable the clustering to stop its runs."
            },
        )
        self.assertTrue(Clustering.objects.filter(pk=self.clustering.pk).exists())

        Segment.objects.filter(pk__in=[*cluster_ids, rules.pk]).delete()
        self.assertEqual(self.api.delete(self.base).status_code, 204)
        self.assertEqual((ModelVersion.objects.count(), CustomerCluster.objects.count()), (0, 0))


class ClusterAndAffinitySegmentTests(ApiTestCase):
    def test_cluster_definitions_are_checked_with_pointers(self) -> None:
        response = self.post_json(
            "/api/v1/segments",
            {"name": "c", "kind": "cluster", "definition": {"clustering": 999999, "cluster": "x", "k": 1}},
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json(),
            {
                "message": "The rule tree is invalid: 3 problem(s).",
                "errors": [
                    {"path": "/k", "message": "unknown key"},
                    {"path": "/clustering", "message": "unknown clustering 999999"},
                    {"path": "/cluster", "message": "must be a cluster number (0, 1, …; -1 for DBSCAN noise)"},
                ],
            },
        )
        self.assertFalse(Segment.objects.filter(kind="cluster").exists())

    def test_affinity_segments_are_created_previewed_and_have_no_profile(self) -> None:
        buyer = make_customer("buyer")
        make_touchpoint(buyer, "p1", "purchase", sku="A", order_id="o1")
        make_customer("other")
        version = rules_version(is_champion=True)
        make_rule(version, 1, ["A"], ["B"], confidence=0.6)

        response = self.post_json("/api/v1/segments/preview", {"kind": "affinity", "definition": {"sku": "B"}})
        self.assertEqual(response.status_code, 200, response.json())
        self.assertEqual(
            response.json(), {"count": 1, "sample": [{"id": buyer.pk, "external_id": "buyer", "email": ""}]}
        )
        bad = self.post_json(
            "/api/v1/segments/preview", {"kind": "affinity", "definition": {"sku": "B", "min_lift": -1}}
        )
        self.assertEqual(bad.json()["errors"], [{"path": "/min_lift", "message": "must be a number >= 0"}])

        created = self.post_json(
            "/api/v1/segments",
            {"name": "likely B", "kind": "affinity", "definition": {"sku": "B", "min_confidence": 0.5}},
        )
        self.assertEqual(created.status_code, 201, created.json())
        detail = self.api.get(f"/api/v1/segments/{created.json()['id']}").json()
        self.assertEqual((detail["kind"], detail["cluster_profile"]), ("affinity", None))
        rebuilt = self.api.post(f"/api/v1/segments/{created.json()['id']}/rebuild?wait=true")
        self.assertEqual((rebuilt.status_code, rebuilt.json()["members"]), (200, 1))

    def test_only_rules_segments_are_explained(self) -> None:
        make_customer("ann")
        segment = Segment.objects.create(name="likely B", kind="affinity", definition={"sku": "B"})
        response = self.api.get(f"/api/v1/segments/{segment.pk}/explain?customer=ann")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [{"path": "", "message": "only rules segments can be explained, not affinity segments"}],
        )

    def test_a_checkpoint_that_is_no_whole_number_is_400(self) -> None:
        segment = Segment.objects.create(name="likely B", kind="affinity", definition={"sku": "B"})
        for value in ("²", "-1", str(2**63)):
            response = self.api.get(f"/api/v1/segments/{segment.pk}/changes", {"after": value})
            self.assertEqual(response.status_code, 400, value)
            self.assertEqual(
                response.json()["errors"],
                [{"row": None, "field": "after", "message": "must be a change id (a whole number >= 0)"}],
            )

    def test_the_schema_documents_each_kind_of_definition(self) -> None:
        import yaml

        schema = yaml.safe_load(self.api.get("/api/schema/").content)
        definition = schema["components"]["schemas"]["Segment"]["properties"]["definition"]
        self.assertEqual(
            [shape["$ref"].rsplit("/", 1)[1] for shape in definition["oneOf"]],
            ["SegmentRuleNode", "SegmentClusterDefinition", "SegmentAffinityDefinition"],
        )
        components = schema["components"]["schemas"]
        self.assertEqual(components["SegmentClusterDefinition"]["required"], ["clustering", "cluster"])
        self.assertEqual(components["SegmentAffinityDefinition"]["required"], ["sku"])
        self.assertIn("cluster_profile", components["SegmentDetail"]["properties"])
        self.assertEqual(components["Clustering"]["properties"]["features"]["items"], {"type": "string"})
        for path in (
            "/api/v1/clusterings/{id}/run",
            "/api/v1/clusterings/{id}/profiles",
            "/api/v1/association-rules",
            "/api/v1/association-rules/mine",
            "/api/v1/model-versions/{id}",
        ):
            self.assertIn(path, schema["paths"])


class AssociationRuleApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.old = rules_version()
        self.old_rule = make_rule(self.old, 1, ["A-1"], ["C"])
        self.champion = rules_version(is_champion=True)
        self.r1 = make_rule(self.champion, 1, ["A-1"], ["B"], support=0.05, confidence=0.9, lift=4.0)
        self.r2 = make_rule(self.champion, 2, ["A-10", "B"], ["C"], support=0.2, confidence=0.4, lift=3.0)
        self.r3 = make_rule(self.champion, 3, ["C"], ["A-1"], support=0.1, confidence=0.7, lift=1.5, conviction=None)

    def ids(self, query: str = "") -> list[int]:
        response = self.api.get(f"/api/v1/association-rules{query}")
        self.assertEqual(response.status_code, 200, response.json())
        return [row["id"] for row in response.json()["results"]]

    def test_it_lists_the_champions_rules_by_rank(self) -> None:
        response = self.api.get("/api/v1/association-rules/")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual((body["count"], body["next"], body["previous"]), (3, None, None))
        self.assertEqual([row["id"] for row in body["results"]], [self.r1.pk, self.r2.pk, self.r3.pk])
        self.assertEqual(
            body["results"][1],
            {
                "id": self.r2.pk,
                "rank": 2,
                "antecedents": ["A-10", "B"],
                "consequents": ["C"],
                "support": 0.2,
                "confidence": 0.4,
                "lift": 3.0,
                "leverage": 0.05,
                "conviction": 1.5,
                "antecedent_support": 0.2,
                "consequent_support": 0.25,
                "model_version": self.champion.pk,
            },
        )
        self.assertIsNone(body["results"][2]["conviction"])
        self.assertEqual(self.api.get(f"/api/v1/association-rules/{self.old_rule.pk}").json()["consequents"], ["C"])

    def test_another_version_on_request(self) -> None:
        self.assertEqual(self.ids(f"?model_version={self.old.pk}"), [self.old_rule.pk])
        response = self.api.get("/api/v1/association-rules?model_version=999999")
        self.assertEqual(
            (response.status_code, response.json()), (404, {"detail": "Model version 999999 does not exist."})
        )
        clusters = ModelVersion.objects.create(task="clusters", scope="clustering:1", algorithm="kmeans")
        for value, message in (
            ("abc", "must be an id (a whole number >= 1)"),
            ("0", "must be an id (a whole number >= 1)"),
            ("²", "must be an id (a whole number >= 1)"),  # a digit to str.isdigit(), not to int()
            (str(clusters.pk), f"Model version {clusters.pk} is a clusters version, not a rules version."),
        ):
            response = self.api.get(f"/api/v1/association-rules?model_version={value}")
            self.assertEqual(response.status_code, 400, value)
            self.assertEqual(response.json()["errors"], [{"row": None, "field": "model_version", "message": message}])

    def test_sku_filters_match_whole_items(self) -> None:
        self.assertEqual(self.ids("?item=A-1"), [self.r1.pk, self.r3.pk])
        self.assertEqual(self.ids("?item=A-10"), [self.r2.pk])
        self.assertEqual(self.ids("?antecedent=A-1"), [self.r1.pk])
        self.assertEqual(self.ids("?consequent=A-1"), [self.r3.pk])
        self.assertEqual(self.ids("?antecedent=B&consequent=C"), [self.r2.pk])
        self.assertEqual(self.ids("?item=A"), [])
        self.assertEqual(self.ids("?item=a%25"), [])  # LIKE wildcards are literal

    def test_threshold_filters_and_orderings(self) -> None:
        self.assertEqual(self.ids("?min_support=0.1"), [self.r2.pk, self.r3.pk])
        self.assertEqual(self.ids("?min_confidence=0.7"), [self.r1.pk, self.r3.pk])
        self.assertEqual(self.ids("?min_lift=3"), [self.r1.pk, self.r2.pk])
        self.assertEqual(self.ids("?ordering=-confidence"), [self.r1.pk, self.r3.pk, self.r2.pk])
        self.assertEqual(self.ids("?ordering=-support"), [self.r2.pk, self.r3.pk, self.r1.pk])
        self.assertEqual(self.ids("?ordering=rank&min_lift=2"), [self.r1.pk, self.r2.pk])

    def test_bad_filters_are_400_naming_them(self) -> None:
        response = self.api.get("/api/v1/association-rules?min_lift=high&ordering=lift&item=a|b")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                {"row": None, "field": "item", "message": "A sku cannot contain '|'."},
                {"row": None, "field": "min_lift", "message": "Enter a number."},
                {
                    "row": None,
                    "field": "ordering",
                    "message": "Select a valid choice. lift is not one of the available choices.",
                },
            ],
        )

    def test_pages(self) -> None:
        body = self.api.get("/api/v1/association-rules?page_size=2").json()
        self.assertEqual((body["count"], [r["id"] for r in body["results"]]), (3, [self.r1.pk, self.r2.pk]))
        second = self.api.get(body["next"]).json()
        self.assertEqual([r["id"] for r in second["results"]], [self.r3.pk])

    def test_before_the_first_run_the_list_is_empty(self) -> None:
        ModelVersion.objects.all().delete()
        self.assertEqual(self.api.get("/api/v1/association-rules").json()["results"], [])
        self.assertEqual(self.api.get("/api/v1/association-rules/999999").status_code, 404)


class RulesMineApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        # 10 orders: 6 of {A, B}, 2 of {A}, 2 of {C}.
        ann = make_customer("ann")
        for order in range(10):
            skus = ["A", "B"] if order < 6 else ["A"] if order < 8 else ["C"]
            for sku in skus:
                make_touchpoint(ann, f"{order}-{sku}", "purchase", order_id=f"o{order}", sku=sku, revenue=Decimal(1))

    def test_mining_with_wait_stores_the_rules_as_the_champion(self) -> None:
        response = self.post_json(
            "/api/v1/association-rules/mine?wait=true", {"min_support": 0.2, "min_confidence": 0.5}
        )
        self.assertEqual(response.status_code, 200, response.json())
        version = ModelVersion.objects.get(task="rules")
        body = response.json()
        self.assertEqual(
            {k: body[k] for k in ("id", "task", "scope", "algorithm", "status", "is_champion", "params", "metrics")},
            {
                "id": version.pk,
                "task": "rules",
                "scope": "",
                "algorithm": "eclat",
                "status": "succeeded",
                "is_champion": True,
                "params": {"min_support": 0.2, "min_confidence": 0.5, "min_lift": 1.0, "max_len": None, "days": None},
                "metrics": {"baskets": 10, "items": 3, "itemsets": 4, "rules": 2, "rules_stored": 2},
            },
        )
        rules = self.api.get("/api/v1/association-rules").json()["results"]
        self.assertEqual(
            [
                (r["rank"], r["antecedents"], r["consequents"], round(r["confidence"], 6), round(r["lift"], 6))
                for r in rules
            ],
            [(1, ["B"], ["A"], 1.0, 1.25), (2, ["A"], ["B"], 0.75, 1.25)],
        )

    def test_mining_is_queued_after_commit_with_the_parameters_it_will_use(self) -> None:
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.post_json("/api/v1/association-rules/mine", {"min_lift": 1.5, "days": 30, "max_len": None})
        self.assertEqual(response.status_code, 202)
        body = response.json()
        params = {"min_support": 0.01, "min_confidence": 0.2, "min_lift": 1.5, "max_len": None, "days": 30}
        self.assertEqual(
            body,
            {"task_id": body["task_id"], "params": params, "message": "Rules run queued; see /api/v1/model-versions."},
        )
        self.assertFalse(ModelVersion.objects.exists())
        with mock.patch.object(association_rules_mine, "apply_async") as apply_async:
            (callback,) = callbacks
            callback()
        apply_async.assert_called_once_with(kwargs=params, task_id=body["task_id"])
        # An empty body takes every default.
        with self.captureOnCommitCallbacks(execute=False):
            self.assertEqual(self.api.post("/api/v1/association-rules/mine").json()["params"]["min_lift"], 1.0)

    def test_bad_parameters_are_400_naming_each_and_nothing_is_queued(self) -> None:
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.post_json(
                "/api/v1/association-rules/mine?wait=true",
                {"min_support": 0, "min_confidence": True, "min_lift": -1, "max_len": 1.5, "days": "7", "top": 5},
            )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                {"row": None, "field": "min_support", "message": "must be a number in (0, 1]"},
                {"row": None, "field": "min_confidence", "message": "must be a number, not true or false"},
                {"row": None, "field": "min_lift", "message": "must be a number >= 0"},
                {"row": None, "field": "max_len", "message": "must be a whole number >= 1"},
                {"row": None, "field": "days", "message": "must be a whole number >= 1"},
                {"row": None, "field": "top", "message": "Unknown field."},
            ],
        )
        self.assertEqual((callbacks, ModelVersion.objects.count()), ([], 0))
        response = self.post_json("/api/v1/association-rules/mine", [0.1])
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"], [{"row": None, "field": None, "message": "The body must be a JSON object."}]
        )


class ModelVersionApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        now = timezone.now()
        self.clusters = ModelVersion.objects.create(
            task="clusters",
            scope="clustering:7",
            algorithm="kmeans",
            status="succeeded",
            is_champion=True,
            metrics={"k": 3},
            result={"profiles": []},
            trained_at=now,
            duration_ms=1200,
        )
        self.failed = ModelVersion.objects.create(
            task="clusters", scope="clustering:7", algorithm="kmeans", status="failed", error="ValueError: k"
        )
        self.rules = rules_version(is_champion=True, trained_at=now + timedelta(seconds=1))

    def ids(self, query: str = "") -> list[int]:
        response = self.api.get(f"/api/v1/model-versions{query}")
        self.assertEqual(response.status_code, 200, response.json())
        return [row["id"] for row in response.json()["results"]]

    def test_it_lists_newest_first_with_filters(self) -> None:
        self.assertEqual(self.ids(), [self.rules.pk, self.failed.pk, self.clusters.pk])
        self.assertEqual(self.ids("?task=clusters"), [self.failed.pk, self.clusters.pk])
        self.assertEqual(self.ids("?scope=clustering:7&status=succeeded"), [self.clusters.pk])
        self.assertEqual(self.ids("?is_champion=true"), [self.rules.pk, self.clusters.pk])
        self.assertEqual(self.ids("?is_champion=false"), [self.failed.pk])
        row = self.api.get("/api/v1/model-versions?status=failed").json()["results"][0]
        self.assertEqual(
            {k: row[k] for k in ("task", "scope", "status", "is_champion", "error", "duration_ms")},
            {
                "task": "clusters",
                "scope": "clustering:7",
                "status": "failed",
                "is_champion": False,
                "error": "ValueError: k",
                "duration_ms": None,
            },
        )
        self.assertNotIn("result", row)

    def test_bad_filters_are_400(self) -> None:
        response = self.api.get("/api/v1/model-versions?task=magic&status=done")
        self.assertEqual(response.status_code, 400)
        self.assertEqual([error["field"] for error in response.json()["errors"]], ["task", "status"])

    def test_a_version_with_its_result_and_unknown_ones_are_404(self) -> None:
        body = self.api.get(f"/api/v1/model-versions/{self.clusters.pk}/").json()
        self.assertEqual(
            {k: body[k] for k in ("id", "metrics", "result", "duration_ms", "is_champion")},
            {
                "id": self.clusters.pk,
                "metrics": {"k": 3},
                "result": {"profiles": []},
                "duration_ms": 1200,
                "is_champion": True,
            },
        )
        response = self.api.get("/api/v1/model-versions/999999")
        self.assertEqual(
            (response.status_code, response.json()), (404, {"detail": "No ModelVersion matches the given query."})
        )
