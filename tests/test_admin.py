"""The admin for marketers: customer list, search and filters, the customer page (timeline
and order stats, edits through ingest), CSV import and export, GDPR erase, the read-only
touchpoint log, suppressions, API keys, and who may reach any of it.

The cast: `marketer` (a superuser), `viewer` (staff who may only view customers), `alice`
(a logged-in user who is not staff)."""

from __future__ import annotations

import codecs
import hashlib
import re
from datetime import timedelta
from decimal import Decimal
from unittest import mock

from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from marketing.admin import TIMELINE_LIMIT, CappedCountPaginator
from marketing.errors import RowError
from marketing.models import ApiKey, Customer, ErasedIdentity, Suppression, Touchpoint
from marketing.services import api_key_create, customer_erase

CHANGELIST = reverse("admin:marketing_customer_changelist")
IMPORT = reverse("admin:marketing_customer_import")
EXPORT = reverse("admin:marketing_customer_export")
TOUCHPOINTS = reverse("admin:marketing_touchpoint_changelist")


def change_url(customer: Customer) -> str:
    return reverse("admin:marketing_customer_change", args=[customer.pk])


def csv_file(text: str | bytes, name: str = "customers.csv") -> SimpleUploadedFile:
    data = text.encode() if isinstance(text, str) else text
    return SimpleUploadedFile(name, data, content_type="text/csv")


def streamed(response) -> bytes:
    return b"".join(response.streaming_content)


class AdminTestCase(TestCase):
    def setUp(self):
        super().setUp()
        cache.clear()  # filter choices are cached for a minute
        self.now = timezone.now()
        self.marketer = User.objects.create_superuser("marketer", "marketer@example.com", "pw")
        self.client.force_login(self.marketer)
        self.ann = Customer.objects.create(
            external_id="crm-001",
            email="ann@example.com",
            first_name="Ann",
            last_name="Smith",
            country="DE",
            email_opt_in=True,
            last_seen_at=self.now - timedelta(days=2),
        )
        self.bob = Customer.objects.create(
            external_id="crm-002",
            email="bob@example.com",
            first_name="Bob",
            last_name="Jones",
            country="FR",
            sms_opt_in=True,
            last_seen_at=self.now - timedelta(days=40),
        )
        self.stub = Customer.objects.create(external_id="pos-77", is_stub=True)
        self.gone = Customer.objects.create(
            external_id="crm-003",
            first_name="Cy",
            push_opt_in=True,
            country="DE",
            unsubscribed_at=self.now - timedelta(days=1),
            last_seen_at=self.now - timedelta(days=200),
        )

    def listed(self, url: str = CHANGELIST, **params) -> set[str]:
        response = self.client.get(url, params)
        self.assertEqual(response.status_code, 200)
        return {c.external_id for c in response.context["cl"].result_list}

    def messages_of(self, response) -> list[str]:
        return [str(m) for m in get_messages(response.wsgi_request)]


