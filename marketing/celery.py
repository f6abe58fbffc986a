"""The Celery app. Queues: `default` (segments, reports, housekeeping), `send` (delivery),
`gpu` (model training); their names, routes and beat schedule live in settings. Beat uses
django-celery-beat's database scheduler, so schedules
are editable in the admin and survive restarts."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing.settings")

app = Celery("marketing")
app.config_from_object("django.conf:settings", namespace="CELERY")


def queue_name(name: str) -> str:
    """The broker queue for a logical queue; tests prefix theirs so a developer's worker
    never steals them."""
    from django.conf import settings

    return f"{settings.CELERY_QUEUE_PREFIX}{name}"


app.autodiscover_tasks()
