"""RFM: recency, frequency and monetary value as of a date in the reporting timezone,
1-5 scores by quintile with equal values sharing a score (checked against pandas on a
random population), the named R x F groups, the nightly task and schedule, and where
marketers and integrations see it (API, admin)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from django.contrib.auth.models import User
from django.db import connection
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from marketing.models import Customer, CustomerRFM, Touchpoint
from marketing.rfm import rfm_group, rfm_refresh, rfm_today
from marketing.tasks import rfm_refresh_all
from tests.api_helpers import ApiTestCase, make_customer

AS_OF = date(2026, 11, 10)


def at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    """A UTC time in November 2026."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


_event_ids = iter(range(1, 10**9))


def purchase(customer: Customer, order_id: str, revenue: str, occurred_at: datetime, sku: str = "A-1") -> None:
    Touchpoint.objects.create(
        customer=customer,
        kind="purchase",
        event_id=f"e{next(_event_ids)}",
        order_id=order_id,
        sku=sku,
        revenue=Decimal(revenue),
        occurred_at=occurred_at,
    )


def refund(customer: Customer, order_id: str, revenue: str, occurred_at: datetime) -> None:
    Touchpoint.objects.create(
        customer=customer,
        kind="refund",
        event_id=f"e{next(_event_ids)}",
        order_id=order_id,
        revenue=Decimal(revenue),
        occurred_at=occurred_at,
    )


def rfm_rows() -> dict[str, tuple]:
    return {
        row.customer.external_id: (
            row.recency_days,
            row.frequency,
            row.monetary,
            row.r_score,
            row.f_score,
            row.m_score,
        )
        for row in CustomerRFM.objects.select_related("customer")
    }


NULLS = (None, None, None, None, None, None)


class RfmValuesTests(TestCase):
    """A small shop, as of 10 November (reporting timezone UTC unless overridden)."""

    def setUp(self):
        # ann: two orders (the first with two lines), part of the second refunded.
        self.ann = make_customer("ann")
        purchase(self.ann, "a1", "10.00", at(1), sku="X")
        purchase(self.ann, "a1", "5.00", at(1), sku="Y")
        purchase(self.ann, "a2", "20.00", at(8))
        refund(self.ann, "a2", "5.00", at(9))
        # bob: bought in the last second of 10 November, and again just after it.
        self.bob = make_customer("bob")
        purchase(self.bob, "b1", "40.00", at(10, 23, 59) + timedelta(seconds=59))
        purchase(self.bob, "b2", "100.00", at(11, 0, 0))
        # cy: one order, the same monetary value as ann.
        self.cy = make_customer("cy")
        purchase(self.cy, "c1", "30.00", at(5))
        # dee only browses; eve has a refund but no purchase.
        self.dee = make_customer("dee")
        Touchpoint.objects.create(customer=self.dee, kind="visit", event_id="dee-visit", occurred_at=at(9))
        self.eve = make_customer("eve")
        refund(self.eve, "e1", "15.00", at(3))

    def test_it_computes_recency_frequency_monetary_and_scores(self):
        written = rfm_refresh(AS_OF)

        self.assertEqual(written, 5)
        # Three buyers. R (worst first): cy 5 days, ann 2, bob 0 -> ranks 1, 2, 3 -> scores
        # 1, 2, 4. F: bob and cy 1 order share rank 1, ann 2 orders rank 3 -> 1, 1, 4.
        # M: ann and cy 30.00 share rank 1, bob 40.00 rank 3 -> 1, 1, 4.
        self.assertEqual(
            rfm_rows(),
            {
                "ann": (2, 2, Decimal("30.0000"), 2, 4, 1),
                "bob": (0, 1, Decimal("40.0000"), 4, 1, 4),
                "cy": (5, 1, Decimal("30.0000"), 1, 1, 1),
                "dee": NULLS,
                "eve": NULLS,
            },
        )
        self.assertEqual(set(CustomerRFM.objects.values_list("as_of", flat=True)), {AS_OF})

    def test_purchases_after_the_as_of_day_do_not_count(self):
        rfm_refresh(date(2026, 11, 6))

        rows = rfm_rows()
        self.assertEqual(rows["ann"][:3], (5, 1, Decimal("15.0000")))
        self.assertEqual(rows["bob"], NULLS)
        self.assertEqual(rows["cy"][:3], (1, 1, Decimal("30.0000")))

    def test_a_refund_counts_only_up_to_the_as_of_day(self):
        rfm_refresh(date(2026, 11, 8))
        self.assertEqual(rfm_rows()["ann"][:3], (0, 2, Decimal("35.0000")))

        rfm_refresh(date(2026, 11, 9))
        self.assertEqual(rfm_rows()["ann"][:3], (1, 2, Decimal("30.0000")))

    def test_a_second_refresh_writes_the_same_rows(self):
        rfm_refresh(AS_OF)
        first = rfm_rows()

        written = rfm_refresh(AS_OF)

        self.assertEqual(written, 5)
        self.assertEqual(rfm_rows(), first)
        self.assertEqual(CustomerRFM.objects.count(), 5)

    def test_a_refresh_replaces_rows_of_an_earlier_day(self):
        rfm_refresh(date(2026, 11, 6))

        rfm_refresh(AS_OF)

        self.assertEqual(set(CustomerRFM.objects.values_list("as_of", flat=True)), {AS_OF})
        self.assertEqual(rfm_rows()["bob"], (0, 1, Decimal("40.0000"), 4, 1, 4))

    def test_without_a_date_it_is_as_of_today_in_the_reporting_timezone(self):
        with override_settings(REPORTING_TIMEZONE="Pacific/Kiritimati"):  # UTC+14
            today = timezone.now().astimezone(ZoneInfo("Pacific/Kiritimati")).date()
            self.assertEqual(rfm_today(), today)
            rfm_refresh()

        self.assertEqual(set(CustomerRFM.objects.values_list("as_of", flat=True)), {today})

    def test_the_nightly_task_refreshes_every_customer(self):
        self.assertEqual(rfm_refresh_all(), 5)
        self.assertEqual(CustomerRFM.objects.count(), 5)
        self.assertEqual(set(CustomerRFM.objects.values_list("as_of", flat=True)), {rfm_today()})


