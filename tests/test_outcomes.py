"""The exposure -> outcome join (marketing.outcomes) on hand-built touchpoints: the first
sent/held_out exposure decides the group, goal touchpoints count in (exposure, exposure +
window] whatever campaign they carry, orders are counted once, refunds of those orders in
the window are netted out. Runs on PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.test import TestCase

from marketing.models import Customer, Touchpoint
from marketing.outcomes import Outcome, campaign_outcome_totals, campaign_outcomes, outcomes_sql

CAMPAIGN = 5
# With a fraction of a second, so the window's end is checked to the microsecond.
E = datetime(2026, 11, 1, 10, 0, 0, 250_000, tzinfo=UTC)
WEEK = timedelta(days=7)
MICROSECOND = timedelta(microseconds=1)


class OutcomeTests(TestCase):
    def setUp(self) -> None:
        self.count = 0
        self.ann, self.ben, self.cat, self.dan, self.erin, self.fay = (
            Customer.objects.create(external_id=name) for name in ("ann", "ben", "cat", "dan", "erin", "fay")
        )
        # ann: treated at E, with purchases around the window's edges and refunds.
        self.touch(self.ann, "sent", E, campaign_id=CAMPAIGN)
        self.touch(self.ann, "sent", E + timedelta(days=1), campaign_id=CAMPAIGN)  # a later run: not the exposure
        self.touch(self.ann, "purchase", E, order_id="o0", revenue="99.00")  # at the exposure: before it
        self.touch(self.ann, "purchase", E + timedelta(hours=1), order_id="o1", sku="A", revenue="10.00")
        self.touch(self.ann, "purchase", E + timedelta(hours=1), order_id="o1", sku="B", revenue="5.00")
        self.touch(self.ann, "purchase", E + WEEK, order_id="o2", revenue="20.00", campaign_id=77)  # the last instant
        self.touch(self.ann, "purchase", E + WEEK + MICROSECOND, order_id="o3", revenue="40.00")  # just after
        self.touch(self.ann, "refund", E + timedelta(days=2), order_id="o1", revenue="4.00")  # netted out
        self.touch(self.ann, "refund", E + timedelta(days=3), order_id="o3", revenue="40.00")  # o3 is not in
        self.touch(self.ann, "refund", E + WEEK + timedelta(hours=1), order_id="o2", revenue="20.00")  # too late
        self.touch(self.ann, "refund", E + timedelta(days=1), order_id="o9", revenue="7.00")  # another order
        self.touch(self.ann, "signup", E + timedelta(days=1))
        self.touch(self.ann, "signup", E + timedelta(days=2))
        # ben: control, converting through another campaign's message.
        self.touch(self.ben, "held_out", E + timedelta(hours=2), campaign_id=CAMPAIGN)
        self.touch(self.ben, "purchase", E + timedelta(days=1), order_id="b1", revenue="12.50", campaign_id=99)
        # cat: treated, no purchase.
        self.touch(self.cat, "sent", E, campaign_id=CAMPAIGN)
        # dan: held out first, sent later (the holdout share changed between runs): control.
        self.touch(self.dan, "held_out", E, campaign_id=CAMPAIGN)
        self.touch(self.dan, "sent", E + timedelta(days=1), campaign_id=CAMPAIGN)
        # erin: exposed to another campaign only.
        self.touch(self.erin, "sent", E, campaign_id=6)
        self.touch(self.erin, "purchase", E + timedelta(hours=1), order_id="e1", revenue="8.00")
        # fay: treated, bought only before the exposure.
        self.touch(self.fay, "purchase", E - timedelta(hours=1), order_id="f1", revenue="30.00")
        self.touch(self.fay, "sent", E, campaign_id=CAMPAIGN)
        self.touch(self.fay, "click", E + timedelta(minutes=5), campaign_id=CAMPAIGN)

    def touch(self, who: Customer, kind: str, occurred_at: datetime, **fields) -> Touchpoint:
        self.count += 1
        if "revenue" in fields:
            fields["revenue"] = Decimal(fields["revenue"])
        return Touchpoint.objects.create(
            customer=who, kind=kind, occurred_at=occurred_at, event_id=f"ev{self.count}", **fields
        )

    def test_each_exposed_customer_has_their_outcome(self) -> None:
        self.assertEqual(
            campaign_outcomes(CAMPAIGN, goal_kind="purchase", window_days=7),
            [
                Outcome(self.ann.pk, "treated", E, True, 2, Decimal("31.0000")),
                Outcome(self.ben.pk, "control", E + timedelta(hours=2), True, 1, Decimal("12.5000")),
                Outcome(self.cat.pk, "treated", E, False, 0, Decimal("0.0000")),
                Outcome(self.dan.pk, "control", E, False, 0, Decimal("0.0000")),
                Outcome(self.fay.pk, "treated", E, False, 0, Decimal("0.0000")),
            ],
        )

    def test_group_totals(self) -> None:
        self.assertEqual(
            campaign_outcome_totals(CAMPAIGN, goal_kind="purchase", window_days=7),
            {
                "treated": {"customers": 3, "converted": 1, "conversions": 2, "revenue": Decimal("31.0000")},
                "control": {"customers": 2, "converted": 1, "conversions": 1, "revenue": Decimal("12.5000")},
            },
        )

    def test_the_window_bounds_what_counts(self) -> None:
        # One day: ann's o1 (10 + 5), whose refund two days later falls outside the window;
        # ben's purchase 22 hours after his exposure.
        outcomes = {o.customer_id: o for o in campaign_outcomes(CAMPAIGN, goal_kind="purchase", window_days=1)}
        self.assertEqual((outcomes[self.ann.pk].conversions, outcomes[self.ann.pk].revenue), (1, Decimal("15.0000")))
        self.assertEqual((outcomes[self.ben.pk].conversions, outcomes[self.ben.pk].revenue), (1, Decimal("12.5000")))
        # Eight days: o3 joins, and so does its refund (same order, in the window); o2's
        # refund a week and an hour after the exposure too.
        outcomes = {o.customer_id: o for o in campaign_outcomes(CAMPAIGN, goal_kind="purchase", window_days=8)}
        self.assertEqual((outcomes[self.ann.pk].conversions, outcomes[self.ann.pk].revenue), (3, Decimal("11.0000")))

    def test_a_zero_window_converts_no_one(self) -> None:
        totals = campaign_outcome_totals(CAMPAIGN, goal_kind="purchase", window_days=0)
        self.assertEqual(totals["treated"], {"customers": 3, "converted": 0, "conversions": 0, "revenue": Decimal("0")})
        self.assertEqual(totals["control"]["converted"], 0)

    def test_a_custom_goal_kind_counts_its_events(self) -> None:
        outcomes = campaign_outcomes(CAMPAIGN, goal_kind="signup", window_days=7)
        self.assertEqual(
            [(o.customer_id, o.converted, o.conversions, o.revenue) for o in outcomes],
            [
                (self.ann.pk, True, 2, Decimal("0.0000")),
                (self.ben.pk, False, 0, Decimal("0.0000")),
                (self.cat.pk, False, 0, Decimal("0.0000")),
                (self.dan.pk, False, 0, Decimal("0.0000")),
                (self.fay.pk, False, 0, Decimal("0.0000")),
            ],
        )
        clicks = campaign_outcomes(CAMPAIGN, goal_kind="click", window_days=1)
        self.assertEqual([(o.customer_id, o.conversions) for o in clicks if o.converted], [(self.fay.pk, 1)])

    def test_a_campaign_without_exposures_has_no_outcomes(self) -> None:
        self.assertEqual(campaign_outcomes(12345, goal_kind="purchase", window_days=7), [])
        self.assertEqual(
            campaign_outcome_totals(12345, goal_kind="purchase", window_days=7),
            {
                "treated": {"customers": 0, "converted": 0, "conversions": 0, "revenue": Decimal("0")},
                "control": {"customers": 0, "converted": 0, "conversions": 0, "revenue": Decimal("0")},
            },
        )
        with self.assertRaises(ValueError):
            outcomes_sql(CAMPAIGN, goal_kind="purchase", window_days=-1)
