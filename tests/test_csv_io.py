"""Customers CSV: parsing an upload into bulk-ingest rows, and the streaming export."""

from __future__ import annotations

import codecs
import csv
import io
from datetime import UTC, datetime

from django.test import SimpleTestCase, TestCase

from marketing import csv_io
from marketing.csv_io import CsvFileError, parse_customers_csv
from marketing.errors import RowError
from marketing.models import Customer


def export_bytes(queryset) -> bytes:
    return b"".join(csv_io.customers_csv_stream(queryset))


class ParseTests(SimpleTestCase):
    def test_it_reads_fields_booleans_and_typed_attributes(self):
        parsed = parse_customers_csv(
            b"external_id,email,email_opt_in,sms_opt_in,attributes.tier,attributes.age,attributes.code\n"
            b'c1,Ann@Example.com,yes,0,gold,42,"""0042"""\n'
        )
        self.assertEqual(
            parsed.rows,
            [
                {
                    "external_id": "c1",
                    "email": "Ann@Example.com",
                    "email_opt_in": True,
                    "sms_opt_in": False,
                    "attributes": {"tier": "gold", "age": 42, "code": "0042"},
                }
            ],
        )
        self.assertEqual(parsed.lines, [2])
        self.assertEqual(parsed.errors, [])
        self.assertEqual(parsed.attribute_names, ["tier", "age", "code"])

    def test_an_empty_cell_omits_the_field(self):
        parsed = parse_customers_csv(b"external_id,email,first_name,attributes.tier\nc1,,Ann,\nc2,  ,,\n")
        self.assertEqual(parsed.rows, [{"external_id": "c1", "first_name": "Ann"}, {"external_id": "c2"}])

    def test_booleans_take_true_false_one_zero_yes_no_in_any_case(self):
        parsed = parse_customers_csv(
            b"external_id,email_opt_in,sms_opt_in,push_opt_in,unsubscribed\nc1,TRUE,False,Yes,no\nc2,1,0,YES,0\n"
        )
        self.assertEqual(
            parsed.rows,
            [
                {
                    "external_id": "c1",
                    "email_opt_in": True,
                    "sms_opt_in": False,
                    "push_opt_in": True,
                    "unsubscribed": False,
                },
                {
                    "external_id": "c2",
                    "email_opt_in": True,
                    "sms_opt_in": False,
                    "push_opt_in": True,
                    "unsubscribed": False,
                },
            ],
        )

    def test_a_bad_boolean_is_an_error_on_its_file_line(self):
        # The quoted cell spans two lines, so the third record starts on line 5.
        parsed = parse_customers_csv(
            b'external_id,first_name,email_opt_in\nc1,Ann,true\nc2,"two\nlines",false\nc3,Cy,maybe\n'
        )
        self.assertEqual(
            parsed.errors,
            [RowError(5, "email_opt_in", "'maybe' is not a boolean: use true/false, 1/0 or yes/no")],
        )
        self.assertEqual(parsed.lines, [2, 3, 5])
        self.assertEqual(parsed.rows[2], {"external_id": "c3", "first_name": "Cy"})
        self.assertEqual(parsed.rows[1]["first_name"], "two\nlines")

    def test_it_strips_the_utf8_byte_order_mark_excel_writes(self):
        parsed = parse_customers_csv(codecs.BOM_UTF8 + "external_id,first_name\r\nc1,Zoë\r\n".encode())
        self.assertEqual(parsed.columns, ["external_id", "first_name"])
        self.assertEqual(parsed.rows, [{"external_id": "c1", "first_name": "Zoë"}])

    def test_it_reads_semicolons_and_utf16(self):
        data = "external_id;first_name;attributes.Tier\r\nc1;Zoë;gold\r\n".encode("utf-16")
        parsed = parse_customers_csv(data)
        self.assertEqual(parsed.rows, [{"external_id": "c1", "first_name": "Zoë", "attributes": {"Tier": "gold"}}])

    def test_blank_lines_are_skipped_and_line_numbers_kept(self):
        parsed = parse_customers_csv(b"\nexternal_id\n\nc1\n,\nc2\n")
        self.assertEqual(parsed.rows, [{"external_id": "c1"}, {"external_id": "c2"}])
        self.assertEqual(parsed.lines, [4, 6])

    def test_header_names_are_trimmed_and_case_insensitive_but_attribute_names_keep_case(self):
        parsed = parse_customers_csv(b" External_ID , EMAIL ,attributes.LoyaltyTier\nc1,a@b.co,x\n")
        self.assertEqual(parsed.columns, ["external_id", "email", "attributes.LoyaltyTier"])

    def test_extra_cells_and_values_without_a_column_are_row_errors(self):
        parsed = parse_customers_csv(b"external_id,,email\nc1,,a@b.co\nc2,x,a@b.co\nc3,,a@b.co,extra\nc4,,,,\n")
        self.assertEqual(
            parsed.errors,
            [
                RowError(3, None, "has a value ('x') in a column without a header name"),
                RowError(4, None, "has 4 cells but the header names 3 columns"),
            ],
        )
        self.assertEqual(len(parsed.rows), 4)

    def assertFileError(self, data: bytes, message: str):
        with self.assertRaises(CsvFileError) as caught:
            parse_customers_csv(data)
        self.assertEqual(caught.exception.message, message)

    def test_it_refuses_a_file_that_is_not_utf8(self):
        self.assertFileError(
            "external_id,last_name\nc1,Müller\n".encode("cp1252"),
            "The file is not UTF-8 text (the first bad byte is on line 2). Save it as CSV UTF-8 "
            "(in Excel: File > Save As > CSV UTF-8) and upload it again.",
        )

    def test_it_refuses_an_excel_workbook(self):
        self.assertFileError(
            b"PK\x03\x04\x14\x00\x06\x00rest-of-zip",
            "This is an Excel workbook or another zip file, not a CSV file. In Excel, use "
            "File > Save As > CSV UTF-8 (Comma delimited) and upload that.",
        )

    def test_it_refuses_binary_data(self):
        self.assertFileError(
            b"external_id\nc1\x00\x00\n", "The file contains binary data (NUL bytes); it is not a CSV text file."
        )

    def test_it_requires_an_external_id_column(self):
        self.assertFileError(
            b"email,first_name\na@b.co,Ann\n",
            "The header row has no external_id column. The first row must name the columns, "
            "e.g. external_id,email,first_name.",
        )

    def test_it_refuses_unknown_and_duplicate_columns(self):
        self.assertFileError(
            b"external_id,mail,zip\nc1,a,b\n",
            "Unknown column(s): mail, zip. Columns are external_id, email, phone, first_name, last_name, "
            "country, timezone, locale, email_opt_in, sms_opt_in, push_opt_in, unsubscribed and "
            "attributes.<name> for attributes.",
        )
        self.assertFileError(b"external_id,email,Email\nc1,a,b\n", "Column(s) appear more than once: email.")

    def test_it_refuses_empty_files_and_a_header_without_rows(self):
        self.assertFileError(b"", "The file is empty.")
        self.assertFileError(b"\r\n\r\n", "The file is empty.")
        self.assertFileError(b"external_id,email\r\n", "The file has a header row but no customers.")

    def test_it_refuses_broken_quoting(self):
        with self.assertRaises(CsvFileError) as caught:
            parse_customers_csv(b'external_id,email\nc1,"a@b.co"x\n')
        self.assertTrue(caught.exception.message.startswith("This is not a well-formed CSV file (line 2:"))

    def test_it_refuses_more_rows_than_the_limit(self):
        limit = csv_io.MAX_IMPORT_ROWS
        csv_io.MAX_IMPORT_ROWS = 2
        try:
            self.assertFileError(
                b"external_id\nc1\nc2\nc3\n", "The file has more than 2 customers. Split it, or use the bulk API."
            )
        finally:
            csv_io.MAX_IMPORT_ROWS = limit

    def test_every_attribute_value_and_formula_round_trips_through_a_file(self):
        values = [
            "gold",
            "42",
            42,
            -5,
            "-5",
            4.5,
            True,
            "true",
            None,
            "",
            " padded ",
            '"quoted"',
            [1, "a"],
            {"a": {"b": 1}},
            '=HYPERLINK("http://evil")',
            "'=already escaped",
            "+14155550123",
            "@mention",
            "'s-Hertogenbosch",
            "NaN",
            "multi\nline",
        ]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["external_id", "attributes.v"])
        for index, value in enumerate(values):
            writer.writerow([f"c{index}", csv_io._escape_formula(csv_io.format_attribute(value))])
        parsed = parse_customers_csv(out.getvalue().encode())
        self.assertEqual([row["attributes"]["v"] for row in parsed.rows], values)

    def test_exported_formulas_are_neutralised(self):
        self.assertEqual(csv_io._escape_formula("=1+1"), "'=1+1")
        self.assertEqual(csv_io._escape_formula("+14155550123"), "'+14155550123")
        self.assertEqual(csv_io._escape_formula("plain"), "plain")
        parsed = parse_customers_csv(b"external_id,phone,first_name\nc1,'+14155550123,'=1+1\n")
        self.assertEqual(parsed.rows, [{"external_id": "c1", "phone": "+14155550123", "first_name": "=1+1"}])


