"""seed_demo and marketing.demo: a deterministic, believable population written through
the bulk ingest path; idempotent; --if-empty; higher apps' demo steps get the context.

The database tests seed one small population (200 customers, 90 days, seed 7) and check
it exactly. The generator's pure functions are tested without a database, at full size
where shares and rates need numbers to mean something."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from unittest import mock

import numpy as np
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connection
from django.db.models import Max
from django.test import SimpleTestCase, TestCase
from django.utils import timezone

from analytics import demo as analytics_demo
from analytics.models import Funnel
from analytics.roi import campaign_roi
from analytics.services import funnel_compute
from campaigns import demo as campaign_demo
from campaigns.delivery.launch import run_launch
from campaigns.delivery.tracking import click_event_id
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Message, SegmentMembership
from marketing import demo, registries
from marketing.ingest.validate import CUSTOMER_FIELDS, validate_customers, validate_touchpoints
from marketing.models import SYSTEM_KINDS, Customer, Product, Touchpoint
from marketing.outcomes import campaign_outcome_totals
from mlcore import registry
from mlcore.models import ModelVersion
from mlcore.recommendations import recommendations_for

SEED, CUSTOMERS, DAYS = 7, 200, 90
# What seed 7 makes for 200 customers over 90 days. Counts do not depend on the day the
# test runs: the generator draws "days ago", never clock times, before placing events.
EXPECTED_KINDS = {
    "signup": 47,
    "visit": 1603,
    "add_to_cart": 1565,
    "purchase": 976,
    "refund": 5,
    "wishlist_add": 99,
    "trial_started": 16,
    "unsubscribe": 5,
}
EXPECTED_ORDERS = 207
# Largest-remainder quotas of the designed shares (15/25/20/10/30 %): exact, not sampled.
EXPECTED_PERSONAS = {"loyal": 30, "bargain_hunter": 50, "lapsed": 40, "new": 20, "browser": 60}
# The most frequent pair of catalogue products in the real baskets file (818 baskets).
REAL_PAIR = ("21231", "21232")
MARKET_TIMEZONES = {m.country: {tz for tz, _ in m.timezones} for m in demo.MARKETS}


def seed(*args: str, **options) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out, **options)
    return out.getvalue()


def snapshot() -> dict:
    return {
        "customers": Customer.objects.count(),
        "products": Product.objects.count(),
        "touchpoints": dict(Counter(Touchpoint.objects.values_list("kind", flat=True))),
        "max_touchpoint_id": Touchpoint.objects.aggregate(m=Max("id"))["m"],
    }


def orders_by_id() -> dict[str, dict]:
    orders: dict[str, dict] = {}
    for order_id, sku, customer_id, at in Touchpoint.objects.filter(kind="purchase").values_list(
        "order_id", "sku", "customer_id", "occurred_at"
    ):
        order = orders.setdefault(order_id, {"skus": set(), "customer": customer_id, "at": at})
        order["skus"].add(sku)
    return orders


class SeededPopulationTests(TestCase):
    """Marketing's own population: the higher apps' demo steps are left out here (they are
    checked in FullDemoTests), so these counts are marketing's alone."""

    @classmethod
    def setUpClass(cls):
        cls.enterClassContext(mock.patch.dict(registries._registry.demo_steps, clear=True))
        super().setUpClass()

    @classmethod
    def setUpTestData(cls):
        cls.output = seed(customers=CUSTOMERS, days=DAYS, seed=SEED)
        cls.personas = dict(Customer.objects.values_list("id", "attributes__persona"))

    def test_it_makes_exactly_the_customers_asked_for(self):
        external_ids = sorted(Customer.objects.values_list("external_id", flat=True))
        self.assertEqual(external_ids, [f"demo-7-{i:06d}" for i in range(1, 201)])
        self.assertFalse(Customer.objects.filter(is_stub=True).exists())

    def test_touchpoint_counts_are_exact_for_the_seed(self):
        self.assertEqual(dict(Counter(Touchpoint.objects.values_list("kind", flat=True))), EXPECTED_KINDS)
        self.assertEqual(len(orders_by_id()), EXPECTED_ORDERS)
        self.assertEqual(Touchpoint.objects.exclude(event_id__startswith="demo-7-").count(), 0)

    def test_the_summary_says_what_was_written(self):
        self.assertIn("Customers: 200 (200 created, 0 updated)", self.output)
        self.assertIn("Products: 250 in 10 categories (250 created, 0 updated)", self.output)
        self.assertIn(f"Orders: {EXPECTED_ORDERS}", self.output)
        self.assertIn("Touchpoints: 4,316 (4,316 inserted, 0 duplicates)", self.output)
        self.assertIn("  purchase: 976", self.output)

    def test_the_catalogue_is_the_most_frequent_real_products(self):
        real = Counter(code for basket in demo.load_baskets() for code in basket)
        top = {code for code, _ in sorted(real.items(), key=lambda kv: (-kv[1], kv[0]))[:250]}
        self.assertEqual(set(Product.objects.values_list("sku", flat=True)), top)
        self.assertEqual(Product.objects.values("category").distinct().count(), 10)
        self.assertFalse(Product.objects.filter(price__isnull=True).exists())
        self.assertFalse(Product.objects.filter(price__lte=0).exists())

    def test_every_purchase_is_an_order_line_priced_from_the_catalogue(self):
        prices = dict(Product.objects.values_list("sku", "price"))
        purchases = Touchpoint.objects.filter(kind="purchase")
        self.assertFalse(purchases.filter(order_id="").exists())
        self.assertFalse(purchases.filter(sku="").exists())
        self.assertFalse(purchases.filter(revenue__lte=0).exists())
        self.assertEqual(set(purchases.values_list("currency", flat=True)), {settings.REPORTING_CURRENCY})
        for sku, revenue, props in purchases.values_list("sku", "revenue", "properties"):
            discount = Decimal(props.get("discount_pct", 0))
            unit = (prices[sku] * (100 - discount) / 100).quantize(Decimal("0.01"))
            self.assertEqual(revenue, unit * props["quantity"], (sku, props))

    def test_refunds_return_a_line_that_was_bought(self):
        bought = {
            (order_id, sku): (customer_id, revenue, at)
            for order_id, sku, customer_id, revenue, at in Touchpoint.objects.filter(kind="purchase").values_list(
                "order_id", "sku", "customer_id", "revenue", "occurred_at"
            )
        }
        refunds = list(
            Touchpoint.objects.filter(kind="refund").values_list(
                "order_id", "sku", "customer_id", "revenue", "occurred_at"
            )
        )
        self.assertEqual(len(refunds), EXPECTED_KINDS["refund"])
        for order_id, sku, customer_id, revenue, at in refunds:
            bought_by, paid, bought_at = bought[(order_id, sku)]
            self.assertEqual((customer_id, revenue), (bought_by, paid))
            self.assertGreater(at, bought_at)

    def test_personas_have_their_exact_shares(self):
        self.assertEqual(dict(Counter(self.personas.values())), EXPECTED_PERSONAS)

    def test_personas_behave_as_their_names_say(self):
        now = timezone.now()
        orders = orders_by_id()
        per_customer: dict[int, list[datetime]] = defaultdict(list)
        for order in orders.values():
            per_customer[order["customer"]].append(order["at"])
        visits = Counter(Touchpoint.objects.filter(kind="visit").values_list("customer_id", flat=True))
        by_persona: dict[str, list[int]] = defaultdict(list)
        for customer_id, persona in self.personas.items():
            by_persona[persona].append(customer_id)

        for c in by_persona["loyal"]:  # frequent and recent
            self.assertGreaterEqual(len(per_customer[c]), 2)
            self.assertGreater(max(per_customer[c]), now - timedelta(days=31))
        for c in by_persona["lapsed"]:  # bought, but not in the last 30 days (a third of 90)
            self.assertGreaterEqual(len(per_customer[c]), 1)
            self.assertLess(max(per_customer[c]), now - timedelta(days=29))
        signed_up = dict(Customer.objects.values_list("id", "attributes__signup_date"))
        for c in by_persona["new"]:  # joined in the last 30 days, at most one order
            self.assertLessEqual(len(per_customer[c]), 1)
            self.assertGreaterEqual(datetime.fromisoformat(signed_up[c]).date(), (now - timedelta(days=31)).date())

        orders_per_head = {p: float(np.mean([len(per_customer[c]) for c in by_persona[p]])) for p in EXPECTED_PERSONAS}
        visits_per_head = {p: float(np.mean([visits[c] for c in by_persona[p]])) for p in EXPECTED_PERSONAS}
        self.assertEqual(max(orders_per_head, key=orders_per_head.get), "loyal")
        self.assertEqual(max(visits_per_head, key=visits_per_head.get), "browser")
        self.assertLess(orders_per_head["browser"], orders_per_head["bargain_hunter"])

        # Bargain hunters use promo codes most and spend least per order.
        promo = Counter()
        value = defaultdict(Decimal)
        for customer_id, order_id, revenue, props in Touchpoint.objects.filter(kind="purchase").values_list(
            "customer_id", "order_id", "revenue", "properties"
        ):
            persona = self.personas[customer_id]
            value[(persona, order_id)] += revenue
            promo[persona] += "promo_code" in props
        lines = Counter(
            self.personas[c] for c in Touchpoint.objects.filter(kind="purchase").values_list("customer_id", flat=True)
        )
        promo_share = {p: promo[p] / lines[p] for p in lines}
        self.assertEqual(max(promo_share, key=promo_share.get), "bargain_hunter")
        order_value = {
            p: np.mean([float(v) for (persona, _), v in value.items() if persona == p])
            for p in ("loyal", "bargain_hunter")
        }
        self.assertLess(order_value["bargain_hunter"], order_value["loyal"])

    def test_it_makes_no_campaign_touchpoints(self):
        self.assertFalse(Touchpoint.objects.filter(kind__in=["sent", "held_out"]).exists())
        self.assertFalse(Touchpoint.objects.filter(campaign_id__isnull=False).exists())
        self.assertFalse(Touchpoint.objects.filter(message_id__isnull=False).exists())

    def test_the_web_funnel_drops_off_step_by_step(self):
        sessions: dict[int, set[str]] = defaultdict(set)
        for kind, props in Touchpoint.objects.filter(kind__in=["visit", "add_to_cart", "purchase"]).values_list(
            "kind", "properties"
        ):
            sessions[props["session"]].add(kind)
        visited = sum("visit" in s for s in sessions.values())
        carted = sum({"visit", "add_to_cart"} <= s for s in sessions.values())
        bought = sum({"visit", "add_to_cart", "purchase"} <= s for s in sessions.values())
        self.assertEqual(visited, EXPECTED_KINDS["visit"])  # one visit opens every session
        self.assertEqual(bought, EXPECTED_ORDERS)
        self.assertTrue(0.15 < carted / visited < 0.6, (visited, carted))
        self.assertTrue(0.2 < bought / carted < 0.7, (carted, bought))

    def test_a_real_frequent_pair_is_bought_together(self):
        baskets = [order["skus"] for order in orders_by_id().values()]
        a, b = (sum(sku in basket for basket in baskets) for sku in REAL_PAIR)
        both = sum(set(REAL_PAIR) <= basket for basket in baskets)
        self.assertEqual(both, 2)
        self.assertGreater(both * len(baskets) / (a * b), 4.0)  # lift: four times as often as by chance

    def test_customers_have_believable_contact_details_and_consent(self):
        rows = list(Customer.objects.values())
        emails = [r["email"] for r in rows]
        self.assertEqual(len(set(emails)), len(rows))
        self.assertTrue(all(re.fullmatch(r"[a-z0-9._]+@example\.(com|net|org)", e) for e in emails), emails[:5])
        phones = [r["phone"] for r in rows if r["phone"]]
        self.assertTrue(0 < len(phones) < len(rows))
        self.assertEqual(len(set(phones)), len(phones))
        for r in rows:
            self.assertIn(r["timezone"], MARKET_TIMEZONES[r["country"]])
            self.assertTrue(r["first_name"] and r["last_name"])
            if r["sms_opt_in"]:
                self.assertTrue(r["phone"])
            self.assertEqual(
                set(r["attributes"]),
                {"persona", "tier", "signup_source", "signup_date", "age_band", "preferred_category", "loyalty_points"},
            )
        unsubscribed = Customer.objects.filter(unsubscribed_at__isnull=False)
        self.assertEqual(unsubscribed.count(), EXPECTED_KINDS["unsubscribe"])
        self.assertFalse(unsubscribed.filter(email_opt_in=True).exists())
        self.assertEqual(
            set(unsubscribed.values_list("id", flat=True)),
            set(Touchpoint.objects.filter(kind="unsubscribe").values_list("customer_id", flat=True)),
        )
        self.assertEqual(set(Customer.objects.values_list("email_opt_in_source", flat=True)) - {""}, {"demo"})

    def test_last_seen_is_the_latest_customer_touchpoint(self):
        latest = dict(
            Touchpoint.objects.exclude(kind__in=SYSTEM_KINDS)
            .values_list("customer_id")
            .annotate(latest=Max("occurred_at"))
        )
        self.assertEqual(
            dict(Customer.objects.filter(last_seen_at__isnull=False).values_list("id", "last_seen_at")), latest
        )

    def test_seeding_again_adds_nothing(self):
        before = snapshot()
        output = seed(customers=CUSTOMERS, days=DAYS, seed=SEED)
        self.assertEqual(snapshot(), before)
        self.assertIn("Customers: 200 (0 created, 200 updated)", output)
        self.assertIn("Touchpoints: 4,316 (0 inserted, 4,316 duplicates)", output)

    def test_if_empty_does_nothing_when_there_are_customers(self):
        before = snapshot()
        output = seed("--if-empty", customers=30, days=30, seed=8)
        self.assertEqual(output, "Demo data: skipped, the database already has customers.\n")
        self.assertEqual(snapshot(), before)
        self.assertFalse(Customer.objects.filter(external_id__startswith="demo-8-").exists())


