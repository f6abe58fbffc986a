"""A real Celery worker for integration tests: a subprocess that consumes the test queues
(prefixed, settings.CELERY_QUEUE_PREFIX) from the test Redis and writes to the test
database, so a test sees what a task really does in production.

Use it from a TransactionTestCase (the worker only sees committed rows):

    @requires_celery_worker
    class SendTests(TransactionTestCase):
        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            cls.worker = CeleryWorker(queues=["send"])
            cls.worker.start()
            cls.addClassCleanup(cls.worker.stop)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Sequence
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from marketing.celery import app as celery_app
from marketing.celery import queue_name


def celery_worker_skip_reason() -> str:
    """Why a real worker cannot run in this test run, or "" when it can."""
    if not settings.REDIS_URL:
        return (
            "no test Redis (TEST_REDIS_URL=none, or nothing answers on 127.0.0.1:6379): a real Celery worker needs one"
        )
    if connection.vendor != "postgresql":
        return "the test database is SQLite, which a worker process cannot share (use PostgreSQL)"
    return ""


requires_celery_worker = unittest.skipIf(bool(celery_worker_skip_reason()), celery_worker_skip_reason())


def current_database_url() -> str:
    """The URL of the database this test run uses (Django's test_* copy, or a parallel
    clone of it), for a process that is not the test runner."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = quote(db["HOST"] or "", safe="")  # a socket directory is percent-encoded
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


def worker_environment() -> dict[str, str]:
    """The production-mode environment of a worker that serves this test run only."""
    return {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
        "SECRET_KEY": "test-worker-secret-key",
        "ALLOWED_HOSTS": "localhost",
        "DEBUG": "false",
    }


class CeleryWorker:
    def __init__(self, queues: Sequence[str] = ("default",)) -> None:
        self.queues = [queue_name(name) for name in queues]
        self.nodename = f"test-{secrets.token_hex(4)}@localhost"
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())

    def start(self, timeout: float = 60.0) -> None:
        """Start the worker and wait until it answers a ping, so a test's own time limit
        measures the task, not the worker's start-up."""
        # Messages left by an earlier, interrupted run would otherwise run first.
        with celery_app.connection_for_write() as conn:
            for queue in self.queues:
                conn.default_channel.queue_purge(queue)
        command = [sys.executable, "-m", "celery", "-A", "marketing", "worker", "-Q", ",".join(self.queues)]
        command += ["-n", self.nodename, "--pool", "solo", "--without-mingle", "--without-gossip", "-l", "INFO"]
        self.process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=worker_environment(), stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The Celery worker exited with status {self.process.returncode}:\n{self.output()}")
            if celery_app.control.ping(destination=[self.nodename], timeout=0.5):
                return
        output = self.output()
        self.stop()
        raise RuntimeError(f"The Celery worker did not answer a ping within {timeout:.0f}s:\n{output}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # warm shutdown: finishes the task in hand
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def output(self, tail: int = 8000) -> str:
        """The end of what the worker printed, for failure messages."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-tail:]
