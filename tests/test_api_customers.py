"""The customers API: list, filters, cursor pagination, single create/update through the
ingest rules, erase, export, bulk upsert, and the request-shape errors of the API."""

from __future__ import annotations

import io
import tempfile
from datetime import timedelta
from pathlib import Path

import yaml
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from marketing.models import Customer, ErasedIdentity, Touchpoint
from tests.api_helpers import T0, ApiTestCase, make_customer, make_touchpoint

CUSTOMER_FIELDS = {
    "id",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "timezone",
    "locale",
    "attributes",
    "email_opt_in",
    "email_opt_in_at",
    "email_opt_in_source",
    "sms_opt_in",
    "sms_opt_in_at",
    "sms_opt_in_source",
    "push_opt_in",
    "push_opt_in_at",
    "push_opt_in_source",
    "unsubscribed",
    "unsubscribed_at",
    "is_stub",
    "erased_at",
    "created_at",
    "updated_at",
    "last_seen_at",
    "rfm",
}


class CustomerReadTests(ApiTestCase):
    def test_it_lists_customers_with_explicit_fields(self):
        ann = make_customer(
            "c1",
            email="ann@example.com",
            first_name="Ann",
            email_opt_in=True,
            email_opt_in_at=T0,
            email_opt_in_source="crm",
        )
        response = self.api.get("/api/v1/customers")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(set(body), {"next", "previous", "results"})
        self.assertEqual(len(body["results"]), 1)
        row = body["results"][0]
        self.assertEqual(set(row), CUSTOMER_FIELDS)
        self.assertEqual(row["id"], ann.id)
        self.assertEqual(row["email"], "ann@example.com")
        self.assertEqual(row["email_opt_in"], True)
        self.assertEqual(row["email_opt_in_at"], "2026-11-01T10:00:00Z")
        self.assertEqual(row["email_opt_in_source"], "crm")
        self.assertEqual(row["unsubscribed"], False)
        self.assertEqual(row["is_stub"], False)
        self.assertIsNone(row["erased_at"])

    def test_it_gets_a_customer_by_id(self):
        ann = make_customer("c1", first_name="Ann")
        response = self.api.get(f"/api/v1/customers/{ann.id}")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["external_id"], "c1")

    def test_an_unknown_or_non_numeric_id_is_a_json_404(self):
        for path in ("/api/v1/customers/999999", "/api/v1/customers/abc"):
            response = self.api.get(path)
            self.assertEqual(response.status_code, 404, path)
            self.assertEqual(response["Content-Type"], "application/json")

    def test_the_cursor_walks_every_customer_once_in_id_order(self):
        ids = [make_customer(f"c{i}").id for i in range(5)]
        seen, pages = [], 0
        url = "/api/v1/customers?page_size=2"
        while url:
            body = self.api.get(url).json()
            seen.extend(row["id"] for row in body["results"])
            pages += 1
            url = body["next"]
            # A customer created while paging appears on a later page, not a repeated one.
            if pages == 1:
                ids.append(make_customer("late").id)
        self.assertEqual(seen, ids)
        self.assertEqual(pages, 3)

    def test_a_bad_cursor_is_a_404_not_a_500(self):
        response = self.api.get("/api/v1/customers?cursor=garbage")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), {"detail": "Invalid cursor"})

    def test_filters(self):
        now = timezone.now()
        ann = make_customer("c1", email="Ann@Example.com", country="DE", email_opt_in=True, last_seen_at=now)
        bob = make_customer("c2", email="bob@example.com", country="FR", sms_opt_in=True, unsubscribed_at=now)
        stub = make_customer("c3", is_stub=True, push_opt_in=True, last_seen_at=now - timedelta(days=30))
        gone = make_customer("erased:0", erased_at=now)
        Customer.objects.filter(pk=ann.pk).update(updated_at=now - timedelta(days=2))

        def ids(query: str) -> list[int]:
            response = self.api.get(f"/api/v1/customers?{query}")
            self.assertEqual(response.status_code, 200, response.content)
            return [row["id"] for row in response.json()["results"]]

        self.assertEqual(ids("email=ann@example.COM"), [ann.id])
        self.assertEqual(ids("external_id=c2"), [bob.id])
        self.assertEqual(ids("country=de"), [ann.id])
        self.assertEqual(ids("email_opt_in=true"), [ann.id])
        self.assertEqual(ids("sms_opt_in=true"), [bob.id])
        self.assertEqual(ids("push_opt_in=true"), [stub.id])
        self.assertEqual(ids("email_opt_in=false"), [bob.id, stub.id, gone.id])
        self.assertEqual(ids("unsubscribed=true"), [bob.id])
        self.assertEqual(ids("is_stub=true"), [stub.id])
        self.assertEqual(ids("erased=true"), [gone.id])
        self.assertEqual(ids("erased=false"), [ann.id, bob.id, stub.id])
        since = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
        self.assertEqual(ids(f"updated_after={since}"), [bob.id, stub.id, gone.id])
        self.assertEqual(ids(f"last_seen_after={since}"), [ann.id])
        self.assertEqual(ids("country=DE&email_opt_in=false"), [])

    def test_a_bad_filter_value_is_a_400_naming_the_filter(self):
        response = self.api.get("/api/v1/customers?updated_after=yesterday")
        self.assertEqual(response.status_code, 400)
        self.assertEqual([e["field"] for e in response.json()["errors"]], ["updated_after"])


