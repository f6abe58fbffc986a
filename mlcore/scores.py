"""Customer scores of the propensity and uplift champions (CustomerScore), and the
promotion and rollback services that keep them in step with the champion flag.

Only the champion's rows are kept (as CustomerCluster): a promotion or rollback computes
every customer's score with the new champion first (outside any transaction: it is the
slow part), then in one transaction flips the flag, writes its rows (COPY on PostgreSQL)
and deletes the previous champion's, so readers see one champion and its scores at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from marketing.bulk import insert_rows
from marketing.errors import Conflict, NotFound
from marketing.models import Customer
from mlcore import registry
from mlcore.models import CustomerScore, ModelVersion

SCORED_TASKS = (ModelVersion.Task.PROPENSITY, ModelVersion.Task.UPLIFT)


def scores_compute(version: ModelVersion, *, now: datetime | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(customer ids, scores) of every customer who is not erased, by `version`'s model."""
    from mlcore.training import customers_to_score, decision_features

    now = now or timezone.now()
    ids = customers_to_score()
    X = decision_features(ids, at=now)
    if version.task == ModelVersion.Task.PROPENSITY:
        from mlcore.propensity import propensity_customer_scores

        return ids, propensity_customer_scores(version, X)
    if version.task == ModelVersion.Task.UPLIFT:
        from mlcore.uplift import uplift_customer_scores

        return ids, uplift_customer_scores(version, X)
    raise ValueError(f"{version.task} versions have no customer scores")


def scores_write(version: ModelVersion, customer_ids: np.ndarray, scores: np.ndarray) -> None:
    """Replace the task's score rows by `version`'s (inside the caller's transaction)."""
    with transaction.atomic():
        CustomerScore.objects.filter(
            model_version__in=ModelVersion.objects.filter(task=version.task, scope=version.scope)
        ).delete()
        insert_rows(
            CustomerScore._meta.db_table,
            ("model_version_id", "customer_id", "score"),
            zip(
                [version.pk] * len(customer_ids),
                np.asarray(customer_ids, dtype=np.int64).tolist(),
                np.asarray(scores, dtype=np.float64).tolist(),
                strict=True,
            ),
        )
        if connection.vendor == "postgresql":
            # Statistics that know the new rows, so score segments that follow plan well.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(CustomerScore._meta.db_table)}")


def challenger_finish(
    version: ModelVersion, elapsed_ms: Callable[[], int], fields: dict, *, promote: bool, now: datetime
) -> tuple[np.ndarray, np.ndarray] | None:
    """The end of a training run, inside its registry.recorded_run: the version takes its
    `fields` (scoring reads its params), is scored when it is to be promoted (so a scoring
    failure fails the run) and is marked succeeded. Returns (customer ids, scores) for
    champion_install once the run is recorded, or None when it is not promoted."""
    for name, value in fields.items():
        setattr(version, name, value)
    scored = scores_compute(version, now=now) if promote else None
    registry.finish(version, elapsed_ms(), **fields)
    return scored


def champion_install(version: ModelVersion, customer_ids: np.ndarray, scores: np.ndarray) -> ModelVersion | None:
    """Make `version` the champion with its scores, in one transaction; returns the
    champion it replaced (recorded in the version's metrics as "replaced_version_id", the
    default target of a rollback)."""
    with transaction.atomic():
        previous = registry.promote(version)
        metrics = dict(version.metrics or {})
        metrics["replaced_version_id"] = previous.pk if previous is not None else None
        version.metrics = metrics
        ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
        scores_write(version, customer_ids, scores)
    return previous


def _scored_version(version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"Model version {version_id} does not exist.")
    if version.task not in SCORED_TASKS:
        raise Conflict(
            f"Model version {version_id} is a {version.task} version: promote works on propensity and uplift."
        )
    if version.status != ModelVersion.Status.SUCCEEDED:
        raise Conflict(f"Model version {version_id} is {version.status}: only a succeeded version can be champion.")
    return version


def model_promote(version_id: int, *, now: datetime | None = None) -> ModelVersion:
    """Make a succeeded propensity/uplift version the champion by hand (whatever its
    comparison said), scoring every customer with it. NotFound / Conflict when it cannot."""
    version = _scored_version(version_id)
    if version.is_champion:
        raise Conflict(f"Model version {version_id} is already the champion.")
    ids, scores = scores_compute(version, now=now)
    champion_install(version, ids, scores)
    return version


def model_rollback(task: str, *, to: int | None = None, now: datetime | None = None) -> ModelVersion:
    """Roll the task's champion back to `to` or, by default, to the version the champion
    replaced (registry.rollback_target); rescores every customer. Conflict when there is
    nothing to roll back to."""
    if task not in SCORED_TASKS:
        raise Conflict(f"{task} versions cannot be rolled back here: use propensity or uplift.")
    try:
        target = registry.rollback_target(task, "", to)
    except registry.RollbackError as exc:
        raise Conflict(str(exc)) from None
    ids, scores = scores_compute(target, now=now)
    with transaction.atomic():
        # The target keeps its own "replaced_version_id": rolling back twice does not
        # bounce between two versions.
        registry.promote(target)
        scores_write(target, ids, scores)
    return target


def customer_scores(customer: Customer) -> dict[str, dict | None]:
    """The customer's score under each task's champion: {task: {"score", "model_version",
    "trained_at"} or None (no champion, or the customer was not scored)}."""
    answer: dict[str, dict | None] = {}
    for task in SCORED_TASKS:
        row = (
            CustomerScore.objects.filter(
                customer_id=customer.pk, model_version__task=task, model_version__is_champion=True
            )
            .values_list("score", "model_version_id", "model_version__trained_at")
            .first()
        )
        answer[str(task)] = None if row is None else {"score": row[0], "model_version": row[1], "trained_at": row[2]}
    return answer