class CustomerListTests(AdminTestCase):
    def test_it_lists_customers_newest_first_under_the_site_title(self):
        response = self.client.get(CHANGELIST)
        self.assertEqual(
            [c.external_id for c in response.context["cl"].result_list], ["crm-003", "pos-77", "crm-002", "crm-001"]
        )
        self.assertContains(response, "Marketing automation")
        self.assertContains(response, "4 customers")

    def test_the_list_never_reads_the_touchpoint_log_or_counts_the_whole_table(self):
        with CaptureQueriesContext(connection) as queries:
            self.client.get(CHANGELIST)
        sql = [q["sql"] for q in queries.captured_queries]
        self.assertFalse([s for s in sql if "marketing_touchpoint" in s])
        counts = [s for s in sql if "COUNT(" in s.upper() and "marketing_customer" in s]
        self.assertEqual(len(counts), 1)
        self.assertIn("LIMIT 10001", counts[0])

    def test_it_finds_an_email_in_any_case(self):
        self.assertEqual(self.listed(q=" ANN@Example.COM "), {"crm-001"})
        self.assertEqual(self.listed(q="nobody@example.com"), set())

    def test_it_finds_an_external_id_exactly_or_by_its_beginning(self):
        self.assertEqual(self.listed(q="crm-002"), {"crm-002"})
        self.assertEqual(self.listed(q="crm-00"), {"crm-001", "crm-002", "crm-003"})
        self.assertEqual(self.listed(q="pos"), {"pos-77"})

    def test_it_finds_names_by_the_beginnings_of_first_and_last_name(self):
        self.assertEqual(self.listed(q="ann smi"), {"crm-001"})
        self.assertEqual(self.listed(q="JON"), {"crm-002"})
        self.assertEqual(self.listed(q="smith bob"), set())

    def test_it_filters_by_consent(self):
        self.assertEqual(self.listed(email_opt_in__exact="1"), {"crm-001"})
        self.assertEqual(self.listed(sms_opt_in__exact="1"), {"crm-002"})
        self.assertEqual(self.listed(push_opt_in__exact="1"), {"crm-003"})
        self.assertEqual(self.listed(email_opt_in__exact="0"), {"crm-002", "crm-003", "pos-77"})

    def test_it_filters_by_country_with_choices_from_the_data(self):
        self.assertEqual(self.listed(country="DE"), {"crm-001", "crm-003"})
        self.assertEqual(self.listed(country="-"), {"pos-77"})
        response = self.client.get(CHANGELIST)
        country_filter = next(
            f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "country"
        )
        self.assertEqual(country_filter.lookup_choices, [("DE", "DE"), ("FR", "FR"), ("-", "No country")])

    def test_it_filters_by_last_seen(self):
        self.assertEqual(self.listed(last_seen="7d"), {"crm-001"})
        self.assertEqual(self.listed(last_seen="90d"), {"crm-001", "crm-002"})
        self.assertEqual(self.listed(last_seen="older"), {"crm-003"})
        self.assertEqual(self.listed(last_seen="never"), {"pos-77"})

    def test_it_filters_stubs_unsubscribed_and_erased(self):
        customer_erase(self.bob)
        self.assertEqual(self.listed(is_stub__exact="1"), {"pos-77"})
        self.assertEqual(self.listed(unsubscribed="yes"), {"crm-003"})
        self.assertEqual(self.listed(erased="yes"), {f"erased:{self.bob.pk}"})
        self.assertEqual(self.listed(erased="no"), {"crm-001", "crm-003", "pos-77"})

    def test_erased_customers_are_marked_in_the_list(self):
        customer_erase(self.bob)
        response = self.client.get(CHANGELIST, {"erased": "yes"})
        self.assertContains(response, '<strong style="color:#ba2121">ERASED</strong>', html=False)

    def test_past_the_cap_it_says_more_than_instead_of_counting(self):
        with mock.patch.object(CappedCountPaginator, "cap", 2):
            response = self.client.get(CHANGELIST)
        self.assertContains(response, "more than 2 customers")
        self.assertNotContains(response, "4 customers")


