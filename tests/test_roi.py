"""ROI and holdout lift (analytics.roi, analytics.stats): exact arithmetic on a hand-built
campaign (costs, refunds, CTR/CVR, CPA, ROAS, ROI, breakdowns), the statistics against
published and independent reference values, a synthetic randomised experiment with a
known effect (and a null one), degenerate campaigns, an experiment imported through the
touchpoint API, and the daily series in a non-UTC reporting timezone. PostgreSQL and
SQLite alike."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.test import SimpleTestCase, TestCase, override_settings
from scipy import stats as sps

from analytics.roi import campaign_roi
from analytics.stats import Moments, compare_proportions, welch
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Message
from marketing.errors import NotFound
from marketing.models import Customer, Touchpoint
from marketing.outcomes import campaign_outcome_totals
from tests.api_helpers import ApiTestCase

E = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


class StatsTests(SimpleTestCase):
    def test_newcombe_interval_matches_the_published_example(self):
        # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80,
        # method 10 (score interval from Wilson): 0.0524 to 0.3339.
        result = compare_proportions(56, 70, 48, 80)
        self.assertAlmostEqual(result.absolute, 0.2, places=12)
        self.assertEqual((round(result.ci_low, 4), round(result.ci_high, 4)), (0.0524, 0.3339))
        # Pooled two-proportion z test: z = 0.2 / sqrt(p(1-p)(1/70+1/80)), p = 104/150.
        pooled = 104 / 150
        z = 0.2 / math.sqrt(pooled * (1 - pooled) * (1 / 70 + 1 / 80))
        self.assertAlmostEqual(result.p_value, 2 * sps.norm.sf(z), places=12)
        self.assertAlmostEqual(result.relative, 0.8 / 0.6 - 1, places=12)
        # Katz log interval of the risk ratio.
        log_se = math.sqrt((1 - 0.8) / 56 + (1 - 0.6) / 48)
        self.assertAlmostEqual(result.relative_ci_low, (0.8 / 0.6) * math.exp(-1.959963984540054 * log_se) - 1)
        self.assertAlmostEqual(result.relative_ci_high, (0.8 / 0.6) * math.exp(1.959963984540054 * log_se) - 1)
        self.assertEqual(result.reason, "")

    def test_welch_from_sums_matches_scipy_on_the_raw_values(self):
        rng = np.random.default_rng(3)
        treated = np.round(rng.exponential(30, 500) * (rng.random(500) < 0.2), 2)
        control = np.round(rng.exponential(25, 300) * (rng.random(300) < 0.15), 2)
        moments = [
            Moments(len(x), sum(Decimal(str(v)) for v in x), sum(Decimal(str(v)) ** 2 for v in x))
            for x in (treated, control)
        ]
        result = welch(*moments)
        reference = sps.ttest_ind(treated, control, equal_var=False)
        interval = reference.confidence_interval(0.95)
        self.assertAlmostEqual(result.absolute, treated.mean() - control.mean(), places=10)
        self.assertAlmostEqual(result.p_value, reference.pvalue, places=10)
        self.assertAlmostEqual(result.ci_low, interval.low, places=10)
        self.assertAlmostEqual(result.ci_high, interval.high, places=10)
        self.assertAlmostEqual(result.relative, treated.mean() / control.mean() - 1, places=10)
        self.assertLess(result.relative_ci_low, result.relative)
        self.assertGreater(result.relative_ci_high, result.relative)

    def test_welch_keeps_precision_at_a_million_customers(self):
        # sum of squares - sum^2/n cancels in float64 here; Decimal keeps it exact.
        n = 1_000_000
        # Every customer 1000.00 except one at 1000.01: variance = 0.0001 * (n-1)/n / (n-1) ... exactly:
        total = Decimal("1000.00") * n + Decimal("0.01")
        squares = Decimal("1000.00") ** 2 * (n - 1) + Decimal("1000.01") ** 2
        variance = Moments(n, total, squares).variance()
        expected = float((squares - total * total / n) / (n - 1))
        self.assertAlmostEqual(variance, expected, delta=expected * 1e-9)
        self.assertAlmostEqual(variance, 1e-10, delta=1e-15)

    def test_degenerate_inputs_answer_with_nulls_and_a_reason(self):
        no_control = compare_proportions(5, 100, 0, 0)
        self.assertEqual(
            no_control.as_dict(),
            {
                "absolute": None,
                "relative": None,
                "ci_low": None,
                "ci_high": None,
                "p_value": None,
                "relative_ci_low": None,
                "relative_ci_high": None,
                "reason": "no control group (no held_out customers)",
            },
        )
        nothing = compare_proportions(0, 100, 0, 50)
        self.assertEqual((nothing.absolute, nothing.p_value, nothing.relative), (0.0, None, None))
        self.assertEqual(nothing.ci_low < 0 < nothing.ci_high, True)
        self.assertEqual(
            nothing.reason,
            "no test: every customer in both groups did not convert; "
            "no relative lift: the control group has no conversions",
        )
        one_each = welch(Moments(1, Decimal(5), Decimal(25)), Moments(1, Decimal(3), Decimal(9)))
        self.assertEqual((one_each.absolute, one_each.ci_low, one_each.p_value), (2.0, None, None))
        self.assertEqual(one_each.reason, "no interval: a group has fewer than 2 customers")
        flat = welch(Moments(3, Decimal(0), Decimal(0)), Moments(4, Decimal(0), Decimal(0)))
        self.assertEqual((flat.absolute, flat.relative, flat.ci_low, flat.p_value), (0.0, None, None, None))
        self.assertEqual(
            flat.reason,
            "no relative lift: the control group's mean is not positive; no interval: zero variance in both groups",
        )
        self.assertEqual(
            welch(Moments(0, Decimal(0), Decimal(0)), Moments(0, Decimal(0), Decimal(0))).reason,
            "no treated and no control customers",
        )


class Builder:
    """Touchpoints with unique event ids."""

    def __init__(self) -> None:
        self.count = 0

    def touch(self, who: Customer, kind: str, occurred_at: datetime, **fields) -> Touchpoint:
        self.count += 1
        if "revenue" in fields:
            fields["revenue"] = Decimal(fields["revenue"])
        return Touchpoint.objects.create(
            customer=who, kind=kind, occurred_at=occurred_at, event_id=f"ev{self.count}", **fields
        )


class HandBuiltCampaignTests(TestCase):
    """4 treated (2 email with creative A, 2 sms with creative B), 2 held out."""

    def setUp(self) -> None:
        b = Builder()
        self.email = Channel.objects.create(name="Mail", kind="email", cost_per_message=Decimal("0.010000"))
        self.sms = Channel.objects.create(name="Text", kind="sms", cost_per_message=Decimal("0.050000"))
        self.campaign = Campaign.objects.create(
            name="Hand", fixed_cost=Decimal("10.0000"), goal_event="purchase", attribution_window_days=7
        )
        run = CampaignRun.objects.create(campaign=self.campaign, key="launch")
        self.a = Creative.objects.create(campaign=self.campaign, channel_kind="email", name="A", body="hi")
        self.b = Creative.objects.create(campaign=self.campaign, channel_kind="sms", name="B", body="hi")
        t1, t2, t3, t4, t5, c1, c2 = (
            Customer.objects.create(external_id=name) for name in ("t1", "t2", "t3", "t4", "t5", "c1", "c2")
        )
        cid = self.campaign.pk
        for who, channel, creative in (
            (t1, self.email, self.a),
            (t2, self.email, self.a),
            (t3, self.sms, self.b),
            (t4, self.sms, self.b),
        ):
            message = Message.objects.create(
                campaign=self.campaign,
                run=run,
                customer=who,
                channel=channel,
                creative=creative,
                status="sent",
                cost=channel.cost_per_message,
                sent_at=E,
            )
            b.touch(
                who, "sent", E, channel=channel.kind, campaign_id=cid, message_id=message.pk, creative_id=creative.pk
            )
        # t5: queued, never sent: no cost, no touchpoint.
        Message.objects.create(campaign=self.campaign, run=run, customer=t5, channel=self.email, creative=self.a)
        for who in (c1, c2):
            Message.objects.create(campaign=self.campaign, run=run, customer=who, status="held_out")
            b.touch(who, "held_out", E, campaign_id=cid)
        # t1 opens, clicks, buys 100.00 and gets 20.00 back.
        b.touch(t1, "open", E + H, channel="email", campaign_id=cid)
        b.touch(t1, "click", E + 2 * H, channel="email", campaign_id=cid)
        b.touch(t1, "purchase", E + 3 * H, order_id="o1", sku="X", revenue="100.00")
        b.touch(t1, "refund", E + 2 * D, order_id="o1", revenue="20.00")
        # t2 opens and buys an order of two lines (30 + 20) on day 3, through another campaign.
        b.touch(t2, "open", E + H, channel="email", campaign_id=cid)
        b.touch(t2, "purchase", E + 3 * D, order_id="o2", sku="X", revenue="30.00", campaign_id=999)
        b.touch(t2, "purchase", E + 3 * D, order_id="o2", sku="Y", revenue="20.00", campaign_id=999)
        # t3 clicks and does not buy; t4 buys after the window.
        b.touch(t3, "click", E + H, channel="sms", campaign_id=cid)
        b.touch(t4, "purchase", E + 8 * D, order_id="o4", sku="X", revenue="999.00")
        # c1 buys 40.00 on day 1; c2 nothing.
        b.touch(c1, "purchase", E + D, order_id="o5", sku="X", revenue="40.00")

    def test_the_report_is_exact(self):
        report = campaign_roi(self.campaign.pk)
        cost = Decimal("10.12")
        lift = report.pop("lift")
        self.assertEqual(
            report,
            {
                "campaign": {"id": self.campaign.pk, "name": "Hand"},
                "goal": "purchase",
                "window_days": 7,
                "currency": "USD",
                "timezone": "UTC",
                "sends": 4,
                "messages_sent": 4,
                "opens": 2,
                "clicks": 2,
                "conversions": 2,
                "orders": 2,
                "revenue": "130.0000",
                "messages_cost": "0.1200",
                "fixed_cost": "10.0000",
                "cost": "10.1200",
                "open_rate": 0.5,
                "ctr": 0.5,
                "cvr": 0.5,
                "cpa": "5.0600",
                "roas": float(Decimal(130) / cost),
                "roi": float(Decimal("119.88") / cost),
                "treated": {
                    "customers": 4,
                    "conversions": 2,
                    "conversion_rate": 0.5,
                    "orders": 2,
                    "revenue": "130.0000",
                    "revenue_per_customer": "32.5000",
                },
                "control": {
                    "customers": 2,
                    "conversions": 1,
                    "conversion_rate": 0.5,
                    "orders": 1,
                    "revenue": "40.0000",
                    "revenue_per_customer": "20.0000",
                },
                "incremental_conversions": 0.0,
                "incremental_revenue": "50.0000",
                "incremental_roi": float(Decimal("39.88") / cost),
                "by_channel": [
                    {
                        "channel": "email",
                        "label": "email",
                        "sends": 2,
                        "customers": 2,
                        "clicks": 1,
                        "conversions": 2,
                        "conversion_rate": 1.0,
                        "revenue": "130.0000",
                        "cost": "0.0200",
                        "cpa": "0.0100",
                        "roas": 6500.0,
                        "roi": 6499.0,
                    },
                    {
                        "channel": "sms",
                        "label": "sms",
                        "sends": 2,
                        "customers": 2,
                        "clicks": 1,
                        "conversions": 0,
                        "conversion_rate": 0.0,
                        "revenue": "0.0000",
                        "cost": "0.1000",
                        "cpa": None,
                        "roas": 0.0,
                        "roi": -1.0,
                    },
                ],
                "by_creative": [
                    {
                        "creative": self.a.pk,
                        "label": "A (email)",
                        "sends": 2,
                        "customers": 2,
                        "clicks": 1,
                        "conversions": 2,
                        "conversion_rate": 1.0,
                        "revenue": "130.0000",
                        "cost": "0.0200",
                        "cpa": "0.0100",
                        "roas": 6500.0,
                        "roi": 6499.0,
                    },
                    {
                        "creative": self.b.pk,
                        "label": "B (sms)",
                        "sends": 2,
                        "customers": 2,
                        "clicks": 1,
                        "conversions": 0,
                        "conversion_rate": 0.0,
                        "revenue": "0.0000",
                        "cost": "0.1000",
                        "cpa": None,
                        "roas": 0.0,
                        "roi": -1.0,
                    },
                ],
                "daily": [
                    {"date": "2026-10-01", "sends": 4, "conversions": 1, "revenue": "100.0000"},
                    {"date": "2026-10-03", "sends": 0, "conversions": 0, "revenue": "-20.0000"},
                    {"date": "2026-10-04", "sends": 0, "conversions": 1, "revenue": "50.0000"},
                ],
                "notes": [],
            },
        )
        # Revenue per customer: treated [80, 50, 0, 0], control [40, 0].
        reference = sps.ttest_ind([80, 50, 0, 0], [40, 0], equal_var=False)
        self.assertAlmostEqual(lift["revenue_per_customer"]["absolute"], 12.5)
        self.assertAlmostEqual(lift["revenue_per_customer"]["p_value"], reference.pvalue, places=10)
        self.assertAlmostEqual(lift["revenue_per_customer"]["relative"], 0.625)
        self.assertEqual(lift["conversion_rate"]["absolute"], 0.0)
        self.assertEqual(lift["conversion_rate"]["p_value"], 1.0)

    def test_the_groups_agree_with_the_outcome_join(self):
        report = campaign_roi(self.campaign.pk, goal="purchase", window_days=10)
        totals = campaign_outcome_totals(self.campaign.pk, goal_kind="purchase", window_days=10)
        for group in ("treated", "control"):
            self.assertEqual(
                (
                    report[group]["customers"],
                    report[group]["conversions"],
                    report[group]["orders"],
                    report[group]["revenue"],
                ),
                (
                    totals[group]["customers"],
                    totals[group]["converted"],
                    totals[group]["conversions"],
                    str(totals[group]["revenue"]),
                ),
            )
        # With a 10-day window t4's 999.00 counts.
        self.assertEqual(report["treated"]["revenue"], "1129.0000")

    def test_goal_and_window_overrides(self):
        report = campaign_roi(self.campaign.pk, goal="click", window_days=0)
        self.assertEqual((report["goal"], report["window_days"]), ("click", 0))
        self.assertEqual((report["conversions"], report["revenue"]), (0, "0.0000"))
        self.assertEqual(
            report["notes"], ["No conversions: no exposed customer had a 'click' touchpoint within 0 days."]
        )

    def test_an_unknown_campaign_is_not_found(self):
        with self.assertRaisesMessage(NotFound, "Campaign 987654 does not exist."):
            campaign_roi(987654)


class TieAndSwitchTests(TestCase):
    def test_the_first_exposure_decides_and_sent_wins_a_tie(self):
        b = Builder()
        campaign = Campaign.objects.create(name="Ties")
        tie, held_first = Customer.objects.create(external_id="tie"), Customer.objects.create(external_id="held")
        b.touch(tie, "held_out", E, campaign_id=campaign.pk)
        b.touch(tie, "sent", E, campaign_id=campaign.pk, channel="email")
        b.touch(held_first, "held_out", E, campaign_id=campaign.pk)
        b.touch(held_first, "sent", E + D, campaign_id=campaign.pk, channel="sms")
        b.touch(held_first, "purchase", E + 2 * D, order_id="h1", revenue="5.00")
        report = campaign_roi(campaign.pk)
        totals = campaign_outcome_totals(campaign.pk, goal_kind="purchase", window_days=7)
        self.assertEqual((report["treated"]["customers"], report["control"]["customers"]), (1, 1))
        self.assertEqual(report["control"]["revenue"], str(totals["control"]["revenue"]))
        self.assertEqual(report["control"]["revenue"], "5.0000")
        self.assertEqual(report["sends"], 2)  # both sends are sends; only the first exposure decides the group
        self.assertEqual([row["channel"] for row in report["by_channel"]], ["email", "sms"])
        self.assertEqual([row["customers"] for row in report["by_channel"]], [1, 0])


class FirstSendBreakdownTests(TestCase):
    def test_a_customer_counts_under_the_channel_and_creative_of_their_first_send(self):
        b = Builder()
        campaign = Campaign.objects.create(name="Two sends")
        two, one = Customer.objects.create(external_id="two"), Customer.objects.create(external_id="one")
        # Sent by sms (creative 8) first, then by email (creative 7): the sms send counts.
        b.touch(two, "sent", E + D, campaign_id=campaign.pk, channel="email", creative_id=7)
        b.touch(two, "sent", E, campaign_id=campaign.pk, channel="sms", creative_id=8)
        b.touch(two, "purchase", E + 2 * D, order_id="t1", revenue="3.00")
        # One send without a creative.
        b.touch(one, "sent", E, campaign_id=campaign.pk, channel="email")
        report = campaign_roi(campaign.pk)
        self.assertEqual(
            [(r["channel"], r["sends"], r["customers"], r["conversions"], r["revenue"]) for r in report["by_channel"]],
            [("email", 2, 1, 0, "0.0000"), ("sms", 1, 1, 1, "3.0000")],
        )
        self.assertEqual(
            [(r["creative"], r["label"], r["sends"], r["customers"]) for r in report["by_creative"]],
            [(7, "creative 7", 1, 0), (8, "creative 8", 1, 1), (None, "(none)", 1, 1)],
        )


def _randomised(
    campaign: Campaign, customer_ids: list[int], p_treated: float, p_control: float, *, seed: int, exposed_at: datetime
) -> None:
    """The customers, half held out at random, exposed at `exposed_at`; conversion the
    next day with the given probabilities, each a 50.00 order (so revenue per customer
    is 50 x the conversion rate)."""
    rng = np.random.default_rng(seed)
    n = len(customer_ids)
    held = rng.random(n) < 0.5
    converts = rng.random(n) < np.where(held, p_control, p_treated)
    rows = []
    for i, customer_id in enumerate(customer_ids):
        rows.append(
            Touchpoint(
                customer_id=customer_id,
                kind="held_out" if held[i] else "sent",
                channel="" if held[i] else "email",
                campaign_id=campaign.pk,
                occurred_at=exposed_at,
                event_id=f"x{campaign.pk}-{i}",
            )
        )
        if converts[i]:
            rows.append(
                Touchpoint(
                    customer_id=customer_id,
                    kind="purchase",
                    occurred_at=exposed_at + D,
                    order_id=f"o{campaign.pk}-{i}",
                    revenue=Decimal("50.00"),
                    event_id=f"p{campaign.pk}-{i}",
                )
            )
    Touchpoint.objects.bulk_create(rows, batch_size=2000)


class RandomisedExperimentTests(TestCase):
    """8,000 customers in two experiments a month apart (windows of 7 days do not overlap)."""

    @classmethod
    def setUpTestData(cls) -> None:
        Customer.objects.bulk_create([Customer(external_id=f"r{i}") for i in range(8_000)], batch_size=2000)
        ids = list(Customer.objects.filter(external_id__startswith="r").order_by("id").values_list("id", flat=True))
        cls.effect = Campaign.objects.create(name="Known effect")
        _randomised(cls.effect, ids, 0.15, 0.10, seed=11, exposed_at=E)
        cls.null = Campaign.objects.create(name="No effect")
        _randomised(cls.null, ids, 0.10, 0.10, seed=5, exposed_at=E + 30 * D)

    def test_a_known_effect_is_covered_and_significant(self):
        report = campaign_roi(self.effect.pk)
        rate, revenue = report["lift"]["conversion_rate"], report["lift"]["revenue_per_customer"]
        self.assertLess(rate["ci_low"], 0.05)
        self.assertGreater(rate["ci_high"], 0.05)
        self.assertGreater(rate["ci_low"], 0)
        self.assertLess(rate["p_value"], 0.001)
        self.assertLess(revenue["ci_low"], 2.5)  # true lift: 0.05 x 50.00
        self.assertGreater(revenue["ci_high"], 2.5)
        self.assertLess(revenue["p_value"], 0.001)
        self.assertLess(rate["relative_ci_low"], 0.5)
        self.assertGreater(rate["relative_ci_high"], 0.5)
        # Incremental figures are the treated customers times the absolute lift.
        treated = report["treated"]["customers"]
        self.assertAlmostEqual(report["incremental_conversions"], treated * rate["absolute"], places=6)
        self.assertEqual(
            Decimal(report["incremental_revenue"]),
            (Decimal(repr(revenue["absolute"])) * treated).quantize(Decimal("0.0001")),
        )
        self.assertEqual(treated + report["control"]["customers"], 8_000)

    def test_a_null_experiment_is_not_significant(self):
        report = campaign_roi(self.null.pk)
        rate, revenue = report["lift"]["conversion_rate"], report["lift"]["revenue_per_customer"]
        self.assertLess(rate["ci_low"], 0)
        self.assertGreater(rate["ci_high"], 0)
        self.assertGreater(rate["p_value"], 0.05)
        self.assertLess(revenue["ci_low"], 0)
        self.assertGreater(revenue["ci_high"], 0)
        self.assertGreater(revenue["p_value"], 0.05)
        self.assertEqual(report["treated"]["customers"] + report["control"]["customers"], 8_000)


class DegenerateCampaignTests(TestCase):
    def test_no_holdout_and_no_conversions_are_answered_clearly(self):
        b = Builder()
        campaign = Campaign.objects.create(name="All in", fixed_cost=Decimal("0"))
        for name in ("a", "b"):
            b.touch(Customer.objects.create(external_id=name), "sent", E, campaign_id=campaign.pk, channel="email")
        report = campaign_roi(campaign.pk)
        self.assertEqual(
            report["notes"],
            [
                "No holdout: no customer of this campaign was held out, so there is no lift to measure.",
                "No conversions: no exposed customer had a 'purchase' touchpoint within 7 days.",
            ],
        )
        self.assertEqual(
            report["control"],
            {
                "customers": 0,
                "conversions": 0,
                "conversion_rate": None,
                "orders": 0,
                "revenue": "0.0000",
                "revenue_per_customer": None,
            },
        )
        for item in report["lift"].values():
            self.assertEqual(item["reason"], "no control group (no held_out customers)")
            self.assertIsNone(item["absolute"])
        self.assertEqual(
            (
                report["cost"],
                report["roas"],
                report["roi"],
                report["cpa"],
                report["incremental_revenue"],
                report["incremental_roi"],
            ),
            ("0.0000", None, None, None, None, None),
        )

    def test_a_campaign_nobody_was_exposed_to(self):
        campaign = Campaign.objects.create(name="Draft", fixed_cost=Decimal("5"))
        report = campaign_roi(campaign.pk)
        self.assertEqual(report["notes"][1], "No sends: no customer of this campaign was sent a message.")
        self.assertEqual((report["sends"], report["daily"], report["by_channel"]), (0, [], []))
        self.assertEqual((report["cost"], report["roi"]), ("5.0000", -1.0))


class DailySeriesTimezoneTests(TestCase):
    @override_settings(REPORTING_TIMEZONE="America/New_York")
    def test_days_are_the_reporting_timezones_across_midnight(self):
        b = Builder()
        campaign = Campaign.objects.create(name="Night owls")
        late, early = Customer.objects.create(external_id="late"), Customer.objects.create(external_id="early")
        # 2026-10-01 03:30 UTC is 23:30 on 30 September in New York (EDT, UTC-4); 04:30 is 00:30 on 1 October.
        b.touch(late, "sent", datetime(2026, 10, 1, 3, 30, tzinfo=UTC), campaign_id=campaign.pk, channel="email")
        b.touch(early, "sent", datetime(2026, 10, 1, 4, 30, tzinfo=UTC), campaign_id=campaign.pk, channel="email")
        b.touch(late, "purchase", datetime(2026, 10, 1, 3, 59, tzinfo=UTC), order_id="l1", revenue="7.00")
        b.touch(early, "purchase", datetime(2026, 10, 2, 3, 59, 59, tzinfo=UTC), order_id="e1", revenue="9.50")
        b.touch(early, "purchase", datetime(2026, 10, 2, 4, 0, tzinfo=UTC), order_id="e2", revenue="1.25")
        report = campaign_roi(campaign.pk)
        self.assertEqual(report["timezone"], "America/New_York")
        self.assertEqual(
            report["daily"],
            [
                {"date": "2026-09-30", "sends": 1, "conversions": 1, "revenue": "7.0000"},
                {"date": "2026-10-01", "sends": 1, "conversions": 1, "revenue": "9.5000"},
                {"date": "2026-10-02", "sends": 0, "conversions": 1, "revenue": "1.2500"},
            ],
        )


class ImportedExperimentTests(ApiTestCase):
    def test_a_campaign_with_just_a_name_is_measured_from_imported_touchpoints(self):
        response = self.post_json("/api/v1/campaigns", {"name": "Spring sale (sent by the ESP)"})
        self.assertEqual(response.status_code, 201, response.content)
        campaign_id = response.json()["id"]
        rows = []
        for i, (group, bought) in enumerate(
            [("sent", "60.00"), ("sent", None), ("sent", "15.00"), ("held_out", "30.00"), ("held_out", None)]
        ):
            rows.append(
                {
                    "event_id": f"esp-exp-{i}",
                    "customer_external_id": f"esp{i}",
                    "kind": group,
                    "channel": "email" if group == "sent" else "",
                    "campaign_id": campaign_id,
                    "occurred_at": "2026-03-01T09:00:00Z",
                }
            )
            if bought:
                rows.append(
                    {
                        "event_id": f"esp-buy-{i}",
                        "customer_external_id": f"esp{i}",
                        "kind": "purchase",
                        "channel": "web",
                        "occurred_at": "2026-03-03T09:00:00Z",
                        "revenue": bought,
                        "currency": "USD",
                        "order_id": f"esp-o{i}",
                        "sku": "S",
                    }
                )
        response = self.post_json("/api/v1/touchpoints/bulk", {"touchpoints": rows})
        self.assertEqual(response.status_code, 200, response.content)

        report = self.api.get(f"/api/v1/reports/roi?campaign={campaign_id}").json()
        self.assertEqual(
            (report["treated"], report["control"]),
            (
                {
                    "customers": 3,
                    "conversions": 2,
                    "conversion_rate": 2 / 3,
                    "orders": 2,
                    "revenue": "75.0000",
                    "revenue_per_customer": "25.0000",
                },
                {
                    "customers": 2,
                    "conversions": 1,
                    "conversion_rate": 0.5,
                    "orders": 1,
                    "revenue": "30.0000",
                    "revenue_per_customer": "15.0000",
                },
            ),
        )
        self.assertEqual((report["sends"], report["messages_sent"], report["cost"]), (3, 0, "0.0000"))
        self.assertAlmostEqual(report["lift"]["conversion_rate"]["absolute"], 2 / 3 - 0.5)
        self.assertAlmostEqual(report["lift"]["revenue_per_customer"]["absolute"], 10.0)
        self.assertEqual(
            report["daily"],
            [
                {"date": "2026-03-01", "sends": 3, "conversions": 0, "revenue": "0.0000"},
                {"date": "2026-03-03", "sends": 0, "conversions": 2, "revenue": "75.0000"},
            ],
        )