class RfmTimezoneTests(TestCase):
    """zed buys at 23:30 UTC on 9 and 10 November: in Berlin (UTC+1) that is 00:30 on the
    10th and the 11th."""

    def setUp(self):
        self.zed = make_customer("zed")
        purchase(self.zed, "z1", "10.00", at(9, 23, 30))
        purchase(self.zed, "z2", "20.00", at(10, 23, 30))

    def test_in_utc_both_purchases_fall_on_or_before_the_as_of_day(self):
        rfm_refresh(AS_OF)
        self.assertEqual(rfm_rows()["zed"], (0, 2, Decimal("30.0000"), 1, 1, 1))

    @override_settings(REPORTING_TIMEZONE="Europe/Berlin")
    def test_in_berlin_the_late_evening_purchase_belongs_to_the_next_day(self):
        rfm_refresh(AS_OF)
        self.assertEqual(rfm_rows()["zed"], (0, 1, Decimal("10.0000"), 1, 1, 1))

    @override_settings(REPORTING_TIMEZONE="Europe/Berlin")
    def test_in_berlin_the_day_before_has_no_purchase_yet(self):
        rfm_refresh(date(2026, 11, 9))
        self.assertEqual(rfm_rows()["zed"], NULLS)

    @override_settings(REPORTING_TIMEZONE="America/New_York")
    def test_in_new_york_a_purchase_just_after_midnight_utc_belongs_to_the_day_before(self):
        # 00:30 UTC on the 11th is 19:30 on the 10th in New York (UTC-5).
        purchase(self.zed, "z3", "5.00", at(11, 0, 30))
        rfm_refresh(AS_OF)
        self.assertEqual(rfm_rows()["zed"], (0, 3, Decimal("35.0000"), 1, 1, 1))

    @override_settings(REPORTING_TIMEZONE="America/New_York")
    def test_in_new_york_recency_counts_local_days(self):
        rfm_refresh(date(2026, 11, 12))
        self.assertEqual(rfm_rows()["zed"][:3], (2, 2, Decimal("30.0000")))


