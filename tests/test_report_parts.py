"""Reports split into parts that run at once on several connections over one snapshot
(analytics.db.run_parts), and the ROI report and per-customer funnels split by customer
range: the same answer as on one connection, exactly.

TransactionTestCase: the parts' other connections see only committed data (inside a
test's transaction run_parts runs everything on the test's connection, which a test
below checks too)."""

from __future__ import annotations

import threading
import time
from functools import partial
from unittest import mock, skipUnless

from django.db import OperationalError, connection, transaction
from django.test import TransactionTestCase, override_settings

from analytics import roi
from analytics.db import customer_ranges, parallel_connections, report_timeout, run_parts
from analytics.funnels import sql as funnel_sql
from analytics.roi import _exposed_id_bounds, campaign_roi
from analytics.services import funnel_compute
from marketing.models import Customer, Touchpoint
from tests import test_funnel_plans as funnel_plans
from tests import test_roi


def postgres() -> bool:
    return connection.vendor == "postgresql"


def _fetch_one(sql: str):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def whoami() -> tuple[int, str, str]:
    """This connection's backend pid, its snapshot and the thread running it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), pg_current_snapshot()::text")
        pid, snapshot = cursor.fetchone()
    return pid, snapshot, threading.current_thread().name


@skipUnless(postgres(), "several connections over one snapshot are PostgreSQL's (SQLite runs parts one by one)")
class RunPartsTests(TransactionTestCase):
    @override_settings(REPORT_PARALLELISM=2)
    def test_parts_run_on_two_connections_over_one_snapshot(self):
        main_pid = _fetch_one("SELECT pg_backend_pid()")
        results = run_parts([whoami, lambda: (time.sleep(0.2), whoami())[1], whoami, whoami])
        self.assertEqual(len({pid for pid, _, _ in results}), 2)
        self.assertIn(main_pid, {pid for pid, _, _ in results})
        self.assertEqual(len({snapshot for _, snapshot, _ in results}), 1)
        threads = {thread for _, _, thread in results}
        self.assertEqual(len(threads), 2)
        self.assertEqual(len([t for t in threads if t.startswith("report-part")]), 1)
        # The worker's connection was closed: only this thread's stays.
        time.sleep(0.1)
        open_backends = _fetch_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND application_name = ''"
        )
        self.assertEqual(open_backends, 0)

    @override_settings(REPORT_PARALLELISM=3)
    def test_every_part_sees_the_data_as_it_was_when_the_report_began(self):
        customer = Customer.objects.create(external_id="late")
        before = Touchpoint.objects.count()

        def insert_elsewhere_then_count() -> int:
            # Committed by another session while the report runs: no part sees it.
            def insert() -> None:
                try:
                    Touchpoint.objects.create(
                        customer=customer, kind="visit", occurred_at=test_roi.E, event_id="late-1"
                    )
                finally:
                    connection.close()

            other = threading.Thread(target=insert)
            other.start()
            other.join()
            return Touchpoint.objects.count()

        def count_later() -> int:
            time.sleep(0.3)
            return Touchpoint.objects.count()

        self.assertEqual(run_parts([insert_elsewhere_then_count, count_later, count_later]), [before] * 3)
        self.assertEqual(Touchpoint.objects.count(), before + 1)

    @override_settings(REPORT_PARALLELISM=2)
    def test_a_part_that_fails_fails_the_report_with_its_error(self):
        def fail() -> None:
            raise ValueError("part 2 failed")

        with self.assertRaisesMessage(ValueError, "part 2 failed"):
            run_parts([lambda: time.sleep(0.2), fail])
        with self.assertRaisesMessage(ValueError, "part 2 failed"):
            run_parts([fail, lambda: time.sleep(0.2)])

    @override_settings(REPORT_PARALLELISM=2)
    def test_the_report_timeout_holds_on_every_connection(self):
        def sleep() -> None:
            _fetch_one("SELECT pg_sleep(2)::text")

        for parts in ([sleep, lambda: None], [lambda: time.sleep(0.1), sleep]):
            started = time.perf_counter()
            with report_timeout(100), self.assertRaisesMessage(OperationalError, "statement timeout"):
                run_parts(parts)
            self.assertLess(time.perf_counter() - started, 1.5)

    @override_settings(REPORT_PARALLELISM=4)
    def test_inside_a_transaction_the_parts_run_on_its_connection(self):
        self.assertEqual(parallel_connections(), 4)
        with transaction.atomic():
            self.assertEqual(parallel_connections(), 1)
            Customer.objects.create(external_id="uncommitted")
            results = run_parts([lambda: (whoami()[0], Customer.objects.count())] * 3)
        self.assertEqual({pid for pid, _ in results}, {_fetch_one("SELECT pg_backend_pid()")})
        self.assertEqual([count for _, count in results], [1, 1, 1])


@skipUnless(postgres(), "several connections over one snapshot are PostgreSQL's (SQLite runs parts one by one)")
class RoiInPartsTests(TransactionTestCase):
    """test_roi.HandBuiltCampaignTests' campaign (7 customers, consecutive ids), committed."""

    def setUp(self) -> None:
        test_roi.HandBuiltCampaignTests.setUp(self)
        self.customer_ids = sorted(
            Touchpoint.objects.filter(campaign_id=self.campaign.pk, kind__in=("sent", "held_out")).values_list(
                "customer_id", flat=True
            )
        )

    def test_the_customer_ranges_cover_the_exposed_customers_once(self):
        low, high = self.customer_ids[0], self.customer_ids[-1] + 1
        self.assertEqual(len(self.customer_ids), 6)  # t5 was never sent

        def ranges_of(campaign_id: int, connections: int) -> list:
            with override_settings(REPORT_PARALLELISM=connections):
                return customer_ranges(partial(_exposed_id_bounds, campaign_id))

        self.assertEqual(_exposed_id_bounds(self.campaign.pk), (low, high - 1))
        self.assertEqual(ranges_of(self.campaign.pk, 1), [None])
        ranges = ranges_of(self.campaign.pk, 2)  # 2 per connection
        self.assertEqual(ranges[0][0], low)
        self.assertEqual(ranges[-1][1], high)
        self.assertEqual([a for a, _ in ranges[1:]], [b for _, b in ranges[:-1]])  # contiguous, disjoint
        self.assertEqual(len(ranges), 4)
        # More parts than customers: no empty range.
        many = ranges_of(self.campaign.pk, 25)
        self.assertEqual(len(many), high - low)
        self.assertTrue(all(b - a == 1 for a, b in many))
        self.assertEqual(_exposed_id_bounds(987654), (None, None))
        self.assertEqual(ranges_of(987654, 2), [None])

    def test_the_report_in_parts_is_the_report_on_one_connection(self):
        with override_settings(REPORT_PARALLELISM=1), mock.patch.object(roi, "run_parts", wraps=run_parts) as spy:
            whole = campaign_roi(self.campaign.pk)
        self.assertEqual(len(spy.call_args.args[0]), 2)  # one connection: all customers at once, and the cost
        for parallelism, parts in ((2, 4 + 1), (3, 6 + 1), (7, 7 + 1)):  # 7 customer ids at most
            with self.subTest(parallelism=parallelism), override_settings(REPORT_PARALLELISM=parallelism):
                with mock.patch.object(roi, "run_parts", wraps=run_parts) as spy:
                    self.assertEqual(campaign_roi(self.campaign.pk), whole)
                self.assertEqual(len(spy.call_args.args[0]), parts)
        # The figures are HandBuiltCampaignTests.test_the_report_is_exact's.
        self.assertEqual(
            (whole["sends"], whole["messages_sent"], whole["opens"], whole["clicks"], whole["revenue"], whole["cost"]),
            (4, 4, 2, 2, "130.0000", "10.1200"),
        )
        self.assertEqual(
            [(day["date"], day["sends"], day["conversions"], day["revenue"]) for day in whole["daily"]],
            [("2026-10-01", 4, 1, "100.0000"), ("2026-10-03", 0, 0, "-20.0000"), ("2026-10-04", 0, 1, "50.0000")],
        )
        self.assertEqual(whole["daily"][0]["date"], test_roi.E.date().isoformat())


