"""Beat schedules of the campaigns layer, created once by migrations 0003, 0004 and 0006 (see
marketing/schedules.py for why schedules are data, editable in the admin)."""

from __future__ import annotations

SCHEDULES = {
    # name: (task, every seconds). Rebuilds are incremental diffs, so a quarter-hour
    # keeps triggered campaigns fresh without re-reading the touchpoint log constantly.
    "segments-rebuild-all": ("campaigns.tasks.segment_rebuild_all", 15 * 60),
}

# Delivery (migration 0006): the sweeper that keeps sending going whatever happens to the
# broker's queue, and the firing of recurring and triggered campaigns.
DELIVERY_SCHEDULES = {
    "delivery-sweep": ("campaigns.tasks.delivery_sweep", 10),
    "campaigns-fire-due": ("campaigns.tasks.campaigns_fire_due", 60),
}

CRONTAB_SCHEDULES = {
    # 03:30 UTC: after the 02:00 RFM refresh the features read.
    "clusterings-refresh-all": ("campaigns.tasks.clusterings_refresh_all", {"minute": "30", "hour": "3"}),
}

# The ready-made RFM segments (migration 0004): one rules segment per named RFM group.
RFM_GROUP_DESCRIPTIONS = {
    "champions": "Bought recently and often (R 5, F 4-5).",
    "loyal": "Buy often; not the most recent (R 3-4, F 4-5).",
    "potential_loyalists": "Recent customers with a few orders (R 4-5, F 2-3).",
    "new": "First order very recently (R 5, F 1).",
    "promising": "Recent first-time buyers (R 4, F 1).",
    "need_attention": "Middling recency, few orders (R 3, F 1-3).",
    "at_risk": "Used to buy often, not lately (R 1-2, F 3-4).",
    "cant_lose": "The most frequent buyers, gone quiet (R 1-2, F 5).",
    "hibernating": "Few orders, long ago (R 2, F 1-2).",
    "lost": "Few orders, longest ago (R 1, F 1-2).",
}


def rfm_segment_name(group: str) -> str:
    return "RFM: " + {"cant_lose": "Can't lose"}.get(group, group.replace("_", " ").capitalize())
