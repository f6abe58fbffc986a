"""Celery tasks of the campaigns layer: thin callers of one service each, on the `default`
queue (settings.CELERY_TASK_DEFAULT_QUEUE). Segment rebuilds are safe to run twice or to
overlap: a rebuild locks its segment row and only writes the difference it finds."""

from __future__ import annotations

import logging

from celery import shared_task

from campaigns.segments.clusterings import clustering_refresh, clusterings_enabled
from campaigns.segments.rebuild import segment_rebuild, segments_rebuildable
from marketing.errors import NotFound

logger = logging.getLogger(__name__)


# A rebuild that waited past the next scheduled run is redundant: that run does its work.
@shared_task(expires=15 * 60)
def segment_rebuild_task(segment_id: int) -> dict[str, int] | None:
    """Rebuild one segment; returns its entered/exited/members counts and duration, or
    None when the segment was deleted after the rebuild was enqueued."""
    try:
        result = segment_rebuild(segment_id)
    except NotFound:
        logger.info("segment %s was deleted before its rebuild ran", segment_id)
        return None
    return {
        "segment_id": result.segment_id,
        "entered": result.entered,
        "exited": result.exited,
        "members": result.members,
        "duration_ms": result.duration_ms,
    }


# Every 15 minutes (campaigns/schedules.py, migration 0003). One coarse task per segment,
# so a slow segment does not hold the others back and each retries on its own.
@shared_task(expires=15 * 60)
def segment_rebuild_all() -> int:
    """Enqueue a rebuild of every segment (rules, cluster, affinity); returns how many were enqueued."""
    ids = segments_rebuildable()
    for segment_id in ids:
        segment_rebuild_task.delay(segment_id)
    return len(ids)


# Nightly (campaigns/schedules.py, migration 0004) and on demand (admin, API). A run writes a
# new version and brings the clustering's segments in step in one transaction; a repeated
# run only costs time.
@shared_task(expires=6 * 3600)
def clustering_refresh_task(clustering_id: int) -> dict | None:
    """Run one clustering and rebuild its segments; None when it was deleted meanwhile."""
    try:
        return clustering_refresh(clustering_id)
    except NotFound:
        logger.info("clustering %s was deleted before its run", clustering_id)
        return None


@shared_task(expires=6 * 3600)
def clusterings_refresh_all() -> int:
    """Enqueue a run of every enabled clustering; returns how many were enqueued."""
    ids = clusterings_enabled()
    for clustering_id in ids:
        clustering_refresh_task.delay(clustering_id)
    return len(ids)


# --- delivery (campaigns.delivery; issue 4) -------------------------------------------------
# Correctness never rests on these tasks being delivered: the outbox rows are the truth, and
# the sweeper (every 10 s) re-enqueues whatever is due. A lost or duplicated task costs only
# latency or an empty claim.


@shared_task(expires=3600)
def campaign_launch_task(campaign_id: int) -> dict:
    """Launch a campaign (idempotent per run key); returns the run's counts, or no run when
    the launch only scheduled it (a one-off for later) or armed it (recurring, triggered)."""
    from campaigns.delivery.control import campaign_launch

    run = campaign_launch(campaign_id)
    return {"campaign_id": campaign_id, "run_id": run.pk if run else None, **(run.counts if run else {})}


# Every minute: recurring campaigns' cron firings, scheduled one-offs that are due, and the
# triggered campaigns' new segment entries and touchpoints (each from its checkpoint).
@shared_task(expires=60)
def campaigns_fire_due() -> int:
    """Returns how many runs were started."""
    from campaigns.delivery.triggers import campaigns_fire_due as fire

    return fire()


# On the `send` queue (settings.CELERY_TASK_ROUTES "campaigns.tasks.send_*"). Coarse: one
# task claims up to a batch of due messages of a channel and sends them one by one.
@shared_task(expires=600, acks_late=False)
def send_due(channel_id: int | None = None) -> dict:
    """Send one batch of due messages (of one channel, or any); returns counts by outcome."""
    from campaigns.delivery.send import send_due as send

    return send(channel_id)


# Every 10 s: reconcile `sending` messages whose lease expired, and enqueue send_due tasks
# for the channels with due messages.
@shared_task(expires=30)
def delivery_sweep() -> dict:
    from campaigns.delivery.sweeper import sweep

    return sweep()
