"""Attribution (analytics.attribution) on a worked example: every model's credits exact
to the cent, totals per campaign, channel and creative adding up exactly to the
attributed revenue, refunds netted, the lookback window, unattributed conversions, and
the largest-remainder rounding. PostgreSQL and SQLite alike.

The example (T = 15 October 2026, 12:00 UTC; range 10-20 October; window 30 days):
- ann buys order o1 at T (two lines, 60 + 40) and gets 10 back two days later: 90.00.
  Her touches: X = Welcome's email send (creative A1) at T-10d, Y = Win-back's sms send
  (creative B1) at T-4d, and a click on that sms (Y again) at T-1d. Not touches: a
  Win-back send 40 days before (outside the window), a Welcome click after the purchase,
  an open, a send without a campaign.
- ben buys 12.00 at T+5d after X at -7d, Y at -4d and Z = a Welcome email click on
  creative A2 at -1d.
- cat buys 20.00 with no touch (unattributed); dan buys after the range (not counted).
Time decay with a half-life of 3 days weighs ann's touches 2^(-10/3) : 2^(-4/3) :
2^(-1/3) = 1 : 4 : 8 and ben's (ages 7, 4, 1) 1 : 2 : 4, with exact 13ths and 7ths."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.test import SimpleTestCase, TestCase

from analytics.attribution import allocate, attribution_report
from campaigns.models import Campaign, Creative
from marketing.models import Customer, Touchpoint

T = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
FROM, TO = date(2026, 10, 10), date(2026, 10, 20)


class AttributionTests(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        count = 0

        def touch(who, kind, at, **fields):
            nonlocal count
            count += 1
            if "revenue" in fields:
                fields["revenue"] = Decimal(fields["revenue"])
            Touchpoint.objects.create(customer=who, kind=kind, occurred_at=at, event_id=f"a{count}", **fields)

        cls.welcome, cls.winback = Campaign.objects.create(name="Welcome"), Campaign.objects.create(name="Win-back")
        cls.a1 = Creative.objects.create(campaign=cls.welcome, channel_kind="email", name="A1", body=".")
        cls.a2 = Creative.objects.create(campaign=cls.welcome, channel_kind="email", name="A2", body=".")
        cls.b1 = Creative.objects.create(campaign=cls.winback, channel_kind="sms", name="B1", body=".")
        x = {"campaign_id": cls.welcome.pk, "channel": "email", "creative_id": cls.a1.pk}
        y = {"campaign_id": cls.winback.pk, "channel": "sms", "creative_id": cls.b1.pk}
        z = {"campaign_id": cls.welcome.pk, "channel": "email", "creative_id": cls.a2.pk}
        ann, ben, cat, dan = (Customer.objects.create(external_id=n) for n in ("ann", "ben", "cat", "dan"))

        touch(ann, "sent", T - 40 * D, **y)  # outside the 30-day window
        touch(ann, "sent", T - 10 * D, **x)
        touch(ann, "sent", T - 4 * D, **y)
        touch(ann, "open", T - 2 * D, **y)  # opens are not touches
        touch(ann, "sent", T - 2 * D, channel="email")  # no campaign
        touch(ann, "click", T - 1 * D, **y)
        touch(ann, "purchase", T, order_id="o1", sku="S1", revenue="60.00")
        touch(ann, "purchase", T, order_id="o1", sku="S2", revenue="40.00")
        touch(ann, "click", T + timedelta(hours=1), **x)  # after the purchase
        touch(ann, "refund", T + 2 * D, order_id="o1", revenue="10.00")

        t2 = T + 5 * D
        touch(ben, "sent", t2 - 7 * D, **x)
        touch(ben, "sent", t2 - 4 * D, **y)
        touch(ben, "click", t2 - 1 * D, **z)
        touch(ben, "purchase", t2, order_id="o2", sku="S1", revenue="12.00")

        touch(cat, "purchase", T + D, order_id="o3", sku="S1", revenue="20.00")
        touch(dan, "sent", T + 30 * D, **x)
        touch(dan, "purchase", T + 31 * D, order_id="o4", sku="S1", revenue="50.00")

    def report(self, model: str, **kwargs) -> dict:
        return attribution_report(model=model, date_from=FROM, date_to=TO, **kwargs)

    def credits(self, report: dict) -> dict:
        """{list: [(label, conversions, revenue)]} and checks that each list adds up exactly."""
        out = {}
        for key in ("by_campaign", "by_channel", "by_creative"):
            rows = report[key]
            self.assertEqual(sum(Decimal(r["revenue"]) for r in rows), Decimal(report["attributed"]["revenue"]))
            self.assertEqual(sum(Decimal(r["conversions"]) for r in rows), report["attributed"]["conversions"])
            out[key] = [(r["label"], r["conversions"], r["revenue"]) for r in rows]
        return out

    def test_the_totals_and_unattributed_conversions(self):
        report = self.report("last_touch")
        self.assertEqual(
            {k: report[k] for k in ("model", "goal", "date_from", "date_to", "window_days", "half_life_days")},
            {
                "model": "last_touch",
                "goal": "purchase",
                "date_from": "2026-10-10",
                "date_to": "2026-10-20",
                "window_days": 30,
                "half_life_days": None,
            },
        )
        self.assertEqual(
            (report["conversions"], report["revenue"], report["attributed"], report["unattributed"]),
            (3, "122.00", {"conversions": 2, "revenue": "102.00"}, {"conversions": 1, "revenue": "20.00"}),
        )
        self.assertEqual(
            (report["by_campaign"][0]["campaign"], report["by_creative"][0]["creative"]),
            (self.winback.pk, self.b1.pk),
        )

    def test_last_touch(self):
        self.assertEqual(
            self.credits(self.report("last_touch")),
            {
                "by_campaign": [("Win-back", "1.0000", "90.00"), ("Welcome", "1.0000", "12.00")],
                "by_channel": [("sms", "1.0000", "90.00"), ("email", "1.0000", "12.00")],
                "by_creative": [("B1 (sms)", "1.0000", "90.00"), ("A2 (email)", "1.0000", "12.00")],
            },
        )

    def test_first_touch(self):
        self.assertEqual(
            self.credits(self.report("first_touch")),
            {
                "by_campaign": [("Welcome", "2.0000", "102.00")],
                "by_channel": [("email", "2.0000", "102.00")],
                "by_creative": [("A1 (email)", "2.0000", "102.00")],
            },
        )

    def test_linear(self):
        # ann: 30 each (X, Y, Y); ben: 4 each (X, Y, Z).
        self.assertEqual(
            self.credits(self.report("linear")),
            {
                "by_campaign": [("Win-back", "1.0000", "64.00"), ("Welcome", "1.0000", "38.00")],
                "by_channel": [("sms", "1.0000", "64.00"), ("email", "1.0000", "38.00")],
                "by_creative": [
                    ("B1 (sms)", "1.0000", "64.00"),
                    ("A1 (email)", "0.6667", "34.00"),
                    ("A2 (email)", "0.3333", "4.00"),
                ],
            },
        )

    def test_position_based(self):
        # ann: X 40%, Y 20% + 40%; ben: X 40%, Y 20%, Z 40%.
        self.assertEqual(
            self.credits(self.report("position_based")),
            {
                "by_campaign": [("Win-back", "0.8000", "56.40"), ("Welcome", "1.2000", "45.60")],
                "by_channel": [("sms", "0.8000", "56.40"), ("email", "1.2000", "45.60")],
                "by_creative": [
                    ("B1 (sms)", "0.8000", "56.40"),
                    ("A1 (email)", "0.8000", "40.80"),
                    ("A2 (email)", "0.4000", "4.80"),
                ],
            },
        )

    def test_time_decay(self):
        # ann: X 90/13 = 6.923077, Y 1080/13 = 83.076923; ben: X 12/7, Y 24/7, Z 48/7.
        # Cells X 8.637363, Y 86.505495, Z 6.857143 -> floors 101.98; the two cents go to
        # the largest remainders (X .74, Z .71): 8.64, 86.50, 6.86.
        report = self.report("time_decay", half_life_days=3)
        self.assertEqual(report["half_life_days"], 3)
        self.assertEqual(
            self.credits(report),
            {
                "by_campaign": [("Win-back", "1.2088", "86.50"), ("Welcome", "0.7912", "15.50")],
                "by_channel": [("sms", "1.2088", "86.50"), ("email", "0.7912", "15.50")],
                "by_creative": [
                    ("B1 (sms)", "1.2088", "86.50"),
                    ("A1 (email)", "0.2198", "8.64"),
                    ("A2 (email)", "0.5714", "6.86"),
                ],
            },
        )

    def test_the_window_limits_the_touches(self):
        # 5 days: ann keeps Y (send and click), ben keeps Y and Z.
        report = self.report("linear", window_days=5)
        self.assertEqual(
            self.credits(report)["by_creative"],
            [("B1 (sms)", "1.5000", "96.00"), ("A2 (email)", "0.5000", "6.00")],
        )
        # 1 day is too short for anyone but ben's click the day before.
        report = self.report("linear", window_days=1)
        self.assertEqual(
            (report["attributed"], report["unattributed"]["conversions"]), ({"conversions": 2, "revenue": "102.00"}, 1)
        )
        self.assertEqual(
            self.credits(report)["by_creative"], [("B1 (sms)", "1.0000", "90.00"), ("A2 (email)", "1.0000", "12.00")]
        )

    def test_another_goal_and_an_empty_range(self):
        report = attribution_report(date_from=date(2027, 1, 1), date_to=date(2027, 1, 31))
        self.assertEqual(
            (report["conversions"], report["revenue"], report["by_campaign"], report["by_channel"]),
            (0, "0.00", [], []),
        )
        self.assertEqual(report["attributed"], {"conversions": 0, "revenue": "0.00"})
        report = attribution_report(date_from=FROM, date_to=TO, goal="signup")
        self.assertEqual(report["conversions"], 0)

    def test_bad_arguments_raise(self):
        with self.assertRaisesMessage(ValueError, "model must be one of"):
            attribution_report(model="u_shaped", date_from=FROM, date_to=TO)
        with self.assertRaisesMessage(ValueError, "half_life_days must be more than 0"):
            attribution_report(model="time_decay", date_from=FROM, date_to=TO, half_life_days=0)


class AllocateTests(SimpleTestCase):
    def test_remainders_go_to_the_largest_fractions_and_the_sum_is_exact(self):
        cent = Decimal("0.01")
        self.assertEqual(
            allocate(Decimal("10.00"), {("a",): 10 / 13, ("b",): 40 / 13, ("c",): 80 / 13}, cent),
            {("a",): Decimal("0.77"), ("b",): Decimal("3.08"), ("c",): Decimal("6.15")},
        )
        # Equal thirds: the tie goes to the first key.
        self.assertEqual(
            allocate(Decimal("1.00"), {("b",): 1 / 3, ("a",): 1 / 3, ("c",): 1 / 3}, cent),
            {("a",): Decimal("0.34"), ("b",): Decimal("0.33"), ("c",): Decimal("0.33")},
        )
        # Values whose floors exceed the total give a cent back from the smallest remainder.
        self.assertEqual(
            allocate(Decimal("0.29"), {("a",): 0.1000001, ("b",): 0.2000002}, cent),
            {("a",): Decimal("0.09"), ("b",): Decimal("0.20")},
        )
        self.assertEqual(allocate(Decimal("5"), {}, cent), {})
