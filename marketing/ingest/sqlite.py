"""The SQLite fallback (embedded development setup): the same semantics as the PostgreSQL
writers, with the merge done in Python and executemany instead of COPY. SQLite serialises
writers anyway, so there are no concurrent batches to guard against."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection

from marketing.ingest.validate import CONSENT_CHANNELS, CUSTOMER_TEXT_KEYS, CustomerRow
from marketing.models import Customer

PLAIN_TEXT = CUSTOMER_TEXT_KEYS
CONSENTS = CONSENT_CHANNELS
SQLITE_MAX_PARAMS = 30_000


def _chunks(items: list, size: int = SQLITE_MAX_PARAMS):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing_ids(external_ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(external_ids):
        found.update(Customer.objects.filter(external_id__in=chunk).values_list("external_id", "id"))
    return found


def _db_time(text: str) -> str:
    """Django keeps SQLite datetimes as naive UTC text."""
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None).isoformat(" ")


def touchpoints_write(rows: list[tuple]) -> tuple[int, int]:
    external_ids = sorted({row[2] for row in rows})
    ids = _existing_ids(external_ids)
    missing = [external_id for external_id in external_ids if external_id not in ids]
    Customer.objects.bulk_create([Customer(external_id=external_id, is_stub=True) for external_id in missing])
    ids.update(_existing_ids(missing))
    with connection.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO marketing_touchpoint (
                customer_id, kind, channel, campaign_id, message_id, creative_id, occurred_at,
                revenue, currency, revenue_original, order_id, sku, event_id, properties)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING
            """,
            [(ids[r[2]], r[3], r[4], r[5], r[6], r[7], _db_time(r[8]), *r[9:14], r[1], r[14]) for r in rows],
        )
        inserted = cursor.rowcount
    return inserted, len(missing)


def _apply(customer: Customer, row: CustomerRow, *, source: str, now: datetime, new: bool) -> bool:
    """Apply one row's change to a customer in memory; True when anything changed."""
    before = {name: getattr(customer, name) for name in UPDATABLE}
    for name in PLAIN_TEXT:
        if name in row.values:
            setattr(customer, name, row.values[name])
    if row.attributes_clear:
        customer.attributes = dict(row.attributes_set or {})
    elif row.attributes_set is not None or row.attributes_remove:
        merged = {**customer.attributes, **(row.attributes_set or {})}
        for key in row.attributes_remove:
            merged.pop(key, None)
        customer.attributes = merged
    for channel in CONSENTS:
        key = f"{channel}_opt_in"
        if key in row.values and (new or row.values[key] != getattr(customer, key)):
            setattr(customer, key, row.values[key])
            setattr(customer, f"{key}_at", now)
            setattr(customer, f"{key}_source", source)
    if "unsubscribed" in row.values:
        if row.values["unsubscribed"]:
            customer.unsubscribed_at = customer.unsubscribed_at or now
        else:
            customer.unsubscribed_at = None
    changed = customer.is_stub or any(getattr(customer, name) != value for name, value in before.items())
    customer.is_stub = False
    if changed:
        customer.updated_at = now
    return changed


UPDATABLE = (
    *PLAIN_TEXT,
    "attributes",
    *(f"{c}_opt_in{suffix}" for c in CONSENTS for suffix in ("", "_at", "_source")),
    "unsubscribed_at",
)


def customers_write(rows: list[CustomerRow], *, source: str, now: datetime) -> tuple[int, int]:
    source = source[:64]
    existing: dict[str, Customer] = {}
    for chunk in _chunks([row.external_id for row in rows]):
        existing.update((c.external_id, c) for c in Customer.objects.filter(external_id__in=chunk))
    to_create: list[Customer] = []
    to_update: list[Customer] = []
    for row in rows:
        customer = existing.get(row.external_id)
        if customer is None:
            customer = Customer(external_id=row.external_id, created_at=now)
            _apply(customer, row, source=source, now=now, new=True)
            customer.updated_at = now
            to_create.append(customer)
        elif _apply(customer, row, source=source, now=now, new=False):
            to_update.append(customer)
    Customer.objects.bulk_create(to_create, batch_size=500)
    Customer.objects.bulk_update(to_update, [*UPDATABLE, "is_stub", "updated_at"], batch_size=500)
    return len(to_create), len(rows) - len(to_create)