class SeedDemoCommandTests(TestCase):
    def test_if_empty_seeds_an_empty_database(self):
        seed("--if-empty", customers=20, days=30, seed=3)
        self.assertEqual(Customer.objects.count(), 20)
        self.assertEqual(Product.objects.count(), 250)

    def test_it_refuses_too_short_a_history(self):
        from django.core.management.base import CommandError

        with self.assertRaisesMessage(CommandError, "--days must be at least 7."):
            seed(customers=20, days=3)
        self.assertEqual(Customer.objects.count(), 0)


class DemoStepTests(TestCase):
    """Higher apps' steps, registered through marketing.registries, run after marketing's
    population inside the same transaction. The registry is patched per test, so the
    steps registered here never leak into other tests."""

    def setUp(self):
        patcher = mock.patch.dict(registries._registry.demo_steps, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_a_registered_step_gets_the_context_after_marketing_has_written(self):
        seen = []

        def campaigns_step(ctx: demo.DemoContext) -> None:
            loyal = ctx.customers_with_persona("loyal")
            seen.append(
                {
                    "step": "campaigns",
                    "seed": ctx.seed,
                    "days": ctx.days,
                    "customers_in_context": len(ctx.customers),
                    "customers_in_database": Customer.objects.count(),
                    "purchases_in_database": Touchpoint.objects.filter(kind="purchase").count(),
                    "products": len(ctx.products),
                    "loyal_email_response": ctx.response_rate(loyal[0], "email"),
                }
            )
            result = ctx.write_touchpoints(
                [
                    {
                        "event_id": ctx.event_id("campaigns", 1),
                        "customer_external_id": loyal[0],
                        "kind": "open",
                        "channel": "email",
                        "occurred_at": ctx.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                ]
            )
            ctx.summary["campaign demo touchpoints"] = result.inserted

        def mlcore_step(ctx: demo.DemoContext) -> None:
            seen.append({"step": "mlcore"})

        # Registered in the wrong order, and one below marketing's own order 0: marketing's
        # population still comes first, then the steps by order.
        registries.register_demo_step("campaigns", campaigns_step, order=200)
        registries.register_demo_step("mlcore", mlcore_step, order=-5)
        output = seed(customers=20, days=30, seed=5)

        self.assertEqual([s["step"] for s in seen], ["mlcore", "campaigns"])
        self.assertEqual(
            seen[1],
            {
                "step": "campaigns",
                "seed": 5,
                "days": 30,
                "customers_in_context": 20,
                "customers_in_database": 20,
                "purchases_in_database": Touchpoint.objects.filter(kind="purchase").count(),
                "products": 250,
                "loyal_email_response": demo.PERSONAS["loyal"].response["email"],
            },
        )
        self.assertGreater(seen[1]["purchases_in_database"], 0)
        self.assertTrue(Touchpoint.objects.filter(event_id="demo-5-campaigns-1", kind="open").exists())
        self.assertIn("campaign demo touchpoints: 1", output)

    def test_a_failing_step_leaves_nothing_behind(self):
        def broken_step(ctx: demo.DemoContext) -> None:
            raise RuntimeError("campaign demo failed")

        registries.register_demo_step("broken", broken_step)
        with self.assertRaisesMessage(RuntimeError, "campaign demo failed"):
            seed(customers=20, days=30, seed=5)
        # Nothing half-seeded that a later `--if-empty` would mistake for a finished seed.
        self.assertEqual(Customer.objects.count(), 0)
        self.assertEqual(Touchpoint.objects.count(), 0)
        self.assertEqual(Product.objects.count(), 0)


class FullDemoTests(TestCase):
    """Every app's demo step, as `make run` seeds it: the finished A/B campaign with its
    holdout and responses, the draft Thompson campaign, the saved funnels and the fitted
    recommendations. Seed 7, 500 customers (fewer would leave the holdout too small to show
    the lift), 60 days: the campaign went out 28 days ago."""

    CUSTOMERS, DAYS = 500, 60
    SENT = {"A": 140, "B": 135}
    HELD_OUT = {"A": 13, "B": 14}
    OPENS = {"A": 45, "B": 64}
    CLICKS = {"A": 18, "B": 34}
    CAMPAIGN_ORDERS, CAMPAIGN_ORDER_LINES = 38, 232

    @classmethod
    def setUpTestData(cls):
        # The holdout and the creative draws go by customer id, and PostgreSQL's sequences
        # move on with every earlier test's rows: start them at 1, as on a fresh database.
        models = [
            m
            for app in ("marketing", "campaigns", "mlcore", "analytics")
            for m in apps.get_app_config(app).get_models()
        ]
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), models):
                cursor.execute(sql)
        cls.output = seed(customers=cls.CUSTOMERS, days=cls.DAYS, seed=SEED)
        cls.campaign = Campaign.objects.get(name=campaign_demo.DEMO_CAMPAIGN)
        cls.creatives = dict(Creative.objects.filter(campaign=cls.campaign).values_list("name", "pk"))

    def by_creative(self, rows) -> dict[str, int]:
        names = {pk: name for name, pk in self.creatives.items()}
        return {names[creative_id]: n for creative_id, n in Counter(rows).items()}

    def test_the_campaign_went_out_to_its_audience_with_a_holdout(self):
        campaign = self.campaign
        launched_at = (timezone.now() - timedelta(days=28)).replace(hour=9, minute=0, second=0, microsecond=0)
        self.assertEqual(campaign.status, Campaign.Status.COMPLETED)
        self.assertLess(abs(campaign.launched_at - launched_at), timedelta(minutes=5))
        self.assertEqual(campaign.finished_at, campaign.launched_at + timedelta(minutes=2))
        self.assertEqual(list(campaign.audience.values_list("name", flat=True)), [campaign_demo.SPRING_AUDIENCE])
        self.assertEqual(list(self.creatives), ["A", "B"])
        channel = Channel.objects.get(name=campaign_demo.DEMO_CHANNEL)
        self.assertEqual(
            (channel.kind, channel.backend, channel.cost_per_message), ("email", "default", Decimal("0.001"))
        )

        messages = Message.objects.filter(campaign=campaign)
        members = set(
            SegmentMembership.objects.filter(segment__name=campaign_demo.SPRING_AUDIENCE).values_list(
                "customer_id", flat=True
            )
        )
        self.assertEqual(set(messages.values_list("customer_id", flat=True)), members)
        self.assertEqual(len(members), sum(self.SENT.values()) + sum(self.HELD_OUT.values()))
        sent = messages.filter(status=Message.Status.SENT)
        held = messages.filter(status=Message.Status.HELD_OUT)
        self.assertEqual(self.by_creative(sent.values_list("creative_id", flat=True)), self.SENT)
        self.assertEqual(self.by_creative(held.values_list("creative_id", flat=True)), self.HELD_OUT)
        self.assertEqual(messages.count(), sent.count() + held.count())  # nothing queued, failed or suppressed
        # As the weighted policy logs its picks: two creatives of weight 1, a fixed channel.
        self.assertEqual(
            set(messages.values_list("policy", "probability", "channel_id")), {("fixed/weighted", 0.5, channel.pk)}
        )
        self.assertEqual(
            set(json.dumps(f, sort_keys=True) for f in messages.values_list("features", flat=True)),
            {'{"channel": {}, "creative": {}}'},
        )
        self.assertEqual(set(sent.values_list("sent_at", flat=True)), {campaign.finished_at})
        self.assertEqual(set(sent.values_list("cost", flat=True)), {Decimal("0.001")})
        self.assertFalse(sent.exclude(recipient__contains="@example.").exists())
        self.assertEqual(
            CampaignRun.objects.get(campaign=campaign).counts,
            {"audience": 302, "eligible": 302, "held_out": 27, "queued": 275, "suppressed": {}},
        )

    def test_each_message_has_its_exposure_touchpoint_as_launch_and_send_write_it(self):
        touchpoints = Touchpoint.objects.filter(campaign_id=self.campaign.pk)
        messages = {
            m["id"]: m
            for m in Message.objects.filter(campaign=self.campaign).values(
                "id", "customer_id", "creative_id", "status", "run_id", "channel_id", "sent_at"
            )
        }
        exposures = touchpoints.filter(kind__in=["sent", "held_out"])
        self.assertEqual(exposures.count(), len(messages))
        for t in exposures.values():
            m = messages[t["message_id"]]
            self.assertEqual(t["kind"], m["status"])
            self.assertEqual(t["event_id"], f"{m['status']}:{m['id']}")
            self.assertEqual(
                (t["customer_id"], t["creative_id"], t["channel"]), (m["customer_id"], m["creative_id"], "email")
            )
            self.assertEqual(
                t["properties"],
                {
                    "run_id": m["run_id"],
                    "channel_id": m["channel_id"],
                    "policy": "fixed/weighted",
                    "probability": 0.5,
                    "features": {"channel": {}, "creative": {}},
                },
            )
            self.assertEqual(t["occurred_at"], m["sent_at"] or self.campaign.launched_at)

        # Opens and clicks only for sent messages, once each, after the send, as tracking names them.
        kinds = Counter(touchpoints.values_list("kind", flat=True))
        self.assertEqual(
            kinds,
            {
                "sent": sum(self.SENT.values()),
                "held_out": sum(self.HELD_OUT.values()),
                "open": sum(self.OPENS.values()),
                "click": sum(self.CLICKS.values()),
            },
        )
        self.assertEqual(
            self.by_creative(touchpoints.filter(kind="open").values_list("creative_id", flat=True)), self.OPENS
        )
        self.assertEqual(
            self.by_creative(touchpoints.filter(kind="click").values_list("creative_id", flat=True)), self.CLICKS
        )
        for t in touchpoints.filter(kind__in=["open", "click"]).values():
            m = messages[t["message_id"]]
            self.assertEqual(m["status"], "sent")
            self.assertGreater(t["occurred_at"], m["sent_at"])
            expected = f"open:{m['id']}" if t["kind"] == "open" else click_event_id(m["id"], campaign_demo.SHOP_URL)
            self.assertEqual(t["event_id"], expected)
        clicked = set(touchpoints.filter(kind="click").values_list("message_id", flat=True))
        opened = set(touchpoints.filter(kind="open").values_list("message_id", flat=True))
        self.assertLessEqual(clicked, opened)

    def test_the_campaign_orders_are_discounted_real_baskets_after_a_click(self):
        lines = Touchpoint.objects.filter(kind="purchase", order_id__startswith="demo-7-spring-")
        self.assertEqual(lines.count(), self.CAMPAIGN_ORDER_LINES)
        self.assertEqual(lines.values("order_id").distinct().count(), self.CAMPAIGN_ORDERS)
        self.assertEqual(lines.exclude(event_id__startswith="demo-7-spring-").count(), 0)
        prices = dict(Product.objects.values_list("sku", "price"))
        real = {frozenset(basket) for basket in demo.load_baskets()}
        clicks = dict(
            Touchpoint.objects.filter(campaign_id=self.campaign.pk, kind="click").values_list(
                "customer_id", "occurred_at"
            )
        )
        orders: dict[str, set] = defaultdict(set)
        for order_id, sku, customer_id, at, revenue, props in lines.values_list(
            "order_id", "sku", "customer_id", "occurred_at", "revenue", "properties"
        ):
            orders[order_id].add(sku)
            self.assertGreater(at, clicks[customer_id])  # every buyer clicked first
            self.assertLessEqual(at, self.campaign.finished_at + timedelta(days=7))
            self.assertEqual(props["promo_code"], "SPRING15")
            unit = (prices[sku] * Decimal("0.85")).quantize(Decimal("0.01"))
            self.assertEqual(revenue, unit * props["quantity"])
        self.assertTrue(all(any(skus <= basket for basket in real) for skus in orders.values()))

    def test_the_campaign_shows_a_positive_lift_and_b_beats_a(self):
        totals = campaign_outcome_totals(self.campaign.pk, goal_kind="purchase", window_days=7)
        self.assertEqual((totals["treated"]["customers"], totals["control"]["customers"]), (275, 27))
        self.assertEqual((totals["treated"]["converted"], totals["control"]["converted"]), (53, 2))
        roi = campaign_roi(self.campaign.pk)
        self.assertGreater(roi["lift"]["conversion_rate"]["absolute"], 0)
        self.assertGreater(roi["lift"]["revenue_per_customer"]["absolute"], 0)
        self.assertEqual(
            {row["label"]: (row["sends"], row["conversions"]) for row in roi["by_creative"]},
            {"A (email)": (140, 20), "B (email)": (135, 33)},
        )
        self.assertEqual(roi["cost"], "25.2750")  # fixed 25 + 275 messages at 0.001

    def test_the_draft_thompson_campaign_launches(self):
        draft = Campaign.objects.get(name=campaign_demo.DEMO_DRAFT)
        self.assertEqual((draft.status, draft.creative_policy), (Campaign.Status.DRAFT, {"type": "thompson"}))
        self.assertEqual(list(draft.audience.values_list("name", flat=True)), [campaign_demo.DEMO_AUDIENCE])
        run = run_launch(draft.pk, "launch")
        messages = Message.objects.filter(campaign=draft)
        self.assertEqual(messages.count(), run.counts["eligible"])
        self.assertEqual(run.counts["eligible"], run.counts["held_out"] + run.counts["queued"])
        self.assertEqual(
            run.counts["eligible"],
            SegmentMembership.objects.filter(segment__name=campaign_demo.DEMO_AUDIENCE).count(),
        )
        self.assertEqual(set(messages.values_list("policy", flat=True)), {"fixed/thompson"})
        self.assertFalse(messages.filter(probability__isnull=True).exists())

    def test_the_funnels_and_recommendations_are_ready(self):
        self.assertEqual(
            list(Funnel.objects.order_by("pk").values_list("name", flat=True)),
            [analytics_demo.WEB_FUNNEL, analytics_demo.CAMPAIGN_FUNNEL],
        )
        web = Funnel.objects.get(name=analytics_demo.WEB_FUNNEL).spec
        self.assertEqual(
            (web["steps"], web["window"], web["order"], web["last_days"]),
            ([{"kind": "visit"}, {"kind": "add_to_cart"}, {"kind": "purchase"}], {"days": 7}, "ordered", 90),
        )
        result = funnel_compute(Funnel.objects.get(name=analytics_demo.CAMPAIGN_FUNNEL).spec)
        self.assertEqual(
            [step["customers"] for step in result["steps"]],
            [sum(self.SENT.values()), sum(self.OPENS.values()), sum(self.CLICKS.values()), self.CAMPAIGN_ORDERS],
        )
        version = ModelVersion.objects.get(task=ModelVersion.Task.RECOMMENDATIONS)
        self.assertEqual(registry.champion_id(ModelVersion.Task.RECOMMENDATIONS), version.pk)
        customer = Customer.objects.order_by("pk").first()
        self.assertEqual(len(recommendations_for([customer.pk], 3)[customer.pk]), 3)

    def test_seeding_again_adds_nothing(self):
        def counts() -> dict:
            return {
                "touchpoints": Touchpoint.objects.count(),
                "messages": Message.objects.count(),
                "campaigns": list(Campaign.objects.order_by("pk").values_list("name", "status")),
                "channels": Channel.objects.count(),
                "creatives": Creative.objects.count(),
                "funnels": Funnel.objects.count(),
                "recommendations": ModelVersion.objects.filter(task=ModelVersion.Task.RECOMMENDATIONS).count(),
            }

        before = counts()
        seed(customers=self.CUSTOMERS, days=self.DAYS, seed=SEED)
        self.assertEqual(counts(), before)


