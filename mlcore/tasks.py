"""Celery tasks of the mlcore layer: thin callers of one service each, on the `default`
queue (GPU training arrives with the learning issue, on the `gpu` queue)."""

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
