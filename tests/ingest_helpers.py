"""Shared pieces for the bulk ingest tests: row builders with sensible defaults, a full
snapshot of what the ingest services can write (to prove a refused batch wrote nothing),
and an assertion for the exact row errors of a refused batch."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from marketing.errors import BatchInvalid
from marketing.models import Customer, ErasedIdentity, Product, Touchpoint

# A fixed past instant, so no test depends on today's date.
WHEN = "2025-03-01T10:00:00Z"
WHEN_UTC = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)

ERASED_MESSAGE = "this customer was erased (GDPR) and cannot be re-created or receive touchpoints"


def touchpoint(event_id: str, customer: str = "c1", kind: str = "visit", occurred_at: str = WHEN, **fields) -> dict:
    return {"event_id": event_id, "customer_external_id": customer, "kind": kind, "occurred_at": occurred_at, **fields}


def purchase(event_id: str, customer: str = "c1", order_id: str = "o1", sku: str = "A-1", revenue="19.90", **fields):
    return touchpoint(event_id, customer, "purchase", order_id=order_id, sku=sku, revenue=revenue, **fields)


def tombstone(external_id: str) -> ErasedIdentity:
    """What a GDPR erase leaves behind: only the SHA-256 of the external id."""
    digest = hashlib.sha256(external_id.encode()).hexdigest()
    return ErasedIdentity.objects.create(external_id_sha256=digest)


def everything() -> dict[str, list[dict]]:
    """Every row the ingest services can write, with every column."""
    return {
        "customers": list(Customer.objects.order_by("id").values()),
        "touchpoints": list(Touchpoint.objects.order_by("id").values()),
        "products": list(Product.objects.order_by("id").values()),
    }


class IngestAssertions:
    """Mixed into TestCase."""

    def assertRowErrors(self, call: Callable[[], Any], expected: list[tuple[int | None, str | None, str]]):
        with self.assertRaises(BatchInvalid) as caught:
            call()
        got = [(error.row, error.field, error.message) for error in caught.exception.errors]
        self.assertEqual(got, expected)
        return caught.exception

    def assertRefusedAndNothingWritten(self, call: Callable[[], Any], expected: list[tuple]):
        """The batch is refused with exactly these row errors and no row anywhere changed."""
        before = everything()
        error = self.assertRowErrors(call, expected)
        self.assertEqual(everything(), before)
        return error


def run_concurrently(*calls: Callable[[], Any]) -> list[tuple[Any, BaseException | None]]:
    """Run each call in its own thread (so on its own database connection), released
    together by a barrier. Returns (result, exception) per call, in order."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(calls)

    def worker(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[index] = (call(), None)
        except BaseException as exc:  # reported to the test, not lost in the thread
            outcomes[index] = (None, exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes
