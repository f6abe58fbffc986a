"""Funnels (analytics.funnels through analytics.services) on hand-built timelines: exact
counts, rates and times per step for each order mode, the window's end (included), the
first step-1 touchpoint in the range as the entry, each filter, each breakdown (with its
cap), an empty funnel, and bad specs naming their fields. The same expected values on
PostgreSQL and SQLite (the suite runs on both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.test import TestCase, override_settings

from analytics.funnels import FunnelSpecInvalid, parse_funnel_spec
from analytics.models import Funnel
from analytics.services import funnel_compute, funnel_save, funnel_validate
from campaigns.models import Campaign, Creative, Segment, SegmentMembership
from marketing.models import Customer, Product, Touchpoint
from mlcore.models import Clustering, CustomerCluster, ModelVersion

# With a fraction of a second, so the window's end is checked to the microsecond.
T0 = datetime(2026, 10, 5, 12, 0, 0, 250_000, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)
RANGE = {"date_from": "2026-10-01T00:00:00Z", "date_to": "2026-11-01T00:00:00Z"}
SHOP = {"steps": ["visit", "add_to_cart", "purchase"], "window": {"days": 1}, **RANGE}


class Timeline:
    """Touchpoints for the tests, with unique event ids (and order ids for purchases)."""

    def __init__(self) -> None:
        self.count = 0

    def customer(self, name: str, **attributes) -> Customer:
        return Customer.objects.create(external_id=name, attributes=attributes)

    def touch(self, who: Customer, kind: str, at: datetime, **fields) -> Touchpoint:
        self.count += 1
        if kind in ("purchase", "refund"):
            fields.setdefault("order_id", f"o{self.count}")
            fields.setdefault("revenue", Decimal("10.00"))
        return Touchpoint.objects.create(customer=who, kind=kind, occurred_at=at, event_id=f"ev{self.count}", **fields)


def figures(steps: list[dict]) -> list[tuple]:
    """Per step: customers, conversion from previous / first, drop-off and its rate,
    (median, p90) seconds from the previous step and from step 1."""
    return [
        (
            step["customers"],
            step["conversion_from_previous"],
            step["conversion_from_first"],
            step["drop_off"],
            step["drop_off_rate"],
            (step["time_from_previous"]["median"], step["time_from_previous"]["p90"]),
            (step["time_from_first"]["median"], step["time_from_first"]["p90"]),
        )
        for step in steps
    ]


def counts(result: dict) -> list[int]:
    return [step["customers"] for step in result["steps"]]


def values(result: dict) -> list[tuple]:
    """Per breakdown value: value, label, other_values and the customers per step."""
    return [
        (value["value"], value["label"], value["other_values"], [step["customers"] for step in value["steps"]])
        for value in result["breakdown"]["values"]
    ]


NOTHING = (None, None)
STEP_ONE = (8, 1.0, 1.0, 0, 0.0, NOTHING, NOTHING)


class ShopTimelineTests(TestCase):
    """visit -> add_to_cart -> purchase within a day, for eight customers who enter and
    three who do not. Times after each customer's entry (E):

    ann  visit E, cart +10m, purchase +1h                      (3 steps in every mode)
    ben  visit E, cart +20m                                     (2)
    cat  visit E, purchase +30m, cart +40m                      (ordered 2, any 3, strict 1)
    dan  visit 10 days before the range; visit E = T0+1h, cart +5m,
         purchase at exactly E + 1 day                          (3: the window's end counts)
    erin visit E, cart +1m, purchase E + 1 day + 1 microsecond  (2)
    fay  visit E, visit +2d, cart +2d1m, purchase +2d2m         (1: the entry is the first visit)
    gus  visit E, open +1m, cart +2m, purchase +3m              (ordered 3, strict 1)
    hal  visit E, cart +1m, purchase +2m                        (3)
    ivy  cart and purchase, no visit; jay visits only just outside the range: not entered.
    """

    @classmethod
    def setUpTestData(cls) -> None:
        t = Timeline()
        c = {
            name: t.customer(name, **attributes)
            for name, attributes in [
                ("ann", {"tier": "gold"}),
                ("ben", {"tier": "gold"}),
                ("cat", {"tier": "silver"}),
                ("dan", {"tier": ""}),
                ("erin", {}),
                ("fay", {"tier": "silver"}),
                ("gus", {"tier": 3}),
                ("hal", {"tier": "gold"}),
                ("ivy", {}),
                ("jay", {}),
            ]
        }
        cls.c = c
        cls.autumn = Campaign.objects.create(name="Autumn sale")
        cls.winter = Campaign.objects.create(name="Winter teaser")
        cls.autumn_a = Creative.objects.create(campaign=cls.autumn, channel_kind="email", name="A", body="a")
        cls.winter_b = Creative.objects.create(campaign=cls.winter, channel_kind="email", name="B", body="b")
        autumn = {"campaign_id": cls.autumn.pk, "creative_id": cls.autumn_a.pk}
        t.touch(c["ann"], "visit", T0, channel="web", **autumn)
        t.touch(c["ann"], "add_to_cart", T0 + 10 * MINUTE, channel="web")
        t.touch(c["ann"], "purchase", T0 + HOUR, channel="web")
        t.touch(c["ben"], "visit", T0, channel="web", **autumn)
        t.touch(c["ben"], "add_to_cart", T0 + 20 * MINUTE, channel="web")
        t.touch(c["cat"], "visit", T0, channel="app", campaign_id=cls.winter.pk, creative_id=cls.winter_b.pk)
        t.touch(c["cat"], "purchase", T0 + 30 * MINUTE, channel="app")
        t.touch(c["cat"], "add_to_cart", T0 + 40 * MINUTE, channel="app")
        dan = T0 + HOUR
        t.touch(c["dan"], "visit", T0 - 10 * DAY, channel="app", **autumn)  # before the range: not the entry
        t.touch(c["dan"], "visit", dan, channel="web")
        t.touch(c["dan"], "add_to_cart", dan + 5 * MINUTE, channel="web")
        t.touch(c["dan"], "purchase", dan + DAY, channel="web")  # exactly at the window's end: counts
        t.touch(c["erin"], "visit", T0, channel="app")
        t.touch(c["erin"], "add_to_cart", T0 + MINUTE, channel="app")
        t.touch(c["erin"], "purchase", T0 + DAY + MICROSECOND, channel="app")  # just after the window
        t.touch(c["fay"], "visit", T0, channel="web")
        t.touch(c["fay"], "visit", T0 + 2 * DAY, channel="web")
        t.touch(c["fay"], "add_to_cart", T0 + 2 * DAY + MINUTE, channel="web")
        t.touch(c["fay"], "purchase", T0 + 2 * DAY + 2 * MINUTE, channel="web")
        t.touch(c["gus"], "visit", T0, channel="web")
        t.touch(c["gus"], "open", T0 + MINUTE, channel="email")
        t.touch(c["gus"], "add_to_cart", T0 + 2 * MINUTE, channel="web")
        t.touch(c["gus"], "purchase", T0 + 3 * MINUTE, channel="web")
        t.touch(c["hal"], "visit", T0, channel="app")
        t.touch(c["hal"], "add_to_cart", T0 + MINUTE, channel="app")
        t.touch(c["hal"], "purchase", T0 + 2 * MINUTE, channel="app")
        t.touch(c["ivy"], "add_to_cart", T0, channel="web")
        t.touch(c["ivy"], "purchase", T0 + MINUTE, channel="web")
        t.touch(c["jay"], "visit", datetime(2026, 9, 30, 23, 59, 59, 999_999, tzinfo=UTC), channel="web")
        t.touch(c["jay"], "visit", datetime(2026, 11, 1, tzinfo=UTC), channel="web")  # date_to is excluded
        t.touch(c["jay"], "add_to_cart", datetime(2026, 11, 1, 0, 1, tzinfo=UTC), channel="web")

    def compute(self, **changes) -> dict:
        return funnel_compute({**SHOP, **changes})

    def test_ordered_counts_rates_and_times(self) -> None:
        result = self.compute(order="ordered")
        # Step 2 (cart - entry): 60, 60, 120, 300, 600, 1200, 2400 s.
        # Step 3 from cart: 60 (gus), 60 (hal), 3000 (ann), 86100 (dan); from the entry 120, 180, 3600, 86400.
        self.assertEqual(
            figures(result["steps"]),
            [
                STEP_ONE,
                (7, 0.875, 0.875, 1, 0.125, (300.0, 1680.0), (300.0, 1680.0)),
                (4, 0.5714, 0.5, 3, 0.4286, (1530.0, 61170.0), (1890.0, 61560.0)),
            ],
        )
        self.assertEqual(result["totals"], {"entered": 8, "converted": 4, "conversion_rate": 0.5})
        self.assertEqual(
            [(step["step"], step["kind"], step["label"]) for step in result["steps"]],
            [(1, "visit", "visit"), (2, "add_to_cart", "add_to_cart"), (3, "purchase", "purchase")],
        )
        self.assertEqual(result["order"], "ordered")
        self.assertEqual(result["window_seconds"], 86400)
        self.assertEqual(
            (result["date_from"], result["date_to"]), ("2026-10-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00")
        )
        self.assertIsNone(result["breakdown"])

    def test_any_order_counts_steps_done_in_any_order_within_the_window(self) -> None:
        result = self.compute(order="any")
        # cat bought before carting: reaches step 3 at the cart (+40m), 0 s after step 2.
        self.assertEqual(
            figures(result["steps"]),
            [
                STEP_ONE,
                (7, 0.875, 0.875, 1, 0.125, (300.0, 1680.0), (300.0, 1680.0)),
                (5, 0.7143, 0.625, 2, 0.2857, (60.0, 52860.0), (2400.0, 53280.0)),
            ],
        )

    def test_strict_needs_each_step_to_be_the_very_next_touchpoint(self) -> None:
        result = self.compute(order="strict")
        # Out at step 2: cat (a purchase came next), fay (another visit), gus (an open in between).
        # Out at step 3: ben (no purchase), erin (after the window).
        self.assertEqual(
            figures(result["steps"]),
            [
                STEP_ONE,
                (5, 0.625, 0.625, 3, 0.375, (300.0, 960.0), (300.0, 960.0)),
                (3, 0.6, 0.375, 2, 0.4, (3000.0, 69480.0), (3600.0, 69840.0)),
            ],
        )

    def test_strict_with_a_breakdown(self) -> None:
        result = self.compute(order="strict", breakdown="channel")
        self.assertEqual(values(result), [("web", "web", 0, [5, 3, 2]), ("app", "app", 0, [3, 2, 1])])

    def test_the_window_end_is_included_to_the_microsecond(self) -> None:
        # dan's purchase lies exactly at E + 1 day: in; erin's 1 microsecond later: out.
        # One microsecond less of window loses dan; one more takes erin in as well.
        self.assertEqual(counts(self.compute(window={"seconds": 86400})), [8, 7, 4])
        # visit -> purchase: ann, cat, dan (at the end), gus, hal; erin 1 microsecond after it.
        self.assertEqual(counts(self.compute(steps=["visit", "purchase"])), [8, 5])
        self.assertEqual(counts(self.compute(steps=["visit", "purchase"], window={"seconds": 86399})), [8, 4])
        self.assertEqual(counts(self.compute(steps=["visit", "purchase"], window={"seconds": 86401})), [8, 6])

    def test_the_entry_is_the_first_step_one_touchpoint_in_the_range(self) -> None:
        # Ranges starting after the first visits: fay's second visit (T0 + 2 days) enters her,
        # and she converts from it; the others' visits at T0 are out of range now.
        result = self.compute(date_from="2026-10-06T00:00:00Z")
        self.assertEqual(counts(result), [1, 1, 1])
        self.assertEqual(result["steps"][2]["time_from_first"], {"median": 120.0, "p90": 120.0})
        # A range that ends before the entries: nobody.
        self.assertEqual(counts(self.compute(date_to="2026-10-05T12:00:00.250000Z")), [0, 0, 0])
        # date_from is included: the range starting at E holds every T0 entry.
        self.assertEqual(counts(self.compute(date_from="2026-10-05T12:00:00.250000Z")), [8, 7, 4])

    def test_a_repeated_kind_needs_a_later_touchpoint(self) -> None:
        # visit -> visit: only fay visits twice in the range (dan's first visit is before it).
        result = self.compute(steps=["visit", "visit"], window={"days": 3})
        self.assertEqual(
            figures(result["steps"])[1], (1, 0.125, 0.125, 7, 0.875, (172800.0, 172800.0), (172800.0, 172800.0))
        )

    def test_breakdown_by_channel_of_the_entry(self) -> None:
        result = self.compute(breakdown="channel")
        self.assertEqual(values(result), [("web", "web", 0, [5, 4, 3]), ("app", "app", 0, [3, 3, 1])])
        web = result["breakdown"]["values"][0]
        # ann 600, ben 1200, dan 300, gus 120 s from the visit to the cart.
        self.assertEqual(web["steps"][1]["time_from_previous"], {"median": 450.0, "p90": 1020.0})
        self.assertEqual(web["totals"], {"entered": 5, "converted": 3, "conversion_rate": 0.6})
        self.assertEqual(result["breakdown"]["by"], "channel")
        self.assertEqual(result["breakdown"]["limit"], 20)
        self.assertEqual(counts(result), [8, 7, 4])  # the totals are those of the whole funnel

    def test_breakdown_by_campaign_and_creative_of_the_entry(self) -> None:
        # dan's earlier visit carried the autumn campaign, but his entry did not.
        by_campaign = self.compute(breakdown="campaign")
        self.assertEqual(
            values(by_campaign),
            [
                (None, "(none)", 0, [5, 4, 3]),
                (self.autumn.pk, "Autumn sale", 0, [2, 2, 1]),
                (self.winter.pk, "Winter teaser", 0, [1, 1, 0]),
            ],
        )
        by_creative = self.compute(breakdown={"by": "creative"})
        self.assertEqual(
            values(by_creative),
            [
                (None, "(none)", 0, [5, 4, 3]),
                (self.autumn_a.pk, "Autumn sale / email A", 0, [2, 2, 1]),
                (self.winter_b.pk, "Winter teaser / email B", 0, [1, 1, 0]),
            ],
        )

    def test_breakdown_by_attribute_with_a_cap(self) -> None:
        # gold: ann, ben, hal; none: dan ("") and erin (missing); silver: cat, fay; "3": gus.
        # Ties go by value in byte order: "" before "silver".
        result = self.compute(breakdown="attributes.tier")
        self.assertEqual(
            values(result),
            [
                ("gold", "gold", 0, [3, 3, 2]),
                (None, "(none)", 0, [2, 2, 1]),
                ("silver", "silver", 0, [2, 1, 0]),
                ("3", "3", 0, [1, 1, 1]),
            ],
        )
        capped = self.compute(breakdown={"by": "attributes.tier", "limit": 2})
        self.assertEqual(
            values(capped),
            [("gold", "gold", 0, [3, 3, 2]), (None, "(none)", 0, [2, 2, 1]), (None, "other (2 values)", 2, [3, 2, 1])],
        )
        self.assertEqual(capped["breakdown"]["by"], "attributes.tier")

    def test_breakdown_by_segment_membership(self) -> None:
        loyal = Segment.objects.create(name="Loyal", kind=Segment.Kind.STATIC)
        new = Segment.objects.create(name="New", kind=Segment.Kind.STATIC)
        other = Segment.objects.create(name="Not asked for", kind=Segment.Kind.STATIC)
        since = datetime(2026, 9, 1, tzinfo=UTC)
        for segment, names in ((loyal, ["ann", "cat", "dan"]), (new, ["ann", "erin"]), (other, ["ben", "gus"])):
            for name in names:
                SegmentMembership.objects.create(segment=segment, customer=self.c[name], since=since)
        result = self.compute(breakdown={"by": "segment", "segments": [new.pk, loyal.pk]})
        # ann counts in both segments; the totals count her once.
        self.assertEqual(
            values(result),
            [(None, "(none)", 0, [4, 3, 2]), (loyal.pk, "Loyal", 0, [3, 3, 2]), (new.pk, "New", 0, [2, 2, 1])],
        )
        self.assertEqual(counts(result), [8, 7, 4])
        self.assertEqual(result["breakdown"]["segments"], sorted([new.pk, loyal.pk]))

    def test_breakdown_by_cluster_of_the_champion_version(self) -> None:
        clustering = Clustering.objects.create(name="All customers")
        old = ModelVersion.objects.create(
            task="clusters", scope=clustering.scope, algorithm="kmeans", status="succeeded"
        )
        champion = ModelVersion.objects.create(
            task="clusters",
            scope=clustering.scope,
            algorithm="kmeans",
            status="succeeded",
            is_champion=True,
            result={"profiles": [{"cluster": 0, "label": "big spenders"}, {"cluster": 1, "label": "browsers"}]},
        )
        for name in ("ann", "ben", "cat", "dan", "erin", "fay", "gus", "hal"):  # the old version: all in 5
            CustomerCluster.objects.create(model_version=old, customer=self.c[name], cluster=5)
        for name, cluster in (("ann", 0), ("ben", 0), ("cat", 1), ("dan", 1), ("erin", 1)):
            CustomerCluster.objects.create(model_version=champion, customer=self.c[name], cluster=cluster)
        result = self.compute(breakdown={"by": "cluster", "clustering": clustering.pk})
        self.assertEqual(
            values(result),
            [
                (None, "(none)", 0, [3, 2, 2]),
                (1, "cluster 1: browsers", 0, [3, 3, 1]),
                (0, "cluster 0: big spenders", 0, [2, 2, 1]),
            ],
        )

    def test_a_funnel_nobody_entered_is_a_zero_answer(self) -> None:
        result = self.compute(steps=["trial_started", "purchase"], breakdown="channel")
        self.assertEqual(
            figures(result["steps"]),
            [(0, None, None, 0, None, NOTHING, NOTHING), (0, None, None, 0, None, NOTHING, NOTHING)],
        )
        self.assertEqual(result["totals"], {"entered": 0, "converted": 0, "conversion_rate": None})
        self.assertEqual(result["breakdown"]["values"], [])
        self.assertEqual(counts(self.compute(steps=["visit", "trial_started"])), [8, 0])


class SameInstantTests(TestCase):
    """A step at the very instant of the previous one is not after it, in every mode;
    touchpoints of other customers never interleave."""

    @classmethod
    def setUpTestData(cls) -> None:
        t = Timeline()
        kim, lee = t.customer("kim"), t.customer("lee")
        t.touch(kim, "visit", T0)
        t.touch(kim, "add_to_cart", T0)  # same instant, logged after the visit
        t.touch(kim, "purchase", T0 + MINUTE)
        t.touch(lee, "visit", T0)
        t.touch(kim, "open", T0 + 30 * MINUTE)  # another customer's touchpoint between lee's steps
        t.touch(lee, "add_to_cart", T0 + HOUR)

    def test_same_instant_is_not_after(self) -> None:
        for order in ("ordered", "strict", "any"):
            with self.subTest(order=order):
                result = funnel_compute({**SHOP, "steps": ["visit", "add_to_cart"], "order": order})
                self.assertEqual(counts(result), [2, 1])  # lee only
                self.assertEqual(result["steps"][1]["time_from_first"], {"median": 3600.0, "p90": 3600.0})


class FilterTests(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        t = Timeline()
        Product.objects.create(sku="S-SHOE", name="Shoe", category="shoes")
        Product.objects.create(sku="S-BOOT", name="Boot", category="shoes")
        Product.objects.create(sku="S-HAT", name="Hat", category="hats")
        cls.spring = Campaign.objects.create(name="Spring")
        cls.summer = Campaign.objects.create(name="Summer")
        k1, k2, k3, k4, k5, k6 = (t.customer(f"k{i}") for i in range(1, 7))
        ads = {"source": "ads"}
        # k1: the web visit does not match, the app visit from ads does; the hat does not.
        t.touch(k1, "visit", T0, channel="web", properties=ads)
        t.touch(k1, "visit", T0 + HOUR, channel="app", properties=ads)
        t.touch(k1, "purchase", T0 + 2 * HOUR, channel="app", sku="S-HAT")
        t.touch(k1, "purchase", T0 + 3 * HOUR, channel="app", sku="S-BOOT")
        # k2: an app visit from another source.
        t.touch(k2, "visit", T0, channel="app", properties={"source": "organic"})
        t.touch(k2, "purchase", T0 + HOUR, channel="app", sku="S-SHOE")
        # k3: bought shoes 8 days later: outside the window.
        t.touch(k3, "visit", T0, channel="app", properties=ads)
        t.touch(k3, "purchase", T0 + 8 * DAY, channel="app", sku="S-SHOE")
        # k4: more properties than asked for; numbers and booleans.
        t.touch(k4, "visit", T0, channel="app", properties={"source": "ads", "n": 3, "vip": True})
        t.touch(k4, "purchase", T0 + HOUR, channel="app", sku="S-SHOE")
        # k5: clicks of two campaigns; k6 only of the other one.
        t.touch(k5, "click", T0, channel="email", campaign_id=cls.summer.pk)
        t.touch(k5, "click", T0 + HOUR, channel="email", campaign_id=cls.spring.pk)
        t.touch(k5, "purchase", T0 + 2 * HOUR, channel="web", sku="S-HAT")
        t.touch(k6, "click", T0, channel="email", campaign_id=cls.summer.pk)
        t.touch(k6, "purchase", T0 + HOUR, channel="web", sku="S-HAT")

    def compute(self, steps: list, **changes) -> dict:
        return funnel_compute({"steps": steps, "window": {"days": 7}, **RANGE, **changes})

    def test_channel_properties_and_category_filters(self) -> None:
        result = self.compute(
            [
                {"kind": "visit", "channel": "app", "properties": {"source": "ads"}},
                {"kind": "purchase", "category": "shoes"},
            ]
        )
        # k1 (from the app visit at +1h to the boot at +3h: 7200 s), k3 (too late), k4 (3600 s).
        self.assertEqual(
            figures(result["steps"]),
            [
                (3, 1.0, 1.0, 0, 0.0, NOTHING, NOTHING),
                (2, 0.6667, 0.6667, 1, 0.3333, (5400.0, 6840.0), (5400.0, 6840.0)),
            ],
        )
        self.assertEqual(result["steps"][0]["label"], "visit (channel app, source=ads)")

    def test_sku_filter(self) -> None:
        result = self.compute([{"kind": "visit", "channel": "app"}, {"kind": "purchase", "sku": "S-SHOE"}])
        self.assertEqual(counts(result), [4, 2])  # k2 and k4; k1 bought a boot, k3 too late

    def test_number_and_boolean_properties_match_exactly(self) -> None:
        self.assertEqual(
            counts(self.compute([{"kind": "visit", "properties": {"n": 3, "vip": True}}, "purchase"])), [1, 1]
        )
        self.assertEqual(counts(self.compute([{"kind": "visit", "properties": {"n": "3"}}, "purchase"])), [0, 0])
        self.assertEqual(counts(self.compute([{"kind": "visit", "properties": {"vip": 1}}, "purchase"])), [0, 0])
        self.assertEqual(counts(self.compute([{"kind": "visit", "properties": {"vip": False}}, "purchase"])), [0, 0])

    def test_campaign_filter(self) -> None:
        result = self.compute([{"kind": "click", "campaign": self.spring.pk}, "purchase"])
        # k5 enters with the spring click (T0 + 1h), not the summer one, and buys 1h later.
        self.assertEqual(counts(result), [1, 1])
        self.assertEqual(result["steps"][1]["time_from_previous"], {"median": 3600.0, "p90": 3600.0})


class SpecTests(TestCase):
    def test_bad_specs_name_every_bad_field(self) -> None:
        spec = {
            "steps": [
                {"kind": "visit"},
                {"kind": "Bad Kind"},
                {"kind": "purchase", "channel": "", "campaign": -1, "properties": {"a": [1]}},
                {"colour": "red"},
            ],
            "window": {"weeks": 1},
            "order": "sideways",
            "date_from": "2026-13-01",
            "date_to": "2026-10-01T00:00:00",
            "breakdown": {"by": "segment"},
            "extra": 1,
        }
        with self.assertRaises(FunnelSpecInvalid) as raised:
            funnel_compute(spec)
        self.assertEqual(
            [error["field"] for error in raised.exception.errors],
            [
                "extra",
                "steps[1].kind",
                "steps[2].channel",
                "steps[2].campaign",
                "steps[2].properties.a",
                "steps[3].colour",
                "steps[3].kind",
                "window",
                "order",
                "date_from",
                "date_to",
                "breakdown.segments",
            ],
        )
        self.assertEqual(raised.exception.status_code, 400)
        self.assertIn("steps[1].kind: required: a touchpoint kind, a lower-case slug", raised.exception.message)
        self.assertIn("order: must be one of ordered, strict, any, not 'sideways'", raised.exception.message)
        self.assertIn(
            "date_to: a datetime needs its offset (e.g. Z or +02:00): '2026-10-01T00:00:00'", raised.exception.message
        )

    def test_each_rule_has_its_message(self) -> None:
        cases = [
            ({"steps": ["visit"]}, "steps", "must have 2 to 20 steps, not 1"),
            ({"steps": ["visit"] * 21}, "steps", "must have 2 to 20 steps, not 21"),
            ({"window": {"days": 0}}, "window.days", "must be a whole number greater than 0, not 0"),
            ({"window": {"days": 366}}, "window.days", "at most 365 days"),
            (
                {"window": {"days": 1, "hours": 2}},
                "window",
                'required: one of seconds, hours, days with a positive whole number, e.g. {"days": 7}',
            ),
            (
                {"date_to": "2026-09-01"},
                "date_to",
                "must be after date_from (2026-10-01T00:00:00+00:00 to 2026-09-02T00:00:00+00:00 is empty)",
            ),
            ({"last_days": 7}, "last_days", "give either last_days or date_from and date_to, not both"),
            (
                {"breakdown": "colour"},
                "breakdown.by",
                "must be one of campaign, channel, creative, segment, cluster or \"attributes.<key>\", not 'colour'",
            ),
            (
                {"breakdown": {"by": "channel", "limit": 0}},
                "breakdown.limit",
                "must be a whole number from 1 to 100, not 0",
            ),
            (
                {"breakdown": {"by": "cluster"}},
                "breakdown.clustering",
                "required: a clustering id (a positive integer)",
            ),
            (
                {"steps": ["visit", {"kind": "purchase", "properties": {"bad key!": 1}}]},
                "steps[1].properties",
                "bad key 'bad key!': letters, digits, '_', '.', ':', '-', at most 64 characters",
            ),
        ]
        for changes, field, message in cases:
            with self.subTest(field=field), self.assertRaises(FunnelSpecInvalid) as raised:
                parse_funnel_spec({**SHOP, **changes})
            self.assertEqual(raised.exception.errors, [{"field": field, "message": message}])

    def test_references_are_checked_against_the_database(self) -> None:
        clustering = Clustering.objects.create(name="Never run")
        cases = [
            (
                {"steps": [{"kind": "click", "campaign": 999}, "purchase"]},
                "steps[0].campaign",
                "campaign 999 does not exist",
            ),
            (
                {"breakdown": {"by": "segment", "segments": [998, 999]}},
                "breakdown.segments",
                "no such segment(s): 998, 999",
            ),
            (
                {"breakdown": {"by": "cluster", "clustering": 999}},
                "breakdown.clustering",
                "clustering 999 does not exist",
            ),
            (
                {"breakdown": {"by": "cluster", "clustering": clustering.pk}},
                "breakdown.clustering",
                f"clustering {clustering.pk} has not been run yet (no champion version)",
            ),
        ]
        for changes, field, message in cases:
            with self.subTest(field=field), self.assertRaises(FunnelSpecInvalid) as raised:
                funnel_validate({**SHOP, **changes})
            self.assertEqual(raised.exception.errors, [{"field": field, "message": message}])

    @override_settings(REPORTING_TIMEZONE="Europe/Berlin")
    def test_dates_are_whole_days_in_the_reporting_timezone(self) -> None:
        spec = parse_funnel_spec({**SHOP, "date_from": "2026-10-01", "date_to": "2026-10-31"})
        # Berlin is UTC+2 on 1 October and UTC+1 from 25 October; date_to's day is included.
        self.assertEqual(spec.date_from, datetime(2026, 9, 30, 22, tzinfo=UTC))
        self.assertEqual(spec.date_to, datetime(2026, 10, 31, 23, tzinfo=UTC))

    def test_last_days_counts_back_from_now(self) -> None:
        now = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
        spec = parse_funnel_spec({"steps": ["visit", "purchase"], "window": {"hours": 2}, "last_days": 30}, now=now)
        self.assertEqual((spec.date_from, spec.date_to), (now - 30 * DAY, now))
        self.assertEqual(spec.as_json()["last_days"], 30)

    def test_the_normalised_spec(self) -> None:
        spec = parse_funnel_spec(
            {
                "steps": ["visit", {"kind": "purchase", "properties": {"b": 1, "a": "x"}, "name": "Bought"}],
                "window": {"seconds": 7200},
                "breakdown": "attributes.tier",
                **RANGE,
            }
        )
        self.assertEqual(
            spec.as_json(),
            {
                "steps": [{"kind": "visit"}, {"kind": "purchase", "name": "Bought", "properties": {"a": "x", "b": 1}}],
                "window": {"hours": 2},
                "order": "ordered",
                **RANGE,
                "breakdown": {"by": "attributes.tier", "limit": 20},
            },
        )
        self.assertEqual(parse_funnel_spec(spec.as_json()), spec)


class SavedFunnelTests(TestCase):
    def test_a_valid_funnel_is_saved_normalised(self) -> None:
        funnel = funnel_save(name=" Checkout ", spec={**SHOP, "breakdown": "channel"}, description="Shop funnel")
        funnel.refresh_from_db()
        self.assertEqual((funnel.name, funnel.description), ("Checkout", "Shop funnel"))
        self.assertEqual(
            funnel.spec,
            {
                "steps": [{"kind": "visit"}, {"kind": "add_to_cart"}, {"kind": "purchase"}],
                "window": {"days": 1},
                "order": "ordered",
                **RANGE,
                "breakdown": {"by": "channel", "limit": 20},
            },
        )
        updated = funnel_save(name="Checkout", spec={**SHOP, "order": "strict"}, funnel=funnel)
        updated.refresh_from_db()
        self.assertEqual((updated.pk, updated.spec["order"], "breakdown" in updated.spec), (funnel.pk, "strict", False))
        self.assertEqual(Funnel.objects.count(), 1)

    def test_nothing_is_saved_when_anything_is_bad(self) -> None:
        funnel_save(name="Taken", spec=SHOP)
        with self.assertRaises(FunnelSpecInvalid) as raised:
            funnel_save(name="Taken", spec={**SHOP, "steps": ["visit"]})
        self.assertEqual(
            raised.exception.errors,
            [
                {"field": "name", "message": "a funnel named 'Taken' already exists"},
                {"field": "spec.steps", "message": "must have 2 to 20 steps, not 1"},
            ],
        )
        with self.assertRaises(FunnelSpecInvalid) as raised:
            funnel_save(name="", spec={**SHOP, "breakdown": {"by": "segment", "segments": [999999]}})
        self.assertEqual(
            raised.exception.errors,
            [
                {"field": "name", "message": "required: a text of 1 to 200 characters"},
                {"field": "spec.breakdown.segments", "message": "no such segment(s): 999999"},
            ],
        )
        self.assertEqual(list(Funnel.objects.values_list("name", flat=True)), ["Taken"])
