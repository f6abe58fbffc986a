"""Hand-built data of the dashboard tests (tests/test_dashboards.py with the Django test
client, tests/test_dashboards_browser.py in headless Chromium), with the numbers the pages
must show, worked out by hand beside each.

"Winter sale" (holdout 50%, fixed cost 49.80, email at 0.05 a message, goal purchase
within 7 days), everyone exposed at T0 = 2026-11-01 10:00 UTC:

- treated c1..c4 (creative A: c1, c2; B: c3, c4). c1 buys for 100.00 a day later, c2 for
  50.00 two days later; c3 buys for 70.00 eight days later (outside the window) and c4 the
  day before (before exposure): neither counts.
- control h1..h4: h1 buys for 20.00 a day later.

So: 4 sends, 2 conversions, revenue 150.00, cost 4 x 0.05 + 49.80 = 50.00, ROI
(150 - 50) / 50 = 200.0%, ROAS 3.00x, CPA 50 / 2 = 25.00. Treated 2/4 = 50.00%, 37.50 a
customer; control 1/4 = 25.00%, 5.00 a customer. Lift +25 pp: Newcombe's interval from the
Wilson intervals (0.150, 0.850) and (0.0456, 0.6994) is (-31.96 pp, +65.53 pp), pooled z
test p = 0.465; revenue per customer +32.50, Welch (variances 2291.67 and 100, 3.26
degrees of freedom, t = 3.043) gives (-41.91, +106.91), p = 0.269. Daily revenue: 0 on
Nov 1 (the sends), 100 on Nov 2, 50 on Nov 3.

"Imported test" has only sends (no holdout): the dashboard must say there is no lift.

The funnel "Checkout" (visit -> add_to_cart -> purchase, ordered, 7 days) over f1..f4 in
November 2026: f1 does all three (cart 1 h after the visit, purchase 2 h after the cart),
f2 visits and adds to cart 2 h later, f3 only visits, f4 visits then buys without a cart
(no cart: in an ordered funnel f4 stops at the visit). f1 and f2 are "gold" customers
(attribute tier), f3 and f4 "silver". Steps: 4, 2, 1 customers; from previous 50.0%,
50.0%; time from the previous step: 1 h and 2 h (median 1.5 h, p90 1.9 h interpolated),
then 2 h. Gold: 2, 2, 1; silver: 2, 0, 0.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.models import Permission, User

from analytics.models import Funnel
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Message
from marketing.models import Customer, Touchpoint
from tests.api_helpers import T0

HOUR, DAY = timedelta(hours=1), timedelta(days=1)

# What the pages must show, worked out above.
CAMPAIGN_SUMMARY = {
    "sends": "4",
    "conversions": "2",
    "revenue": "150.00 USD",
    "cost": "50.00 USD",
    "roi": "200.0%",
    "roas": "3.00x",
    "cpa": "25.00 USD",
}
CAMPAIGN_GROUPS = {
    "treated": ["treated", "4", "2", "50.00%", "150.00 USD", "37.50 USD"],
    "control": ["control", "4", "1", "25.00%", "20.00 USD", "5.00 USD"],
}
CONVERSION_LIFT = "+25.00 pp (95% CI -31.96 pp to +65.53 pp; p = 0.465)"
REVENUE_LIFT = "+32.50 USD (95% CI -41.91 USD to +106.91 USD; p = 0.269)"
DAILY_REVENUE = [("2026-11-01", 0.0), ("2026-11-02", 100.0), ("2026-11-03", 50.0)]
CREATIVE_ROWS = [
    ["A (email)", "2", "2", "150.00 USD", "0.10 USD", "149,900.0%", "1,500.00x", "0.05 USD"],
    ["B (email)", "2", "0", "0.00 USD", "0.10 USD", "-100.0%", "0.00x", "—"],
]
FUNNEL_STEPS = [("visit", 4), ("add_to_cart", 2), ("purchase", 1)]
FUNNEL_SPEC = {
    "steps": [{"kind": "visit"}, {"kind": "add_to_cart"}, {"kind": "purchase"}],
    "window": {"days": 7},
    "order": "ordered",
    "last_days": 30,
}


def _touch(customer: Customer, kind: str, at, **fields) -> Touchpoint:
    return Touchpoint.objects.create(
        customer=customer,
        kind=kind,
        occurred_at=at,
        event_id=f"{customer.external_id}-{kind}-{at:%Y%m%d%H%M}",
        **fields,
    )


def build_campaign() -> Campaign:
    email = Channel.objects.create(name="mail", kind="email", cost_per_message=Decimal("0.05"))
    campaign = Campaign.objects.create(
        name="Winter sale",
        status=Campaign.Status.COMPLETED,
        holdout_percent=Decimal("50"),
        fixed_cost=Decimal("49.80"),
        goal_event="purchase",
        attribution_window_days=7,
    )
    run = CampaignRun.objects.create(campaign=campaign, key="launch", status=CampaignRun.Status.COMPLETED)
    creatives = {
        name: Creative.objects.create(campaign=campaign, channel_kind="email", name=name, subject=name, body="Hi")
        for name in ("A", "B")
    }
    people = {}
    for i, creative in enumerate(["A", "A", "B", "B"], 1):
        customer = Customer.objects.create(external_id=f"c{i}", email=f"c{i}@example.com")
        message = Message.objects.create(
            campaign=campaign,
            run=run,
            customer=customer,
            channel=email,
            creative=creatives[creative],
            status=Message.Status.SENT,
            cost=Decimal("0.05"),
            sent_at=T0,
        )
        _touch(
            customer,
            "sent",
            T0,
            channel="email",
            campaign_id=campaign.pk,
            message_id=message.pk,
            creative_id=creatives[creative].pk,
        )
        people[f"c{i}"] = customer
    for i in range(1, 5):
        customer = Customer.objects.create(external_id=f"h{i}", email=f"h{i}@example.com")
        message = Message.objects.create(
            campaign=campaign, run=run, customer=customer, channel=email, status=Message.Status.HELD_OUT
        )
        _touch(customer, "held_out", T0, campaign_id=campaign.pk, message_id=message.pk)
        people[f"h{i}"] = customer
    for name, at, amount in (
        ("c1", T0 + DAY, "100.00"),
        ("c2", T0 + 2 * DAY, "50.00"),
        ("c3", T0 + 8 * DAY, "70.00"),  # outside the 7-day window
        ("c4", T0 - DAY, "30.00"),  # before the exposure
        ("h1", T0 + DAY, "20.00"),
    ):
        _touch(people[name], "purchase", at, revenue=Decimal(amount), order_id=f"o-{name}", sku="SKU-1")
    return campaign


def build_campaign_without_holdout() -> Campaign:
    """An experiment imported through the touchpoint API: a name and two sends."""
    campaign = Campaign.objects.create(name="Imported test", holdout_percent=Decimal("0"))
    for i in range(1, 3):
        customer = Customer.objects.create(external_id=f"i{i}")
        _touch(customer, "sent", T0, channel="email", campaign_id=campaign.pk)
    _touch(Customer.objects.get(external_id="i1"), "purchase", T0 + HOUR, revenue=Decimal("12.00"), order_id="o-i1")
    return campaign


def build_funnel() -> Funnel:
    start = T0 + DAY  # 2026-11-02 10:00 UTC
    timelines = {
        "f1": [("visit", 0), ("add_to_cart", 1), ("purchase", 3)],
        "f2": [("visit", 0), ("add_to_cart", 2)],
        "f3": [("visit", 0)],
        "f4": [("visit", 0), ("purchase", 1)],
    }
    tiers = {"f1": "gold", "f2": "gold", "f3": "silver", "f4": "silver"}
    for external_id, events in timelines.items():
        customer = Customer.objects.create(external_id=external_id, attributes={"tier": tiers[external_id]})
        for kind, hours in events:
            fields = {"revenue": Decimal("10.00"), "order_id": f"o-{external_id}"} if kind == "purchase" else {}
            _touch(customer, kind, start + hours * HOUR, channel="web", **fields)
    return Funnel.objects.create(name="Checkout", description="Visit to purchase.", spec=FUNNEL_SPEC)


def make_marketer(username: str = "marketer", *, superuser: bool = True) -> User:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@shop.example", "pw")
    return User.objects.create_user(username, f"{username}@shop.example", "pw", is_staff=True)


def grant(user: User, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
