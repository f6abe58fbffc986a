"""Writing many rows at once into one table, the fastest way each backend has: COPY on
PostgreSQL, executemany in batches on SQLite. For derived data (memberships, model
outputs) that services write by the hundred thousand; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from django.db import connection

SQLITE_BATCH = 10_000


def copy_rows(cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """COPY `rows` into `table` through a raw psycopg cursor (PostgreSQL only)."""
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def insert_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Insert `rows` (tuples in `columns` order, Python values) into `table`."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            copy_rows(cursor.cursor, connection.ops.quote_name(table), columns, rows)
            return
        sql = (
            f"INSERT INTO {connection.ops.quote_name(table)} ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})"
        )
        iterator = iter(rows)
        while batch := list(islice(iterator, SQLITE_BATCH)):
            cursor.executemany(sql, batch)
