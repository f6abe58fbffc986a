"""The invariants the database itself enforces, whatever path writes: unique ids, one
purchase row per order line, order kinds carry an order id, E.164 phones, and history
that cannot be deleted from under a customer."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.test import TestCase

from marketing.models import Customer, ErasedIdentity, Product, Suppression, Touchpoint

WHEN = datetime(2025, 3, 1, 10, tzinfo=UTC)


def add_touchpoint(customer: Customer, event_id: str, kind: str = "visit", **fields) -> Touchpoint:
    return Touchpoint.objects.create(customer=customer, event_id=event_id, kind=kind, occurred_at=WHEN, **fields)


class ModelConstraintTests(TestCase):
    def setUp(self):
        self.ann = Customer.objects.create(external_id="ann")

    def assertViolates(self, create) -> None:
        # The savepoint keeps the test's transaction usable after the violation.
        with self.assertRaises(IntegrityError), transaction.atomic():
            create()

    def test_a_customer_external_id_is_unique(self):
        self.assertViolates(lambda: Customer.objects.create(external_id="ann"))
        self.assertEqual(Customer.objects.count(), 1)

    def test_a_touchpoint_event_id_is_unique_even_across_customers(self):
        bob = Customer.objects.create(external_id="bob")
        add_touchpoint(self.ann, "e1")

        self.assertViolates(lambda: add_touchpoint(bob, "e1", kind="click"))
        self.assertEqual(Touchpoint.objects.count(), 1)

    def test_an_order_line_has_one_purchase_row(self):
        add_touchpoint(self.ann, "e1", kind="purchase", order_id="o1", sku="A-1")

        self.assertViolates(lambda: add_touchpoint(self.ann, "e2", kind="purchase", order_id="o1", sku="A-1"))
        self.assertEqual(Touchpoint.objects.count(), 1)

    def test_other_lines_of_the_same_order_are_separate_purchases(self):
        add_touchpoint(self.ann, "e1", kind="purchase", order_id="o1", sku="A-1")
        add_touchpoint(self.ann, "e2", kind="purchase", order_id="o1", sku="B-2")
        add_touchpoint(self.ann, "e3", kind="purchase", order_id="o2", sku="A-1")

        self.assertEqual(Touchpoint.objects.filter(kind="purchase").count(), 3)

    def test_an_order_line_can_be_refunded_twice_and_viewed_beside_its_purchase(self):
        add_touchpoint(self.ann, "e1", kind="purchase", order_id="o1", sku="A-1")
        add_touchpoint(self.ann, "r1", kind="refund", order_id="o1", sku="A-1")
        add_touchpoint(self.ann, "r2", kind="refund", order_id="o1", sku="A-1")
        add_touchpoint(self.ann, "v1", kind="add_to_cart", order_id="o1", sku="A-1")

        self.assertEqual(Touchpoint.objects.filter(order_id="o1", sku="A-1").count(), 4)

    def test_a_purchase_or_refund_without_an_order_id_violates_the_check_constraint(self):
        self.assertViolates(lambda: add_touchpoint(self.ann, "e1", kind="purchase", sku="A-1"))
        self.assertViolates(lambda: add_touchpoint(self.ann, "e2", kind="refund"))
        self.assertEqual(Touchpoint.objects.count(), 0)

    def test_other_kinds_need_no_order_id(self):
        add_touchpoint(self.ann, "e1", kind="visit")
        add_touchpoint(self.ann, "e2", kind="trial_started")

        self.assertEqual(Touchpoint.objects.count(), 2)

    def test_deleting_a_customer_with_touchpoints_is_protected(self):
        add_touchpoint(self.ann, "e1")

        with self.assertRaises(ProtectedError):
            self.ann.delete()
        self.assertTrue(Customer.objects.filter(external_id="ann").exists())
        self.assertEqual(Touchpoint.objects.count(), 1)

    def test_deleting_a_customer_with_touchpoints_through_a_queryset_is_protected(self):
        add_touchpoint(self.ann, "e1")

        with self.assertRaises(ProtectedError):
            Customer.objects.all().delete()
        self.assertEqual((Customer.objects.count(), Touchpoint.objects.count()), (1, 1))

    def test_a_customer_without_touchpoints_can_be_deleted(self):
        self.ann.delete()

        self.assertEqual(Customer.objects.count(), 0)

    def test_a_phone_must_be_empty_or_e164_in_the_database(self):
        Customer.objects.create(external_id="e164", phone="+14155550123")
        Customer.objects.create(external_id="none", phone="")

        for phone in ("04155550123", "+0123456", "+1 415 555 0123", "+1"):
            with self.subTest(phone=phone):
                self.assertViolates(lambda phone=phone: Customer.objects.create(external_id=f"bad{phone}", phone=phone))
        self.assertEqual(Customer.objects.count(), 3)

    def test_a_phone_and_a_kind_are_validated_in_forms_too(self):
        with self.assertRaises(ValidationError) as caught:
            Customer(external_id="x", phone="555-0123").full_clean()
        self.assertEqual(list(caught.exception.message_dict), ["phone"])

        with self.assertRaises(ValidationError) as caught:
            Touchpoint(customer=self.ann, event_id="e1", kind="Trial Started", occurred_at=WHEN).full_clean()
        self.assertEqual(list(caught.exception.message_dict), ["kind"])

    def test_a_product_sku_is_unique(self):
        Product.objects.create(sku="A-1", name="Shoe")

        self.assertViolates(lambda: Product.objects.create(sku="A-1", name="Other"))

    def test_a_suppressed_value_is_stored_once_per_kind(self):
        Suppression.objects.create(kind="email", value="ann@example.com")
        Suppression.objects.create(kind="phone", value="ann@example.com")

        self.assertViolates(
            lambda: Suppression.objects.create(kind="email", value="ann@example.com", reason="complaint")
        )

    def test_an_erased_identity_is_stored_once(self):
        ErasedIdentity.objects.create(external_id_sha256="a" * 64)

        self.assertViolates(lambda: ErasedIdentity.objects.create(external_id_sha256="a" * 64))

    def test_new_customers_and_touchpoints_get_database_timestamps_and_empty_defaults(self):
        t = add_touchpoint(self.ann, "e1")
        self.ann.refresh_from_db()
        t.refresh_from_db()

        self.assertIsNotNone(self.ann.created_at)
        self.assertIsNotNone(self.ann.updated_at)
        self.assertIsNotNone(t.received_at)
        self.assertEqual((self.ann.attributes, self.ann.is_stub, self.ann.email_opt_in), ({}, False, False))
        self.assertEqual((t.properties, t.channel, t.order_id, t.sku, t.revenue), ({}, "", "", "", None))
