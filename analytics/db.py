"""Session settings for report queries: aggregates over millions of touchpoints that run
once, where PostgreSQL's defaults are tuned for short OLTP statements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

# A report's sort of a million exposures fits in memory at this size (64 MB spilled it to
# disk); it holds for the statement's transaction only.
REPORT_WORK_MEM = "256MB"


@contextmanager
def report_session(statement_timeout_ms: int | None = None, *, hash_joins: bool = False) -> Iterator[None]:
    """A transaction whose statements run with report settings (PostgreSQL; nothing on
    SQLite): no JIT (compiling a report's plan took seconds under load, longer than
    running it), more work_mem, and an optional statement timeout. SET LOCAL, so the
    settings end with the transaction and never leak into a pooled connection.

    `hash_joins`: no nested loops, for queries whose joins are all bulk and bounded by
    time (ROI, attribution). Their CTEs' row counts are guesses to the planner: after a
    bulk import (before autovacuum's ANALYZE) it guessed a handful of exposures and
    nested a scan of the touchpoints inside, minutes for 20k customers; a hash join
    costs the same whatever the guess."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
                cursor.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
                if hash_joins:
                    cursor.execute("SET LOCAL enable_nestloop = off")
                if statement_timeout_ms is not None:
                    cursor.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        yield
