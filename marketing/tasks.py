"""Celery tasks of the marketing layer: thin callers that take plain values and call one
service. Both run on the `default` queue (settings.CELERY_TASK_DEFAULT_QUEUE, prefixed in
tests) and are scheduled by beat (marketing/schedules.py, created by migration 0004)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from marketing.models import WorkerHeartbeat


# Beat sends one every minute: a check nobody ran within that minute is stale, and a worker
# that was down must not work through a backlog of them when it comes back.
@shared_task(bind=True, expires=60)
def health_check(self, token: str = "") -> dict[str, str]:
    """Record that the worker that ran this is alive (one row per worker, updated in place,
    so running it twice is harmless). The token lets a caller recognise its own check."""
    hostname = self.request.hostname
    WorkerHeartbeat.objects.update_or_create(hostname=hostname, defaults={"seen_at": timezone.now(), "token": token})
    return {"hostname": hostname, "token": token}


# Works from a checkpoint in the touchpoint log, so a late or repeated run only catches up.
@shared_task(expires=120)
def customers_refresh_last_seen() -> int:
    """Returns how many customers' last_seen_at moved."""
    from marketing.ingest.last_seen import customers_refresh_last_seen as refresh

    return refresh()


# Nightly (marketing/schedules.py, migration 0007). The whole table is rewritten in one
# transaction, so a repeated or overlapping run leaves the same rows; a run that missed its
# night is worthless the next night, when a fresh one is due.
@shared_task(expires=6 * 3600)
def rfm_refresh_all() -> int:
    """Recompute every customer's RFM as of today (reporting timezone); returns the rows written."""
    from marketing.rfm import rfm_refresh

    return rfm_refresh()