class ImportBatchTests(SimpleTestCase):
    def test_rows_of_one_customer_share_a_batch_in_file_order(self):
        rows = [{"external_id": e} for e in ["a", "b", "c", "a", "d", "e", "a", "f"]]
        self.assertEqual(csv_io.import_batches(rows, 3), [[0, 3, 6], [1, 2, 4], [5, 7]])

    def test_batches_never_exceed_the_size_even_for_one_busy_customer(self):
        rows = [{"external_id": "a"}] * 5 + [{"external_id": "b"}]
        self.assertEqual(csv_io.import_batches(rows, 2), [[0, 1], [2, 3], [4, 5]])
        self.assertEqual(csv_io.import_batches([{"external_id": "a"}], 10_000), [[0]])


class ExportTests(TestCase):
    def setUp(self):
        self.ann = Customer.objects.create(
            external_id="c1",
            email="ann@example.com",
            phone="+14155550123",
            first_name="Ann",
            last_name="Smith, Jr.",
            country="DE",
            timezone="Europe/Berlin",
            locale="de-DE",
            email_opt_in=True,
            attributes={"tier": "gold", "age": 42},
        )
        self.bob = Customer.objects.create(
            external_id="c2",
            first_name="Zoë",
            sms_opt_in=True,
            push_opt_in=True,
            unsubscribed_at=datetime(2026, 1, 2, tzinfo=UTC),
            attributes={"tier": "42", "vip": True, "note": "=cmd"},
        )
        Customer.objects.create(external_id="c3", country="FR")

    def test_the_export_is_exact(self):
        self.assertEqual(
            export_bytes(Customer.objects.all()),
            codecs.BOM_UTF8
            + (
                "external_id,email,phone,first_name,last_name,country,timezone,locale,email_opt_in,sms_opt_in,"
                "push_opt_in,unsubscribed,attributes.age,attributes.note,attributes.tier,attributes.vip\r\n"
                'c1,ann@example.com,\'+14155550123,Ann,"Smith, Jr.",DE,Europe/Berlin,de-DE,true,false,false,false,'
                "42,,gold,\r\n"
                'c2,,,Zoë,,,,,false,true,true,true,,\'=cmd,"""42""",true\r\n'
                "c3,,,,,FR,,,false,false,false,false,,,,\r\n"
            ).encode(),
        )

    def test_attribute_keys_come_from_the_filtered_customers_only(self):
        self.assertEqual(csv_io.customer_attribute_keys(Customer.objects.filter(pk=self.ann.pk)), ["age", "tier"])
        self.assertEqual(csv_io.customer_attribute_keys(Customer.objects.filter(country="FR")), [])
        self.assertEqual(csv_io.customer_attribute_keys(Customer.objects.all()), ["age", "note", "tier", "vip"])

    def test_the_export_parses_back_into_the_same_rows(self):
        parsed = parse_customers_csv(export_bytes(Customer.objects.filter(pk__in=[self.ann.pk, self.bob.pk])))
        self.assertEqual(
            parsed.rows,
            [
                {
                    "external_id": "c1",
                    "email": "ann@example.com",
                    "phone": "+14155550123",
                    "first_name": "Ann",
                    "last_name": "Smith, Jr.",
                    "country": "DE",
                    "timezone": "Europe/Berlin",
                    "locale": "de-DE",
                    "email_opt_in": True,
                    "sms_opt_in": False,
                    "push_opt_in": False,
                    "unsubscribed": False,
                    "attributes": {"tier": "gold", "age": 42},
                },
                {
                    "external_id": "c2",
                    "first_name": "Zoë",
                    "email_opt_in": False,
                    "sms_opt_in": True,
                    "push_opt_in": True,
                    "unsubscribed": True,
                    "attributes": {"tier": "42", "vip": True, "note": "=cmd"},
                },
            ],
        )

    def test_it_streams_in_chunks_with_a_server_side_cursor(self):
        for index in range(50):
            Customer.objects.create(
                external_id=f"bulk-{index:03d}",
                first_name="x" * 150,
                last_name="y" * 150,
                attributes={"blob": "z" * 2000},
            )
        pieces = list(csv_io.customers_csv_stream(Customer.objects.all(), chunk_size=10))
        self.assertEqual(pieces[0], codecs.BOM_UTF8)
        self.assertGreater(len(pieces), 2)  # 64 KiB pieces, not one string of the whole file
        self.assertEqual(b"".join(pieces[1:]).decode().count("\r\n"), 54)
