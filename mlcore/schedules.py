"""Beat schedules of the mlcore layer, created once by migration 0002 (see
marketing/schedules.py for why schedules are data, editable in the admin)."""

from __future__ import annotations

CRONTAB_SCHEDULES = {
    # 03:00 UTC: after the 02:00 RFM refresh, from the day's complete baskets.
    "association-rules-mine": ("mlcore.tasks.association_rules_mine", {"minute": "0", "hour": "3"}),
}

# Created by migration 0004 (0002 already ran where it was deployed).
LEARNING_SCHEDULES = {
    # 04:00 / 04:30 UTC: after the rules run, from the previous days' complete outcomes;
    # the tasks go to the `gpu` queue (CELERY_TASK_ROUTES "mlcore.tasks.train_*").
    "propensity-train": ("mlcore.tasks.train_propensity", {"minute": "0", "hour": "4"}),
    "uplift-train": ("mlcore.tasks.train_uplift", {"minute": "30", "hour": "4"}),
    # 03:30 UTC: after the rules run (next-best-offer tops up from its rules); default queue.
    "recommendations-fit": ("mlcore.tasks.recommendations_fit", {"minute": "30", "hour": "3"}),
}
