"""touchpoints_bulk_insert: exact inserted/duplicates/customers_created, stub customers,
deduplication by event_id and by purchase line, time and money rules, and refusals that
write nothing (not even a stub customer). The same outcomes on PostgreSQL and SQLite."""

from __future__ import annotations

import unittest
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings

from marketing.errors import BatchInvalid, BatchTooLarge
from marketing.ingest import InsertResult, customers_bulk_upsert, touchpoints_bulk_insert
from marketing.models import Customer, Touchpoint
from tests.ingest_helpers import (
    ERASED_MESSAGE,
    WHEN,
    WHEN_UTC,
    IngestAssertions,
    everything,
    purchase,
    run_concurrently,
    tombstone,
    touchpoint,
)

OCCURRED_AT_FORMAT = "must be an ISO 8601 string with a timezone, e.g. 2026-11-01T10:00:00Z"
ID_MESSAGE = "is required: a non-empty string of at most 255 characters"
KIND_MESSAGE = "is required: a lower-case slug like purchase or trial_started"
MONEY_MESSAGE = 'must be a non-negative decimal below 10^10, e.g. "19.90"'
POSITIVE_ID = "must be a positive integer or null"
NUL_MESSAGE = "text must not contain NUL (\\u0000) characters"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def stored(event_id: str) -> Touchpoint:
    return Touchpoint.objects.select_related("customer").get(event_id=event_id)


