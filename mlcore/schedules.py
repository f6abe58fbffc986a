"""Beat schedules of the mlcore layer, created once by migration 0002 (see
marketing/schedules.py for why schedules are data, editable in the admin)."""

from __future__ import annotations

CRONTAB_SCHEDULES = {
    # 03:00 UTC: after the 02:00 RFM refresh, from the day's complete baskets.
    "association-rules-mine": ("mlcore.tasks.association_rules_mine", {"minute": "0", "hour": "3"}),
}