class CustomerPageTests(AdminTestCase):
    def make_touchpoint(self, event_id: str, kind: str, minutes_ago: int, **fields) -> Touchpoint:
        return Touchpoint.objects.create(
            customer=self.ann,
            event_id=event_id,
            kind=kind,
            occurred_at=self.now - timedelta(minutes=minutes_ago),
            **fields,
        )

    def test_it_shows_the_timeline_latest_first_and_the_order_stats(self):
        self.make_touchpoint("e1", "purchase", 300, order_id="o1", sku="A-1", revenue=Decimal("10.00"), channel="web")
        self.make_touchpoint("e2", "purchase", 300, order_id="o1", sku="B-2", revenue=Decimal("5.50"), channel="web")
        last = self.make_touchpoint("e3", "purchase", 100, order_id="o2", sku="A-1", revenue=Decimal("19.90"))
        self.make_touchpoint("e4", "refund", 50, order_id="o1", sku="B-2", revenue=Decimal("5.50"))
        self.make_touchpoint("e5", "open", 10, channel="email", campaign_id=7)
        response = self.client.get(change_url(self.ann))
        self.assertContains(response, '<div class="readonly">2</div>', html=True)
        self.assertContains(response, '<div class="readonly">29.90 USD</div>', html=True)
        self.assertContains(response, f"{last.occurred_at:%Y-%m-%d}")
        timeline = re.findall(r"/admin/marketing/touchpoint/(\d+)/change/", response.content.decode())
        expected = Touchpoint.objects.filter(customer=self.ann).order_by("-occurred_at", "-id")
        self.assertEqual([int(pk) for pk in timeline], [t.pk for t in expected])
        self.assertContains(response, f'href="{TOUCHPOINTS}?customer={self.ann.pk}"')

    def test_the_timeline_stops_at_its_limit_and_links_to_the_rest(self):
        for index in range(TIMELINE_LIMIT + 5):
            self.make_touchpoint(f"e{index}", "visit", index)
        response = self.client.get(change_url(self.ann))
        timeline = re.findall(r"/admin/marketing/touchpoint/(\d+)/change/", response.content.decode())
        self.assertEqual(len(timeline), TIMELINE_LIMIT)
        self.assertEqual(int(timeline[0]), Touchpoint.objects.get(event_id="e0").pk)
        self.assertContains(response, f"The latest {TIMELINE_LIMIT} touchpoints.")

    def test_a_customer_without_orders_shows_zeros(self):
        response = self.client.get(change_url(self.bob))
        self.assertContains(response, '<div class="readonly">0</div>', html=True)
        self.assertContains(response, '<div class="readonly">0.00 USD</div>', html=True)
        self.assertContains(response, '<div class="readonly">never</div>', html=True)
        self.assertContains(response, "No touchpoints yet.")

    def test_consent_times_and_sources_and_the_external_id_are_read_only(self):
        response = self.client.get(change_url(self.ann))
        fields = response.context["adminform"].form.fields
        for name in ("email_opt_in_at", "email_opt_in_source", "sms_opt_in_at", "push_opt_in_source", "external_id"):
            self.assertNotIn(name, fields)
        self.assertIn("email_opt_in", fields)

    def form_data(self, customer: Customer, **changes) -> dict:
        data = {
            "email": customer.email,
            "phone": customer.phone,
            "first_name": customer.first_name,
            "last_name": customer.last_name,
            "country": customer.country,
            "timezone": customer.timezone,
            "locale": customer.locale,
            "attributes": '{"tier": "gold", "age": 42}',
            "email_opt_in": "on" if customer.email_opt_in else "",
            "sms_opt_in": "on" if customer.sms_opt_in else "",
            "push_opt_in": "on" if customer.push_opt_in else "",
            "unsubscribed": "on" if customer.unsubscribed_at else "",
        }
        data.update(changes)
        return {k: v for k, v in data.items() if v != ""}

    def test_an_edit_goes_through_ingest_and_records_consent_source(self):
        Customer.objects.filter(pk=self.bob.pk).update(attributes={"tier": "gold", "age": 42, "old": "x"})
        response = self.client.post(
            change_url(self.bob),
            self.form_data(self.bob, email="BOB@New.example", phone="+33 6 12 34 56 78", push_opt_in="on"),
        )
        self.assertRedirects(response, CHANGELIST)
        self.bob.refresh_from_db()
        self.assertEqual(self.bob.email, "bob@new.example")
        self.assertEqual(self.bob.phone, "+33612345678")
        self.assertTrue(self.bob.push_opt_in)
        self.assertEqual(self.bob.push_opt_in_source, "admin:marketer")
        self.assertIsNotNone(self.bob.push_opt_in_at)
        self.assertEqual(self.bob.sms_opt_in_source, "")  # unchanged consent keeps its record
        self.assertEqual(self.bob.attributes, {"tier": "gold", "age": 42})  # the removed key is gone

    def test_an_invalid_edit_names_the_field_and_saves_nothing(self):
        response = self.client.post(change_url(self.bob), self.form_data(self.bob, timezone="Mars/Olympus"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.context["adminform"].form.errors,
            {"timezone": ["must be an IANA timezone name, e.g. Europe/Berlin"]},
        )
        self.bob.refresh_from_db()
        self.assertEqual(self.bob.timezone, "")

    def test_adding_a_customer_normalises_it_and_refuses_a_taken_external_id(self):
        add = reverse("admin:marketing_customer_add")
        response = self.client.post(add, {"external_id": "crm-100", "email": "New@Example.com", "attributes": "{}"})
        created = Customer.objects.get(external_id="crm-100")
        self.assertRedirects(response, CHANGELIST)
        self.assertEqual(created.email, "new@example.com")
        response = self.client.post(add, {"external_id": "crm-001", "attributes": "{}"})
        self.assertEqual(
            response.context["adminform"].form.errors,
            {"external_id": ["Customer with this External id already exists."]},
        )


class EraseTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.touchpoint = Touchpoint.objects.create(
            customer=self.ann, event_id="e1", kind="open", occurred_at=self.now, properties={"ip": "10.0.0.1"}
        )

    def test_the_erase_action_asks_first_then_anonymises(self):
        data = {"action": "gdpr_erase", "_selected_action": [self.ann.pk]}
        response = self.client.post(CHANGELIST, data)
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "admin/marketing/customer/erase_confirmation.html")
        self.ann.refresh_from_db()
        self.assertIsNone(self.ann.erased_at)

        response = self.client.post(CHANGELIST, {**data, "confirm": "yes"})
        self.assertRedirects(response, CHANGELIST)
        self.ann.refresh_from_db()
        self.assertIsNotNone(self.ann.erased_at)
        self.assertEqual(
            (self.ann.external_id, self.ann.email, self.ann.first_name, self.ann.country, self.ann.email_opt_in),
            (f"erased:{self.ann.pk}", "", "", "", False),
        )
        self.assertTrue(ErasedIdentity.objects.filter(external_id_sha256=hashlib.sha256(b"crm-001").hexdigest()))
        self.touchpoint.refresh_from_db()
        self.assertEqual(self.touchpoint.properties, {})  # history kept, details scrubbed
        self.assertIn(
            "Erased 1 customer(s): personal data anonymised, history kept for aggregates.", self.messages_of(response)
        )

    def test_the_change_page_offers_erase_with_a_confirmation(self):
        erase = reverse("admin:marketing_customer_erase", args=[self.ann.pk])
        self.assertContains(self.client.get(change_url(self.ann)), f'href="{erase}"')
        self.assertContains(self.client.get(erase), "Yes, erase 1 customer")
        self.client.post(erase, {})
        self.ann.refresh_from_db()
        self.assertIsNone(self.ann.erased_at)
        self.assertRedirects(self.client.post(erase, {"confirm": "yes"}), change_url(self.ann))
        self.ann.refresh_from_db()
        self.assertIsNotNone(self.ann.erased_at)

    def test_an_erased_customer_is_marked_and_read_only(self):
        customer_erase(self.ann)
        response = self.client.get(change_url(self.ann))
        self.assertContains(response, "ERASED (GDPR) on")
        self.assertFalse(response.context["has_change_permission"])
        self.assertNotContains(response, reverse("admin:marketing_customer_erase", args=[self.ann.pk]))

    def test_a_selection_too_large_to_erase_at_once_is_refused(self):
        with mock.patch("marketing.admin.MAX_ERASE_PER_ACTION", 1):
            response = self.client.post(
                CHANGELIST,
                {"action": "gdpr_erase", "_selected_action": [self.ann.pk, self.bob.pk], "confirm": "yes"},
            )
        self.assertIn("Select at most 1 customers to erase at a time.", self.messages_of(response))
        self.assertFalse(Customer.objects.filter(erased_at__isnull=False).exists())

    def test_customers_cannot_be_deleted_only_erased(self):
        response = self.client.get(CHANGELIST)
        self.assertNotIn("delete_selected", response.context["action_form"].fields["action"].choices.__repr__())
        self.assertEqual(
            self.client.get(reverse("admin:marketing_customer_delete", args=[self.ann.pk])).status_code, 403
        )
        self.assertTrue(Customer.objects.filter(pk=self.ann.pk).exists())