class TouchpointInsertCountTests(IngestAssertions, TestCase):
    def setUp(self):
        Customer.objects.create(external_id="c1", email="ann@example.com", email_opt_in=True)

    def test_it_inserts_new_touchpoints_and_counts_them(self):
        result = touchpoints_bulk_insert([touchpoint("e1"), touchpoint("e2", kind="click"), touchpoint("e3")])

        self.assertEqual(result, InsertResult(inserted=3, duplicates=0, customers_created=0))
        self.assertEqual(
            list(Touchpoint.objects.order_by("event_id").values_list("event_id", "kind")),
            [("e1", "visit"), ("e2", "click"), ("e3", "visit")],
        )
        self.assertEqual(set(Touchpoint.objects.values_list("customer__external_id", flat=True)), {"c1"})

    def test_it_stores_every_field_of_a_touchpoint(self):
        touchpoints_bulk_insert(
            [
                purchase(
                    "e1",
                    channel="web",
                    revenue="19.90",
                    currency="USD",
                    campaign_id=7,
                    message_id=8,
                    creative_id=9,
                    properties={"coupon": "SPRING", "items": [1, 2], "nested": {"a": None}},
                )
            ]
        )

        t = stored("e1")
        self.assertEqual(
            (t.customer.external_id, t.kind, t.channel, t.campaign_id, t.message_id, t.creative_id, t.occurred_at),
            ("c1", "purchase", "web", 7, 8, 9, WHEN_UTC),
        )
        self.assertEqual((str(t.revenue), t.currency, str(t.revenue_original)), ("19.9000", "USD", "19.9000"))
        self.assertEqual((t.order_id, t.sku), ("o1", "A-1"))
        self.assertEqual(t.properties, {"coupon": "SPRING", "items": [1, 2], "nested": {"a": None}})

    def test_it_stores_empty_defaults_for_optional_fields(self):
        touchpoints_bulk_insert([touchpoint("e1", channel=None, properties=None, campaign_id=None)])

        t = stored("e1")
        self.assertEqual(
            (t.channel, t.campaign_id, t.message_id, t.creative_id, t.revenue, t.currency, t.revenue_original),
            ("", None, None, None, None, "", None),
        )
        self.assertEqual((t.order_id, t.sku, t.properties), ("", "", {}))

    def test_it_counts_a_replayed_batch_as_duplicates_and_adds_nothing(self):
        batch = [touchpoint("e1"), purchase("e2"), touchpoint("e3", customer="new")]
        self.assertEqual(touchpoints_bulk_insert(batch), InsertResult(inserted=3, duplicates=0, customers_created=1))
        before = everything()

        result = touchpoints_bulk_insert(batch)

        self.assertEqual(result, InsertResult(inserted=0, duplicates=3, customers_created=0))
        self.assertEqual(everything(), before)

    def test_it_counts_new_and_replayed_touchpoints_in_one_batch(self):
        touchpoints_bulk_insert([touchpoint("e1"), touchpoint("e2")])

        result = touchpoints_bulk_insert([touchpoint("e1"), touchpoint("e2"), touchpoint("e3", kind="open")])

        self.assertEqual(result, InsertResult(inserted=1, duplicates=2, customers_created=0))
        self.assertEqual(sorted(Touchpoint.objects.values_list("event_id", flat=True)), ["e1", "e2", "e3"])

    def test_it_keeps_the_stored_touchpoint_when_a_replay_changes_its_content(self):
        touchpoints_bulk_insert([touchpoint("e1", kind="visit", channel="web")])

        result = touchpoints_bulk_insert([touchpoint("e1", kind="click", channel="app")])

        self.assertEqual(result, InsertResult(inserted=0, duplicates=1, customers_created=0))
        t = stored("e1")
        self.assertEqual((t.kind, t.channel), ("visit", "web"))

    def test_it_counts_an_event_id_repeated_in_one_batch_as_a_duplicate_and_keeps_the_first(self):
        result = touchpoints_bulk_insert(
            [touchpoint("e1", kind="visit"), touchpoint("e2"), touchpoint("e1", kind="click")]
        )

        self.assertEqual(result, InsertResult(inserted=2, duplicates=1, customers_created=0))
        self.assertEqual(stored("e1").kind, "visit")

    def test_it_counts_a_second_purchase_of_the_same_order_line_as_a_duplicate(self):
        touchpoints_bulk_insert([purchase("e1", order_id="o1", sku="A-1")])

        result = touchpoints_bulk_insert([purchase("e2", order_id="o1", sku="A-1", revenue="5.00")])

        self.assertEqual(result, InsertResult(inserted=0, duplicates=1, customers_created=0))
        self.assertEqual(list(Touchpoint.objects.values_list("event_id", "revenue")), [("e1", Decimal("19.9"))])

    def test_it_counts_a_repeated_order_line_in_one_batch_as_a_duplicate(self):
        result = touchpoints_bulk_insert(
            [purchase("e1", sku="A-1"), purchase("e2", sku="A-1"), purchase("e3", sku="B-2")]
        )

        self.assertEqual(result, InsertResult(inserted=2, duplicates=1, customers_created=0))
        self.assertEqual(sorted(Touchpoint.objects.values_list("event_id", "sku")), [("e1", "A-1"), ("e3", "B-2")])

    def test_it_records_two_refunds_of_the_same_order_line(self):
        touchpoints_bulk_insert([purchase("e1")])

        result = touchpoints_bulk_insert(
            [
                touchpoint("r1", kind="refund", order_id="o1", sku="A-1", revenue="5.00"),
                touchpoint("r2", kind="refund", order_id="o1", sku="A-1", revenue="4.90"),
            ]
        )

        self.assertEqual(result, InsertResult(inserted=2, duplicates=0, customers_created=0))
        self.assertEqual(Touchpoint.objects.filter(kind="refund", order_id="o1", sku="A-1").count(), 2)

    def test_it_records_a_refund_with_only_an_order_id(self):
        result = touchpoints_bulk_insert([touchpoint("r1", kind="refund", order_id="o1")])

        self.assertEqual(result, InsertResult(inserted=1, duplicates=0, customers_created=0))
        t = stored("r1")
        self.assertEqual((t.order_id, t.sku, t.revenue), ("o1", "", None))

    def test_it_returns_zero_counts_for_an_empty_batch(self):
        before = everything()

        self.assertEqual(touchpoints_bulk_insert([]), InsertResult(inserted=0, duplicates=0, customers_created=0))
        self.assertEqual(everything(), before)

    def test_it_stores_integer_event_and_customer_ids_as_text(self):
        result = touchpoints_bulk_insert([touchpoint(123, customer=456)])

        self.assertEqual(result, InsertResult(inserted=1, duplicates=0, customers_created=1))
        self.assertEqual(stored("123").customer.external_id, "456")

    def test_it_accepts_custom_kinds(self):
        for kind in ("trial_started", "app.opened", "level-2", "9lives"):
            with self.subTest(kind=kind):
                result = touchpoints_bulk_insert([touchpoint(f"e-{kind}", kind=kind)])
                self.assertEqual(result, InsertResult(inserted=1, duplicates=0, customers_created=0))
                self.assertEqual(stored(f"e-{kind}").kind, kind)


