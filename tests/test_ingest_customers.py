"""customers_bulk_upsert / customers_validate: exact counts, field semantics (omitted keys
unchanged, null clears, attributes shallow-merge), consent bookkeeping, and refusals that
write nothing. Run on PostgreSQL (COPY + set-based upsert) and SQLite (the fallback):
the outcomes must be identical."""

from __future__ import annotations

import unittest

from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings
from django.utils import timezone

from marketing.errors import BatchInvalid, BatchTooLarge
from marketing.ingest import UpsertResult, customers_bulk_upsert, customers_validate, touchpoints_bulk_insert
from marketing.ingest.validate import CustomerRow
from marketing.models import Customer
from tests.ingest_helpers import (
    ERASED_MESSAGE,
    LONG_AGO,
    IngestAssertions,
    everything,
    run_concurrently,
    tombstone,
    touchpoint,
)


def full_customer(external_id: str = "c1", **overrides) -> Customer:
    """A customer with every field set, written through the ORM (not the code under test)."""
    fields = {
        "external_id": external_id,
        "email": "ann@example.com",
        "phone": "+14155550123",
        "first_name": "Ann",
        "last_name": "Lee",
        "country": "US",
        "timezone": "America/New_York",
        "locale": "en-US",
        "attributes": {"tier": "gold", "prefs": {"colour": "red", "size": "M"}},
        "email_opt_in": True,
        "email_opt_in_at": LONG_AGO,
        "email_opt_in_source": "signup-form",
        "sms_opt_in": True,
        "sms_opt_in_at": LONG_AGO,
        "sms_opt_in_source": "pos",
        "push_opt_in": False,
        "unsubscribed_at": None,
        "updated_at": LONG_AGO,
        **overrides,
    }
    return Customer.objects.create(**fields)


def row_of(external_id: str) -> dict:
    return Customer.objects.filter(external_id=external_id).values().get()