class CsvImportTests(AdminTestCase):
    def upload(self, text: str | bytes, name: str = "customers.csv"):
        return self.client.post(IMPORT, {"file": csv_file(text, name)})

    def confirm(self, response):
        return self.client.post(IMPORT, {"token": response.context["confirm_form"].initial["token"]})

    def test_the_changelist_links_to_import_and_export(self):
        response = self.client.get(CHANGELIST, {"country": "DE"})
        self.assertContains(response, f'href="{IMPORT}"')
        self.assertContains(response, f'href="{EXPORT}?country=DE"')

    def test_it_shows_errors_per_row_and_writes_nothing(self):
        before = Customer.objects.count()
        response = self.upload(
            "external_id,email,sms_opt_in,country\n"
            "n1,ok@example.com,yes,DE\n"
            "n2,not-an-email,no,DE\n"
            "n3,c@example.com,maybe,Germany\n"
            ",d@example.com,,\n"
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.context["errors"],
            [
                RowError(3, "email", "is not a valid email address"),
                RowError(4, "sms_opt_in", "'maybe' is not a boolean: use true/false, 1/0 or yes/no"),
                RowError(4, "country", "must be an ISO 3166-1 alpha-2 code, e.g. DE"),
                RowError(5, "external_id", "is required: a non-empty string of at most 255 characters"),
            ],
        )
        self.assertContains(response, "4 problems found. Nothing was imported")
        self.assertNotIn("confirm_form", response.context)
        self.assertEqual(Customer.objects.count(), before)

    def test_a_clean_file_is_previewed_then_creates_and_updates_exact_counts(self):
        before = Customer.objects.count()
        response = self.upload(
            "external_id,email,first_name,email_opt_in,attributes.tier\n"
            "crm-001,,Annie,,gold\n"
            "n1,N1@Example.com,Nia,true,silver\n"
            "n2,,,no,\n"
        )
        self.assertEqual(
            (response.context["row_count"], response.context["new_count"], response.context["existing_count"]),
            (3, 2, 1),
        )
        self.assertEqual(Customer.objects.count(), before)  # nothing before the confirmation

        response = self.confirm(response)
        self.assertRedirects(response, CHANGELIST, fetch_redirect_response=False)
        self.assertIn(
            "Imported 3 row(s) from customers.csv: 2 customer(s) created, 1 updated.", self.messages_of(response)
        )
        self.assertEqual(Customer.objects.count(), before + 2)
        self.ann.refresh_from_db()
        self.assertEqual(
            (self.ann.first_name, self.ann.email, self.ann.attributes), ("Annie", "ann@example.com", {"tier": "gold"})
        )
        nia = Customer.objects.get(external_id="n1")
        self.assertEqual(
            (nia.email, nia.email_opt_in, nia.email_opt_in_source), ("n1@example.com", True, "csv:marketer")
        )
        self.assertEqual(nia.attributes, {"tier": "silver"})

    def test_a_byte_order_mark_and_semicolons_from_excel_are_read(self):
        response = self.upload(codecs.BOM_UTF8 + "external_id;first_name\r\nn1;Zoë\r\n".encode())
        self.assertEqual(response.context["columns"], ["external_id", "first_name"])
        self.confirm(response)
        self.assertEqual(Customer.objects.get(external_id="n1").first_name, "Zoë")

    def test_unreadable_files_are_a_form_error_not_a_500(self):
        cases = {
            "latin-1": ("external_id,last_name\nn1,Müller\n".encode("cp1252"), "The file is not UTF-8 text"),
            "xlsx": (b"PK\x03\x04binary", "This is an Excel workbook"),
            "png": (b"\x89PNG\r\n\x1a\n\x00\x00", "The file is not UTF-8 text"),
            "no id column": (b"email\na@example.com\n", "The header row has no external_id column."),
            "empty": (b"", "The submitted file is empty."),
        }
        for label, (data, message) in cases.items():
            with self.subTest(label):
                response = self.upload(data)
                self.assertEqual(response.status_code, 200)
                errors = response.context["form"].errors["file"]
                self.assertTrue(errors[0].startswith(message), errors)
        self.assertEqual(Customer.objects.count(), 4)

    def test_confirming_twice_imports_once(self):
        preview = self.upload("external_id\nn1\n")
        self.confirm(preview)
        response = self.confirm(preview)
        self.assertRedirects(response, IMPORT)
        self.assertIn(
            "That upload has expired or was already imported; upload the file again.", self.messages_of(response)
        )
        self.assertEqual(Customer.objects.filter(external_id="n1").count(), 1)

    def test_another_user_cannot_confirm_my_upload(self):
        preview = self.upload("external_id\nn1\n")
        other = User.objects.create_superuser("other", "other@example.com", "pw")
        self.client.force_login(other)
        response = self.confirm(preview)
        self.assertRedirects(response, IMPORT)
        self.assertFalse(Customer.objects.filter(external_id="n1").exists())

    @override_settings(BULK_MAX_ROWS=2)
    def test_batches_share_one_transaction_so_a_late_failure_writes_nothing(self):
        preview = self.upload("external_id,first_name\nn1,A\nn2,B\nn3,C\nn4,D\ncrm-002,E\n")
        self.assertEqual(preview.context["row_count"], 5)
        customer_erase(self.bob)  # between preview and confirmation: the last batch now fails
        response = self.confirm(preview)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.context["errors"],
            [
                RowError(
                    6,
                    "external_id",
                    "this customer was erased (GDPR) and cannot be re-created or receive touchpoints",
                )
            ],
        )
        self.assertFalse(Customer.objects.filter(external_id__in=["n1", "n2", "n3", "n4"]).exists())

    @override_settings(BULK_MAX_ROWS=3)
    def test_rows_of_one_customer_are_written_together_in_file_order(self):
        response = self.confirm(
            self.upload(
                "external_id,first_name,last_name\n"
                "crm-001,First,One\nn1,A,\nn2,B,\ncrm-001,Second,\nn3,C,\nn4,D,\ncrm-001,Third,\n"
            )
        )
        self.assertIn(
            "Imported 7 row(s) from customers.csv: 4 customer(s) created, 1 updated.", self.messages_of(response)
        )
        self.ann.refresh_from_db()
        self.assertEqual((self.ann.first_name, self.ann.last_name), ("Third", "One"))

    def test_only_users_who_may_add_and_change_customers_can_import(self):
        viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_customer"))
        self.client.force_login(viewer)
        self.assertEqual(self.client.get(IMPORT).status_code, 403)
        self.assertNotContains(self.client.get(CHANGELIST), f'href="{IMPORT}"')


