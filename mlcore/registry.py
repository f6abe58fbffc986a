"""The model registry: versions of each (task, scope), and which one is the champion."""

from __future__ import annotations

import time
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from mlcore.models import ModelVersion


def champion(task: str, scope: str = "") -> ModelVersion | None:
    return ModelVersion.objects.filter(task=task, scope=scope, is_champion=True).first()


def champion_id(task: str, scope: str = "") -> int | None:
    return ModelVersion.objects.filter(task=task, scope=scope, is_champion=True).values_list("pk", flat=True).first()


def promote(version: ModelVersion) -> ModelVersion | None:
    """Make `version` the champion of its task and scope, inside the caller's transaction;
    returns the champion it replaces (None when there was none)."""
    with transaction.atomic():
        previous = (
            ModelVersion.objects.select_for_update()
            .filter(task=version.task, scope=version.scope, is_champion=True)
            .exclude(pk=version.pk)
            .first()
        )
        if previous is not None:
            ModelVersion.objects.filter(pk=previous.pk).update(is_champion=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_champion=True)
        version.is_champion = True
    return previous


@contextmanager
def recorded_run(version: ModelVersion):
    """Around a training run of a saved `running` version: on an exception it is marked
    failed with the error (committed on its own, so the failure is visible) and the
    exception goes on; on success the caller marks it succeeded with `finish`."""
    started = time.monotonic()
    try:
        yield lambda: round((time.monotonic() - started) * 1000)
    except Exception as exc:
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:10_000],
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        raise


def finish(version: ModelVersion, duration_ms: int, **fields) -> None:
    """Mark `version` succeeded now, with `fields` (metrics, result…)."""
    fields.update(status=ModelVersion.Status.SUCCEEDED, trained_at=timezone.now(), duration_ms=duration_ms)
    for name, value in fields.items():
        setattr(version, name, value)
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