NOW = datetime(2026, 11, 22, 18, 30, tzinfo=UTC)


class DemoGeneratorTests(SimpleTestCase):
    """The pure generator: no database."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.catalogue = demo.build_catalogue()
        cls.full = demo.generate_population(5_000, 365, 42, NOW, cls.catalogue)

    def test_the_same_seed_makes_the_same_population_whenever_it_runs(self):
        # A day later, and across the European DST change: the same events, ids and orders.
        a = demo.generate_population(CUSTOMERS, DAYS, SEED, NOW, self.catalogue)
        b = demo.generate_population(CUSTOMERS, DAYS, SEED, datetime(2027, 3, 28, 1, 30, tzinfo=UTC), self.catalogue)
        for column in ("kind", "customer", "order", "product", "quantity", "cents", "session"):
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
        self.assertEqual(a.kind_counts(), EXPECTED_KINDS)
        other = demo.generate_population(CUSTOMERS, DAYS, SEED + 1, NOW, self.catalogue)
        self.assertNotEqual(other.kind_counts(), a.kind_counts())

    def test_every_event_lies_in_the_history_window(self):
        now = int(NOW.timestamp())
        self.assertGreaterEqual(int(self.full.at.min()), now - 365 * 86_400 - 3_600)  # a visit may precede by minutes
        self.assertLessEqual(int(self.full.at.max()), now)

    def test_persona_quotas_are_exact_for_any_size(self):
        for n in (1, 7, 200, 5_000, 12_345):
            quotas = demo.persona_quotas(n)
            self.assertEqual(int(quotas.sum()), n)
            for persona, quota in zip(demo.PERSONAS.values(), quotas, strict=True):
                self.assertLess(abs(quota - persona.share * n), 1)
        self.assertEqual(self.full.persona_counts(), {k: v * 25 for k, v in EXPECTED_PERSONAS.items()})

    def test_consent_rates_are_realistic(self):
        # Designed: email 70 %, sms 35 %, push 25 % overall. With 5,000 customers one
        # binomial standard deviation is under 0.7 points; 3 points allows for the seed.
        rows = self.full.customers
        for channel, rate in (("email", 0.70), ("sms", 0.35), ("push", 0.25)):
            share = np.mean([r[f"{channel}_opt_in"] for r in rows])
            self.assertAlmostEqual(share, rate, delta=0.03, msg=channel)
        without_phone = np.mean([not r["phone"] for r in rows])
        self.assertAlmostEqual(without_phone, 1 - demo.PHONE_SHARE, delta=0.02)
        self.assertTrue(0.01 < np.mean(["unsubscribed" in r for r in rows]) < 0.04)

    def test_each_persona_answers_a_different_channel_best(self):
        best = {name: max(p.response, key=p.response.get) for name, p in demo.PERSONAS.items()}
        self.assertEqual(best["loyal"], "email")
        self.assertIn(best["bargain_hunter"], {"sms", "push"})
        self.assertEqual(best["browser"], "push")

    def test_real_frequent_pairs_keep_their_lift_in_demo_orders(self):
        skus = self.catalogue.skus
        purchase = self.full.kind == demo.K["purchase"]
        orders: dict[int, set[str]] = defaultdict(set)
        for order, product in zip(
            self.full.order[purchase].tolist(), self.full.product[purchase].tolist(), strict=True
        ):
            orders[order].add(skus[product])
        in_catalogue = set(skus)
        real_pairs = Counter(
            pair
            for basket in demo.load_baskets()
            for pair in itertools.combinations(sorted(c for c in basket if c in in_catalogue), 2)
        )
        n = len(orders)
        for (a, b), _ in real_pairs.most_common(5):
            na = sum(a in o for o in orders.values())
            nb = sum(b in o for o in orders.values())
            nab = sum(a in o and b in o for o in orders.values())
            self.assertGreater(nab * n / (na * nb), 3.0, (a, b, na, nb, nab))

    def test_rows_pass_the_bulk_api_validation(self):
        population = demo.generate_population(50, 30, 1, NOW, self.catalogue)
        validate_customers(population.customers)  # raises BatchInvalid on any bad row
        self.assertLessEqual(set().union(*population.customers), CUSTOMER_FIELDS)
        rows = demo.touchpoint_rows(population, demo.time_order(population), self.catalogue)
        self.assertEqual(len(validate_touchpoints(rows)), population.size)
        self.assertEqual(len({r["event_id"] for r in rows}), population.size)
        times = [r["occurred_at"] for r in rows]
        self.assertEqual(times, sorted(times))  # written in time order, as an integration would send them
        products = demo.product_rows(self.catalogue)
        self.assertEqual(len({p["name"] for p in products}), len(products))