@skipUnless(postgres(), "several connections over one snapshot are PostgreSQL's (SQLite runs parts one by one)")
class FunnelInPartsTests(TransactionTestCase):
    """tests.test_funnel_plans' timelines (ties, the window's edge, repeated and
    out-of-order steps), committed: a per-customer funnel without a breakdown runs in
    customer ranges, with the same counts and the same percentiles, to the last digit."""

    def setUp(self) -> None:
        funnel_plans.build()

    def test_the_funnel_in_parts_is_the_funnel_in_one_statement(self):
        for order in ("ordered", "any"):
            body = funnel_plans.spec(order=order)
            with override_settings(REPORT_PARALLELISM=1):
                whole = funnel_compute(body)
            self.assertEqual([step["customers"] for step in whole["steps"]][:2], [7, 6])
            for parallelism in (2, 3):
                with self.subTest(order=order, parallelism=parallelism):
                    with (
                        override_settings(REPORT_PARALLELISM=parallelism),
                        mock.patch.object(funnel_sql, "run_parts", wraps=run_parts) as spy,
                    ):
                        parts = funnel_compute(body)
                    self.assertEqual(len(spy.call_args.args[0]), 2 * parallelism)
                    self.assertEqual(funnel_plans.comparable(parts), funnel_plans.comparable(whole))

    def test_a_breakdown_a_filter_or_one_connection_keeps_one_statement(self):
        for body, parallelism in (
            (funnel_plans.spec(breakdown={"by": "attributes.tier"}), 2),
            (funnel_plans.spec(steps=[{"kind": "visit"}, {"kind": "add_to_cart", "channel": "web"}]), 2),
            (funnel_plans.spec(), 1),
        ):
            with self.subTest(body=body), override_settings(REPORT_PARALLELISM=parallelism):
                with mock.patch.object(funnel_sql, "run_parts", wraps=run_parts) as spy:
                    funnel_compute(body)
                spy.assert_not_called()