class StubCustomerTests(IngestAssertions, TestCase):
    def test_it_creates_one_stub_per_unknown_customer_without_consent(self):
        result = touchpoints_bulk_insert(
            [
                touchpoint("e1", customer="new-a"),
                touchpoint("e2", customer="new-a"),
                touchpoint("e3", customer="new-b"),
                touchpoint("e4", customer="new-a", kind="click"),
            ]
        )

        self.assertEqual(result, InsertResult(inserted=4, duplicates=0, customers_created=2))
        self.assertEqual(Customer.objects.count(), 2)
        for c in Customer.objects.all():
            self.assertEqual((c.is_stub, c.email_opt_in, c.sms_opt_in, c.push_opt_in), (True, False, False, False))
            self.assertEqual((c.email_opt_in_at, c.sms_opt_in_at, c.push_opt_in_at), (None, None, None))
            self.assertEqual((c.email_opt_in_source, c.sms_opt_in_source, c.push_opt_in_source), ("", "", ""))
            self.assertEqual((c.email, c.phone, c.first_name, c.attributes, c.unsubscribed_at), ("", "", "", {}, None))
        self.assertEqual(Touchpoint.objects.filter(customer__external_id="new-a").count(), 3)

    def test_it_does_not_create_a_stub_for_a_known_customer(self):
        Customer.objects.create(external_id="c1", email_opt_in=True)

        result = touchpoints_bulk_insert([touchpoint("e1", customer="c1"), touchpoint("e2", customer="c2")])

        self.assertEqual(result, InsertResult(inserted=2, duplicates=0, customers_created=1))
        known = Customer.objects.get(external_id="c1")
        self.assertEqual((known.is_stub, known.email_opt_in), (False, True))

    def test_it_does_not_create_a_second_stub_for_a_stub_customer(self):
        touchpoints_bulk_insert([touchpoint("e1", customer="new")])

        result = touchpoints_bulk_insert([touchpoint("e2", customer="new")])

        self.assertEqual(result, InsertResult(inserted=1, duplicates=0, customers_created=0))
        self.assertEqual(Customer.objects.count(), 1)

    def test_a_stub_keeps_its_touchpoints_when_the_crm_upserts_it(self):
        touchpoints_bulk_insert([touchpoint("e1", customer="new")])
        stub_id = Customer.objects.get().id

        customers_bulk_upsert([{"external_id": "new", "email": "new@example.com", "email_opt_in": True}])

        c = Customer.objects.get()
        self.assertEqual((c.id, c.is_stub, c.email_opt_in), (stub_id, False, True))
        self.assertEqual(list(c.touchpoints.values_list("event_id", flat=True)), ["e1"])


