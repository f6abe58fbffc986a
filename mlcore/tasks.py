"""Celery tasks of the mlcore layer: thin callers of one service each, on the `default`
queue; model training (`train_*`) on the `gpu` queue (CELERY_TASK_ROUTES), which a worker
on a GPU host consumes: it reads its data from and writes its model to the database."""

from __future__ import annotations

from celery import shared_task


# Nightly (mlcore/schedules.py, migration 0002) and on demand (admin, API). Each run is a new
# version that replaces the champion as a whole, so a repeated run only costs time.
@shared_task(expires=6 * 3600)
def association_rules_mine(**params) -> dict:
    """Mine association rules from the order baskets (parameters as mlcore.affinity.rules_mine);
    returns the new version's id and metrics."""
    from mlcore.affinity import rules_mine

    version = rules_mine(**params)
    return {"model_version_id": version.pk, **version.metrics}


# A run older than this that still says "running" died with its worker: it no longer
# blocks a new run.
RUNNING_STALE_S = 6 * 3600


def _already_running(task: str) -> int | None:
    from datetime import timedelta

    from django.utils import timezone

    from mlcore.models import ModelVersion

    return (
        ModelVersion.objects.filter(
            task=task,
            status=ModelVersion.Status.RUNNING,
            started_at__gte=timezone.now() - timedelta(seconds=RUNNING_STALE_S),
        )
        .values_list("pk", flat=True)
        .first()
    )


# Nightly (mlcore/schedules.py, migration 0004) and on demand (admin, API), on the `gpu`
# queue. Safe to run twice: a run while another of the task is running does nothing, and a
# finished run is a new version that only replaces the champion when it beats it.
@shared_task(expires=6 * 3600)
def train_propensity(**options) -> dict:
    """Train a propensity challenger (options as mlcore.propensity.DEFAULTS)."""
    from mlcore.propensity import propensity_train

    running = _already_running("propensity")
    if running is not None:
        return {"skipped": f"propensity version {running} is still running"}
    version = propensity_train(**options)
    return {"model_version_id": version.pk, "is_champion": version.is_champion, "auc": version.metrics.get("auc")}


@shared_task(expires=6 * 3600)
def train_uplift(**options) -> dict:
    """Train an uplift challenger (options as mlcore.uplift.DEFAULTS)."""
    from mlcore.uplift import uplift_train

    running = _already_running("uplift")
    if running is not None:
        return {"skipped": f"uplift version {running} is still running"}
    version = uplift_train(**options)
    return {"model_version_id": version.pk, "is_champion": version.is_champion, "qini": version.metrics.get("qini")}


# Nightly (a beat entry "recommendations-fit", see the issue 5 notes) and on demand, on the
# `default` queue (CPU: sparse matrices). Safe to run twice: each run is a new version that
# replaces the champion as a whole; a run while another is running does nothing.
@shared_task(expires=6 * 3600)
def recommendations_fit(**options) -> dict:
    """Fit item-based CF on the purchases (options as mlcore.recommendations.recommendations_fit)."""
    from mlcore.recommendations import recommendations_fit as fit

    running = _already_running("recommendations")
    if running is not None:
        return {"skipped": f"recommendations version {running} is still running"}
    version = fit(**options)
    return {"model_version_id": version.pk, **version.metrics}