class CustomerWriteTests(ApiTestCase):
    def test_it_creates_a_customer(self):
        response = self.post_json(
            "/api/v1/customers",
            {
                "external_id": "c1",
                "email": "Ann@Example.com",
                "phone": "+14155550123",
                "first_name": "Ann",
                "country": "de",
                "timezone": "Europe/Berlin",
                "attributes": {"tier": "gold"},
                "email_opt_in": True,
            },
        )
        self.assertEqual(response.status_code, 201, response.content)
        body = response.json()
        customer = Customer.objects.get()
        self.assertEqual(body["id"], customer.id)
        self.assertEqual(body["email"], "ann@example.com")
        self.assertEqual(body["country"], "DE")
        self.assertEqual(body["attributes"], {"tier": "gold"})
        self.assertTrue(body["email_opt_in"])
        self.assertEqual(body["email_opt_in_source"], "api:crm")
        self.assertIsNotNone(body["email_opt_in_at"])
        self.assertFalse(body["sms_opt_in"])

    def test_creating_an_existing_external_id_updates_it_with_200(self):
        stub = make_customer("c1", is_stub=True)
        response = self.post_json("/api/v1/customers", {"external_id": "c1", "first_name": "Ann"})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["id"], stub.id)
        self.assertEqual(Customer.objects.count(), 1)
        stub.refresh_from_db()
        self.assertEqual(stub.first_name, "Ann")

    def test_an_integer_external_id_is_stored_as_text(self):
        response = self.post_json("/api/v1/customers", {"external_id": 42})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(response.json()["external_id"], "42")

    def test_create_applies_the_bulk_rules_and_writes_nothing_on_bad_fields(self):
        response = self.post_json(
            "/api/v1/customers", {"external_id": "c1", "email": "not-an-email", "phone": "555", "age": 3}
        )
        self.assertEqual(response.status_code, 400)
        errors = response.json()["errors"]
        self.assertEqual(
            sorted((e["row"], e["field"]) for e in errors),
            [(None, "age"), (None, "email"), (None, "phone")],
        )
        self.assertEqual(Customer.objects.count(), 0)

    def test_create_needs_an_external_id(self):
        response = self.post_json("/api/v1/customers", {"email": "ann@example.com"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [{"row": None, "field": "external_id", "message": "is required"}])
        self.assertEqual(Customer.objects.count(), 0)

    def test_create_refuses_an_erased_external_id(self):
        ErasedIdentity.objects.create(external_id_sha256=__import__("hashlib").sha256(b"c1").hexdigest())
        response = self.post_json("/api/v1/customers", {"external_id": "c1"})
        self.assertEqual(response.status_code, 400)
        [error] = response.json()["errors"]
        self.assertEqual(error["field"], "external_id")
        self.assertIn("erased", error["message"])
        self.assertEqual(Customer.objects.count(), 0)

    def test_wrong_json_shapes_are_400s(self):
        for body in ([{"external_id": "c1"}], "c1", 7):
            response = self.post_json("/api/v1/customers", body)
            self.assertEqual(response.status_code, 400, body)
            self.assertEqual(response.json()["errors"][0]["message"], "The body must be a JSON object.")
        self.assertEqual(Customer.objects.count(), 0)

    def test_patch_changes_only_what_is_sent(self):
        ann = make_customer(
            "c1", email="ann@example.com", first_name="Ann", last_name="Lee", attributes={"a": 1, "b": 2}
        )
        response = self.api.patch(
            f"/api/v1/customers/{ann.id}",
            {"first_name": "Anne", "last_name": None, "attributes": {"b": None, "c": 3}},
            format="json",
        )
        self.assertEqual(response.status_code, 200, response.content)
        ann.refresh_from_db()
        self.assertEqual((ann.email, ann.first_name, ann.last_name), ("ann@example.com", "Anne", ""))
        self.assertEqual(ann.attributes, {"a": 1, "c": 3})
        self.assertEqual(response.json()["attributes"], {"a": 1, "c": 3})

    def test_patch_validates_like_bulk(self):
        ann = make_customer("c1", email="ann@example.com")
        response = self.api.patch(f"/api/v1/customers/{ann.id}", {"email_opt_in": "yes"}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [{"row": None, "field": "email_opt_in", "message": "must be true, false or null"}],
        )
        ann.refresh_from_db()
        self.assertFalse(ann.email_opt_in)

    def test_the_external_id_cannot_be_changed(self):
        ann = make_customer("c1")
        response = self.api.patch(f"/api/v1/customers/{ann.id}", {"external_id": "c2"}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["field"], "external_id")
        self.assertEqual(list(Customer.objects.values_list("external_id", flat=True)), ["c1"])
        # Sending the same one is fine.
        response = self.api.patch(f"/api/v1/customers/{ann.id}", {"external_id": "c1"}, format="json")
        self.assertEqual(response.status_code, 200)

    def test_put_replaces_the_profile_but_never_resubscribes_by_omission(self):
        now = timezone.now()
        ann = make_customer(
            "c1",
            email="ann@example.com",
            first_name="Ann",
            country="DE",
            attributes={"a": 1, "b": 2},
            sms_opt_in=True,
            unsubscribed_at=now,
        )
        response = self.api.put(
            f"/api/v1/customers/{ann.id}", {"first_name": "Anne", "attributes": {"b": 3}}, format="json"
        )
        self.assertEqual(response.status_code, 200, response.content)
        ann.refresh_from_db()
        self.assertEqual((ann.email, ann.first_name, ann.country), ("", "Anne", ""))
        self.assertEqual(ann.attributes, {"b": 3})
        self.assertFalse(ann.sms_opt_in)
        self.assertEqual(ann.unsubscribed_at, now)

    def test_an_erased_customer_cannot_be_changed(self):
        ann = make_customer("c1", first_name="Ann")
        self.assertEqual(self.api.delete(f"/api/v1/customers/{ann.id}").status_code, 204)
        response = self.api.patch(f"/api/v1/customers/{ann.id}", {"first_name": "Ann"}, format="json")
        self.assertEqual(response.status_code, 409)
        self.assertIn("erased", response.json()["detail"])
        ann.refresh_from_db()
        self.assertEqual(ann.first_name, "")

    def test_delete_erases_and_keeps_history(self):
        ann = make_customer("c1", email="ann@example.com", first_name="Ann", email_opt_in=True)
        make_touchpoint(ann, "e1", "purchase", properties={"ip": "1.2.3.4"})
        make_touchpoint(ann, "e2", "open")
        response = self.api.delete(f"/api/v1/customers/{ann.id}/")
        self.assertEqual(response.status_code, 204)
        self.assertEqual(response.content, b"")
        self.assertEqual(Customer.objects.count(), 1)
        self.assertEqual(Touchpoint.objects.filter(customer=ann).count(), 2)

        body = self.api.get(f"/api/v1/customers/{ann.id}").json()
        self.assertEqual(body["external_id"], f"erased:{ann.id}")
        self.assertEqual((body["email"], body["first_name"], body["email_opt_in"]), ("", "", False))
        self.assertIsNotNone(body["erased_at"])

        # Erasing again changes nothing.
        self.assertEqual(self.api.delete(f"/api/v1/customers/{ann.id}").status_code, 204)
        self.assertEqual(self.api.get(f"/api/v1/customers/{ann.id}").json()["erased_at"], body["erased_at"])
        self.assertEqual(ErasedIdentity.objects.count(), 1)

    def test_delete_of_an_unknown_customer_is_404(self):
        self.assertEqual(self.api.delete("/api/v1/customers/999999").status_code, 404)
        self.assertEqual(ErasedIdentity.objects.count(), 0)

    def test_export(self):
        ann = make_customer("c1", email="ann@example.com")
        make_touchpoint(ann, "e1", "open", channel="email")
        response = self.api.get(f"/api/v1/customers/{ann.id}/export")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(body["profile"]["email"], "ann@example.com")
        self.assertEqual([t["event_id"] for t in body["touchpoints"]], ["e1"])
        self.assertEqual(self.api.get("/api/v1/customers/999999/export").status_code, 404)


class CustomerBulkTests(ApiTestCase):
    URL = "/api/v1/customers/bulk"

    def test_it_creates_then_updates_and_a_replay_creates_nothing(self):
        rows = [
            {"external_id": "c1", "email": "ann@example.com", "email_opt_in": True, "attributes": {"a": 1}},
            {"external_id": "c2", "first_name": "Bob"},
        ]
        response = self.post_json(self.URL, {"customers": rows})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json(), {"created": 2, "updated": 0})
        ann = Customer.objects.get(external_id="c1")
        self.assertEqual(ann.email_opt_in_source, "api:crm")

        response = self.post_json(self.URL, {"customers": rows})
        self.assertEqual(response.json(), {"created": 0, "updated": 2})
        self.assertEqual(Customer.objects.count(), 2)

        response = self.post_json(
            self.URL, {"customers": [{"external_id": "c1", "attributes": {"a": None, "b": 2}, "email": None}]}
        )
        self.assertEqual(response.json(), {"created": 0, "updated": 1})
        ann.refresh_from_db()
        self.assertEqual((ann.email, ann.attributes, ann.email_opt_in), ("", {"b": 2}, True))

    def test_a_bad_row_gives_400_naming_each_row_and_field_and_writes_nothing(self):
        rows = [
            {"external_id": "c1", "email": "ann@example.com"},
            {"external_id": "c2", "phone": "12"},
            {"email": "x@example.com"},
        ]
        response = self.post_json(self.URL, {"customers": rows})
        self.assertEqual(response.status_code, 400)
        body = response.json()
        self.assertEqual([(e["row"], e["field"]) for e in body["errors"]], [(1, "phone"), (2, "external_id")])
        self.assertEqual(body["message"], "2 invalid row(s); nothing was written")
        self.assertEqual(Customer.objects.count(), 0)

    def test_the_body_must_hold_a_list_under_customers(self):
        for body in ([], {"customer": []}, {"customers": {"external_id": "c1"}}, {"customers": "c1"}):
            response = self.post_json(self.URL, body)
            self.assertEqual(response.status_code, 400, body)
            [error] = response.json()["errors"]
            self.assertEqual(error["field"], "customers")
            self.assertIn('a list of rows under "customers"', error["message"])

    def test_an_unknown_top_level_key_is_refused(self):
        response = self.post_json(self.URL, {"customers": [], "source": "x"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [{"row": None, "field": "source", "message": "Unknown field."}])

    def test_an_empty_batch_changes_nothing(self):
        response = self.post_json(self.URL, {"customers": []})
        self.assertEqual(response.json(), {"created": 0, "updated": 0})

    @override_settings(BULK_MAX_ROWS=3)
    def test_more_rows_than_the_limit_is_413_naming_the_limit(self):
        rows = [{"external_id": f"c{i}"} for i in range(4)]
        response = self.post_json(self.URL, {"customers": rows})
        self.assertEqual(response.status_code, 413)
        self.assertIn("the limit is 3 rows", response.json()["detail"])
        self.assertEqual(Customer.objects.count(), 0)

    @override_settings(BULK_MAX_BYTES=100)
    def test_a_body_over_the_byte_limit_is_413_before_parsing(self):
        rows = [{"external_id": f"c{i}"} for i in range(10)]
        response = self.post_json(self.URL, {"customers": rows})
        self.assertEqual(response.status_code, 413)
        self.assertEqual(response.json()["limit_bytes"], 100)
        self.assertEqual(Customer.objects.count(), 0)

    def test_malformed_json_is_a_400(self):
        response = self.api.post(self.URL, b'{"customers": [{"external_id": "c1",}', content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertIn("JSON parse error", response.json()["detail"])
        self.assertEqual(Customer.objects.count(), 0)

    def test_a_nul_character_is_a_400_not_a_database_error(self):
        for body in (
            b'{"customers": [{"external_id": "c\\u0000"}]}',
            b'{"customers": [{"external_id": "c1", "attributes": {"a": "\\u0000"}}]}',
        ):
            response = self.api.post(self.URL, body, content_type="application/json")
            self.assertEqual(response.status_code, 400, body)
            self.assertIn("NUL", response.json()["detail"])
        response = self.api.post("/api/v1/customers", b'{"external_id": "c\\u0000"}', content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(Customer.objects.count(), 0)

    def test_an_escaped_backslash_before_u0000_is_plain_text(self):
        response = self.api.post(
            self.URL, b'{"customers": [{"external_id": "c\\\\u0000"}]}', content_type="application/json"
        )
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(list(Customer.objects.values_list("external_id", flat=True)), ["c\\u0000"])

    def test_a_body_without_a_content_type_is_415(self):
        response = self.api.generic("POST", self.URL, b'{"customers": []}', content_type="")
        self.assertEqual(response.status_code, 415)
        self.assertIn("Content-Type: application/json", response.json()["detail"])

    def test_a_form_body_is_415(self):
        response = self.api.post(self.URL, {"customers": "c1"})
        self.assertEqual(response.status_code, 415)

    def test_bulk_refuses_get(self):
        self.assertEqual(self.api.get(self.URL).status_code, 405)


class TrailingSlashTests(ApiTestCase):
    def test_every_path_answers_with_and_without_a_trailing_slash(self):
        ann = make_customer("c1")
        tp = make_touchpoint(ann, "e1")
        self.post_json("/api/v1/products", {"sku": "A-1", "name": "Mug"})
        for path in (
            "/api/v1/customers",
            f"/api/v1/customers/{ann.id}",
            f"/api/v1/customers/{ann.id}/export",
            "/api/v1/touchpoints",
            f"/api/v1/touchpoints/{tp.id}",
            "/api/v1/products",
            "/api/v1/products/A-1",
            "/api/v1/health",
        ):
            for variant in (path, path + "/"):
                self.assertIn(self.api.get(variant).status_code, (200,), variant)
        for path, key in (
            ("/api/v1/customers/bulk", "customers"),
            ("/api/v1/touchpoints/bulk", "touchpoints"),
            ("/api/v1/products/bulk", "products"),
        ):
            for variant in (path, path + "/"):
                response = self.post_json(variant, {key: []})
                self.assertEqual(response.status_code, 200, variant)
        for variant in ("/api/v1/customers", "/api/v1/customers/"):
            self.assertIn(self.post_json(variant, {"external_id": variant}).status_code, (201,), variant)
        for variant in (f"/api/v1/customers/{ann.id}", f"/api/v1/customers/{ann.id}/"):
            self.assertEqual(self.api.patch(variant, {"first_name": "A"}, format="json").status_code, 200, variant)


class SchemaTests(ApiTestCase):
    def test_the_schema_endpoint_answers_and_documents_the_bulk_contract(self):
        for path in ("/api/schema/", "/api/schema"):
            response = APIClient().get(path)
            self.assertEqual(response.status_code, 200, path)
        schema = yaml.safe_load(response.content)
        paths = schema["paths"]
        # Documented without the trailing slash (both forms answer).
        self.assertEqual([path for path in paths if path.endswith("/")], [])
        bulk = paths["/api/v1/customers/bulk"]["post"]
        self.assertEqual(
            bulk["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CustomersBulkRequest",
        )
        self.assertEqual(set(bulk["responses"]), {"200", "400", "401", "413", "429"})
        components = schema["components"]["schemas"]
        self.assertEqual(set(components["RowError"]["properties"]), {"row", "field", "message"})
        self.assertEqual(components["CustomerRowRequest"]["required"], ["external_id"])
        self.assertEqual(
            sorted(components["TouchpointRowRequest"]["required"]),
            ["customer_external_id", "event_id", "kind", "occurred_at"],
        )
        self.assertEqual(set(components["InsertResult"]["properties"]), {"inserted", "duplicates", "customers_created"})
        self.assertIn("ApiKey", schema["components"]["securitySchemes"])

    def test_the_schema_is_valid_without_warnings(self):
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "schema.yaml"
            call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stdout=io.StringIO())
            self.assertIn("/api/v1/touchpoints/bulk:", target.read_text())

    def test_the_docs_page_answers(self):
        self.assertEqual(APIClient().get("/api/docs/").status_code, 200)
