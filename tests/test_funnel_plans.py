"""The funnel's per-customer plan (analytics.funnels.sql.chain_by_customer: merge joins
over index-only scans of touchpoint_kind_customer) against the hash plan it replaces
for kind-only steps (chain_postgres), on PostgreSQL: the same answers, exactly, on
timelines built to catch the edges (ties at one instant, the window's end to the
microsecond, repeated and out-of-order steps, entries before the range, several visits
per customer); which specs take which plan; the plan really reads the index; and the
index swap of marketing migration 0009 in the schema (SQLite checks the index too)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from unittest import mock, skipUnless

from django.db import connection
from django.test import TestCase

from analytics.funnels import parse_funnel_spec, sql
from analytics.services import funnel_compute
from marketing.models import Customer, Touchpoint

T0 = datetime(2026, 10, 5, 12, 0, 0, 250_000, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)
RANGE = {"date_from": "2026-10-01T00:00:00Z", "date_to": "2026-11-01T00:00:00Z"}
STEPS = ["visit", "add_to_cart", "checkout", "purchase"]


def postgres() -> bool:
    return connection.vendor == "postgresql"


class Timelines:
    def __init__(self) -> None:
        self.count = 0

    def add(self, name: str, events: list[tuple[str, datetime]], **attributes) -> Customer:
        customer = Customer.objects.create(external_id=name, attributes=attributes)
        rows = []
        for kind, at in events:
            self.count += 1
            extra = {"order_id": f"o{self.count}"} if kind == "purchase" else {}
            rows.append(Touchpoint(customer=customer, kind=kind, occurred_at=at, event_id=f"ev{self.count}", **extra))
        Touchpoint.objects.bulk_create(rows)
        return customer


def build() -> None:
    t = Timelines()
    # The whole chain, one minute apart.
    t.add("a", [("visit", T0), ("add_to_cart", T0 + MINUTE), ("checkout", T0 + 2 * MINUTE), ("purchase", T0 + HOUR)])
    # Ties: the cart at the entry's instant does not count; the one a microsecond later does.
    t.add("b", [("visit", T0), ("add_to_cart", T0), ("add_to_cart", T0 + MICROSECOND), ("checkout", T0 + MINUTE)])
    # The window's end: exactly at entry + 1 day counts, a microsecond later does not.
    t.add("c", [("visit", T0), ("add_to_cart", T0 + DAY), ("checkout", T0 + DAY + MICROSECOND)], tier="gold")
    # Out of order: purchase before checkout (ordered: stops at cart; any: reaches purchase
    # only once checkout is there, at the checkout's time).
    t.add(
        "d",
        [("visit", T0), ("add_to_cart", T0 + MINUTE), ("purchase", T0 + 2 * MINUTE), ("checkout", T0 + 3 * MINUTE)],
        tier="gold",
    )
    # Several visits: the first one in the range is the entry, the window runs from it.
    t.add(
        "e",
        [("visit", T0 - 10 * DAY), ("visit", T0), ("visit", T0 + 2 * DAY), ("add_to_cart", T0 + 2 * DAY + MINUTE)],
        tier="silver",
    )
    # Steps twice: the earliest chain wins (the second cart comes after the checkout).
    t.add(
        "f",
        [
            ("visit", T0),
            ("add_to_cart", T0 + MINUTE),
            ("checkout", T0 + 2 * MINUTE),
            ("add_to_cart", T0 + 3 * MINUTE),
            ("checkout", T0 + 4 * MINUTE),
            ("purchase", T0 + 5 * MINUTE),
        ],
    )
    # Only later steps, no visit: never enters.
    t.add("g", [("add_to_cart", T0), ("checkout", T0 + MINUTE), ("purchase", T0 + 2 * MINUTE)])
    # Visit at the range's end (excluded) and one before its start (excluded).
    t.add("h", [("visit", datetime(2026, 11, 1, tzinfo=UTC)), ("visit", datetime(2026, 9, 30, 23, 59, tzinfo=UTC))])
    # A later step just past the range's end but inside the window: counts.
    t.add(
        "i",
        [
            ("visit", datetime(2026, 10, 31, 23, 0, tzinfo=UTC)),
            ("add_to_cart", datetime(2026, 11, 1, 0, 30, tzinfo=UTC)),
        ],
    )


def spec(**changes) -> dict:
    return {"steps": STEPS, "window": {"days": 1}, **RANGE, **changes}


def both_plans(body: dict) -> tuple[dict, dict]:
    """The answer of the per-customer plan and of the hash plan (forced) for one spec."""
    new = funnel_compute(body)
    with mock.patch.object(sql, "by_customer", return_value=False):
        old = funnel_compute(body)
    return new, old


def comparable(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "computed_at"}, sort_keys=True, default=str)


@skipUnless(postgres(), "the per-customer plan is PostgreSQL's")
class PerCustomerPlanTests(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        build()

    def test_ordered_same_answer_as_the_hash_plan_and_exact_counts(self) -> None:
        self.assertTrue(sql.by_customer(parse_funnel_spec(spec())))
        new, old = both_plans(spec())
        self.assertEqual(comparable(new), comparable(old))
        # Entered a b c d e f i (e's cart is past its window); cart a b c d f i; checkout
        # a b d f; purchase a f (d's purchase came before its checkout).
        self.assertEqual([step["customers"] for step in new["steps"]], [7, 6, 4, 2])
        # To the cart: 1 us (b), 60 s (a d f), 5400 s (i), 86400 s (c, exactly at the end).
        self.assertEqual(new["steps"][1]["time_from_previous"], {"median": 60.0, "p90": 45900.0})

    def test_any_same_answer_as_the_hash_plan_and_exact_counts(self) -> None:
        new, old = both_plans(spec(order="any"))
        self.assertEqual(comparable(new), comparable(old))
        # any: d reaches the purchase too (order free); c's checkout is past the window.
        self.assertEqual([step["customers"] for step in new["steps"]], [7, 6, 4, 3])

    def test_attribute_breakdown_same_answer_as_the_hash_plan(self) -> None:
        body = spec(breakdown={"by": "attributes.tier"})
        new, old = both_plans(body)
        self.assertEqual(comparable(new), comparable(old))
        self.assertEqual(
            [(v["value"], [s["customers"] for s in v["steps"]]) for v in new["breakdown"]["values"]],
            [(None, [4, 4, 3, 2]), ("gold", [2, 2, 1, 0]), ("silver", [1, 0, 0, 0])],
        )

    def test_short_window_and_two_steps(self) -> None:
        for body in (
            spec(window={"seconds": 60}),
            spec(steps=["visit", "add_to_cart"], window={"hours": 1}),
            spec(steps=["visit", "visit"], window={"days": 3}),
        ):
            with self.subTest(body=body):
                new, old = both_plans(body)
                self.assertEqual(comparable(new), comparable(old))

    def test_which_specs_take_the_per_customer_plan(self) -> None:
        self.assertTrue(sql.by_customer(parse_funnel_spec(spec(order="any"))))
        self.assertTrue(sql.by_customer(parse_funnel_spec(spec(breakdown={"by": "attributes.tier"}))))
        # Filters and entry-touchpoint breakdowns need the row itself; strict reads every kind.
        filtered = spec(steps=[{"kind": "visit", "channel": "web"}, "add_to_cart"])
        for body in (filtered, spec(breakdown={"by": "channel"}), spec(order="strict")):
            with self.subTest(body=body):
                self.assertFalse(sql.by_customer(parse_funnel_spec(body)))

    def test_the_plan_reads_the_kind_customer_index_without_hashing(self) -> None:
        plan = "\n".join(sql.explain(parse_funnel_spec(spec())))
        self.assertIn("Index Only Scan using touchpoint_kind_customer", plan)
        self.assertIn("Merge Left Join", plan)
        self.assertNotIn("Hash", plan)
        self.assertNotIn("Seq Scan on marketing_touchpoint", plan)


class KindCustomerIndexTests(TestCase):
    def test_the_index_replaced_kind_time(self) -> None:
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, Touchpoint._meta.db_table)
        self.assertEqual(constraints["touchpoint_kind_customer"]["columns"], ["kind", "customer_id", "occurred_at"])
        self.assertTrue(constraints["touchpoint_kind_customer"]["index"])
        self.assertNotIn("touchpoint_kind_time", constraints)