class CustomerUpsertCountTests(IngestAssertions, TestCase):
    def test_it_creates_new_customers_and_counts_them(self):
        result = customers_bulk_upsert([{"external_id": "c1"}, {"external_id": "c2"}, {"external_id": "c3"}])

        self.assertEqual(result, UpsertResult(created=3, updated=0))
        self.assertEqual(
            list(Customer.objects.order_by("external_id").values_list("external_id", flat=True)), ["c1", "c2", "c3"]
        )

    def test_it_gives_a_customer_sent_with_only_an_external_id_empty_fields_and_no_consent(self):
        customers_bulk_upsert([{"external_id": "c1"}])

        c = Customer.objects.get()
        self.assertEqual(
            (c.email, c.phone, c.first_name, c.last_name, c.country, c.timezone, c.locale, c.attributes),
            ("", "", "", "", "", "", "", {}),
        )
        self.assertEqual((c.email_opt_in, c.sms_opt_in, c.push_opt_in), (False, False, False))
        self.assertEqual((c.email_opt_in_at, c.sms_opt_in_at, c.push_opt_in_at), (None, None, None))
        self.assertEqual((c.email_opt_in_source, c.sms_opt_in_source, c.push_opt_in_source), ("", "", ""))
        self.assertEqual((c.unsubscribed_at, c.is_stub, c.erased_at, c.last_seen_at), (None, False, None, None))

    def test_it_stores_every_field_of_a_new_customer(self):
        customers_bulk_upsert(
            [
                {
                    "external_id": "c1",
                    "email": "ann@example.com",
                    "phone": "+14155550123",
                    "first_name": "Ann",
                    "last_name": "Lee",
                    "country": "US",
                    "timezone": "America/New_York",
                    "locale": "en-US",
                    "attributes": {"tier": "gold", "visits": 3},
                }
            ]
        )

        c = Customer.objects.get()
        self.assertEqual(
            (c.external_id, c.email, c.phone, c.first_name, c.last_name, c.country, c.timezone, c.locale),
            ("c1", "ann@example.com", "+14155550123", "Ann", "Lee", "US", "America/New_York", "en-US"),
        )
        self.assertEqual(c.attributes, {"tier": "gold", "visits": 3})

    def test_it_counts_existing_customers_as_updated_and_new_ones_as_created(self):
        full_customer("c1")

        result = customers_bulk_upsert([{"external_id": "c1", "first_name": "Bo"}, {"external_id": "c2"}])

        self.assertEqual(result, UpsertResult(created=1, updated=1))
        self.assertEqual(Customer.objects.count(), 2)
        self.assertEqual(Customer.objects.get(external_id="c1").first_name, "Bo")

    def test_it_counts_a_matched_but_unchanged_customer_as_updated(self):
        full_customer("c1")

        result = customers_bulk_upsert([{"external_id": "c1", "first_name": "Ann"}])

        self.assertEqual(result, UpsertResult(created=0, updated=1))

    def test_it_counts_a_replayed_batch_as_updated_and_rewrites_nothing(self):
        batch = [
            {
                "external_id": f"c{i}",
                "email": f"Person{i}@Example.com",
                "phone": "+1 415 555 0123",
                "first_name": "Ann",
                "country": "de",
                "attributes": {"tier": "gold", "nested": {"a": 1}},
                "email_opt_in": True,
                "sms_opt_in": False,
                "unsubscribed": i == 2,
            }
            for i in range(3)
        ]
        self.assertEqual(customers_bulk_upsert(batch, source="crm"), UpsertResult(created=3, updated=0))
        # Backdate, so any rewrite on replay would show whatever clock it used.
        Customer.objects.update(updated_at=LONG_AGO)
        before = everything()

        result = customers_bulk_upsert(batch, source="replay")

        self.assertEqual(result, UpsertResult(created=0, updated=3))
        self.assertEqual(everything(), before)

    def test_it_counts_a_customer_named_twice_in_one_batch_once_and_merges_in_order(self):
        result = customers_bulk_upsert(
            [
                {"external_id": "c1", "first_name": "Ann", "email": "first@example.com"},
                {"external_id": "c1", "last_name": "Lee"},
                {"external_id": "c1", "first_name": "Anna"},
            ]
        )

        self.assertEqual(result, UpsertResult(created=1, updated=0))
        c = Customer.objects.get()
        self.assertEqual((c.first_name, c.last_name, c.email), ("Anna", "Lee", "first@example.com"))

    def test_it_counts_an_existing_customer_named_twice_in_one_batch_as_one_update(self):
        full_customer("c1")

        result = customers_bulk_upsert(
            [{"external_id": "c1", "first_name": "X"}, {"external_id": "c1", "first_name": "Y"}]
        )

        self.assertEqual(result, UpsertResult(created=0, updated=1))
        self.assertEqual(Customer.objects.get().first_name, "Y")

    def test_it_merges_attribute_patches_for_one_customer_in_batch_order(self):
        full_customer("c1", attributes={"b": 0, "d": 4})

        customers_bulk_upsert(
            [
                {"external_id": "c1", "attributes": {"a": 1, "b": 1}},
                {"external_id": "c1", "attributes": {"b": None, "c": 2}},
                {"external_id": "c1", "attributes": {"a": 3}},
            ]
        )

        self.assertEqual(Customer.objects.get().attributes, {"a": 3, "c": 2, "d": 4})

    def test_it_applies_a_later_attributes_set_after_an_earlier_null_in_one_batch(self):
        full_customer("c1", attributes={"old": 1})

        customers_bulk_upsert(
            [{"external_id": "c1", "attributes": None}, {"external_id": "c1", "attributes": {"x": 1}}]
        )

        self.assertEqual(Customer.objects.get().attributes, {"x": 1})

    def test_it_clears_attributes_when_a_later_row_in_the_batch_sends_null(self):
        full_customer("c1", attributes={"old": 1})

        customers_bulk_upsert(
            [{"external_id": "c1", "attributes": {"x": 1}}, {"external_id": "c1", "attributes": None}]
        )

        self.assertEqual(Customer.objects.get().attributes, {})

    def test_it_returns_zero_counts_for_an_empty_batch_and_writes_nothing(self):
        full_customer("c1")
        before = everything()

        self.assertEqual(customers_bulk_upsert([]), UpsertResult(created=0, updated=0))
        self.assertEqual(everything(), before)

    def test_it_applies_the_latest_of_several_upserts_made_in_one_transaction(self):
        # TestCase wraps the test in a transaction, as ATOMIC_REQUESTS, a CSV import in
        # one atomic block or a task's transaction would: each upsert must see only its
        # own rows, never rows staged by an earlier call in the same transaction.
        for letter in "abc":
            customers_bulk_upsert([{"external_id": "c1", "email": f"{letter}@example.com"}])
            self.assertEqual(Customer.objects.get().email, f"{letter}@example.com")

        result = customers_bulk_upsert([{"external_id": "c1", "email": "d@example.com"}])

        self.assertEqual(result, UpsertResult(created=0, updated=1))
        self.assertEqual(Customer.objects.get().email, "d@example.com")


