"""products_bulk_upsert: upsert by sku with exact counts, omitted keys unchanged, a new
product needs a name, and refusals that write nothing."""

from __future__ import annotations

from decimal import Decimal

from django.test import TestCase, override_settings

from marketing.errors import BatchTooLarge
from marketing.ingest import UpsertResult, products_bulk_upsert
from marketing.models import Product
from tests.ingest_helpers import IngestAssertions, everything

PRICE_MESSAGE = 'must be a non-negative decimal, e.g. "19.90"'


def product_of(sku: str) -> dict:
    return Product.objects.filter(sku=sku).values().get()


class ProductUpsertTests(IngestAssertions, TestCase):
    def test_it_creates_products_with_every_field_and_counts_them(self):
        result = products_bulk_upsert(
            [
                {
                    "sku": "A-1",
                    "name": " Trail shoe ",
                    "category": " shoes ",
                    "price": "89.90",
                    "attributes": {"colour": "red"},
                    "active": False,
                },
                {"sku": "B-2", "name": "Sock"},
            ]
        )

        self.assertEqual(result, UpsertResult(created=2, updated=0))
        a = product_of("A-1")
        self.assertEqual(
            (a["name"], a["category"], str(a["price"]), a["attributes"], a["active"]),
            ("Trail shoe", "shoes", "89.9000", {"colour": "red"}, False),
        )
        b = product_of("B-2")
        self.assertEqual(
            (b["name"], b["category"], b["price"], b["attributes"], b["active"]), ("Sock", "", None, {}, True)
        )

    def test_it_updates_existing_products_and_counts_them(self):
        Product.objects.create(sku="A-1", name="Shoe", price=Decimal("10"))

        result = products_bulk_upsert([{"sku": "A-1", "price": 12}, {"sku": "C-3", "name": "Cap"}])

        self.assertEqual(result, UpsertResult(created=1, updated=1))
        self.assertEqual(Product.objects.count(), 2)
        self.assertEqual(product_of("A-1")["price"], Decimal("12"))

    def test_it_leaves_omitted_keys_unchanged(self):
        Product.objects.create(
            sku="A-1", name="Shoe", category="shoes", price=Decimal("10.5"), attributes={"colour": "red"}, active=False
        )
        before = product_of("A-1")

        products_bulk_upsert([{"sku": "A-1", "name": "Trail shoe"}])

        after = product_of("A-1")
        self.assertEqual(after["name"], "Trail shoe")
        for name in ("name", "updated_at"):
            del before[name], after[name]
        self.assertEqual(after, before)

    def test_it_clears_category_price_and_attributes_sent_as_null(self):
        Product.objects.create(sku="A-1", name="Shoe", category="shoes", price=Decimal("10"), attributes={"a": 1})

        products_bulk_upsert([{"sku": "A-1", "category": None, "price": None, "attributes": None}])

        p = product_of("A-1")
        self.assertEqual((p["name"], p["category"], p["price"], p["attributes"]), ("Shoe", "", None, {}))

    def test_it_replaces_product_attributes_whole(self):
        Product.objects.create(sku="A-1", name="Shoe", attributes={"colour": "red", "size": 42})

        products_bulk_upsert([{"sku": "A-1", "attributes": {"colour": "blue"}}])

        self.assertEqual(product_of("A-1")["attributes"], {"colour": "blue"})

    def test_it_counts_a_replayed_batch_as_updated_and_adds_nothing(self):
        batch = [{"sku": "A-1", "name": "Shoe", "price": "10"}, {"sku": "B-2", "name": "Sock", "active": False}]
        products_bulk_upsert(batch)
        before = [{k: v for k, v in row.items() if k != "updated_at"} for row in everything()["products"]]

        result = products_bulk_upsert(batch)

        self.assertEqual(result, UpsertResult(created=0, updated=2))
        after = [{k: v for k, v in row.items() if k != "updated_at"} for row in everything()["products"]]
        self.assertEqual(after, before)

    def test_it_merges_a_sku_named_twice_in_one_batch_and_counts_it_once(self):
        result = products_bulk_upsert(
            [{"sku": "A-1", "name": "Shoe", "price": "1"}, {"sku": "A-1", "category": "shoes", "price": "2"}]
        )

        self.assertEqual(result, UpsertResult(created=1, updated=0))
        p = product_of("A-1")
        self.assertEqual((p["name"], p["category"], p["price"]), ("Shoe", "shoes", Decimal("2")))

    def test_it_creates_a_new_product_whose_name_comes_from_a_later_row_of_the_batch(self):
        result = products_bulk_upsert([{"sku": "A-1", "price": "1"}, {"sku": "A-1", "name": "Shoe"}])

        self.assertEqual(result, UpsertResult(created=1, updated=0))
        self.assertEqual(product_of("A-1")["name"], "Shoe")

    def test_it_accepts_a_price_of_zero_and_the_largest_price(self):
        products_bulk_upsert(
            [{"sku": "free", "name": "Free", "price": 0}, {"sku": "max", "name": "Max", "price": "99999999.9999"}]
        )

        self.assertEqual(str(product_of("free")["price"]), "0.0000")
        self.assertEqual(str(product_of("max")["price"]), "99999999.9999")

    def test_it_stores_an_integer_sku_as_text(self):
        products_bulk_upsert([{"sku": 1001, "name": "Numbered"}])

        self.assertEqual(list(Product.objects.values_list("sku", flat=True)), ["1001"])

    def test_it_returns_zero_counts_for_an_empty_batch(self):
        self.assertEqual(products_bulk_upsert([]), UpsertResult(created=0, updated=0))

    def test_it_rounds_a_price_with_more_than_four_decimals_the_same_on_every_database(self):
        products_bulk_upsert([{"sku": "A-1", "name": "Shoe", "price": "1.00005"}])

        self.assertEqual(str(product_of("A-1")["price"]), "1.0001")