class CsvExportTests(AdminTestCase):
    def test_the_export_button_exports_the_filtered_list(self):
        response = self.client.get(EXPORT, {"country": "DE"})
        self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
        self.assertTrue(response["Content-Disposition"].startswith('attachment; filename="customers-'))
        self.assertEqual(
            streamed(response).decode("utf-8-sig"),
            "external_id,email,phone,first_name,last_name,country,timezone,locale,email_opt_in,sms_opt_in,"
            "push_opt_in,unsubscribed\r\n"
            "crm-001,ann@example.com,,Ann,Smith,DE,,,true,false,false,false\r\n"
            "crm-003,,,Cy,,DE,,,false,false,true,true\r\n",
        )

    def test_the_export_action_exports_the_selection_without_erased_customers(self):
        customer_erase(self.bob)
        response = self.client.post(
            CHANGELIST, {"action": "export_csv", "_selected_action": [self.ann.pk, self.bob.pk, self.stub.pk]}
        )
        lines = streamed(response).decode("utf-8-sig").splitlines()
        self.assertEqual([line.split(",")[0] for line in lines], ["external_id", "crm-001", "pos-77"])

    def test_an_export_reimports_to_the_same_data(self):
        Customer.objects.filter(pk=self.ann.pk).update(
            phone="+14155550123",
            timezone="Europe/Berlin",
            locale="de-DE",
            attributes={"tier": "gold", "age": 42, "code": "007", "formula": "=1+1", "tags": ["a", "b"]},
        )
        Customer.objects.filter(pk=self.bob.pk).update(attributes={"tier": "42", "vip": True})
        fields = [
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
            "sms_opt_in",
            "push_opt_in",
        ]

        def snapshot():
            return sorted(
                (*values, unsubscribed is not None)
                for *values, unsubscribed in Customer.objects.values_list(*fields, "unsubscribed_at")
            )

        before = snapshot()
        exported = streamed(self.client.get(EXPORT))

        Customer.objects.all().delete()
        preview = self.client.post(IMPORT, {"file": csv_file(exported)})
        response = self.client.post(IMPORT, {"token": preview.context["confirm_form"].initial["token"]})
        self.assertIn(
            "Imported 4 row(s) from customers.csv: 4 customer(s) created, 0 updated.", self.messages_of(response)
        )
        self.assertEqual(snapshot(), before)
        # The same file again, up to row order (the import creates customers in its own order).
        again = streamed(self.client.get(EXPORT)).splitlines()
        self.assertEqual((again[0], sorted(again[1:])), (exported.splitlines()[0], sorted(exported.splitlines()[1:])))


class TouchpointAdminTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        make = Touchpoint.objects.create
        make(customer=self.ann, event_id="e1", kind="open", channel="email", occurred_at=self.now - timedelta(hours=2))
        make(
            customer=self.ann,
            event_id="e2",
            kind="trial_started",
            channel="app",
            occurred_at=self.now - timedelta(days=3),
        )
        make(
            customer=self.bob,
            event_id="e3",
            kind="purchase",
            channel="web",
            order_id="o1",
            sku="A-1",
            revenue=Decimal("19.90"),
            occurred_at=self.now - timedelta(days=45),
        )

    def listed_events(self, **params) -> list[str]:
        response = self.client.get(TOUCHPOINTS, params)
        self.assertEqual(response.status_code, 200)
        return [t.event_id for t in response.context["cl"].result_list]

    def test_it_lists_touchpoints_newest_arrival_first(self):
        self.assertEqual(self.listed_events(), ["e3", "e2", "e1"])

    def test_it_filters_by_kind_channel_date_and_customer(self):
        self.assertEqual(self.listed_events(kind="trial_started"), ["e2"])
        self.assertEqual(self.listed_events(channel="web"), ["e3"])
        self.assertEqual(self.listed_events(occurred="24h"), ["e1"])
        self.assertEqual(self.listed_events(occurred="7d"), ["e2", "e1"])
        self.assertEqual(self.listed_events(customer=self.ann.pk), ["e1", "e2"])  # timeline order
        self.assertEqual(self.listed_events(occurred_at__lt=(self.now - timedelta(days=10)).isoformat()), ["e3"])

    def test_the_kind_filter_offers_built_in_and_custom_kinds(self):
        response = self.client.get(TOUCHPOINTS)
        kind_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "kind")
        kinds = [value for value, _ in kind_filter.lookup_choices]
        self.assertIn("trial_started", kinds)
        self.assertIn("held_out", kinds)
        self.assertEqual(kinds, sorted(kinds))

    def test_it_searches_by_event_id_or_customer_external_id(self):
        self.assertEqual(self.listed_events(q="e3"), ["e3"])
        self.assertEqual(self.listed_events(q="crm-001"), ["e2", "e1"])
        self.assertEqual(self.listed_events(q="crm-00"), [])

    def test_the_log_is_read_only(self):
        touchpoint = Touchpoint.objects.get(event_id="e1")
        self.assertEqual(self.client.get(reverse("admin:marketing_touchpoint_add")).status_code, 403)
        change = reverse("admin:marketing_touchpoint_change", args=[touchpoint.pk])
        response = self.client.get(change)
        self.assertEqual(response.status_code, 200)
        self.assertFalse(response.context["has_change_permission"])
        self.assertEqual(self.client.post(change, {"kind": "click"}).status_code, 403)
        delete = reverse("admin:marketing_touchpoint_delete", args=[touchpoint.pk])
        self.assertEqual(self.client.post(delete, {"post": "yes"}).status_code, 403)
        touchpoint.refresh_from_db()
        self.assertEqual(touchpoint.kind, "open")

    def test_the_list_has_no_date_hierarchy_and_no_full_count(self):
        response = self.client.get(TOUCHPOINTS)
        cl = response.context["cl"]
        self.assertIsNone(cl.date_hierarchy)
        self.assertFalse(cl.show_full_result_count)