class TouchpointTimeTests(IngestAssertions, TestCase):
    def test_it_stores_times_in_utc(self):
        touchpoints_bulk_insert(
            [
                touchpoint("e1", occurred_at="2025-03-01T12:00:00+02:00"),
                touchpoint("e2", occurred_at="2025-03-01T05:30:00-04:30"),
                touchpoint("e3", occurred_at="2025-03-01 10:00:00.250000Z"),
            ]
        )

        with connection.cursor() as cursor:  # the stored value itself, not a converted read
            cursor.execute("SELECT event_id, occurred_at FROM marketing_touchpoint ORDER BY event_id")
            rows = cursor.fetchall()
        got = [
            (event_id, value if isinstance(value, datetime) else datetime.fromisoformat(value))
            for event_id, value in rows
        ]
        utc = [
            (event_id, value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)) for event_id, value in got
        ]
        self.assertEqual(
            utc,
            [("e1", WHEN_UTC), ("e2", WHEN_UTC), ("e3", WHEN_UTC + timedelta(milliseconds=250))],
        )
        self.assertEqual(stored("e1").occurred_at.utcoffset(), timedelta(0))

    def test_it_accepts_an_iso_timestamp_in_a_form_other_than_the_plain_one(self):
        touchpoints_bulk_insert([touchpoint("e1", occurred_at="20250301T120000+0200")])

        self.assertEqual(stored("e1").occurred_at, WHEN_UTC)

    def test_it_accepts_any_past_date(self):
        result = touchpoints_bulk_insert(
            [touchpoint("e1", occurred_at="2004-02-29T23:59:59Z"), touchpoint("e2", occurred_at="1970-01-01T00:00:00Z")]
        )

        self.assertEqual(result.inserted, 2)
        self.assertEqual(stored("e1").occurred_at, datetime(2004, 2, 29, 23, 59, 59, tzinfo=UTC))
        self.assertEqual(stored("e2").occurred_at, datetime(1970, 1, 1, tzinfo=UTC))

    def test_it_refuses_a_time_before_1900_as_a_date_bug(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e1", occurred_at="1900-01-01T00:00:00Z"),  # the earliest allowed
                    touchpoint("e2", occurred_at="1899-12-31T23:59:59Z"),
                    touchpoint("e3", occurred_at="1900-01-01T00:30:00+01:00"),  # 1899 in UTC
                    touchpoint("e4", occurred_at="0001-01-01T00:00:00Z"),
                ]
            ),
            [(row, "occurred_at", "is before 1900-01-01; check the date") for row in (1, 2, 3)],
        )

    def test_it_accepts_a_time_less_than_a_day_ahead(self):
        # Clocks of integrations drift, and a timezone mistake is less than a day.
        soon = (datetime.now(UTC) + timedelta(hours=20)).replace(microsecond=0)

        self.assertEqual(touchpoints_bulk_insert([touchpoint("e1", occurred_at=iso(soon))]).inserted, 1)
        self.assertEqual(stored("e1").occurred_at, soon)

    def test_it_refuses_a_time_more_than_a_day_ahead(self):
        later = datetime.now(UTC) + timedelta(days=1, hours=1)

        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert([touchpoint("e1", customer="new", occurred_at=iso(later))]),
            [(0, "occurred_at", "is more than a day in the future")],
        )

    def test_it_refuses_occurred_at_without_a_timezone_or_not_iso(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e0", occurred_at="2025-03-01T10:00:00"),
                    touchpoint("e1", occurred_at="2025-03-01"),
                    touchpoint("e2", occurred_at="yesterday"),
                    touchpoint("e3", occurred_at=1740823200),
                    touchpoint("e4", occurred_at=None),
                    {"event_id": "e5", "customer_external_id": "c1", "kind": "visit"},
                ]
            ),
            [
                (0, "occurred_at", "needs a timezone (e.g. a trailing Z or +02:00)"),
                (1, "occurred_at", "needs a timezone (e.g. a trailing Z or +02:00)"),
                (2, "occurred_at", "is not an ISO 8601 timestamp, e.g. 2026-11-01T10:00:00Z"),
                (3, "occurred_at", OCCURRED_AT_FORMAT),
                (4, "occurred_at", OCCURRED_AT_FORMAT),
                (5, "occurred_at", "is required: an ISO 8601 timestamp with a timezone"),
            ],
        )