class CustomerUpsertFieldTests(IngestAssertions, TestCase):
    def test_it_leaves_omitted_keys_unchanged(self):
        full_customer("c1")
        before = row_of("c1")

        customers_bulk_upsert([{"external_id": "c1", "first_name": "Bo"}])

        after = row_of("c1")
        self.assertEqual(after["first_name"], "Bo")
        self.assertGreater(after["updated_at"], LONG_AGO)
        for name in ("first_name", "updated_at"):
            del before[name], after[name]
        self.assertEqual(after, before)

    def test_it_clears_email_sent_as_null(self):
        full_customer("c1")

        customers_bulk_upsert([{"external_id": "c1", "email": None}])

        self.assertEqual(row_of("c1")["email"], "")

    def test_it_clears_every_text_field_sent_as_null(self):
        full_customer("c1")

        customers_bulk_upsert(
            [
                {
                    "external_id": "c1",
                    "email": None,
                    "phone": None,
                    "first_name": None,
                    "last_name": None,
                    "country": None,
                    "timezone": None,
                    "locale": None,
                }
            ]
        )

        c = row_of("c1")
        self.assertEqual(
            [c[name] for name in ("email", "phone", "first_name", "last_name", "country", "timezone", "locale")],
            [""] * 7,
        )

    def test_it_turns_an_opt_in_sent_as_null_into_false(self):
        full_customer("c1")

        customers_bulk_upsert([{"external_id": "c1", "email_opt_in": None}], source="crm")

        c = row_of("c1")
        self.assertIs(c["email_opt_in"], False)
        self.assertEqual(c["email_opt_in_source"], "crm")
        self.assertIs(c["sms_opt_in"], True)

    def test_it_empties_attributes_sent_as_null(self):
        full_customer("c1")

        customers_bulk_upsert([{"external_id": "c1", "attributes": None}])

        self.assertEqual(row_of("c1")["attributes"], {})

    def test_it_shallow_merges_attributes_replacing_nested_objects_whole(self):
        full_customer("c1", attributes={"tier": "gold", "prefs": {"colour": "red", "size": "M"}, "visits": 3})

        customers_bulk_upsert([{"external_id": "c1", "attributes": {"prefs": {"colour": "blue"}, "new": [1, 2]}}])

        self.assertEqual(
            row_of("c1")["attributes"], {"tier": "gold", "prefs": {"colour": "blue"}, "visits": 3, "new": [1, 2]}
        )

    def test_it_removes_an_attribute_set_to_null_and_ignores_removing_a_missing_one(self):
        full_customer("c1", attributes={"tier": "gold", "visits": 3})

        customers_bulk_upsert([{"external_id": "c1", "attributes": {"tier": None, "never_there": None}}])

        self.assertEqual(row_of("c1")["attributes"], {"visits": 3})

    def test_it_keeps_a_null_nested_inside_an_attribute_value(self):
        full_customer("c1", attributes={})

        customers_bulk_upsert([{"external_id": "c1", "attributes": {"prefs": {"colour": None}}}])

        self.assertEqual(row_of("c1")["attributes"], {"prefs": {"colour": None}})

    def test_it_leaves_attributes_alone_for_an_empty_attributes_object(self):
        full_customer("c1", attributes={"tier": "gold"})
        before = row_of("c1")

        result = customers_bulk_upsert([{"external_id": "c1", "attributes": {}}])

        self.assertEqual(result, UpsertResult(created=0, updated=1))
        self.assertEqual(row_of("c1"), before)

    def test_it_records_consent_time_and_source_when_consent_changes(self):
        full_customer("c1", email_opt_in=False, email_opt_in_at=None, email_opt_in_source="")
        start = timezone.now()

        customers_bulk_upsert([{"external_id": "c1", "email_opt_in": True}], source="crm-sync")

        c = row_of("c1")
        self.assertIs(c["email_opt_in"], True)
        self.assertTrue(start <= c["email_opt_in_at"] <= timezone.now())
        self.assertEqual(c["email_opt_in_source"], "crm-sync")
        # Channels not sent keep their own history.
        self.assertEqual((c["sms_opt_in"], c["sms_opt_in_at"], c["sms_opt_in_source"]), (True, LONG_AGO, "pos"))
        self.assertEqual((c["push_opt_in"], c["push_opt_in_at"], c["push_opt_in_source"]), (False, None, ""))

    def test_it_records_a_consent_withdrawal(self):
        full_customer("c1")
        start = timezone.now()

        customers_bulk_upsert([{"external_id": "c1", "sms_opt_in": False}], source="sms-stop")

        c = row_of("c1")
        self.assertIs(c["sms_opt_in"], False)
        self.assertTrue(start <= c["sms_opt_in_at"] <= timezone.now())
        self.assertEqual(c["sms_opt_in_source"], "sms-stop")

    def test_it_keeps_consent_time_and_source_when_the_same_consent_is_sent_again(self):
        full_customer("c1")  # email_opt_in True since LONG_AGO from "signup-form"

        customers_bulk_upsert([{"external_id": "c1", "email_opt_in": True, "push_opt_in": False}], source="api")

        c = row_of("c1")
        self.assertEqual(
            (c["email_opt_in"], c["email_opt_in_at"], c["email_opt_in_source"]), (True, LONG_AGO, "signup-form")
        )
        self.assertEqual((c["push_opt_in"], c["push_opt_in_at"], c["push_opt_in_source"]), (False, None, ""))
        self.assertEqual(c["updated_at"], LONG_AGO)

    def test_it_records_consent_time_and_source_for_each_channel_sent_on_a_new_customer(self):
        start = timezone.now()

        customers_bulk_upsert([{"external_id": "c1", "email_opt_in": True, "sms_opt_in": False}], source="csv")

        c = row_of("c1")
        self.assertEqual((c["email_opt_in"], c["email_opt_in_source"]), (True, "csv"))
        self.assertTrue(start <= c["email_opt_in_at"] <= timezone.now())
        self.assertEqual((c["sms_opt_in"], c["sms_opt_in_source"]), (False, "csv"))
        self.assertTrue(start <= c["sms_opt_in_at"] <= timezone.now())
        self.assertEqual((c["push_opt_in"], c["push_opt_in_at"], c["push_opt_in_source"]), (False, None, ""))

    def test_it_cuts_a_consent_source_to_64_characters(self):
        customers_bulk_upsert([{"external_id": "c1", "email_opt_in": True}], source="s" * 80)

        self.assertEqual(row_of("c1")["email_opt_in_source"], "s" * 64)

    def test_it_sets_unsubscribed_at_once_and_clears_it_on_false(self):
        full_customer("c1")
        start = timezone.now()

        customers_bulk_upsert([{"external_id": "c1", "unsubscribed": True}])
        first = row_of("c1")["unsubscribed_at"]
        self.assertTrue(start <= first <= timezone.now())

        customers_bulk_upsert([{"external_id": "c1", "unsubscribed": True}])
        self.assertEqual(row_of("c1")["unsubscribed_at"], first)

        customers_bulk_upsert([{"external_id": "c1", "unsubscribed": False}])
        self.assertIsNone(row_of("c1")["unsubscribed_at"])

    def test_it_treats_unsubscribed_null_as_false(self):
        full_customer("c1", unsubscribed_at=LONG_AGO)

        customers_bulk_upsert([{"external_id": "c1", "unsubscribed": None}])

        self.assertIsNone(row_of("c1")["unsubscribed_at"])

    def test_it_creates_a_customer_already_unsubscribed(self):
        start = timezone.now()

        customers_bulk_upsert(
            [{"external_id": "c1", "unsubscribed": True}, {"external_id": "c2", "unsubscribed": False}]
        )

        self.assertTrue(start <= row_of("c1")["unsubscribed_at"] <= timezone.now())
        self.assertIsNone(row_of("c2")["unsubscribed_at"])

    def test_it_normalises_a_phone_number_to_e164(self):
        customers_bulk_upsert([{"external_id": "c1", "phone": " +1 (415) 555-0123 "}])

        self.assertEqual(row_of("c1")["phone"], "+14155550123")

    def test_it_lower_cases_and_trims_an_email(self):
        customers_bulk_upsert([{"external_id": "c1", "email": "  Ann.Lee@Example.COM "}])

        self.assertEqual(row_of("c1")["email"], "ann.lee@example.com")

    def test_it_upper_cases_a_country_and_trims_names(self):
        customers_bulk_upsert([{"external_id": "c1", "country": "de", "first_name": "  Ann ", "last_name": " Lee"}])

        c = row_of("c1")
        self.assertEqual((c["country"], c["first_name"], c["last_name"]), ("DE", "Ann", "Lee"))

    def test_it_stores_an_integer_external_id_as_text(self):
        result = customers_bulk_upsert([{"external_id": 42}])

        self.assertEqual(result, UpsertResult(created=1, updated=0))
        self.assertEqual(Customer.objects.get().external_id, "42")
        self.assertEqual(customers_bulk_upsert([{"external_id": "42"}]), UpsertResult(created=0, updated=1))

    def test_it_turns_a_stub_customer_into_a_real_one_and_counts_it_as_updated(self):
        touchpoints_bulk_insert([touchpoint("e1", customer="c1")])
        self.assertIs(Customer.objects.get().is_stub, True)

        result = customers_bulk_upsert([{"external_id": "c1", "email": "ann@example.com"}])

        self.assertEqual(result, UpsertResult(created=0, updated=1))
        c = row_of("c1")
        self.assertEqual((c["is_stub"], c["email"]), (False, "ann@example.com"))
        self.assertEqual(Customer.objects.count(), 1)

    def test_it_turns_a_stub_into_a_real_customer_even_when_nothing_else_is_sent(self):
        touchpoints_bulk_insert([touchpoint("e1", customer="c1")])
        Customer.objects.update(updated_at=LONG_AGO)
        start = timezone.now()

        result = customers_bulk_upsert([{"external_id": "c1"}])

        self.assertEqual(result, UpsertResult(created=0, updated=1))
        c = row_of("c1")
        self.assertIs(c["is_stub"], False)
        self.assertTrue(start <= c["updated_at"] <= timezone.now())