class SuppressionAdminTests(AdminTestCase):
    ADD = reverse("admin:marketing_suppression_add")

    def test_a_manual_suppression_is_stored_normalised(self):
        self.client.post(self.ADD, {"kind": "email", "value": " Foo@Example.COM ", "reason": "manual"})
        self.client.post(self.ADD, {"kind": "phone", "value": "+1 (415) 555-0123", "reason": "manual"})
        self.assertEqual(
            sorted(Suppression.objects.values_list("kind", "value")),
            [("email", "foo@example.com"), ("phone", "+14155550123")],
        )

    def test_bad_and_duplicate_values_are_refused(self):
        Suppression.objects.create(kind="email", value="foo@example.com")
        cases = [
            ({"kind": "phone", "value": "0415 555 0123"}, "Enter a phone number in E.164 form, e.g. +14155550123."),
            ({"kind": "email", "value": "not-an-address"}, "Enter a valid email address."),
        ]
        for data, message in cases:
            response = self.client.post(self.ADD, {**data, "reason": "manual"})
            self.assertEqual(response.context["adminform"].form.errors, {"value": [message]})
        response = self.client.post(self.ADD, {"kind": "email", "value": "FOO@example.com", "reason": "manual"})
        self.assertEqual(
            response.context["adminform"].form.errors,
            {"__all__": ["Suppression with this Kind and Value already exists."]},
        )
        self.assertEqual(Suppression.objects.count(), 1)