@override_settings(REPORTING_CURRENCY="USD", CURRENCY_RATES={"EUR": Decimal("1.10")})
class TouchpointMoneyTests(IngestAssertions, TestCase):
    def test_it_converts_revenue_in_another_currency_and_keeps_the_original(self):
        result = touchpoints_bulk_insert([purchase("e1", revenue="19.99", currency="EUR")])

        self.assertEqual(result.inserted, 1)
        t = stored("e1")
        self.assertEqual((str(t.revenue), t.currency, str(t.revenue_original)), ("21.9890", "EUR", "19.9900"))

    def test_it_stores_revenue_without_a_currency_in_the_reporting_currency(self):
        touchpoints_bulk_insert([purchase("e1", revenue=12), purchase("e2", sku="B", revenue=0.5, currency="USD")])

        self.assertEqual(
            (str(stored("e1").revenue), stored("e1").currency, str(stored("e1").revenue_original)),
            ("12.0000", "USD", "12.0000"),
        )
        self.assertEqual((str(stored("e2").revenue), stored("e2").currency), ("0.5000", "USD"))

    def test_it_keeps_a_currency_sent_without_revenue(self):
        touchpoints_bulk_insert([touchpoint("e1", currency="GBP")])

        t = stored("e1")
        self.assertEqual((t.revenue, t.currency, t.revenue_original), (None, "GBP", None))

    def test_it_refuses_revenue_in_a_currency_without_a_configured_rate(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert([purchase("e1", customer="new", revenue="10", currency="GBP")]),
            [
                (
                    0,
                    "currency",
                    "GBP has no configured rate to USD (CURRENCY_RATES); send revenue in USD or configure a rate",
                )
            ],
        )

    def test_it_refuses_a_currency_that_is_not_an_upper_case_code(self):
        message = "must be an upper-case ISO 4217 code, e.g. USD"
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [purchase("e1", currency="eur"), purchase("e2", sku="B", currency="EURO"), touchpoint("e3", currency=1)]
            ),
            [(0, "currency", message), (1, "currency", message), (2, "currency", message)],
        )

    def test_it_refuses_negative_non_numeric_boolean_or_too_large_revenue(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    purchase("e0", sku="s0", revenue="-0.01"),
                    purchase("e1", sku="s1", revenue="ten"),
                    purchase("e2", sku="s2", revenue=True),
                    purchase("e3", sku="s3", revenue="10000000000"),
                    purchase("e4", sku="s4", revenue="NaN"),
                    purchase("e5", sku="s5", revenue={"amount": 1}),
                    purchase("e6", sku="s6", revenue="9999999999.9999"),  # the largest allowed
                ]
            ),
            [(row, "revenue", MONEY_MESSAGE) for row in range(6)],
        )

    def test_it_refuses_revenue_that_overflows_the_column_once_converted(self):
        # 9,999,999,999 EUR is allowed as sent, but 1.10 times it does not fit NUMERIC(14, 4).
        before = everything()

        with self.assertRaises(BatchInvalid) as caught:
            touchpoints_bulk_insert([purchase("e1", revenue="9999999999", currency="EUR")])

        self.assertEqual([(e.row, e.field) for e in caught.exception.errors], [(0, "revenue")])
        self.assertEqual(everything(), before)

    def test_it_rounds_revenue_with_more_than_four_decimals_the_same_on_every_database(self):
        touchpoints_bulk_insert([purchase("e1", revenue="19.12345")])

        t = stored("e1")
        self.assertEqual((str(t.revenue), str(t.revenue_original)), ("19.1235", "19.1235"))


