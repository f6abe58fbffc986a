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


class RollbackError(Exception):
    """No version to roll back to, or the one asked for cannot be the champion."""


def rollback_target(task: str, scope: str = "", to: int | None = None) -> ModelVersion:
    """The version a rollback of (task, scope) makes the champion: `to` (a succeeded,
    non-champion version of the same task and scope), else the version the champion
    replaced (its metrics' "replaced_version_id", recorded at promotion), else the latest
    succeeded version older than the champion. RollbackError when there is none."""
    current = champion(task, scope)
    versions = ModelVersion.objects.filter(task=task, scope=scope, status=ModelVersion.Status.SUCCEEDED)
    if to is not None:
        target = versions.filter(pk=to).first()
        if target is None:
            raise RollbackError(f"version {to} is not a succeeded {task} version")
        if target.is_champion:
            raise RollbackError(f"version {to} is already the champion")
        return target
    if current is None:
        raise RollbackError(f"{task} has no champion to roll back")
    replaced = (current.metrics or {}).get("replaced_version_id")
    target = versions.filter(pk=replaced).first() if replaced else None
    if target is None:
        target = versions.filter(pk__lt=current.pk).order_by("-pk").first()
    if target is None:
        raise RollbackError(f"{task} has no earlier succeeded version to roll back to")
    return target


def rollback(task: str, scope: str = "", to: int | None = None) -> ModelVersion:
    """Make the `rollback_target` the champion (inside the caller's transaction); returns it.
    Outputs derived from the champion (scores) are the caller's to rewrite
    (mlcore.scores.model_rollback does both)."""
    target = rollback_target(task, scope, to)
    promote(target)
    return target