class CustomerUpsertRefusalTests(IngestAssertions, TestCase):
    def setUp(self):
        full_customer("c1")

    def test_it_names_each_invalid_field_and_writes_nothing(self):
        batch = [
            {"external_id": "c1", "first_name": "Changed"},  # valid, must not be applied
            {"external_id": "new-ok"},  # valid, must not be created
            {"external_id": "x2", "email": "not-an-email"},
            {"external_id": "x3", "phone": "0415 555 0123"},
            {"external_id": "x4", "first_name": 5},
            {"external_id": "x5", "last_name": "x" * 151},
            {"external_id": "x6", "country": "DEU"},
            {"external_id": "x7", "timezone": "Mars/Olympus"},
            {"external_id": "x8", "locale": "english please"},
            {"external_id": "x9", "email_opt_in": "yes"},
            {"external_id": "x10", "sms_opt_in": 1},
            {"external_id": "x11", "unsubscribed": "true"},
            {"external_id": "x12", "attributes": ["not", "an", "object"]},
            {"external_id": "x13", "email": "a" * 250 + "@x.io"},
        ]
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert(batch),
            [
                (2, "email", "is not a valid email address"),
                (3, "phone", "must be an E.164 number, e.g. +14155550123"),
                (4, "first_name", "must be a string of at most 150 characters"),
                (5, "last_name", "must be a string of at most 150 characters"),
                (6, "country", "must be an ISO 3166-1 alpha-2 code, e.g. DE"),
                (7, "timezone", "must be an IANA timezone name, e.g. Europe/Berlin"),
                (8, "locale", "must be a locale like en, en-US or pt_BR"),
                (9, "email_opt_in", "must be true, false or null"),
                (10, "sms_opt_in", "must be true, false or null"),
                (11, "unsubscribed", "must be true, false or null"),
                (12, "attributes", "must be an object or null"),
                (13, "email", "is not a valid email address"),
            ],
        )

    def test_it_refuses_a_phone_number_too_long_for_e164(self):
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert([{"external_id": "c2", "phone": "+1234567890123456"}]),
            [(0, "phone", "must be an E.164 number, e.g. +14155550123")],
        )

    def test_it_reports_every_bad_field_of_one_row(self):
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert([{"external_id": "c1", "email": "nope", "phone": "nope", "shoe_size": 9}]),
            [
                (0, "shoe_size", "unknown field"),
                (0, "email", "is not a valid email address"),
                (0, "phone", "must be an E.164 number, e.g. +14155550123"),
            ],
        )

    def test_it_refuses_a_nul_character_anywhere_in_a_row(self):
        message = "text must not contain NUL (\\u0000) characters"
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert(
                [
                    {"external_id": "c1", "first_name": "A\x00nn"},
                    {"external_id": "c\x002"},
                    {"external_id": "c3", "attributes": {"deep": {"k": ["\x00"]}}},
                    {"external_id": "c4", "attributes": {"k\x00": 1}},
                ]
            ),
            [(row, None, message) for row in range(4)],
        )

    def test_it_refuses_an_unknown_field(self):
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert([{"external_id": "c2", "favourite_colour": "blue"}]),
            [(0, "favourite_colour", "unknown field")],
        )

    def test_it_refuses_a_row_that_is_not_an_object(self):
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert([{"external_id": "c2"}, "c3", None]),
            [(1, None, "must be an object"), (2, None, "must be an object")],
        )

    def test_it_refuses_a_missing_empty_blank_overlong_or_boolean_external_id(self):
        message = "is required: a non-empty string of at most 255 characters"
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert(
                [
                    {"email": "a@example.com"},
                    {"external_id": ""},
                    {"external_id": "   "},
                    {"external_id": "x" * 256},
                    {"external_id": True},
                    {"external_id": None},
                    {"external_id": "x" * 255},  # the longest allowed
                ]
            ),
            [(row, "external_id", message) for row in range(6)],
        )

    def test_it_refuses_the_reserved_erased_prefix(self):
        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert([{"external_id": "c2"}, {"external_id": "erased:abc"}]),
            [(1, "external_id", "ids starting with 'erased:' are reserved for erased customers")],
        )

    def test_it_refuses_an_erased_customers_external_id_and_writes_nothing(self):
        tombstone("gone")

        self.assertRefusedAndNothingWritten(
            lambda: customers_bulk_upsert([{"external_id": "c1", "first_name": "X"}, {"external_id": "gone"}]),
            [(1, "external_id", ERASED_MESSAGE)],
        )

    def test_it_still_accepts_other_customers_when_a_tombstone_exists(self):
        tombstone("gone")

        self.assertEqual(customers_bulk_upsert([{"external_id": "c2"}]), UpsertResult(created=1, updated=0))

    @override_settings(BULK_MAX_ROWS=3)
    def test_it_refuses_more_rows_than_bulk_max_rows(self):
        before = everything()

        with self.assertRaises(BatchTooLarge) as caught:
            customers_bulk_upsert([{"external_id": f"n{i}"} for i in range(4)])

        self.assertEqual(caught.exception.message, "4 customers in one batch; the limit is 3 rows. Split the batch.")
        self.assertEqual(caught.exception.status_code, 413)
        self.assertEqual(everything(), before)

    @override_settings(BULK_MAX_ROWS=3)
    def test_it_accepts_exactly_bulk_max_rows(self):
        result = customers_bulk_upsert([{"external_id": f"n{i}"} for i in range(3)])

        self.assertEqual(result, UpsertResult(created=3, updated=0))

    def test_it_refuses_a_batch_that_is_not_a_list(self):
        for batch in ({"external_id": "c2"}, None, "c2"):
            with self.subTest(batch=batch):
                self.assertRefusedAndNothingWritten(
                    lambda batch=batch: customers_bulk_upsert(batch),
                    [(None, "customers", "'customers' must be a list of objects.")],
                )

    def test_it_reports_the_first_thousand_errors_and_counts_them_all(self):
        with self.assertRaises(BatchInvalid) as caught:
            customers_bulk_upsert([{"email": "x@example.com"}] * 1200)

        self.assertEqual(len(caught.exception.errors), 1000)
        self.assertEqual(caught.exception.total_errors, 1200)
        self.assertEqual(caught.exception.message, "1200 invalid row(s); nothing was written")
        self.assertEqual(Customer.objects.count(), 1)


