"""The segments API: CRUD with validated rule trees (400 with JSON Pointers), preview
without saving, explain, trailing slashes, authentication."""

from __future__ import annotations

from rest_framework.test import APIClient

from campaigns.models import Segment
from mlcore.models import Clustering
from tests.api_helpers import ApiTestCase, make_customer

DE = {"field": "country", "op": "eq", "value": "DE"}


class SegmentApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.alice = make_customer("alice", email="alice@example.com", country="DE", email_opt_in=True)
        self.bob = make_customer("bob", email="bob@example.com", country="FR")
        self.rfm_segment_ids = list(Segment.objects.filter(name__startswith="RFM: ").values_list("pk", flat=True))
        self.assertEqual(len(self.rfm_segment_ids), 10)
        self.assertEqual(Segment.objects.count(), 10)

    def test_it_needs_a_key(self) -> None:
        self.assertIn(APIClient().get("/api/v1/segments").status_code, (401, 403))
        self.assertIn(APIClient().post("/api/v1/segments/preview", {}, format="json").status_code, (401, 403))

    def test_crud_with_and_without_trailing_slash(self) -> None:
        created = self.post_json("/api/v1/segments", {"name": "germans", "definition": DE})
        self.assertEqual(created.status_code, 201, created.json())
        body = created.json()
        self.assertEqual(
            {k: body[k] for k in ("name", "description", "kind", "definition")},
            {"name": "germans", "description": "", "kind": "rules", "definition": DE},
        )
        pk = body["id"]
        # the list holds the ready-made RFM segments of migration 0004, then this one
        listed = self.api.get("/api/v1/segments/").json()["results"]
        self.assertEqual([row["id"] for row in listed], [*self.rfm_segment_ids, pk])
        self.assertEqual(self.api.get(f"/api/v1/segments/{pk}").json()["name"], "germans")
        self.assertEqual(self.api.get(f"/api/v1/segments/{pk}/").json()["name"], "germans")

        patched = self.api.patch(f"/api/v1/segments/{pk}/", {"description": "DE only"}, format="json")
        self.assertEqual((patched.status_code, patched.json()["description"]), (200, "DE only"))
        put = self.api.put(
            f"/api/v1/segments/{pk}", {"name": "french", "definition": {**DE, "value": "FR"}}, format="json"
        )
        self.assertEqual(put.status_code, 200, put.json())
        self.assertEqual(Segment.objects.get(pk=pk).definition["value"], "FR")

        self.assertEqual(self.api.delete(f"/api/v1/segments/{pk}/").status_code, 204)
        self.assertEqual(list(Segment.objects.values_list("pk", flat=True)), self.rfm_segment_ids)

    def test_a_bad_tree_is_400_with_pointers_and_nothing_is_written(self) -> None:
        response = self.post_json(
            "/api/v1/segments/",
            {"name": "bad", "definition": {"all": [DE, {"field": "attributes.age", "op": "gt", "value": [1]}]}},
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json(),
            {
                "message": "The rule tree is invalid: 1 problem(s).",
                "errors": [
                    {"path": "/all/1/value", "message": "an attribute is compared with a string, a number or a boolean"}
                ],
            },
        )
        self.assertEqual(list(Segment.objects.values_list("pk", flat=True)), self.rfm_segment_ids)

    def test_an_update_that_makes_a_cycle_is_refused(self) -> None:
        a = Segment.objects.create(name="a", definition=DE)
        b = Segment.objects.create(name="b", definition={"segment": a.pk})
        response = self.api.patch(f"/api/v1/segments/{a.pk}", {"definition": {"segment": b.pk}}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [{"path": "/segment", "message": f"segment reference cycle: {a.pk} → {b.pk} → {a.pk}"}],
        )
        self.assertEqual(Segment.objects.get(pk=a.pk).definition, DE)
        # a segment another one refers to cannot be deleted
        self.assertEqual(self.api.delete(f"/api/v1/segments/{a.pk}").status_code, 409)

    def test_names_are_unique(self) -> None:
        Segment.objects.create(name="germans", definition=DE)
        response = self.post_json("/api/v1/segments", {"name": "germans", "definition": DE})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [{"row": None, "field": "name", "message": "is already taken"}])
        self.assertEqual(Segment.objects.filter(name="germans").count(), 1)

    def test_kinds_without_a_definition_language_are_refused(self) -> None:
        response = self.post_json("/api/v1/segments", {"name": "k", "kind": "static", "definition": {}})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                {
                    "path": "",
                    "message": "static segments cannot be defined yet; only rules, cluster and affinity segments",
                }
            ],
        )
        self.assertFalse(Segment.objects.filter(name="k").exists())

    def test_cluster_and_affinity_definitions_are_validated(self) -> None:
        clustering = Clustering.objects.create(name="value")
        response = self.post_json("/api/v1/segments", {"name": "k", "kind": "cluster", "definition": {}})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                {"path": "", "message": "clustering is required"},
                {"path": "", "message": "cluster is required (null for nobody)"},
            ],
        )
        response = self.post_json(
            "/api/v1/segments", {"name": "k", "kind": "affinity", "definition": {"sku": "", "min_lift": -1}}
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                {"path": "/sku", "message": "must be a non-empty string (the product whose buyers to find)"},
                {"path": "/min_lift", "message": "must be a number >= 0"},
            ],
        )
        self.assertFalse(Segment.objects.filter(name="k").exists())

        cluster = {"clustering": clustering.pk, "cluster": 0}
        created = self.post_json("/api/v1/segments", {"name": "k", "kind": "cluster", "definition": cluster})
        self.assertEqual(created.status_code, 201, created.json())
        self.assertEqual((created.json()["kind"], created.json()["definition"]), ("cluster", cluster))
        created = self.post_json("/api/v1/segments", {"name": "a", "kind": "affinity", "definition": {"sku": "A-1"}})
        self.assertEqual(created.status_code, 201, created.json())
        self.assertEqual((created.json()["kind"], created.json()["definition"]), ("affinity", {"sku": "A-1"}))

    def test_preview_counts_and_samples_without_saving(self) -> None:
        for path in ("/api/v1/segments/preview", "/api/v1/segments/preview/"):
            response = self.post_json(path, {"kind": "rules", "definition": {"any": [DE, {"consent": "email"}]}})
            self.assertEqual(response.status_code, 200, response.json())
            self.assertEqual(
                response.json(),
                {"count": 1, "sample": [{"id": self.alice.pk, "external_id": "alice", "email": "alice@example.com"}]},
            )
        self.assertEqual(list(Segment.objects.values_list("pk", flat=True)), self.rfm_segment_ids)

    def test_preview_of_a_bad_tree_is_400(self) -> None:
        response = self.post_json("/api/v1/segments/preview", {"definition": {"any": [{"consent": "fax"}]}})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"], [{"path": "/any/0/consent", "message": "must be one of: email, sms, push"}]
        )

    def test_explain_by_external_or_numeric_id(self) -> None:
        segment = Segment.objects.create(name="germans", definition=DE)
        response = self.api.get(f"/api/v1/segments/{segment.pk}/explain/?customer=alice")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {
                "customer": {"id": self.alice.pk, "external_id": "alice"},
                "member": True,
                "erased": False,
                "tree": {"node": DE, "path": "", "result": True, "actual": "DE", "children": []},
            },
        )
        response = self.api.get(f"/api/v1/segments/{segment.pk}/explain?customer={self.bob.pk}")
        self.assertEqual((response.json()["member"], response.json()["tree"]["actual"]), (False, "FR"))
        self.assertEqual(self.api.get(f"/api/v1/segments/{segment.pk}/explain?customer=nobody").status_code, 404)
        self.assertEqual(self.api.get(f"/api/v1/segments/{segment.pk}/explain").status_code, 400)


class SegmentAdminFormTests(ApiTestCase):
    def test_the_rule_editor_shows_every_problem_with_its_path(self) -> None:
        from campaigns.admin import SegmentForm

        form = SegmentForm(data={"name": "x", "kind": "rules", "definition": '{"any": [{"consent": "fax"}]}'})
        self.assertFalse(form.is_valid())
        self.assertEqual(form.errors["definition"], ["/any/0/consent: must be one of: email, sms, push"])
        form = SegmentForm(data={"name": "x", "kind": "rules", "definition": '{"consent": "email"}'})
        self.assertTrue(form.is_valid(), form.errors)
        self.assertEqual(form.save().definition, {"consent": "email"})
