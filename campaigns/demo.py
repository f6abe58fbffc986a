"""The campaigns layer's demo data, two `seed_demo` steps.

`demo_campaigns` (before the RFM refresh, as it adds purchases): an email channel, a
finished A/B campaign with a holdout and the responses it caused, a draft Thompson
campaign (see its docstring).

`demo_segments` (after the RFM refresh): the segments a marketer opens first. The ten
ready-made RFM segments (migration 0004) are rebuilt; a clustering "Customer value" runs
and makes one segment per cluster; association rules are mined from the demo orders (real
Online Retail baskets) and the consequent of the strongest rule gets a "Likely buyers of
…" affinity segment."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db import connection

from campaigns.delivery.launch import run_launch
from campaigns.delivery.send import sent_properties_sql
from campaigns.delivery.tracking import click_event_id
from campaigns.models import Campaign, CampaignRun, Channel, ChannelKind, Creative, Message, Segment
from campaigns.segments.clusterings import clustering_refresh
from campaigns.segments.rebuild import segment_rebuild
from campaigns.segments.services import segment_create
from marketing.bulk import insert_rows
from marketing.demo import build_catalogue
from marketing.ingest.last_seen import customers_refresh_last_seen
from marketing.models import Customer, Touchpoint
from mlcore.affinity import rules_mine
from mlcore.models import AssociationRule, Clustering

DEMO_CLUSTERING = "Customer value"
DEMO_RULES = {"min_support": 0.01, "min_confidence": 0.2, "min_lift": 1.0}


def demo_segments(ctx) -> None:
    rfm_segments = list(Segment.objects.filter(name__startswith="RFM: ").order_by("pk").values_list("pk", flat=True))
    for segment_id in rfm_segments:
        segment_rebuild(segment_id, now=ctx.now)

    clustering, _ = Clustering.objects.get_or_create(
        name=DEMO_CLUSTERING,
        defaults={"description": "RFM, tenure and email engagement; k chosen by silhouette."},
    )
    clusters = clustering_refresh(clustering.pk, now=ctx.now)

    # A demo of a few hundred orders would find "frequent" itemsets in single baskets: ask
    # for at least 5 baskets.
    min_support = max(DEMO_RULES["min_support"], 5 / max(ctx.orders, 1))
    version = rules_mine(now=ctx.now, **{**DEMO_RULES, "min_support": min_support})
    top = AssociationRule.objects.filter(model_version=version).order_by("rank").first()
    affinity = None
    if top is not None:
        sku = top.consequents[0]
        product = ctx.products.get(sku)
        name = f"Likely buyers of {product.name if product else sku}"
        affinity = Segment.objects.filter(name=name).first() or segment_create(
            name=name,
            kind=Segment.Kind.AFFINITY,
            definition={"sku": sku, "min_confidence": DEMO_RULES["min_confidence"]},
            description=f"Bought what usually comes with {sku}, never {sku} itself.",
        )
        segment_rebuild(affinity.pk, now=ctx.now)

    ctx.summary["segments (RFM, cluster, affinity)"] = (
        f"{len(rfm_segments)}, {len(clusters['segments'])}, {0 if affinity is None else 1}"
    )
    ctx.summary["association rules"] = version.metrics["rules_stored"]


# --- A finished campaign and a draft one (a `seed_demo` step before the RFM refresh) -------

DEMO_CHANNEL = "Email (demo)"
DEMO_AUDIENCE = "Email subscribers (demo)"
SPRING_AUDIENCE = "Spring sale audience (demo)"
DEMO_CAMPAIGN = "Spring sale (demo)"
DEMO_DRAFT = "Weekly picks (demo, Thompson)"
# Four weeks ago (or half the history when that is shorter): its 7-day outcome window is
# over, and its sends fall inside the default look-backs of policy evaluation (30 days)
# and training (90 days), so those pages have data to show on a fresh demo.
CAMPAIGN_DAYS_AGO = 28
EMAIL_COST = Decimal("0.0010")
SPRING_DISCOUNT_PCT = 15
SPRING_FIXED_COST = Decimal("25.00")
# The planted effect: a sent message makes a customer buy (on top of what they would have
# bought anyway, which the holdout measures) with their persona's email response rate
# times the creative's multiplier. B, the personal subject line, is the better creative.
CREATIVE_LIFT = {"A": 2.5, "B": 5.0}
OPEN_RATE = {"A": 0.25, "B": 0.35}  # of those who do not buy because of the message
CLICK_RATE = 0.2  # of those openers
CREATIVES = {
    "A": {
        "subject": "Spring sale: 15% off everything",
        "body": "Hi {{ first_name }}, our spring sale is on: 15% off with code SPRING15.",
    },
    "B": {
        "subject": "{{ first_name }}, your spring picks are 15% off",
        "body": "Hi {{ first_name }}, we picked a few things for you. 15% off with code SPRING15.",
    },
}
SHOP_URL = "https://shop.example.com/spring"


def demo_campaigns(ctx) -> None:
    """An email channel; "Spring sale (demo)", sent ~CAMPAIGN_DAYS_AGO days ago to the email
    subscribers who had joined by then, with a 10% holdout and two creatives (weighted
    50/50), with its opens, clicks and the purchases it caused; and a draft campaign with
    the Thompson creative policy, ready to launch.

    The launch is the real one (`run_launch` at the campaign's time: audience, holdout,
    policy picks with their logged probability and features, `held_out` touchpoints); the
    send is what the sender's statements write (status, cost, recipient, the `sent`
    touchpoint with `sent_properties_sql`), set-based rather than through a broker. Opens,
    clicks and purchases are drawn per message from the step's own generator: deterministic
    with the seed. Idempotent: when the campaign exists the step adds nothing."""
    channel, _ = Channel.objects.get_or_create(
        name=DEMO_CHANNEL,
        defaults={
            "kind": ChannelKind.EMAIL,
            "backend": "default",  # settings.EMAIL_BACKEND: files in var/sent-mail unless configured
            "settings": {"from_email": "Demo Shop <shop@example.com>"},
            "cost_per_message": EMAIL_COST,
        },
    )
    audience = Segment.objects.filter(name=DEMO_AUDIENCE).first() or segment_create(
        name=DEMO_AUDIENCE, definition={"consent": "email"}, description="Opted in to email, not unsubscribed."
    )
    segment_rebuild(audience.pk, now=ctx.now)
    if not Campaign.objects.filter(name=DEMO_CAMPAIGN).exists():
        campaign = _spring_campaign(ctx, channel)
        ctx.summary["demo campaign messages (sent, held out)"] = (
            f"{Message.objects.filter(campaign=campaign, status=Message.Status.SENT).count()}, "
            f"{Message.objects.filter(campaign=campaign, status=Message.Status.HELD_OUT).count()}"
        )
    if not Campaign.objects.filter(name=DEMO_DRAFT).exists():
        draft = Campaign.objects.create(
            name=DEMO_DRAFT,
            description="Draft: launch it to let Thompson sampling learn which creative works.",
            salt=f"demo-{ctx.seed}-draft",
            channel_policy={"type": "fixed", "channel": channel.pk},
            creative_policy={"type": "thompson"},
        )
        draft.audience.add(audience)
        Creative.objects.bulk_create(
            Creative(campaign=draft, channel_kind=ChannelKind.EMAIL, name=name, **CREATIVES[name]) for name in "AB"
        )


def campaign_launched_at(ctx) -> datetime:
    """When the demo campaign went out: 09:00 UTC, CAMPAIGN_DAYS_AGO days ago, inside the
    history."""
    days_ago = min(CAMPAIGN_DAYS_AGO, max(ctx.days // 2, 1))
    return (ctx.now - timedelta(days=days_ago)).replace(hour=9, minute=0, second=0)


def _spring_campaign(ctx, channel: Channel) -> Campaign:
    launched_at = campaign_launched_at(ctx)
    sent_at = launched_at + timedelta(minutes=2)
    campaign = Campaign.objects.create(
        name=DEMO_CAMPAIGN,
        description="Two subject lines, 50/50, 10% holdout (demo data).",
        status=Campaign.Status.RUNNING,
        salt=f"demo-{ctx.seed}-spring",  # the holdout and the creative draws: same for a seed
        holdout_percent=Decimal("10.00"),
        fixed_cost=SPRING_FIXED_COST,
        channel_policy={"type": "fixed", "channel": channel.pk},
        creative_policy={"type": "weighted"},
        launched_at=launched_at,
    )
    # Those who had joined by the send: a customer who signed up later cannot have got it.
    spring_audience = Segment.objects.filter(name=SPRING_AUDIENCE).first() or segment_create(
        name=SPRING_AUDIENCE,
        definition={
            "all": [
                {"consent": "email"},
                {"field": "attributes.signup_date", "op": "lt", "value": launched_at.date().isoformat()},
            ]
        },
        description="Email subscribers who had joined by the spring sale.",
    )
    segment_rebuild(spring_audience.pk, now=ctx.now)
    campaign.audience.add(spring_audience)
    Creative.objects.bulk_create(
        Creative(campaign=campaign, channel_kind=ChannelKind.EMAIL, name=name, **CREATIVES[name]) for name in "AB"
    )
    run = run_launch(campaign.pk, "launch", now=launched_at)

    quote = connection.ops.quote_name
    m, c = quote(Message._meta.db_table), quote(Customer._meta.db_table)
    at = connection.ops.adapt_datetimefield_value(sent_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {m} SET status = %s, sent_at = %s, updated_at = %s, cost = %s, "
            f"recipient = (SELECT c.email FROM {c} c WHERE c.id = {m}.customer_id) "
            f"WHERE campaign_id = %s AND run_id = %s AND status = %s",
            [Message.Status.SENT, at, at, channel.cost_per_message, campaign.pk, run.pk, Message.Status.QUEUED],
        )
        cursor.execute(
            f"INSERT INTO {quote(Touchpoint._meta.db_table)} (customer_id, kind, channel, campaign_id, message_id, "
            f"creative_id, occurred_at, currency, order_id, sku, event_id, properties) "
            f"SELECT m.customer_id, 'sent', %s, m.campaign_id, m.id, m.creative_id, %s, '', '', '', "
            f"'sent:' || m.id, {sent_properties_sql()} FROM {m} m "
            f"WHERE m.campaign_id = %s AND m.run_id = %s AND m.status = %s",
            [channel.kind, at, campaign.pk, run.pk, Message.Status.SENT],
        )
    _responses(ctx, campaign, sent_at)
    customers_refresh_last_seen()  # the campaign's opens and orders may be someone's latest
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.COMPLETED, finished_at=sent_at)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.COMPLETED, finished_at=sent_at)
    return campaign


def _responses(ctx, campaign: Campaign, sent_at) -> None:
    """Opens, clicks (`open:<id>`, `click:<id>:<url hash>` like the tracking endpoints)
    and the orders the messages caused (through the bulk ingest path)."""
    rng = ctx.rng_for("campaigns.spring")
    names = dict(Creative.objects.filter(campaign=campaign).values_list("pk", "name"))
    rows = list(
        Message.objects.filter(campaign=campaign, status=Message.Status.SENT)
        .order_by("pk")
        .values_list("pk", "customer_id", "customer__external_id", "creative_id")
    )
    n = len(rows)
    if not n:
        return
    creative = [names[r[3]] for r in rows]
    response = np.array([ctx.response_rate(r[2], "email") if r[2] in ctx.customers else 0.0 for r in rows])
    lift = np.array([CREATIVE_LIFT[name] for name in creative])
    open_rate = np.array([OPEN_RATE[name] for name in creative])
    u_buy, u_open, u_click = rng.random(n), rng.random(n), rng.random(n)
    bought = u_buy < np.minimum(response * lift, 0.9)
    opened = bought | (u_open < open_rate)
    clicked = bought | (opened & (u_click < CLICK_RATE))
    # Minutes after the send: open within a day or so, click minutes later, buy within 3 days
    # of the click (inside the 7-day attribution window).
    open_after = np.minimum(rng.exponential(360.0, n), 2 * 24 * 60).astype(np.int64) + 1
    click_after = open_after + rng.integers(1, 30, n)
    buy_after = click_after + rng.integers(10, 3 * 24 * 60, n)
    # Every demo order is a real basket (marketing.demo): the campaign's orders are medium
    # real baskets (4-8 lines), so they are worth about what the shop's orders are.
    catalogue = build_catalogue()
    indptr, indices = catalogue.pools[1]
    basket = rng.integers(0, len(indptr) - 1, n)

    touchpoints = []
    click_hash = click_event_id(0, SHOP_URL).rsplit(":", 1)[1]
    for i in np.flatnonzero(opened).tolist():
        message_id, customer_id, _, creative_id = rows[i]
        when = sent_at + timedelta(minutes=int(open_after[i]))
        touchpoints.append(
            (customer_id, "open", "email", campaign.pk, message_id, creative_id, when, f"open:{message_id}", "{}")
        )
        if clicked[i]:
            when = sent_at + timedelta(minutes=int(click_after[i]))
            touchpoints.append(
                (
                    customer_id,
                    "click",
                    "email",
                    campaign.pk,
                    message_id,
                    creative_id,
                    when,
                    f"click:{message_id}:{click_hash}",
                    json.dumps({"url": SHOP_URL}),
                )
            )
    insert_rows(
        Touchpoint._meta.db_table,
        (
            "customer_id",
            "kind",
            "channel",
            "campaign_id",
            "message_id",
            "creative_id",
            "occurred_at",
            "event_id",
            "properties",
            "currency",
            "order_id",
            "sku",
        ),
        ((*row[:6], connection.ops.adapt_datetimefield_value(row[6]), *row[7:], "", "", "") for row in touchpoints),
    )

    orders = []
    for i in np.flatnonzero(bought).tolist():
        external_id = rows[i][2]
        lines = indices[indptr[basket[i]] : indptr[basket[i] + 1]].tolist()
        quantities = rng.integers(1, 3, len(lines)).tolist()
        occurred_at = (sent_at + timedelta(minutes=int(buy_after[i]))).strftime("%Y-%m-%dT%H:%M:%SZ")
        for product, quantity in zip(lines, quantities, strict=True):
            spec = catalogue.products[product]
            unit = (Decimal(spec.price) * (100 - SPRING_DISCOUNT_PCT) / 100).quantize(Decimal("0.01"))
            orders.append(
                {
                    "event_id": ctx.event_id("spring", len(orders) + 1),
                    "customer_external_id": external_id,
                    "kind": "purchase",
                    "channel": "web",
                    "occurred_at": occurred_at,
                    "order_id": f"demo-{ctx.seed}-spring-{i + 1:06d}",
                    "sku": spec.sku,
                    "revenue": str(unit * quantity),
                    "currency": settings.REPORTING_CURRENCY,
                    "properties": {"quantity": quantity, "discount_pct": SPRING_DISCOUNT_PCT, "promo_code": "SPRING15"},
                }
            )
    ctx.write_touchpoints(orders, label="campaign orders")
    ctx.summary["demo campaign opens, clicks, orders"] = (
        f"{int(opened.sum())}, {int(clicked.sum())}, {int(bought.sum())}"
    )