class CustomersValidateTests(TestCase):
    def test_it_returns_the_merged_clean_rows_and_no_errors_without_writing(self):
        clean, errors = customers_validate(
            [
                {"external_id": "c1", "email": "A@X.io", "attributes": {"a": 1, "b": None}},
                {"external_id": "c2", "phone": "+49 30 1234567"},
                {"external_id": "c1", "first_name": "Ann"},
            ]
        )

        self.assertEqual(errors, [])
        self.assertEqual(
            clean,
            [
                CustomerRow(
                    row=0,
                    external_id="c1",
                    values={"email": "a@x.io", "first_name": "Ann"},
                    attributes_set={"a": 1},
                    attributes_remove=["b"],
                ),
                CustomerRow(row=1, external_id="c2", values={"phone": "+49301234567"}),
            ],
        )
        self.assertEqual(Customer.objects.count(), 0)

    def test_it_returns_the_errors_and_no_rows_without_writing(self):
        clean, errors = customers_validate([{"external_id": "c1"}, {"external_id": "c2", "email": "nope"}])

        self.assertEqual(clean, [])
        self.assertEqual([(e.row, e.field, e.message) for e in errors], [(1, "email", "is not a valid email address")])
        self.assertEqual(Customer.objects.count(), 0)

    def test_it_returns_an_error_for_an_erased_customer(self):
        tombstone("gone")

        clean, errors = customers_validate([{"external_id": "c1"}, {"external_id": "gone"}])

        self.assertEqual(clean, [])
        self.assertEqual([(e.row, e.field, e.message) for e in errors], [(1, "external_id", ERASED_MESSAGE)])

    def test_it_returns_an_error_for_a_batch_that_is_not_a_list(self):
        clean, errors = customers_validate({"external_id": "c1"})

        self.assertEqual(clean, [])
        self.assertEqual(
            [(e.row, e.field, e.message) for e in errors],
            [(None, "customers", "'customers' must be a list of objects.")],
        )


