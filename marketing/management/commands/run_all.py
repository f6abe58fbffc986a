"""`make run`: prepare the database, then run web, Celery worker and beat together in the
foreground until Ctrl-C (or until one of them dies), and stop all three.

Embedded (no DATABASE_URL/REDIS_URL, DEBUG on): runserver, a one-process worker on the
filesystem broker, and beat. Production (DEBUG off): gunicorn (WEB_CONCURRENCY and
GUNICORN_CMD_ARGS tune it), a prefork worker and beat. Same commands either way; only the
environment differs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection, connections

# How long the three get to finish what they are doing (a worker finishes its task) after
# Ctrl-C before they are killed.
STOP_GRACE_SECONDS = 20.0


class Command(BaseCommand):
    help = "Migrate, seed demo data if empty, then run web, Celery worker and beat until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000", help="Web address (default 127.0.0.1:8000).")

    def handle(self, *args, bind: str, **options) -> None:
        self.prepare()
        commands = process_commands(bind, debug=settings.DEBUG, sqlite=connection.vendor == "sqlite")
        # The children open their own connections; ours would only hold SQLite locks.
        connections.close_all()
        sys.exit(self.supervise(commands, bind))

    def prepare(self) -> None:
        call_command("migrate", interactive=False)
        call_command("seed_demo", "--if-empty")
        if settings.DEBUG:
            call_command("ensure_admin")
        else:
            call_command("collectstatic", interactive=False, verbosity=0)

    def supervise(self, commands: dict[str, list[str]], bind: str) -> int:
        # Ctrl-C, and a process manager's SIGTERM, stop all three. Set explicitly: a shell
        # starts background jobs with SIGINT ignored, and the children would inherit that.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        processes: dict[str, subprocess.Popen] = {}
        try:
            for name, command in commands.items():
                # Each in its own process group, so stopping one reaches all its children
                # (runserver's reloader child, the worker's pool) and nothing is orphaned.
                processes[name] = subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)
                self.stdout.write(f"started {name} (pid {processes[name].pid}): {' '.join(command)}")
            self.stdout.write(
                self.style.SUCCESS(f"web on http://{bind}/, worker and beat running; Ctrl-C stops all three.")
            )
            while True:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with status {process.returncode}; stopping the others.")
                        return process.returncode or 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop(processes)

    def stop(self, processes: dict[str, subprocess.Popen]) -> None:
        self.stdout.write("stopping web, worker and beat (Ctrl-C again to kill them now)…")
        for process in processes.values():
            _signal_group(process, signal.SIGINT)  # what Ctrl-C in a terminal sends each of them
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            for name, process in processes.items():
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{name} did not stop within {STOP_GRACE_SECONDS:.0f}s; killing it.")
        except KeyboardInterrupt:
            pass
        for process in processes.values():
            _signal_group(process, signal.SIGKILL)  # whatever of a group is left (normally nothing)
            process.wait()
        self.stdout.write("stopped.")


def process_commands(bind: str, *, debug: bool, sqlite: bool) -> dict[str, list[str]]:
    """The command lines of web, worker and beat for this installation."""
    python = sys.executable
    if debug:
        web = [python, str(settings.BASE_DIR / "manage.py"), "runserver", bind]
    else:
        web = [python, "-m", "gunicorn", "marketing.wsgi:application", "--bind", bind, "--access-logfile", "-"]
    queues = ",".join(queue.name for queue in settings.CELERY_TASK_QUEUES)
    worker = [python, "-m", "celery", "-A", "marketing", "worker", "-Q", queues, "--loglevel", "INFO"]
    if sqlite:
        # SQLite has no SELECT … FOR UPDATE SKIP LOCKED: one worker process claims at a time.
        worker += ["--pool", "solo", "--concurrency", "1"]
    beat = [python, "-m", "celery", "-A", "marketing", "beat", "--loglevel", "INFO"]
    beat += ["--scheduler", settings.CELERY_BEAT_SCHEDULER]
    return {"web": web, "worker": worker, "beat": beat}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
