"""The model registry's learning parts: artifacts stored in the database (hash checked),
rollback targets, the training tasks (a second run while one is running does nothing) and
their nightly schedules. PostgreSQL and SQLite alike."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.test import TestCase
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from mlcore import registry
from mlcore.artifacts import ArtifactError, artifact_load, artifact_save
from mlcore.models import ModelArtifact, ModelVersion
from mlcore.tasks import train_propensity, train_uplift


def version(task: str = "propensity", **fields) -> ModelVersion:
    fields.setdefault("status", ModelVersion.Status.SUCCEEDED)
    return ModelVersion.objects.create(task=task, algorithm="test", **fields)


class ArtifactTests(TestCase):
    def test_saved_bytes_come_back_and_are_named_by_their_hash(self) -> None:
        v = version()
        blob = bytes(range(256)) * 10
        artifact_save(v, blob)
        digest = hashlib.sha256(blob).hexdigest()
        self.assertEqual(v.artifact, f"db:sha256:{digest}")
        self.assertEqual(ModelVersion.objects.get(pk=v.pk).artifact, f"db:sha256:{digest}")
        self.assertEqual(artifact_load(v), blob)
        stored = ModelArtifact.objects.get(version=v)
        self.assertEqual((stored.size, stored.sha256), (2560, digest))
        artifact_save(v, b"second")  # replaces
        self.assertEqual((artifact_load(v), ModelArtifact.objects.count()), (b"second", 1))

    def test_missing_or_corrupt_artifacts_are_refused(self) -> None:
        v = version()
        with self.assertRaisesMessage(ArtifactError, f"model version {v.pk} has no stored artifact"):
            artifact_load(v)
        artifact_save(v, b"model")
        ModelArtifact.objects.filter(version=v).update(data=b"tampered")
        with self.assertRaisesMessage(ArtifactError, f"the artifact of model version {v.pk} is corrupt"):
            artifact_load(v)

    def test_an_artifact_goes_with_its_version(self) -> None:
        v = version()
        artifact_save(v, b"model")
        v.delete()
        self.assertFalse(ModelArtifact.objects.exists())


class RollbackTargetTests(TestCase):
    def test_the_default_is_the_replaced_version_else_the_latest_older_one(self) -> None:
        a, b = version(), version()
        c = version(is_champion=True, metrics={"replaced_version_id": a.pk})
        version(status=ModelVersion.Status.FAILED)
        self.assertEqual(registry.rollback_target("propensity"), a)
        ModelVersion.objects.filter(pk=c.pk).update(metrics={})
        self.assertEqual(registry.rollback_target("propensity"), b)
        self.assertEqual(registry.rollback_target("propensity", to=a.pk), a)
        self.assertEqual(registry.rollback("propensity"), b)
        self.assertEqual(registry.champion_id("propensity"), b.pk)
        self.assertEqual(ModelVersion.objects.filter(is_champion=True).count(), 1)

    def test_what_cannot_be_rolled_back_to(self) -> None:
        with self.assertRaisesMessage(registry.RollbackError, "propensity has no champion to roll back"):
            registry.rollback_target("propensity")
        champion = version(is_champion=True)
        with self.assertRaisesMessage(registry.RollbackError, "propensity has no earlier succeeded version"):
            registry.rollback_target("propensity")
        failed = version(status=ModelVersion.Status.FAILED)
        other = version(task="uplift")
        for to in (failed.pk, other.pk, 999_999):
            with self.assertRaisesMessage(
                registry.RollbackError, f"version {to} is not a succeeded propensity version"
            ):
                registry.rollback_target("propensity", to=to)
        with self.assertRaisesMessage(registry.RollbackError, f"version {champion.pk} is already the champion"):
            registry.rollback_target("propensity", to=champion.pk)


class TrainingTaskTests(TestCase):
    def test_a_run_while_another_is_running_does_nothing(self) -> None:
        running = version(status=ModelVersion.Status.RUNNING)
        self.assertEqual(train_propensity(), {"skipped": f"propensity version {running.pk} is still running"})
        self.assertEqual(ModelVersion.objects.count(), 1)
        running_uplift = version(task="uplift", status=ModelVersion.Status.RUNNING)
        self.assertEqual(train_uplift(), {"skipped": f"uplift version {running_uplift.pk} is still running"})

    def test_a_stale_running_version_does_not_block(self) -> None:
        version(status=ModelVersion.Status.RUNNING, started_at=timezone.now() - timedelta(hours=7))
        with self.assertRaisesMessage(Exception, "training needs at least 20"):
            train_propensity(days=1)  # no data: it ran (and failed), it was not skipped
        self.assertEqual(ModelVersion.objects.filter(status="failed").count(), 1)

    def test_the_tasks_go_to_the_gpu_queue_nightly(self) -> None:
        from django.conf import settings

        from marketing.celery import app

        for name in ("mlcore.tasks.train_propensity", "mlcore.tasks.train_uplift"):
            self.assertEqual(app.amqp.router.route({}, name)["queue"].name, f"{settings.CELERY_QUEUE_PREFIX}gpu")
        schedules = {
            t.name: (t.task, t.crontab.minute, t.crontab.hour, t.enabled)
            for t in PeriodicTask.objects.filter(
                name__in=["propensity-train", "uplift-train", "recommendations-fit"]
            ).select_related("crontab")
        }
        self.assertEqual(
            schedules,
            {
                "propensity-train": ("mlcore.tasks.train_propensity", "0", "4", True),
                "uplift-train": ("mlcore.tasks.train_uplift", "30", "4", True),
                "recommendations-fit": ("mlcore.tasks.recommendations_fit", "30", "3", True),
            },
        )