class TouchpointRefusalTests(IngestAssertions, TestCase):
    def setUp(self):
        Customer.objects.create(external_id="c1")
        touchpoints_bulk_insert([touchpoint("existing")])

    def test_a_bad_row_writes_nothing_not_even_a_stub_customer(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e1", customer="new-a"),
                    touchpoint("e2", customer="c1"),
                    touchpoint("e3", customer="new-b", kind="Visit"),
                ]
            ),
            [(2, "kind", KIND_MESSAGE)],
        )

    def test_it_requires_order_id_sku_and_revenue_for_a_purchase(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e0", kind="purchase"),
                    purchase("e1", order_id=None),
                    purchase("e2", sku=""),
                    purchase("e3", revenue=None),
                ]
            ),
            [
                (0, "order_id", "is required for purchase touchpoints"),
                (0, "sku", "is required for purchase touchpoints (one touchpoint per order line)"),
                (0, "revenue", "is required for purchase touchpoints"),
                (1, "order_id", "is required for purchase touchpoints"),
                (2, "sku", "is required for purchase touchpoints (one touchpoint per order line)"),
                (3, "revenue", "is required for purchase touchpoints"),
            ],
        )

    def test_it_requires_an_order_id_for_a_refund(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert([touchpoint("r1", kind="refund", revenue="5")]),
            [(0, "order_id", "is required for refund touchpoints")],
        )

    def test_it_refuses_an_order_id_or_sku_that_is_too_long(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert([purchase("e1", order_id="o" * 65, sku="s" * 65)]),
            [
                (0, "order_id", "must be a string of at most 64 characters"),
                (0, "sku", "must be a string of at most 64 characters"),
                (0, "order_id", "is required for purchase touchpoints"),
                (0, "sku", "is required for purchase touchpoints (one touchpoint per order line)"),
            ],
        )

    def test_it_refuses_properties_that_are_not_an_object(self):
        message = "must be an object or null"
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [touchpoint("e1", properties=[1, 2]), touchpoint("e2", properties="{}"), touchpoint("e3", properties=3)]
            ),
            [(0, "properties", message), (1, "properties", message), (2, "properties", message)],
        )

    def test_it_refuses_ids_that_are_not_positive_integers(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e0", campaign_id=True),
                    touchpoint("e1", campaign_id=0),
                    touchpoint("e2", campaign_id=-3),
                    touchpoint("e3", campaign_id="7"),
                    touchpoint("e4", message_id=1.5),
                    touchpoint("e5", creative_id=2**63),
                    touchpoint("e6", campaign_id=2**63 - 1, message_id=1, creative_id=None),  # valid
                ]
            ),
            [
                (0, "campaign_id", POSITIVE_ID),
                (1, "campaign_id", POSITIVE_ID),
                (2, "campaign_id", POSITIVE_ID),
                (3, "campaign_id", POSITIVE_ID),
                (4, "message_id", POSITIVE_ID),
                (5, "creative_id", POSITIVE_ID),
            ],
        )

    def test_it_refuses_kinds_that_are_not_lower_case_slugs(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e0", kind="Purchase"),
                    touchpoint("e1", kind="TRIAL_STARTED"),
                    touchpoint("e2", kind=""),
                    touchpoint("e3", kind="trial started"),
                    touchpoint("e4", kind="_hidden"),
                    touchpoint("e5", kind="k" * 65),
                    touchpoint("e6", kind=None),
                ]
            ),
            [(row, "kind", KIND_MESSAGE) for row in range(7)],
        )

    def test_it_requires_an_event_id_and_a_customer_external_id(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    {"customer_external_id": "c1", "kind": "visit", "occurred_at": WHEN},
                    touchpoint("", customer=""),
                    touchpoint("e" * 256, customer=False),
                ]
            ),
            [
                (0, "event_id", ID_MESSAGE),
                (1, "event_id", ID_MESSAGE),
                (1, "customer_external_id", ID_MESSAGE),
                (2, "event_id", ID_MESSAGE),
                (2, "customer_external_id", ID_MESSAGE),
            ],
        )

    def test_it_refuses_a_customer_external_id_with_the_erased_prefix(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert([touchpoint("e1", customer="erased:123")]),
            [(0, "customer_external_id", "ids starting with 'erased:' are reserved")],
        )

    def test_it_refuses_touchpoints_for_an_erased_customer_and_writes_nothing(self):
        tombstone("gone")

        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [touchpoint("e1", customer="new"), touchpoint("e2", customer="gone"), touchpoint("e3", customer="gone")]
            ),
            [(1, "customer_external_id", ERASED_MESSAGE), (2, "customer_external_id", ERASED_MESSAGE)],
        )

    def test_it_refuses_a_nul_character_anywhere_in_a_row(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [
                    touchpoint("e\x001", customer="new"),
                    touchpoint("e2", customer="new", channel="we\x00b"),
                    touchpoint("e3", customer="new", properties={"note": ["a\x00"]}),
                    touchpoint("e4", customer="new", properties={"k\x00": 1}),
                    touchpoint("e5", customer="new"),
                ]
            ),
            [(row, None, NUL_MESSAGE) for row in range(4)],
        )

    def test_it_accepts_properties_holding_a_literal_backslash_u0000_text(self):
        # Six ordinary characters, as in a logged JSON escape: not a NUL.
        result = touchpoints_bulk_insert([touchpoint("e1", properties={"raw": "\\u0000"})])

        self.assertEqual(result, InsertResult(inserted=1, duplicates=0, customers_created=0))
        self.assertEqual(stored("e1").properties, {"raw": "\\u0000"})

    def test_it_refuses_an_unknown_field_and_a_row_that_is_not_an_object(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert([touchpoint("e1", value=3), ["e2"]]),
            [(0, "value", "unknown field"), (1, None, "must be an object")],
        )

    def test_it_refuses_a_channel_that_is_not_a_short_string(self):
        message = "must be a string of at most 32 characters"
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert(
                [touchpoint("e1", channel="c" * 33), touchpoint("e2", channel=5), touchpoint("e3", channel="c" * 32)]
            ),
            [(0, "channel", message), (1, "channel", message)],
        )

    @override_settings(BULK_MAX_ROWS=3)
    def test_it_refuses_more_rows_than_bulk_max_rows(self):
        before = everything()

        with self.assertRaises(BatchTooLarge) as caught:
            touchpoints_bulk_insert([touchpoint(f"n{i}") for i in range(4)])

        self.assertEqual(caught.exception.message, "4 touchpoints in one batch; the limit is 3 rows. Split the batch.")
        self.assertEqual(everything(), before)
        self.assertEqual(touchpoints_bulk_insert([touchpoint(f"n{i}") for i in range(3)]).inserted, 3)

    def test_it_refuses_a_batch_that_is_not_a_list(self):
        self.assertRefusedAndNothingWritten(
            lambda: touchpoints_bulk_insert({"touchpoints": []}),
            [(None, "touchpoints", "'touchpoints' must be a list of objects.")],
        )


