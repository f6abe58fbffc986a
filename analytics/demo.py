"""The analytics layer's demo data (a `seed_demo` step, after the campaigns' steps): saved
funnels a marketer opens first. The shop's web funnel over the last 90 days, and the demo
campaign's email funnel (sent -> open -> click -> purchase) broken down by creative, so
the dashboards have something to show on a fresh machine. Idempotent: a funnel that
exists (by name) is left as it is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from analytics.models import Funnel
from analytics.services import funnel_save
from campaigns.demo import DEMO_CAMPAIGN, campaign_launched_at
from campaigns.models import Campaign

WEB_FUNNEL = "Visit → cart → purchase (demo)"
CAMPAIGN_FUNNEL = "Spring sale: sent → open → click → purchase (demo)"


def demo_funnels(ctx: Any) -> None:
    saved = 0
    if not Funnel.objects.filter(name=WEB_FUNNEL).exists():
        funnel_save(
            name=WEB_FUNNEL,
            description="The shop's web funnel: sessions that end in an order within a week.",
            spec={
                "steps": [{"kind": "visit"}, {"kind": "add_to_cart"}, {"kind": "purchase"}],
                "window": {"days": 7},
                "order": "ordered",
                "last_days": 90,
            },
        )
        saved += 1
    campaign = Campaign.objects.filter(name=DEMO_CAMPAIGN).first()
    if campaign is not None and not Funnel.objects.filter(name=CAMPAIGN_FUNNEL).exists():
        # Fixed dates around the send (not "last N days"): the campaign does not move.
        sent = campaign_launched_at(ctx)
        funnel_save(
            name=CAMPAIGN_FUNNEL,
            description="Who opened, clicked and bought within 7 days of the spring sale email, per creative.",
            spec={
                "steps": [
                    {"kind": "sent", "campaign": campaign.pk},
                    {"kind": "open", "campaign": campaign.pk},
                    {"kind": "click", "campaign": campaign.pk},
                    {"kind": "purchase"},
                ],
                "window": {"days": 7},
                "order": "ordered",
                "date_from": (sent - timedelta(days=1)).date().isoformat(),
                "date_to": (sent + timedelta(days=1)).date().isoformat(),
                "breakdown": "creative",
            },
        )
        saved += 1
    ctx.summary["saved funnels"] = saved
