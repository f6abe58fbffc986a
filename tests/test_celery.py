"""Celery wiring: a task goes through the real Redis broker to a real worker process and
its effect is seen in the database; beat's schedule lands in django-celery-beat's tables."""

from __future__ import annotations

import json
import secrets
import sys
import time

import redis
from celery.signals import before_task_publish
from django.conf import settings
from django.test import SimpleTestCase, TransactionTestCase
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from marketing.celery import app as celery_app
from marketing.management.commands.run_all import process_commands
from marketing.models import WorkerHeartbeat
from marketing.schedules import SCHEDULES
from marketing.tasks import health_check
from tests.celery_helpers import CeleryWorker, requires_celery_worker

TASK_TIMEOUT_SECONDS = 30


@requires_celery_worker
class HealthCheckOnARealWorkerTests(TransactionTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.worker = CeleryWorker(queues=["default"])
        cls.addClassCleanup(cls.worker.stop)
        cls.worker.start()

    def send_health_check(self, token: str):
        """Send through the broker as production code does, noting where it was routed."""
        published: list[tuple[str, str]] = []

        def on_publish(sender=None, routing_key=None, **kwargs):
            published.append((sender, routing_key))

        before_task_publish.connect(on_publish, weak=False)
        try:
            result = health_check.delay(token)
        finally:
            before_task_publish.disconnect(on_publish)
        return result, published

    def wait_for_heartbeat(self, token: str) -> WorkerHeartbeat:
        deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            heartbeat = WorkerHeartbeat.objects.filter(token=token).first()
            if heartbeat is not None:
                return heartbeat
            time.sleep(0.1)
        self.fail(f"No heartbeat with token {token} within {TASK_TIMEOUT_SECONDS}s. Worker:\n{self.worker.output()}")

    def test_it_records_the_heartbeat_of_the_worker_that_ran_it(self):
        token = secrets.token_hex(16)
        sent_at = timezone.now()

        _, published = self.send_health_check(token)
        heartbeat = self.wait_for_heartbeat(token)

        self.assertEqual(heartbeat.hostname, self.worker.nodename)
        self.assertEqual(heartbeat.token, token)
        self.assertTrue(sent_at <= heartbeat.seen_at <= timezone.now())
        self.assertEqual(WorkerHeartbeat.objects.count(), 1)
        # Routed to this test run's own queue, which a developer's worker does not consume.
        self.assertEqual(published, [("marketing.tasks.health_check", f"{settings.CELERY_QUEUE_PREFIX}default")])
        self.assertNotEqual(settings.CELERY_QUEUE_PREFIX, "")

    def test_its_result_comes_back_through_the_redis_result_backend(self):
        token = secrets.token_hex(16)

        result, _ = self.send_health_check(token)

        expected = {"hostname": self.worker.nodename, "token": token}
        self.assertEqual(result.get(timeout=TASK_TIMEOUT_SECONDS), expected)
        self.assertEqual(type(result.backend).__name__, "RedisBackend")
        stored = redis.Redis.from_url(settings.REDIS_URL).get(f"celery-task-meta-{result.id}")
        self.assertIsNotNone(stored, "the result is not in the test Redis database")
        meta = json.loads(stored)
        self.assertEqual((meta["status"], meta["result"]), ("SUCCESS", expected))

    def test_running_it_again_updates_the_same_row(self):
        first, second = secrets.token_hex(16), secrets.token_hex(16)

        self.send_health_check(first)
        first_seen = self.wait_for_heartbeat(first).seen_at
        self.send_health_check(second)
        heartbeat = self.wait_for_heartbeat(second)

        self.assertEqual(list(WorkerHeartbeat.objects.values_list("hostname", "token")), [(heartbeat.hostname, second)])
        self.assertGreater(heartbeat.seen_at, first_seen)


# Beat runs outside any transaction and closes "obsolete" connections, which a TestCase's
# wrapping transaction looks like: so a TransactionTestCase.
class BeatScheduleTests(TransactionTestCase):
    serialized_rollback = True  # the schedule rows come from a data migration

    def schedule_rows(self) -> dict:
        return {
            task.name: (task.task, task.interval.every, task.interval.period, task.enabled, task.args, task.kwargs)
            for task in PeriodicTask.objects.filter(name__in=list(SCHEDULES)).select_related("interval")
        }

    def test_the_migrations_put_the_schedule_into_the_database_scheduler(self):
        self.assertEqual(
            self.schedule_rows(),
            {
                "health-check": ("marketing.tasks.health_check", 60, "seconds", True, "[]", "{}"),
                "customers-refresh-last-seen": (
                    "marketing.tasks.customers_refresh_last_seen",
                    60,
                    "seconds",
                    True,
                    "[]",
                    "{}",
                ),
            },
        )

    def test_a_marketers_edit_survives_a_beat_restart(self):
        every_five_minutes, _ = IntervalSchedule.objects.get_or_create(every=300, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.filter(name="health-check").update(interval=every_five_minutes, enabled=False)

        DatabaseScheduler(app=celery_app)  # what `celery beat -S …DatabaseScheduler` does at start-up
        DatabaseScheduler(app=celery_app)

        task = PeriodicTask.objects.select_related("interval").get(name="health-check")
        self.assertEqual((task.interval.every, task.enabled), (300, False))
        self.assertEqual(PeriodicTask.objects.filter(name="health-check").count(), 1)

    def test_every_scheduled_task_is_a_registered_task(self):
        celery_app.loader.import_default_modules()

        unknown = {task for task, _ in SCHEDULES.values()} - set(celery_app.tasks)

        self.assertEqual(unknown, set())


class QueueRoutingTests(SimpleTestCase):
    def test_tests_use_their_own_prefixed_queues(self):
        prefix = settings.CELERY_QUEUE_PREFIX
        self.assertNotEqual(prefix, "")
        self.assertEqual(
            [queue.name for queue in settings.CELERY_TASK_QUEUES], [f"{prefix}{q}" for q in ("default", "send", "gpu")]
        )
        self.assertEqual(
            celery_app.amqp.router.route({}, "marketing.tasks.health_check")["queue"].name, f"{prefix}default"
        )


class RunAllCommandLinesTests(SimpleTestCase):
    def test_on_sqlite_the_worker_is_one_process_on_every_queue(self):
        commands = process_commands("127.0.0.1:8000", debug=True, sqlite=True)

        prefix = settings.CELERY_QUEUE_PREFIX
        python = sys.executable
        self.assertEqual(commands["web"], [python, str(settings.BASE_DIR / "manage.py"), "runserver", "127.0.0.1:8000"])
        self.assertEqual(
            commands["worker"],
            [
                *(python, "-m", "celery", "-A", "marketing", "worker"),
                *("-Q", f"{prefix}default,{prefix}send,{prefix}gpu", "--loglevel", "INFO"),
                *("--pool", "solo", "--concurrency", "1"),
            ],
        )
        self.assertEqual(
            commands["beat"],
            [
                *(python, "-m", "celery", "-A", "marketing", "beat", "--loglevel", "INFO"),
                *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
            ],
        )

    def test_in_production_web_is_gunicorn_and_the_worker_uses_its_default_pool(self):
        commands = process_commands("0.0.0.0:8000", debug=False, sqlite=False)

        self.assertEqual(
            commands["web"],
            [
                *(sys.executable, "-m", "gunicorn", "marketing.wsgi:application"),
                *("--bind", "0.0.0.0:8000", "--access-logfile", "-"),
            ],
        )
        self.assertNotIn("--pool", commands["worker"])
