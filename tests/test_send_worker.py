"""Sending in real Celery worker processes over Redis, to the aiosmtpd sink: a campaign
reaches every customer exactly once; a worker killed with SIGKILL mid-campaign and then
restarted causes no duplicate, and every customer it did not reach is a message marked
`unknown` (at most one per killed worker slot); Redis restarted mid-campaign (its queue
lost) and the campaign still completes through the sweeper, run by a real beat.

The workers run with the threads pool and two slots (so "one per slot" is tested with more
than one), small batches and short leases (SEND_*_SECONDS in their environment) so that a
dead worker's claims and leases expire within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

from django.conf import settings
from django.db.models import Count
from django.test import TransactionTestCase, override_settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.delivery.control import campaign_launch
from campaigns.delivery.sweeper import sweep
from campaigns.models import Campaign, Channel, Creative, Message, Segment, SegmentMembership
from marketing.celery import app as celery_app
from marketing.celery import queue_name
from marketing.models import Customer, Touchpoint
from tests.celery_helpers import requires_celery_worker, worker_environment
from tests.smtp_sink import SmtpSink, free_port

WORKER_SETTINGS = {
    "SEND_BATCH_SIZE": "10",
    "SEND_CLAIM_LEASE_SECONDS": "3",
    "SEND_LEASE_SECONDS": "4",
    "EMAIL_TIMEOUT": "2",
}
SLOTS = 2


class SendWorker:
    """A Celery worker process for these tests: its own session (so SIGKILL takes all of
    it), the threads pool with SLOTS slots, ready when it says so in its log (which works
    whichever Redis it uses)."""

    def __init__(self, queues=("send",), env: dict | None = None, command: str = "worker"):
        self.queues = [queue_name(name) for name in queues]
        self.env = {**worker_environment(), **WORKER_SETTINGS, **(env or {})}
        self.command = command
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    def start(self, ready: str = "ready.", timeout: float = 60.0) -> SendWorker:
        args = [sys.executable, "-m", "celery", "-A", "marketing", self.command, "-l", "INFO"]
        if self.command == "worker":
            args += ["-Q", ",".join(self.queues), "--pool", "threads", "--concurrency", str(SLOTS)]
            args += [
                "-n",
                f"send-{os.getpid()}-{time.monotonic_ns()}@localhost",
                "--without-mingle",
                "--without-gossip",
            ]
        self.process = subprocess.Popen(
            args, cwd=settings.BASE_DIR, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery {self.command} exited with {self.process.returncode}:\n{self.output()}")
            if ready in self.output():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"celery {self.command} was not ready within {timeout:.0f}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: no warm shutdown, no task handed back."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-6000:]


class RedisServer:
    """A redis-server of the test's own on a free port, without persistence: stopping it
    loses its queues, as a Redis crash does."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def launch_campaign(sink: SmtpSink, customers: int) -> Campaign:
    """A one-off email campaign to `customers` opted-in customers (a static segment, no
    holdout), launched as the API would: campaign_launch writes the outbox and enqueues."""
    people = Customer.objects.bulk_create(
        [
            Customer(external_id=f"w{n}", email=f"w{n}@example.com", email_opt_in=True, first_name=f"W{n}")
            for n in range(customers)
        ]
    )
    segment = Segment.objects.create(name="everyone", kind=Segment.Kind.STATIC)
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, customer=c, since=timezone.now()) for c in people]
    )
    channel = Channel.objects.create(
        name="mail",
        kind="email",
        backend="smtp",
        settings={**sink.channel_settings(from_email="news@example.com"), "timeout": 2},
        cost_per_message=Decimal("0.001"),
    )
    campaign = Campaign.objects.create(
        name="Flash sale", holdout_percent=0, channel_policy={"type": "fixed", "channel": channel.id}
    )
    campaign.audience.add(segment)
    Creative.objects.create(campaign=campaign, channel_kind="email", subject="Hi {{ first_name }}", body="x")
    run = campaign_launch(campaign.id)
    assert run.counts["queued"] == customers, run.counts
    return campaign


def all_emails(campaign) -> list[str]:
    return sorted(Message.objects.filter(campaign=campaign).values_list("customer__email", flat=True))