@unittest.skipUnless(
    connection.vendor == "postgresql", "concurrent batches need PostgreSQL (SQLite serialises writers)"
)
class ConcurrentTouchpointBatchTests(TransactionTestCase):
    def test_two_concurrent_copies_of_one_batch_insert_each_touchpoint_once(self):
        batch = [touchpoint(f"e{i:05d}", customer=f"c{i % 150:03d}", kind="click") for i in range(2000)]

        outcomes = run_concurrently(lambda: touchpoints_bulk_insert(batch), lambda: touchpoints_bulk_insert(batch))

        self.assertEqual([error for _, error in outcomes], [None, None])
        results = [result for result, _ in outcomes]
        self.assertEqual(sum(r.inserted for r in results), 2000)
        self.assertEqual(sum(r.duplicates for r in results), 2000)
        self.assertEqual(sum(r.customers_created for r in results), 150)
        self.assertEqual(Touchpoint.objects.count(), 2000)
        self.assertEqual(Customer.objects.count(), 150)

    def test_two_concurrent_batches_of_the_same_order_lines_under_different_event_ids_insert_each_line_once(self):
        first = [purchase(f"a{i}", customer=f"c{i % 50}", order_id=f"o{i}") for i in range(1000)]
        second = [purchase(f"b{i}", customer=f"c{i % 50}", order_id=f"o{i}") for i in reversed(range(1000))]

        outcomes = run_concurrently(lambda: touchpoints_bulk_insert(first), lambda: touchpoints_bulk_insert(second))

        self.assertEqual([error for _, error in outcomes], [None, None])
        self.assertEqual(sum(result.inserted for result, _ in outcomes), 1000)
        self.assertEqual(Touchpoint.objects.count(), 1000)
        self.assertEqual(Touchpoint.objects.values("order_id").distinct().count(), 1000)

    def test_two_concurrent_batches_for_known_customers_with_order_lines_in_opposite_orders_both_succeed(self):
        # Known customers: no stub insert serialises the two batches, so they really
        # overlap and may deadlock on the order-line index; the service retries that.
        Customer.objects.bulk_create([Customer(external_id=f"c{i}") for i in range(50)])
        first = [purchase(f"a{i}", customer=f"c{i % 50}", order_id=f"o{i}") for i in range(2000)]
        second = [purchase(f"b{i}", customer=f"c{i % 50}", order_id=f"o{i}") for i in reversed(range(2000))]

        outcomes = run_concurrently(lambda: touchpoints_bulk_insert(first), lambda: touchpoints_bulk_insert(second))

        self.assertEqual([error for _, error in outcomes], [None, None])
        self.assertEqual(sum(result.inserted for result, _ in outcomes), 2000)
        self.assertEqual(sum(result.duplicates for result, _ in outcomes), 2000)
        self.assertEqual(Touchpoint.objects.count(), 2000)
