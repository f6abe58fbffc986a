"""Session settings for report queries: aggregates over millions of touchpoints that run
once, where PostgreSQL's defaults are tuned for short OLTP statements; and `run_parts`,
which runs a report's independent queries at once on several connections that share one
snapshot."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import pairwise
from typing import TypeVar

from django.conf import settings
from django.db import connection, transaction

# A report's sort of a million exposures fits in memory at this size (64 MB spilled it to
# disk); it holds for the statement's transaction only.
REPORT_WORK_MEM = "256MB"

# The statement timeout of the report being computed (report_timeout): applied by every
# report session, on whichever connection, that is not given one explicitly.
_timeout_ms: ContextVar[int | None] = ContextVar("report_timeout_ms", default=None)

T = TypeVar("T")


@contextmanager
def report_timeout(statement_timeout_ms: int | None) -> Iterator[None]:
    """Report sessions opened inside (on any connection, parts run by `run_parts`
    included) run their statements with this timeout. Unlike a report_session around
    the computation, it opens no transaction, so the computation may still spread its
    parts over several connections."""
    token = _timeout_ms.set(statement_timeout_ms)
    try:
        yield
    finally:
        _timeout_ms.reset(token)


def _apply_settings(cursor, statement_timeout_ms: int | None, hash_joins: bool, parallel_workers: bool) -> None:
    cursor.execute("SET LOCAL jit = off")
    cursor.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
    if hash_joins:
        cursor.execute("SET LOCAL enable_nestloop = off")
    if not parallel_workers:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    if statement_timeout_ms is not None:
        cursor.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")


@contextmanager
def report_session(statement_timeout_ms: int | None = None, *, hash_joins: bool = False) -> Iterator[None]:
    """A transaction whose statements run with report settings (PostgreSQL; nothing on
    SQLite): no JIT (compiling a report's plan took seconds under load, longer than
    running it), more work_mem, and a statement timeout (the argument, else the
    enclosing report_timeout's, else none). SET LOCAL, so the settings end with the
    transaction and never leak into a pooled connection.

    `hash_joins`: no nested loops, for queries whose joins are all bulk and bounded by
    time (ROI, attribution). Their CTEs' row counts are guesses to the planner: after a
    bulk import (before autovacuum's ANALYZE) it guessed a handful of exposures and
    nested a scan of the touchpoints inside, minutes for 20k customers; a hash join
    costs the same whatever the guess."""
    if statement_timeout_ms is None:
        statement_timeout_ms = _timeout_ms.get()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                _apply_settings(cursor, statement_timeout_ms, hash_joins, parallel_workers=True)
        yield


def parallel_connections() -> int:
    """How many connections `run_parts` would use here and now: REPORT_PARALLELISM on
    PostgreSQL outside a transaction, else 1. Inside a transaction the other connections
    would not see what it wrote (a test's data, say), so its parts run in it."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return 1
    return max(1, int(settings.REPORT_PARALLELISM))


# Customer ranges per connection: more parts than connections, so that a range holding
# more of a report's customers than the others does not hold the report back alone.
RANGES_PER_CONNECTION = 2


def customer_ranges(id_bounds: Callable[[], tuple[int | None, int | None]]) -> list[tuple[int, int] | None]:
    """The customer id ranges [low, high) a report is split into for run_parts, of (nearly)
    equal width and none empty, RANGES_PER_CONNECTION per connection; `id_bounds` gives
    the lowest and highest id of the report's customers (None, None: none). [None] (one
    part, every customer) on one connection, where ranges only cost (on SQLite a
    range-restricted ROI took 36 s instead of 0.1 s), and when there are no customers."""
    connections = parallel_connections()
    if connections < 2:
        return [None]
    low, high = id_bounds()
    if low is None:
        return [None]
    parts = RANGES_PER_CONNECTION * connections
    edges = sorted({low + (high + 1 - low) * i // parts for i in range(parts)} | {high + 1})
    return list(pairwise(edges))


_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


def run_parts(parts: list[Callable[[], T]], *, hash_joins: bool = False) -> list[T]:
    """Each part's result, in order. A part runs its queries on `django.db.connection`
    and only reads.

    With parallel_connections() > 1 the parts run at once on that many connections (this
    thread's and worker threads' own), each in a REPEATABLE READ transaction importing the
    snapshot this thread's transaction exported (pg_export_snapshot, as pg_dump -j does):
    every part sees the same data, as if the parts were one statement. Each runs with the
    report settings and no parallel workers of PostgreSQL's own (the parts are the
    parallelism). A part's error is raised here once every part has stopped. Otherwise
    the parts run one after another in one report session."""
    workers = min(parallel_connections(), len(parts))
    if workers < 2:
        with report_session(hash_joins=hash_joins):
            return [part() for part in parts]
    timeout = _timeout_ms.get()
    results: list = [None] * len(parts)
    pending = list(enumerate(parts))
    lock = threading.Lock()

    def drain() -> None:
        # Parts are taken from one queue, so a slow part does not hold others back; after
        # an error no further part starts.
        while True:
            with lock:
                if not pending:
                    return
                index, part = pending.pop(0)
            try:
                results[index] = part()
            except BaseException:
                with lock:
                    pending.clear()
                raise

    def worker(snapshot: str) -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                _apply_settings(cursor, timeout, hash_joins, parallel_workers=False)
                drain()
        finally:
            connection.close()

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
            if not _SNAPSHOT_ID.match(snapshot):
                raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
            _apply_settings(cursor, timeout, hash_joins, parallel_workers=False)
        # The pool is left (every worker done) before this transaction ends: the workers
        # import its snapshot, which lives only as long as it does.
        with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="report-part") as pool:
            futures = [pool.submit(worker, snapshot) for _ in range(workers - 1)]
            try:
                drain()
            finally:
                errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error
    return results