def status_counts(campaign) -> dict[str, int]:
    return dict(Message.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id")))


def open_messages(campaign) -> int:
    return Message.objects.filter(campaign=campaign, status__in=["queued", "sending"]).count()


@requires_celery_worker
@override_settings(SEND_BATCH_SIZE=int(WORKER_SETTINGS["SEND_BATCH_SIZE"]))  # what send_enqueue counts here
class SendWorkerTests(TransactionTestCase):
    def setUp(self):
        self.sink = SmtpSink(delay=0.0).start()
        self.addCleanup(self.sink.stop)
        with celery_app.connection_for_write() as conn:
            for name in ("send", "default"):
                conn.default_channel.queue_declare(queue=queue_name(name))
                conn.default_channel.queue_purge(queue_name(name))

    def worker(self, **kwargs) -> SendWorker:
        worker = SendWorker(**kwargs)
        self.addCleanup(worker.stop)
        return worker.start()

    def wait(self, condition, timeout: float, sweep_every: float | None = None, what: str = "", workers=()):
        deadline = time.monotonic() + timeout
        next_sweep = time.monotonic()
        while time.monotonic() < deadline:
            if condition():
                return
            if sweep_every is not None and time.monotonic() >= next_sweep:
                sweep()
                next_sweep = time.monotonic() + sweep_every
            time.sleep(0.05)
        logs = "\n".join(w.output() for w in workers)
        self.fail(f"not done within {timeout:.0f}s: {what}\n{logs}")

    def test_a_campaign_reaches_every_customer_exactly_once(self):
        worker = self.worker()
        campaign = launch_campaign(self.sink, 40)  # enqueues 4 tasks: batches of 10

        self.wait(lambda: open_messages(campaign) == 0, 60, what="all sent", workers=[worker])
        self.assertEqual(sorted(self.sink.recipients()), all_emails(campaign))
        self.assertEqual(status_counts(campaign), {"sent": 40})
        self.assertEqual(Touchpoint.objects.filter(kind="sent", campaign_id=campaign.id).count(), 40)
        # Sent by the worker process, from both of its slots.
        claimers = set(Message.objects.values_list("claimed_by", flat=True))
        self.assertEqual({c.split(":")[1] for c in claimers}, {str(worker.process.pid)})
        self.assertEqual(sweep()["completed"], 1)
        campaign.refresh_from_db()
        self.assertEqual(campaign.status, Campaign.Status.COMPLETED)

    def test_a_worker_killed_mid_campaign_leaves_no_duplicate_and_at_most_one_unknown_per_slot(self):
        self.sink.delay = 0.1  # the server holds each message 0.1 s before its 250: kills land mid-send
        first = self.worker()
        campaign = launch_campaign(self.sink, 60)
        self.wait(lambda: self.sink.count() >= 15, 60, what="15 messages at the sink", workers=[first])

        first.kill()

        at_kill = self.sink.count()
        self.assertLessEqual(Message.objects.filter(status="sending").count(), SLOTS)
        second = self.worker()
        # The sweeper (as beat would run it): settles expired leases, re-enqueues what is due.
        self.wait(lambda: open_messages(campaign) == 0, 90, 0.5, "the campaign finished", [first, second])

        received = self.sink.recipients()
        self.assertEqual(len(received), len(set(received)), "a customer got the message twice")
        by_status: dict[str, set[str]] = {}
        for email, status in Message.objects.filter(campaign=campaign).values_list("customer__email", "status"):
            by_status.setdefault(status, set()).add(email)
        self.assertEqual(set(by_status) - {"sent", "unknown"}, set())
        unknown = by_status.get("unknown", set())
        self.assertLessEqual(len(unknown), SLOTS)
        # Everyone was reached, or is a message in doubt; every `sent` one really arrived.
        self.assertEqual(set(received) | unknown, set(all_emails(campaign)))
        self.assertLessEqual(by_status["sent"], set(received))
        for message in Message.objects.filter(status="unknown"):
            self.assertIn("lease expired", message.error)
        self.assertEqual(Touchpoint.objects.filter(kind="sent").count(), len(by_status["sent"]))
        self.assertGreater(len(received), at_kill, "the restarted worker sent the rest")
        if os.environ.get("I4S_DEBUG"):
            print("kill:", at_kill, {k: len(v) for k, v in by_status.items()}, len(received))

    def test_a_redis_restart_mid_campaign_loses_the_queue_and_the_sweeper_completes_the_campaign(self):
        redis_server = RedisServer().start()
        self.addCleanup(redis_server.kill)
        env = {"REDIS_URL": redis_server.url}
        campaign = launch_campaign(self.sink, 80)
        self.sink.delay = 0.05
        every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.update_or_create(
            name="delivery-sweep", defaults={"task": "campaigns.tasks.delivery_sweep", "interval": every_second}
        )
        worker = self.worker(queues=("send", "default"), env=env)
        beat = SendWorker(env=env, command="beat")
        self.addCleanup(beat.stop)
        beat.start(ready="beat: Starting")

        self.wait(lambda: self.sink.count() >= 20, 60, what="20 messages at the sink", workers=[worker, beat])
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()  # empty: every queued task is gone
        at_restart = self.sink.count()

        self.wait(lambda: open_messages(campaign) == 0, 120, what="the campaign finished", workers=[worker, beat])
        received = self.sink.recipients()
        self.assertEqual(sorted(received), all_emails(campaign))
        self.assertEqual(len(received), len(set(received)))
        self.assertEqual(status_counts(campaign), {"sent": 80})
        self.assertLess(at_restart, 80, "Redis went down before the campaign was over")