@unittest.skipUnless(
    connection.vendor == "postgresql", "concurrent batches need PostgreSQL (SQLite serialises writers)"
)
class ConcurrentCustomerBatchTests(TransactionTestCase):
    def test_two_concurrent_batches_with_overlapping_new_customers_create_each_customer_once(self):
        first = [{"external_id": f"c{i:05d}", "first_name": "A", "email_opt_in": True} for i in range(0, 1500)]
        second = [{"external_id": f"c{i:05d}", "first_name": "A", "email_opt_in": True} for i in range(500, 2000)]

        outcomes = run_concurrently(lambda: customers_bulk_upsert(first), lambda: customers_bulk_upsert(second))

        self.assertEqual([error for _, error in outcomes], [None, None])
        results = [result for result, _ in outcomes]
        self.assertEqual(sum(r.created for r in results), 2000)
        self.assertEqual([r.created + r.updated for r in results], [1500, 1500])
        self.assertEqual(Customer.objects.count(), 2000)
        self.assertEqual(Customer.objects.values("external_id").distinct().count(), 2000)
        self.assertEqual(Customer.objects.filter(first_name="A", email_opt_in=True, is_stub=False).count(), 2000)

    def test_two_concurrent_batches_updating_the_same_customers_in_opposite_orders_both_succeed(self):
        Customer.objects.bulk_create([Customer(external_id=f"c{i:04d}") for i in range(1000)])
        forward = [{"external_id": f"c{i:04d}", "last_name": "F"} for i in range(1000)]
        backward = [{"external_id": f"c{i:04d}", "locale": "de"} for i in reversed(range(1000))]

        outcomes = run_concurrently(lambda: customers_bulk_upsert(forward), lambda: customers_bulk_upsert(backward))

        self.assertEqual(
            outcomes, [(UpsertResult(created=0, updated=1000), None), (UpsertResult(created=0, updated=1000), None)]
        )
        self.assertEqual(Customer.objects.filter(last_name="F", locale="de").count(), 1000)
