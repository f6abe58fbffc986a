"""The bulk ingest services: validate the whole batch, then write it atomically."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from marketing.errors import BatchInvalid, RowError
from marketing.ingest import postgres, sqlite
from marketing.ingest.validate import (
    CustomerRow,
    check_batch_size,
    validate_customers,
    validate_products,
    validate_touchpoints,
)
from marketing.models import ErasedIdentity, Product

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEADLOCK_RETRIES = 3


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    customers_created: int


def external_id_sha256(external_id: str) -> str:
    return hashlib.sha256(external_id.encode()).hexdigest()


def _refuse_erased(pairs: list[tuple[int, str]], field: str) -> None:
    """Raise BatchInvalid for rows naming an erased customer (GDPR tombstone)."""
    if not pairs or not ErasedIdentity.objects.exists():
        return
    hashes = {external_id_sha256(external_id): external_id for _, external_id in pairs}
    erased = set(
        ErasedIdentity.objects.filter(external_id_sha256__in=list(hashes)).values_list("external_id_sha256", flat=True)
    )
    if erased:
        erased_ids = {hashes[h] for h in erased}
        message = "this customer was erased (GDPR) and cannot be re-created or receive touchpoints"
        errors = [RowError(row=row, field=field, message=message) for row, eid in pairs if eid in erased_ids]
        raise BatchInvalid(errors)


def _atomic_with_retry(write: Callable[[], T]) -> T:
    """Run a write in one transaction; retry when PostgreSQL breaks a deadlock between two
    concurrent batches (the whole batch is rolled back, so a retry is safe). The writers
    use the raw psycopg cursor for COPY, so its errors arrive unwrapped too."""
    for attempt in range(1, DEADLOCK_RETRIES + 1):
        try:
            with transaction.atomic():
                return write()
        except (OperationalError, psycopg.OperationalError) as exc:
            sqlstate = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
            if sqlstate not in ("40P01", "40001") or attempt == DEADLOCK_RETRIES:
                raise
            logger.warning("bulk write hit %s, retrying (attempt %d)", sqlstate, attempt)
            # Let the other batch finish before trying again, or both collide once more.
            time.sleep(random.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable")


def _writer():
    return postgres if connection.vendor == "postgresql" else sqlite


def customers_validate(rows: list[Any]) -> tuple[list[CustomerRow], list[RowError]]:
    """Validate without writing (the admin's CSV preview): the merged rows, or the errors."""
    try:
        return _validated_customers(rows), []
    except BatchInvalid as exc:
        return [], exc.errors


def _validated_customers(rows: list[Any]) -> list[CustomerRow]:
    check_batch_size(rows, "customers")
    clean = validate_customers(rows)
    _refuse_erased([(row.row, row.external_id) for row in clean], "external_id")
    return clean


def customers_bulk_upsert(rows: list[Any], *, source: str = "api") -> UpsertResult:
    """Upsert customers by external_id: omitted keys unchanged, null clears, attributes
    shallow-merge (a key set to null is removed). Rows for the same external_id in one
    batch are merged in order and counted once. Consent changes record time and source."""
    clean = _validated_customers(rows)
    if not clean:
        return UpsertResult(created=0, updated=0)
    now = timezone.now()
    writer = _writer()
    created, updated = _atomic_with_retry(lambda: writer.customers_write(clean, source=source, now=now))
    return UpsertResult(created=created, updated=updated)


def touchpoints_bulk_insert(rows: list[Any], *, source: str = "api") -> InsertResult:
    """Append touchpoints, deduplicated by event_id (and by order line for purchases).
    An unknown customer_external_id creates a stub customer without consent."""
    check_batch_size(rows, "touchpoints")
    clean = validate_touchpoints(rows)
    if not clean:
        return InsertResult(inserted=0, duplicates=0, customers_created=0)
    _refuse_erased([(row[0], row[2]) for row in clean], "customer_external_id")
    writer = _writer()
    inserted, customers_created = _atomic_with_retry(lambda: writer.touchpoints_write(clean))
    return InsertResult(inserted=inserted, duplicates=len(clean) - inserted, customers_created=customers_created)


def products_bulk_upsert(rows: list[Any]) -> UpsertResult:
    """Upsert products by sku: omitted keys unchanged. A new product needs a name."""
    check_batch_size(rows, "products")
    clean = validate_products(rows)
    if not clean:
        return UpsertResult(created=0, updated=0)

    def write() -> UpsertResult:
        skus = [row.sku for row in clean]
        existing = set(Product.objects.filter(sku__in=skus).values_list("sku", flat=True))
        errors = [
            RowError(row=row.row, field="name", message="is required for a new product")
            for row in clean
            if row.sku not in existing and "name" not in row.values
        ]
        if errors:
            raise BatchInvalid(errors)
        now = timezone.now()
        # One upsert per set of keys sent, so omitted keys stay as they are.
        groups: dict[tuple[str, ...], list[Product]] = {}
        for row in clean:
            product = Product(sku=row.sku, updated_at=now, created_at=now, **row.values)
            groups.setdefault(tuple(sorted(row.values)), []).append(product)
        for keys, products in groups.items():
            Product.objects.bulk_create(
                products,
                update_conflicts=True,
                unique_fields=["sku"],
                update_fields=[*keys, "updated_at"],
                batch_size=1000,
            )
        created = sum(1 for row in clean if row.sku not in existing)
        return UpsertResult(created=created, updated=len(clean) - created)

    return _atomic_with_retry(write)