class ApiKeyAdminTests(AdminTestCase):
    def test_adding_a_key_shows_it_once_and_stores_only_its_hash(self):
        response = self.client.post(reverse("admin:marketing_apikey_add"), {"name": "Salesforce sync"}, follow=True)
        shown = re.search(r"<code>(mk_[A-Za-z0-9_-]+)</code>", response.content.decode())
        self.assertIsNotNone(shown)
        raw_key = shown.group(1)
        api_key = ApiKey.objects.get(name="Salesforce sync")
        self.assertEqual(api_key.key_sha256, hashlib.sha256(raw_key.encode()).hexdigest())
        self.assertEqual(api_key.prefix, raw_key[:10])
        stored = [str(value) for value in ApiKey.objects.values_list().get(pk=api_key.pk)]
        self.assertNotIn(raw_key, stored)

        page = self.client.get(reverse("admin:marketing_apikey_change", args=[api_key.pk])).content.decode()
        listing = self.client.get(reverse("admin:marketing_apikey_changelist")).content.decode()
        for html in (page, listing):
            self.assertNotIn(raw_key, html)
            self.assertNotIn(api_key.key_sha256, html)
        self.assertIn(f"{api_key.prefix}…", listing)

    def test_a_key_needs_a_unique_name_and_a_positive_rate_limit(self):
        api_key_create("crm")
        add = reverse("admin:marketing_apikey_add")
        response = self.client.post(add, {"name": "crm"})
        self.assertEqual(
            response.context["adminform"].form.errors, {"name": ["API key with this Name already exists."]}
        )
        response = self.client.post(add, {"name": "shop", "rate_limit_per_minute": "0"})
        self.assertEqual(
            response.context["adminform"].form.errors,
            {"rate_limit_per_minute": ["Ensure this value is greater than or equal to 1."]},
        )
        self.assertEqual(list(ApiKey.objects.values_list("name", flat=True)), ["crm"])

    def test_the_revoke_action_revokes_and_keys_are_never_deleted(self):
        crm, _ = api_key_create("crm")
        shop, _ = api_key_create("shop")
        response = self.client.post(
            reverse("admin:marketing_apikey_changelist"), {"action": "revoke", "_selected_action": [crm.pk]}
        )
        self.assertIn("Revoked 1 API key(s).", self.messages_of(response))
        crm.refresh_from_db()
        shop.refresh_from_db()
        self.assertIsNotNone(crm.revoked_at)
        self.assertIsNone(shop.revoked_at)
        self.assertEqual(self.client.get(reverse("admin:marketing_apikey_delete", args=[crm.pk])).status_code, 403)


class AccessTests(AdminTestCase):
    def test_a_user_who_is_not_staff_cannot_reach_the_admin(self):
        alice = User.objects.create_user("alice", password="pw")
        self.client.force_login(alice)
        for url in (reverse("admin:index"), CHANGELIST, IMPORT, EXPORT, change_url(self.ann), TOUCHPOINTS):
            with self.subTest(url):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 302)
                self.assertTrue(response["Location"].startswith(reverse("admin:login")))

    def test_an_api_key_cannot_use_the_admin(self):
        self.client.logout()
        _, raw_key = api_key_create("crm")
        response = self.client.get(CHANGELIST, HTTP_AUTHORIZATION=f"Token {raw_key}")
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith(reverse("admin:login")))
        self.assertEqual(self.client.get(EXPORT, HTTP_AUTHORIZATION=f"Token {raw_key}").status_code, 302)

    def test_staff_with_view_permission_can_list_and_export_but_not_erase(self):
        viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_customer"))
        self.client.force_login(viewer)
        response = self.client.get(CHANGELIST)
        actions = [name for name, _ in response.context["action_form"].fields["action"].choices]
        self.assertEqual(actions, ["", "export_csv"])
        self.assertEqual(self.client.get(EXPORT).status_code, 200)
        erase = reverse("admin:marketing_customer_erase", args=[self.ann.pk])
        self.assertEqual(self.client.post(erase, {"confirm": "yes"}).status_code, 403)
        self.ann.refresh_from_db()
        self.assertIsNone(self.ann.erased_at)
