"""GDPR erase and export (the services), the tombstone against CRM replays, the eraser and
exporter registries, and the customer order stats the admin shows."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from unittest import mock

from django.test import TestCase

from marketing import registries
from marketing.models import Customer, ErasedIdentity, Suppression, Touchpoint
from marketing.selectors import customer_order_stats
from marketing.services import customer_erase, customer_export
from tests.api_helpers import T0, ApiTestCase, make_customer, make_touchpoint

PII = {
    "email": "ann@example.com",
    "phone": "+14155550123",
    "first_name": "Ann",
    "last_name": "Lee",
    "country": "DE",
    "timezone": "Europe/Berlin",
    "locale": "de-DE",
    "attributes": {"tier": "gold", "birthday": "1990-01-01"},
    "email_opt_in": True,
    "email_opt_in_at": T0,
    "email_opt_in_source": "crm",
    "sms_opt_in": True,
    "sms_opt_in_at": T0,
    "sms_opt_in_source": "crm",
    "push_opt_in": True,
    "push_opt_in_at": T0,
    "push_opt_in_source": "app",
}


class EraseTests(TestCase):
    def setUp(self):
        self.ann = make_customer("crm-ann", **PII)
        self.bob = make_customer("crm-bob", email="bob@example.com")
        make_touchpoint(self.ann, "e1", "purchase", properties={"ip": "1.2.3.4", "ua": "Firefox"})
        make_touchpoint(self.ann, "e2", "open", channel="email", campaign_id=3)
        make_touchpoint(self.bob, "e3", "open", properties={"ip": "5.6.7.8"})

    def test_it_anonymises_the_customer_in_place(self):
        self.assertTrue(customer_erase(self.ann))
        ann = Customer.objects.get(pk=self.ann.pk)
        self.assertEqual(ann.external_id, f"erased:{ann.pk}")
        for name in ("email", "phone", "first_name", "last_name", "country", "timezone", "locale"):
            self.assertEqual(getattr(ann, name), "", name)
        self.assertEqual(ann.attributes, {})
        for channel in ("email", "sms", "push"):
            self.assertFalse(getattr(ann, f"{channel}_opt_in"))
            self.assertIsNone(getattr(ann, f"{channel}_opt_in_at"))
            self.assertEqual(getattr(ann, f"{channel}_opt_in_source"), "")
        self.assertIsNotNone(ann.erased_at)
        # The caller's instance holds no PII either.
        self.assertEqual((self.ann.email, self.ann.external_id), ("", f"erased:{ann.pk}"))

    def test_it_keeps_the_history_and_scrubs_its_properties(self):
        customer_erase(self.ann)
        rows = list(
            Touchpoint.objects.filter(customer=self.ann)
            .order_by("event_id")
            .values_list("event_id", "kind", "revenue", "campaign_id", "properties")
        )
        self.assertEqual(rows, [("e1", "purchase", Decimal("10.0000"), None, {}), ("e2", "open", None, 3, {})])
        self.assertEqual(Touchpoint.objects.get(event_id="e3").properties, {"ip": "5.6.7.8"})
        self.assertEqual(Touchpoint.objects.count(), 3)

    def test_it_leaves_other_customers_alone(self):
        customer_erase(self.ann)
        bob = Customer.objects.get(pk=self.bob.pk)
        self.assertEqual((bob.external_id, bob.email, bob.erased_at), ("crm-bob", "bob@example.com", None))

    def test_it_writes_a_tombstone_of_the_hashed_external_id_and_no_suppression(self):
        customer_erase(self.ann)
        self.assertEqual(
            list(ErasedIdentity.objects.values_list("external_id_sha256", flat=True)),
            [hashlib.sha256(b"crm-ann").hexdigest()],
        )
        self.assertEqual(Suppression.objects.count(), 0)

    def test_erasing_twice_is_a_no_op(self):
        eraser = mock.Mock()
        with mock.patch.dict(registries._registry.erasers, {"test": eraser}):
            self.assertTrue(customer_erase(self.ann))
            erased_at = Customer.objects.get(pk=self.ann.pk).erased_at
            self.assertFalse(customer_erase(Customer.objects.get(pk=self.ann.pk)))
        eraser.assert_called_once_with(self.ann.pk)
        self.assertEqual(Customer.objects.get(pk=self.ann.pk).erased_at, erased_at)
        self.assertEqual(ErasedIdentity.objects.count(), 1)

    def test_every_registered_eraser_is_called_with_the_customer_id(self):
        calls = []
        erasers = {
            "messages": lambda cid: calls.append(("messages", cid)),
            "reports": lambda cid: calls.append(("reports", cid)),
        }
        with mock.patch.dict(registries._registry.erasers, erasers):
            customer_erase(self.ann)
        self.assertEqual(sorted(calls), [("messages", self.ann.pk), ("reports", self.ann.pk)])

    def test_a_failing_eraser_aborts_the_whole_erase(self):
        def fail(customer_id: int) -> None:
            raise RuntimeError("message store down")

        with mock.patch.dict(registries._registry.erasers, {"messages": fail}), self.assertRaises(RuntimeError):
            customer_erase(self.ann)
        ann = Customer.objects.get(pk=self.ann.pk)
        self.assertEqual((ann.external_id, ann.email, ann.erased_at), ("crm-ann", "ann@example.com", None))
        self.assertEqual(Touchpoint.objects.get(event_id="e1").properties, {"ip": "1.2.3.4", "ua": "Firefox"})
        self.assertEqual(ErasedIdentity.objects.count(), 0)


class TombstoneTests(ApiTestCase):
    def test_a_later_bulk_upsert_of_the_erased_external_id_is_refused(self):
        ann = make_customer("crm-ann", email="ann@example.com")
        self.assertEqual(self.api.delete(f"/api/v1/customers/{ann.pk}").status_code, 204)

        rows = [
            {"external_id": "crm-new", "email": "new@example.com"},
            {"external_id": "crm-ann", "email": "ann@example.com"},
        ]
        response = self.post_json("/api/v1/customers/bulk", {"customers": rows})
        self.assertEqual(response.status_code, 400)
        [error] = response.json()["errors"]
        self.assertEqual((error["row"], error["field"]), (1, "external_id"))
        self.assertIn("erased", error["message"])
        # Nothing was written: not the good row, not the erased one.
        self.assertEqual(list(Customer.objects.values_list("external_id", "email")), [(f"erased:{ann.pk}", "")])

    def test_touchpoints_for_the_erased_external_id_are_refused(self):
        ann = make_customer("crm-ann")
        customer_erase(ann)
        row = {
            "event_id": "e9",
            "customer_external_id": "crm-ann",
            "kind": "open",
            "occurred_at": "2026-11-01T10:00:00Z",
        }
        response = self.post_json("/api/v1/touchpoints/bulk", {"touchpoints": [row]})
        self.assertEqual(response.status_code, 400)
        self.assertEqual([(e["row"], e["field"]) for e in response.json()["errors"]], [(0, "customer_external_id")])
        self.assertEqual(Customer.objects.count(), 1)
        self.assertEqual(Touchpoint.objects.count(), 0)

    def test_the_anonymised_id_cannot_be_upserted_either(self):
        ann = make_customer("crm-ann")
        customer_erase(ann)
        response = self.post_json(
            "/api/v1/customers/bulk", {"customers": [{"external_id": f"erased:{ann.pk}", "email": "x@example.com"}]}
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(Customer.objects.get().email, "")


class ExportTests(TestCase):
    def test_it_exports_profile_consents_touchpoints_and_each_apps_data(self):
        ann = make_customer("crm-ann", **PII)
        make_touchpoint(
            ann, "e2", "open", channel="email", occurred_at=T0 + timedelta(hours=1), properties={"ip": "1.2.3.4"}
        )
        make_touchpoint(ann, "e1", "purchase", order_id="o1", sku="A-1", revenue=Decimal("19.90"), currency="USD")
        make_touchpoint(make_customer("other"), "e3", "open")
        exporter = mock.Mock(return_value=[{"subject": "Hello Ann"}])

        with mock.patch.dict(registries._registry.exporters, {"messages": exporter}):
            export = customer_export(ann)

        exporter.assert_called_once_with(ann.pk)
        self.assertEqual(set(export), {"exported_at", "profile", "consents", "touchpoints", "messages", "model_scores"})
        self.assertEqual(export["messages"], [{"subject": "Hello Ann"}])
        self.assertEqual(export["model_scores"], [])  # mlcore's exporter: no model has scored ann
        self.assertEqual(export["profile"]["external_id"], "crm-ann")
        self.assertEqual(export["profile"]["email"], "ann@example.com")
        self.assertEqual(export["profile"]["attributes"], {"tier": "gold", "birthday": "1990-01-01"})
        self.assertEqual(
            export["consents"]["email"], {"opt_in": True, "at": "2026-11-01T10:00:00+00:00", "source": "crm"}
        )
        self.assertEqual(set(export["consents"]), {"email", "sms", "push"})
        self.assertEqual([t["event_id"] for t in export["touchpoints"]], ["e1", "e2"])
        first = export["touchpoints"][0]
        self.assertEqual(
            (first["kind"], first["revenue"], first["currency"], first["order_id"], first["sku"]),
            ("purchase", "19.9000", "USD", "o1", "A-1"),
        )
        self.assertEqual(export["touchpoints"][1]["properties"], {"ip": "1.2.3.4"})


class ExportApiTests(ApiTestCase):
    def test_the_export_endpoint_returns_the_document_with_each_apps_data(self):
        ann = make_customer("crm-ann", email="ann@example.com")
        make_touchpoint(ann, "e1", "open")
        with mock.patch.dict(registries._registry.exporters, {"reports": lambda cid: {"customer": cid}}):
            response = self.api.get(f"/api/v1/customers/{ann.pk}/export/")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(body["reports"], {"customer": ann.pk})
        self.assertEqual([t["event_id"] for t in body["touchpoints"]], ["e1"])


class OrderStatsTests(TestCase):
    def test_orders_revenue_net_of_refunds_and_last_purchase(self):
        ann = make_customer("c1")
        later = T0 + timedelta(days=3)
        make_touchpoint(ann, "p1", "purchase", order_id="o1", sku="A", revenue=Decimal("10.00"))
        make_touchpoint(ann, "p2", "purchase", order_id="o1", sku="B", revenue=Decimal("5.50"))
        make_touchpoint(ann, "p3", "purchase", order_id="o2", sku="A", revenue=Decimal("20.00"), occurred_at=later)
        make_touchpoint(ann, "r1", "refund", order_id="o1", sku="B", revenue=Decimal("5.50"))
        make_touchpoint(ann, "v1", "visit", occurred_at=later + timedelta(days=1))
        make_touchpoint(make_customer("c2"), "p4", "purchase", order_id="o3", revenue=Decimal("99"))
        self.assertEqual(
            customer_order_stats(ann.pk), {"orders": 2, "revenue": Decimal("30.00"), "last_purchase_at": later}
        )

    def test_a_customer_without_purchases(self):
        ann = make_customer("c1")
        make_touchpoint(ann, "v1", "visit")
        stats = customer_order_stats(ann.pk)
        self.assertEqual(stats, {"orders": 0, "revenue": Decimal(0), "last_purchase_at": None})
        self.assertIsInstance(stats["revenue"], Decimal)
