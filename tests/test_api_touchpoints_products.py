"""The touchpoints API (read + bulk insert) and the products API (CRUD by sku + bulk)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal

from django.test import override_settings

from marketing.models import Customer, ErasedIdentity, Product, Touchpoint
from tests.api_helpers import T0, ApiTestCase, make_customer, make_touchpoint

TOUCHPOINT_FIELDS = {
    "id",
    "event_id",
    "customer",
    "customer_external_id",
    "kind",
    "channel",
    "occurred_at",
    "received_at",
    "revenue",
    "currency",
    "revenue_original",
    "campaign_id",
    "message_id",
    "creative_id",
    "order_id",
    "sku",
    "properties",
}


def purchase(event_id: str, external_id: str = "c1", **fields) -> dict:
    return {
        "event_id": event_id,
        "customer_external_id": external_id,
        "kind": "purchase",
        "channel": "web",
        "occurred_at": "2026-11-01T10:00:00Z",
        "revenue": "19.90",
        "currency": "USD",
        "order_id": "o1",
        "sku": f"sku-{event_id}",
        **fields,
    }


class TouchpointReadTests(ApiTestCase):
    def setUp(self):
        super().setUp()
        self.ann = make_customer("c1")
        self.bob = make_customer("c2")
        self.open = make_touchpoint(self.ann, "e1", "open", channel="email", campaign_id=7)
        self.buy = make_touchpoint(
            self.ann, "e2", "purchase", channel="web", order_id="o1", occurred_at=T0 + timedelta(hours=1)
        )
        self.visit = make_touchpoint(self.bob, "e3", "visit", channel="web", occurred_at=T0 + timedelta(hours=2))

    def test_it_lists_touchpoints_with_explicit_fields(self):
        response = self.api.get("/api/v1/touchpoints")
        self.assertEqual(response.status_code, 200)
        rows = response.json()["results"]
        self.assertEqual([row["id"] for row in rows], [self.open.id, self.buy.id, self.visit.id])
        self.assertEqual(set(rows[0]), TOUCHPOINT_FIELDS)
        self.assertEqual(rows[1]["customer"], self.ann.id)
        self.assertEqual(rows[1]["customer_external_id"], "c1")
        self.assertEqual(rows[1]["revenue"], "10.0000")
        self.assertEqual(rows[1]["occurred_at"], "2026-11-01T11:00:00Z")

    def test_it_gets_a_touchpoint(self):
        response = self.api.get(f"/api/v1/touchpoints/{self.buy.id}")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["event_id"], "e2")
        self.assertEqual(self.api.get("/api/v1/touchpoints/999999").status_code, 404)

    def test_the_list_takes_one_query_for_any_page_size(self):
        for i in range(20):
            make_touchpoint(self.bob, f"x{i}")
        # The API key lookup, the last_used_at write and the page itself.
        with self.assertNumQueries(3):
            response = self.api.get("/api/v1/touchpoints?page_size=50")
        self.assertEqual(len(response.json()["results"]), 23)

    def test_filters(self):
        def ids(query: str) -> list[int]:
            response = self.api.get(f"/api/v1/touchpoints?{query}")
            self.assertEqual(response.status_code, 200, response.content)
            return [row["id"] for row in response.json()["results"]]

        self.assertEqual(ids("kind=purchase"), [self.buy.id])
        self.assertEqual(ids("channel=web"), [self.buy.id, self.visit.id])
        self.assertEqual(ids(f"customer={self.bob.id}"), [self.visit.id])
        self.assertEqual(ids("customer_external_id=c1"), [self.open.id, self.buy.id])
        self.assertEqual(ids("campaign_id=7"), [self.open.id])
        self.assertEqual(ids("occurred_after=2026-11-01T11:00:00Z"), [self.buy.id, self.visit.id])
        self.assertEqual(ids("occurred_before=2026-11-01T11:00:00Z"), [self.open.id])
        self.assertEqual(ids("order_id=o1"), [self.buy.id])
        self.assertEqual(ids("event_id=e3"), [self.visit.id])
        self.assertEqual(ids("kind=purchase&customer_external_id=c2"), [])

    def test_a_bad_filter_value_is_a_400(self):
        response = self.api.get("/api/v1/touchpoints?customer=abc&occurred_after=soon")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(sorted(e["field"] for e in response.json()["errors"]), ["customer", "occurred_after"])
        for query in ("customer=99999999999999999999999", "customer=1.5", "campaign_id=99999999999999999999999"):
            response = self.api.get(f"/api/v1/touchpoints?{query}")
            self.assertEqual(response.status_code, 400, query)

    def test_touchpoints_are_append_only_through_the_api(self):
        self.assertEqual(self.post_json("/api/v1/touchpoints", {"event_id": "x"}).status_code, 405)
        self.assertEqual(self.api.delete(f"/api/v1/touchpoints/{self.open.id}").status_code, 405)
        self.assertEqual(self.api.patch(f"/api/v1/touchpoints/{self.open.id}", {}, format="json").status_code, 405)
        self.assertEqual(Touchpoint.objects.count(), 3)


class TouchpointBulkTests(ApiTestCase):
    URL = "/api/v1/touchpoints/bulk"

    def test_it_inserts_creates_stubs_and_a_replay_adds_nothing(self):
        make_customer("c1", email_opt_in=True)
        rows = [
            purchase("e1"),
            purchase("e2"),
            {
                "event_id": "e3",
                "customer_external_id": "new",
                "kind": "trial_started",
                "occurred_at": "2020-01-01T00:00:00+02:00",
            },
        ]
        response = self.post_json(self.URL, {"touchpoints": rows})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json(), {"inserted": 3, "duplicates": 0, "customers_created": 1})
        stub = Customer.objects.get(external_id="new")
        self.assertTrue(stub.is_stub)
        self.assertEqual((stub.email_opt_in, stub.sms_opt_in, stub.push_opt_in), (False, False, False))
        line = Touchpoint.objects.get(event_id="e1")
        self.assertEqual(
            (line.kind, line.revenue, line.order_id, line.sku), ("purchase", Decimal("19.9"), "o1", "sku-e1")
        )

        response = self.post_json(self.URL, {"touchpoints": rows})
        self.assertEqual(response.json(), {"inserted": 0, "duplicates": 3, "customers_created": 0})
        self.assertEqual(Touchpoint.objects.count(), 3)
        self.assertEqual(Customer.objects.count(), 2)

    def test_a_bad_row_gives_400_naming_each_row_and_field_and_writes_nothing(self):
        rows = [
            purchase("e1"),
            purchase("e2", occurred_at="2026-11-01T10:00:00"),
            {
                "event_id": "e3",
                "customer_external_id": "c9",
                "kind": "Open Email",
                "occurred_at": "2026-11-01T10:00:00Z",
            },
        ]
        response = self.post_json(self.URL, {"touchpoints": rows})
        self.assertEqual(response.status_code, 400)
        errors = response.json()["errors"]
        self.assertEqual([(e["row"], e["field"]) for e in errors], [(1, "occurred_at"), (2, "kind")])
        self.assertIn("timezone", errors[0]["message"])
        self.assertEqual(Touchpoint.objects.count(), 0)
        self.assertEqual(Customer.objects.count(), 0)

    def test_touchpoints_of_an_erased_customer_are_refused(self):
        ErasedIdentity.objects.create(external_id_sha256=hashlib.sha256(b"gone").hexdigest())
        response = self.post_json(self.URL, {"touchpoints": [purchase("e1"), purchase("e2", external_id="gone")]})
        self.assertEqual(response.status_code, 400)
        self.assertEqual([(e["row"], e["field"]) for e in response.json()["errors"]], [(1, "customer_external_id")])
        self.assertEqual(Touchpoint.objects.count(), 0)
        self.assertEqual(Customer.objects.count(), 0)

    def test_the_body_must_hold_a_list_under_touchpoints(self):
        response = self.post_json(self.URL, {"customers": []})
        self.assertEqual(response.status_code, 400)
        self.assertIn('"touchpoints"', response.json()["errors"][0]["message"])

    @override_settings(BULK_MAX_ROWS=2)
    def test_more_rows_than_the_limit_is_413(self):
        response = self.post_json(self.URL, {"touchpoints": [purchase(f"e{i}") for i in range(3)]})
        self.assertEqual(response.status_code, 413)
        self.assertIn("the limit is 2 rows", response.json()["detail"])
        self.assertEqual(Touchpoint.objects.count(), 0)

    def test_malformed_json_is_a_400(self):
        response = self.api.post(self.URL, b'{"touchpoints": [', content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(Touchpoint.objects.count(), 0)


class ProductTests(ApiTestCase):
    def test_it_creates_then_updates_a_product_by_sku(self):
        response = self.post_json(
            "/api/v1/products", {"sku": "A-1", "name": "Mug", "category": "kitchen", "price": "9.50"}
        )
        self.assertEqual(response.status_code, 201, response.content)
        body = response.json()
        self.assertEqual(
            set(body), {"id", "sku", "name", "category", "price", "attributes", "active", "created_at", "updated_at"}
        )
        self.assertEqual((body["sku"], body["name"], body["price"], body["active"]), ("A-1", "Mug", "9.5000", True))

        response = self.post_json("/api/v1/products", {"sku": "A-1", "price": "8.00"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual((response.json()["name"], response.json()["price"]), ("Mug", "8.0000"))
        self.assertEqual(Product.objects.count(), 1)

    def test_a_new_product_needs_a_name(self):
        response = self.post_json("/api/v1/products", {"sku": "A-1"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"], [{"row": None, "field": "name", "message": "is required for a new product"}]
        )
        self.assertEqual(Product.objects.count(), 0)

    def test_it_gets_a_product_by_sku_even_with_dots(self):
        Product.objects.create(sku="mug.blue", name="Blue mug")
        response = self.api.get("/api/v1/products/mug.blue")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["name"], "Blue mug")
        self.assertEqual(self.api.get("/api/v1/products/nope").status_code, 404)
        self.assertEqual(self.api.get("/api/v1/products/a%00b").status_code, 404)

    def test_patch_and_put(self):
        Product.objects.create(sku="A-1", name="Mug", category="kitchen", price=Decimal("9.5"), attributes={"c": 1})
        response = self.api.patch("/api/v1/products/A-1", {"price": None, "active": False}, format="json")
        self.assertEqual(response.status_code, 200, response.content)
        product = Product.objects.get()
        self.assertEqual(
            (product.name, product.category, product.price, product.active), ("Mug", "kitchen", None, False)
        )

        response = self.api.put("/api/v1/products/A-1/", {"name": "Cup"}, format="json")
        self.assertEqual(response.status_code, 200, response.content)
        product.refresh_from_db()
        self.assertEqual(
            (product.name, product.category, product.price, product.attributes, product.active),
            ("Cup", "", None, {}, True),
        )

    def test_the_sku_cannot_be_changed(self):
        Product.objects.create(sku="A-1", name="Mug")
        response = self.api.patch("/api/v1/products/A-1", {"sku": "B-2"}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["field"], "sku")
        self.assertEqual(list(Product.objects.values_list("sku", flat=True)), ["A-1"])

    def test_bad_fields_write_nothing(self):
        Product.objects.create(sku="A-1", name="Mug", price=Decimal("9.5"))
        response = self.api.patch("/api/v1/products/A-1", {"price": "cheap", "active": "no"}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(sorted(e["field"] for e in response.json()["errors"]), ["active", "price"])
        self.assertEqual(Product.objects.get().price, Decimal("9.5"))

    def test_delete(self):
        Product.objects.create(sku="A-1", name="Mug")
        self.assertEqual(self.api.delete("/api/v1/products/A-1").status_code, 204)
        self.assertEqual(Product.objects.count(), 0)
        self.assertEqual(self.api.delete("/api/v1/products/A-1").status_code, 404)

    def test_list_filters(self):
        mug = Product.objects.create(sku="A-1", name="Mug", category="kitchen")
        Product.objects.create(sku="B-1", name="Ball", category="toys")
        old = Product.objects.create(sku="A-2", name="Old mug", category="kitchen", active=False)
        ids = lambda q: [row["id"] for row in self.api.get(f"/api/v1/products?{q}").json()["results"]]  # noqa: E731
        self.assertEqual(ids("category=kitchen"), [mug.id, old.id])
        self.assertEqual(ids("category=kitchen&active=true"), [mug.id])

    def test_bulk_upsert(self):
        Product.objects.create(sku="A-1", name="Mug")
        rows = [{"sku": "A-1", "price": "5.00"}, {"sku": "B-1", "name": "Ball", "category": "toys"}]
        response = self.post_json("/api/v1/products/bulk", {"products": rows})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json(), {"created": 1, "updated": 1})
        self.assertEqual(Product.objects.get(sku="A-1").price, Decimal("5"))
        self.assertEqual(Product.objects.get(sku="B-1").name, "Ball")

    def test_bulk_with_a_bad_row_writes_nothing(self):
        rows = [{"sku": "B-1", "name": "Ball"}, {"sku": "C-1"}, {"name": "no sku"}]
        response = self.post_json("/api/v1/products/bulk", {"products": rows})
        self.assertEqual(response.status_code, 400)
        self.assertEqual([(e["row"], e["field"]) for e in response.json()["errors"]], [(2, "sku")])
        self.assertEqual(Product.objects.count(), 0)
