"""Entry points of the learning models for the API and the admin (thin callers): train now
or queued on the `gpu` queue, and lookups with domain errors. The work is in
mlcore.propensity, mlcore.uplift and mlcore.scores."""

from __future__ import annotations

import uuid

from django.db import transaction

from marketing.errors import Conflict, NotFound
from marketing.models import Customer
from mlcore.models import ModelVersion
from mlcore.propensity import TrainingFailed

TASKS = ("propensity", "uplift")


def model_train(task: str, **options) -> ModelVersion:
    """Train `task` in this process; Conflict (the version is kept as failed) when the
    data cannot train a model."""
    from mlcore.propensity import propensity_train
    from mlcore.uplift import uplift_train

    train = {"propensity": propensity_train, "uplift": uplift_train}[task]
    try:
        return train(**options)
    except (TrainingFailed, ValueError) as exc:  # the engine's ValueErrors are data problems too
        raise Conflict(
            f"The {task} training failed: {exc}. It is recorded as a failed model version; the champion is unchanged."
        ) from None


def model_train_enqueue(task: str, options: dict) -> str:
    """Queue a training run on the `gpu` queue after the current transaction commits;
    returns its Celery task id (chosen now so the caller can name it)."""
    from mlcore.tasks import train_propensity, train_uplift

    celery_task = {"propensity": train_propensity, "uplift": train_uplift}[task]
    task_id = str(uuid.uuid4())
    transaction.on_commit(lambda: celery_task.apply_async(kwargs=dict(options), task_id=task_id))
    return task_id


def model_version(version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"Model version {version_id} does not exist.")
    return version


def customer_by_key(key: str) -> Customer | None:
    """The customer with this external id, else with this id (digits); erased ones excluded."""
    alive = Customer.objects.filter(erased_at__isnull=True)
    customer = alive.filter(external_id=key).first()
    if customer is None and key.isdigit() and len(key) < 19:
        customer = alive.filter(pk=int(key)).first()
    return customer