class RfmScoreTests(TestCase):
    def buyers_with_orders(self, counts: list[int]) -> None:
        for i, count in enumerate(counts):
            customer = make_customer(f"c{i:02d}")
            for n in range(count):
                purchase(customer, f"c{i}-{n}", "10.00", at(1))

    def f_scores(self) -> list[int]:
        return [
            score for _, score in CustomerRFM.objects.order_by("customer__external_id").values_list("pk", "f_score")
        ]

    def test_ten_distinct_values_make_two_customers_per_quintile(self):
        self.buyers_with_orders([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        rfm_refresh(AS_OF)
        self.assertEqual(self.f_scores(), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])

    def test_equal_values_share_the_score_of_their_lowest_rank(self):
        # Ranks 1, 1, 1, 4, 5 of 5 -> 1 + floor(5 * (rank - 1) / 5).
        self.buyers_with_orders([1, 1, 1, 2, 3])
        rfm_refresh(AS_OF)
        self.assertEqual(self.f_scores(), [1, 1, 1, 4, 5])

    def test_when_every_buyer_is_equal_every_score_is_one(self):
        self.buyers_with_orders([2, 2, 2, 2])
        rfm_refresh(AS_OF)
        self.assertEqual(
            set(CustomerRFM.objects.values_list("r_score", "f_score", "m_score")),
            {(1, 1, 1)},
        )


class RfmPandasReferenceTests(TestCase):
    """A random population of 400 customers, RFM computed independently with pandas
    (rank(method="min"), the same score formula) and compared row for row."""

    TZ = "America/New_York"
    PRICES_CENTS = np.array([500, 1000, 1250, 2000, 9999])

    def build_population(self, rng: np.random.Generator) -> pd.DataFrame:
        customers = Customer.objects.bulk_create([Customer(external_id=f"p{i:04d}") for i in range(400)])
        cutoff = datetime(2026, 11, 11, tzinfo=ZoneInfo(self.TZ)).astimezone(UTC)
        rows = []
        for customer in customers:
            for n in range(int(rng.integers(0, 6))):
                # Whole hours before the cutoff, some after it (those must not count).
                placed = cutoff - timedelta(hours=int(rng.integers(-72, 24 * 60)))
                order_id = f"{customer.external_id}-{n}"
                for line in range(int(rng.integers(1, 4))):
                    cents = int(rng.choice(self.PRICES_CENTS))
                    rows.append((customer.pk, "purchase", order_id, f"S{line}", cents, placed))
                if rng.random() < 0.2:
                    cents = int(rng.choice(self.PRICES_CENTS[:2]))
                    later = placed + timedelta(hours=int(rng.integers(1, 24 * 7)))
                    rows.append((customer.pk, "refund", order_id, "", cents, later))
        Touchpoint.objects.bulk_create(
            Touchpoint(
                customer_id=customer_id,
                kind=kind,
                event_id=f"r{i}",
                order_id=order_id,
                sku=sku,
                revenue=Decimal(cents) / 100,
                occurred_at=occurred_at,
            )
            for i, (customer_id, kind, order_id, sku, cents, occurred_at) in enumerate(rows)
        )
        frame = pd.DataFrame(rows, columns=["customer_id", "kind", "order_id", "sku", "cents", "occurred_at"])
        return frame[frame["occurred_at"] < cutoff]

    def reference(self, touchpoints: pd.DataFrame) -> dict[int, tuple]:
        purchases = touchpoints[touchpoints["kind"] == "purchase"]
        refunds = touchpoints[touchpoints["kind"] == "refund"]
        by_customer = purchases.groupby("customer_id")
        last_day = by_customer["occurred_at"].max().map(lambda ts: ts.astimezone(ZoneInfo(self.TZ)).date())
        rfm = pd.DataFrame(
            {
                "recency": last_day.map(lambda day: (AS_OF - day).days),
                "frequency": by_customer["order_id"].nunique(),
                "cents": by_customer["cents"].sum()
                - refunds.groupby("customer_id")["cents"].sum().reindex(last_day.index, fill_value=0),
            }
        )
        n = len(rfm)

        def score(rank: pd.Series) -> pd.Series:
            return 1 + (5 * (rank.astype(int) - 1)) // n

        rfm["r"] = score(rfm["recency"].rank(method="min", ascending=False))
        rfm["f"] = score(rfm["frequency"].rank(method="min"))
        rfm["m"] = score(rfm["cents"].rank(method="min"))
        return {
            int(customer_id): (
                int(row.recency),
                int(row.frequency),
                Decimal(int(row.cents)) / 100,
                int(row.r),
                int(row.f),
                int(row.m),
            )
            for customer_id, row in rfm.iterrows()
        }

    @override_settings(REPORTING_TIMEZONE=TZ)
    def test_the_table_matches_a_pandas_reference(self):
        touchpoints = self.build_population(np.random.default_rng(20261110))
        expected = self.reference(touchpoints)

        written = rfm_refresh(AS_OF)

        table = {
            row.customer_id: (row.recency_days, row.frequency, row.monetary, row.r_score, row.f_score, row.m_score)
            for row in CustomerRFM.objects.all()
        }
        self.assertEqual(written, 400)
        self.assertEqual({k: v for k, v in table.items() if v != NULLS}, expected)
        self.assertEqual(sum(v == NULLS for v in table.values()), 400 - len(expected))
        # The population is big and varied enough to mean something: all five scores
        # occur, and ties occur (fewer distinct values than buyers).
        self.assertEqual(sorted({v[3] for v in expected.values()}), [1, 2, 3, 4, 5])
        self.assertEqual(sorted({v[4] for v in expected.values()}), [1, 2, 3, 4, 5])
        self.assertEqual(sorted({v[5] for v in expected.values()}), [1, 2, 3, 4, 5])
        self.assertLess(len({v[2] for v in expected.values()}), len(expected))
        self.assertGreater(len(expected), 250)


class RfmGroupTests(TestCase):
    def test_the_r_by_f_grid_names_every_cell(self):
        grid = {r: [rfm_group(r, f, 3) for f in range(1, 6)] for r in range(5, 0, -1)}
        self.assertEqual(
            grid,
            {
                5: ["new", "potential_loyalists", "potential_loyalists", "champions", "champions"],
                4: ["promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"],
                3: ["need_attention", "need_attention", "need_attention", "loyal", "loyal"],
                2: ["hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"],
                1: ["lost", "lost", "at_risk", "at_risk", "cant_lose"],
            },
        )

    def test_monetary_does_not_move_a_customer_between_groups(self):
        self.assertEqual({rfm_group(5, 5, m) for m in range(1, 6)}, {"champions"})

    def test_an_unscored_customer_has_no_group(self):
        self.assertIsNone(rfm_group(None, None, None))


class RfmScheduleTests(TestCase):
    def test_a_migration_schedules_the_refresh_nightly_at_two(self):
        task = PeriodicTask.objects.select_related("crontab").get(name="rfm-refresh-all")
        crontab = task.crontab
        self.assertEqual(
            (task.task, task.enabled, task.interval_id),
            ("marketing.tasks.rfm_refresh_all", True, None),
        )
        self.assertEqual(
            (crontab.minute, crontab.hour, crontab.day_of_week, crontab.day_of_month, crontab.month_of_year),
            ("0", "2", "*", "*", "*"),
        )
        self.assertEqual(str(crontab.timezone), "UTC")


class RfmApiTests(ApiTestCase):
    def setUp(self):
        super().setUp()
        self.ann = make_customer("ann")
        purchase(self.ann, "a1", "12.50", at(8))
        refund(self.ann, "a1", "2.50", at(9))
        self.bob = make_customer("bob")

    def test_the_customer_shows_its_rfm_and_group(self):
        rfm_refresh(AS_OF)

        ann = self.api.get(f"/api/v1/customers/{self.ann.id}").json()
        bob = self.api.get(f"/api/v1/customers/{self.bob.id}").json()

        self.assertEqual(
            ann["rfm"],
            {
                "recency_days": 2,
                "frequency": 1,
                "monetary": "10.0000",
                "r_score": 1,
                "f_score": 1,
                "m_score": 1,
                "group": "lost",
                "as_of": "2026-11-10",
            },
        )
        self.assertEqual(
            bob["rfm"],
            {
                "recency_days": None,
                "frequency": None,
                "monetary": None,
                "r_score": None,
                "f_score": None,
                "m_score": None,
                "group": None,
                "as_of": "2026-11-10",
            },
        )

    def test_before_the_first_refresh_rfm_is_null(self):
        self.assertIsNone(self.api.get(f"/api/v1/customers/{self.ann.id}").json()["rfm"])

    def test_the_list_reads_rfm_in_the_same_query_as_the_customers(self):
        for i in range(5):
            make_customer(f"more-{i}")
        rfm_refresh(AS_OF)

        with CaptureQueriesContext(connection) as queries:
            results = self.api.get("/api/v1/customers").json()["results"]

        self.assertEqual(len(results), 7)
        self.assertEqual(sum(r["rfm"] is not None for r in results), 7)
        rfm_queries = [q["sql"] for q in queries if "customerrfm" in q["sql"]]
        self.assertEqual(len(rfm_queries), 1)
        self.assertIn('LEFT OUTER JOIN "marketing_customerrfm"', rfm_queries[0])


class RfmAdminTests(TestCase):
    def setUp(self):
        self.marketer = User.objects.create_superuser("marketer", "marketer@example.com", "pw")
        self.client.force_login(self.marketer)
        self.ann = make_customer("ann")
        purchase(self.ann, "a1", "1234.50", at(8))
        self.bob = make_customer("bob")

    def test_the_change_page_shows_scores_group_and_values(self):
        rfm_refresh(AS_OF)

        page = self.client.get(f"/admin/marketing/customer/{self.ann.id}/change/").content.decode()

        self.assertIn("R 1 · F 1 · M 1 — lost", page)
        self.assertIn("2 days since the last purchase, 1 orders, 1,234.50 USD net, as of 2026-11-10", page)

    def test_a_customer_without_a_purchase_says_so(self):
        rfm_refresh(AS_OF)
        page = self.client.get(f"/admin/marketing/customer/{self.bob.id}/change/").content.decode()
        self.assertIn("no purchase as of 2026-11-10", page)

    def test_before_the_first_refresh_it_says_not_computed(self):
        page = self.client.get(f"/admin/marketing/customer/{self.ann.id}/change/").content.decode()
        self.assertIn("not computed yet", page)
