"""Beat schedules of the analytics layer, created in django-celery-beat's tables by
migration 0002 (see marketing/schedules.py for why they live there)."""

from __future__ import annotations

CRONTAB_SCHEDULES = {
    # name: (task, crontab fields). 03:30 UTC: after the day's touchpoints are in and after
    # the 02:00 RFM refresh, so the morning's ROI and funnel pages answer from the cache.
    "reports-refresh-nightly": ("analytics.tasks.reports_refresh_nightly", {"minute": "30", "hour": "3"}),
}
