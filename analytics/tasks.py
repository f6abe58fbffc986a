"""Celery tasks of the analytics layer: thin callers of analytics.reports, on the
`default` queue."""

from __future__ import annotations

from celery import shared_task


# Idempotent by run id: report_run_execute takes only a `queued` run (conditional UPDATE),
# so a redelivered message finds it running or done and returns it unchanged.
@shared_task(expires=6 * 3600)
def report_run_compute(run_id: int) -> dict:
    """Compute a queued report run; returns its id, status and duration."""
    from analytics.reports import report_run_execute

    run = report_run_execute(run_id)
    return {"run_id": run.pk, "status": run.status, "duration_ms": run.duration_ms}


# Nightly (analytics/schedules.py, migration 0002). Queues one report_run_compute per
# campaign and saved funnel; run twice, it only queues fresh runs again.
@shared_task(expires=6 * 3600)
def reports_refresh_nightly() -> dict:
    """Queue fresh ROI runs for running and recent campaigns and runs of saved funnels."""
    from analytics.reports import reports_refresh_nightly as refresh

    return refresh()