class ProductRefusalTests(IngestAssertions, TestCase):
    def setUp(self):
        Product.objects.create(sku="A-1", name="Shoe", price=Decimal("10"))

    def test_it_refuses_a_new_product_without_a_name_and_writes_nothing(self):
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert(
                [{"sku": "A-1", "price": "11"}, {"sku": "NEW", "price": "5"}, {"sku": "OK", "name": "Fine"}]
            ),
            [(1, "name", "is required for a new product")],
        )

    def test_it_refuses_a_bad_price_and_writes_nothing(self):
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert(
                [
                    {"sku": "A-1", "price": "-1"},
                    {"sku": "A-1", "price": "cheap"},
                    {"sku": "A-1", "price": True},
                    {"sku": "A-1", "price": "100000000"},
                    {"sku": "A-1", "price": "Infinity"},
                    {"sku": "A-1", "price": [1]},
                ]
            ),
            [(row, "price", PRICE_MESSAGE) for row in range(6)],
        )

    def test_it_refuses_an_empty_or_overlong_name_even_for_an_existing_product(self):
        message = "must be a non-empty string of at most 255 characters"
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert(
                [
                    {"sku": "A-1", "name": ""},
                    {"sku": "A-1", "name": "   "},
                    {"sku": "A-1", "name": None},
                    {"sku": "A-1", "name": "n" * 256},
                ]
            ),
            [(row, "name", message) for row in range(4)],
        )

    def test_it_refuses_bad_category_attributes_and_active(self):
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert(
                [
                    {"sku": "A-1", "category": "c" * 129},
                    {"sku": "A-1", "attributes": "colour=red"},
                    {"sku": "A-1", "active": "yes"},
                    {"sku": "A-1", "active": None},
                ]
            ),
            [
                (0, "category", "must be a string of at most 128 characters"),
                (1, "attributes", "must be an object or null"),
                (2, "active", "must be true or false"),
                (3, "active", "must be true or false"),
            ],
        )

    def test_it_refuses_a_missing_sku_an_unknown_field_and_a_row_that_is_not_an_object(self):
        message = "is required: a non-empty string of at most 64 characters"
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert(
                [{"name": "No sku"}, {"sku": "s" * 65, "name": "Long"}, {"sku": "A-1", "colour": "red"}, "A-1"]
            ),
            [(0, "sku", message), (1, "sku", message), (2, "colour", "unknown field"), (3, None, "must be an object")],
        )

    def test_it_refuses_a_nul_character_anywhere_in_a_row(self):
        message = "text must not contain NUL (\\u0000) characters"
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert(
                [{"sku": "A-1", "name": "Sh\x00oe"}, {"sku": "B-2", "name": "Sock", "attributes": {"a": "\x00"}}]
            ),
            [(0, None, message), (1, None, message)],
        )

    @override_settings(BULK_MAX_ROWS=3)
    def test_it_refuses_more_rows_than_bulk_max_rows(self):
        before = everything()

        with self.assertRaises(BatchTooLarge) as caught:
            products_bulk_upsert([{"sku": f"n{i}", "name": "N"} for i in range(4)])

        self.assertEqual(caught.exception.message, "4 products in one batch; the limit is 3 rows. Split the batch.")
        self.assertEqual(everything(), before)

    def test_it_refuses_a_batch_that_is_not_a_list(self):
        self.assertRefusedAndNothingWritten(
            lambda: products_bulk_upsert({"sku": "A-1"}),
            [(None, "products", "'products' must be a list of objects.")],
        )
