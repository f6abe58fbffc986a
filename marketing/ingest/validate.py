"""Whole-batch validation for bulk ingest.

One tight loop per batch with plain checks, no serializer per row: at 10,000 rows a batch
the validation budget is a few microseconds a row. Every problem is collected (up to
MAX_REPORTED_ERRORS) so an integration can fix a file in one round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from typing import Any
from zoneinfo import available_timezones

import orjson
from django.conf import settings

from marketing.errors import BatchInvalid, BatchTooLarge, RowError
from marketing.models import E164_RE

MAX_REPORTED_ERRORS = 1000
ERASED_PREFIX = "erased:"  # external ids of erased customers; refused from integrations

E164 = re.compile(E164_RE)
PHONE_NOISE = re.compile(r"[\s().-]")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
KIND = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
COUNTRY = re.compile(r"^[A-Za-z]{2}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MONEY_MAX = Decimal("9999999999.9999")  # NUMERIC(14, 4)
FOUR_PLACES = Decimal("0.0001")
FUTURE_TOLERANCE = timedelta(days=1)
# No age limit for imported history, but a year-1 date is a bug, not a customer event.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
PLAIN_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _row_has_nul(row: dict) -> bool:
    """PostgreSQL text and jsonb cannot store NUL. The serialised row is a cheap filter
    (orjson writes NUL as \\u0000); the walk then tells a NUL from an escaped "\\u0000"."""
    try:
        if b"\\u0000" not in orjson.dumps(row):
            return False
    except TypeError:  # not JSON-serialisable (a caller outside the API); walk it
        pass
    return _has_nul(row)


def _has_nul(value: Any) -> bool:
    """PostgreSQL text and jsonb cannot store NUL; find one anywhere in a value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class Errors:
    """Collects row errors, keeping the first MAX_REPORTED_ERRORS and a total count."""

    def __init__(self) -> None:
        self.items: list[RowError] = []
        self.total = 0

    def add(self, row: int | None, field_name: str | None, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append(RowError(row=row, field=field_name, message=message))

    def raise_if_any(self) -> None:
        if self.total:
            raise BatchInvalid(self.items, self.total)


def check_batch_size(rows: Any, noun: str) -> list:
    if not isinstance(rows, list):
        raise BatchInvalid([RowError(row=None, field=noun, message=f"'{noun}' must be a list of objects.")])
    if len(rows) > settings.BULK_MAX_ROWS:
        raise BatchTooLarge(
            f"{len(rows)} {noun} in one batch; the limit is {settings.BULK_MAX_ROWS} rows. Split the batch."
        )
    return rows


def _identifier(value: Any, max_length: int) -> str | None:
    """An id from an integration: a non-empty string, or an integer (stored as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        return None
    return value


def _text(value: Any, max_length: int) -> str | None:
    """Optional text: null clears (empty string)."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        return None
    return value.strip()


def _optional_id(value: Any) -> int | bool | None:
    """A positive integer id or null; False when invalid."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 2**63 - 1:
        return False
    return value


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    # NUMERIC(…, 4) on both databases: round half-up here so they store the same value.
    amount = amount.quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)
    return amount if amount <= MONEY_MAX else None


def parse_timestamp(value: Any) -> datetime | str:
    """An aware datetime, or the reason it is not one."""
    if not isinstance(value, str):
        return "must be an ISO 8601 string with a timezone, e.g. 2026-11-01T10:00:00Z"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "is not an ISO 8601 timestamp, e.g. 2026-11-01T10:00:00Z"
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return "needs a timezone (e.g. a trailing Z or +02:00)"
    return parsed


# --- customers --------------------------------------------------------------------------

CUSTOMER_TEXT_FIELDS = {
    "first_name": 150,
    "last_name": 150,
}
# The customer fields of the bulk API, in one place for the writers, the CSV columns and
# the API's PUT: plain text fields (null clears to ""), consents, then the rest.
CUSTOMER_TEXT_KEYS = ("email", "phone", "first_name", "last_name", "country", "timezone", "locale")
CONSENT_CHANNELS = ("email", "sms", "push")
CONSENT_FIELDS = tuple(f"{channel}_opt_in" for channel in CONSENT_CHANNELS)
CUSTOMER_FIELDS = frozenset({"external_id", *CUSTOMER_TEXT_KEYS, *CONSENT_FIELDS, "unsubscribed", "attributes"})


@dataclass
class CustomerRow:
    """One customer's change: only the keys the integration sent (`values`), normalised.
    `attributes_set` / `attributes_remove` split an attributes patch: keys set to null are
    removed, the rest shallow-merged; `attributes_clear` means attributes: null."""

    row: int
    external_id: str
    values: dict[str, Any] = field(default_factory=dict)
    attributes_set: dict[str, Any] | None = None
    attributes_remove: list[str] = field(default_factory=list)
    attributes_clear: bool = False

    def merge(self, later: CustomerRow) -> None:
        """Apply a later row for the same customer in the same batch."""
        self.values.update(later.values)
        if later.attributes_clear:
            self.attributes_clear = True
            self.attributes_set, self.attributes_remove = None, []
        if later.attributes_set is not None or later.attributes_remove:
            merged = dict(self.attributes_set or {})
            for key in later.attributes_remove:
                merged.pop(key, None)
            merged.update(later.attributes_set or {})
            removed = [k for k in self.attributes_remove if k not in merged] + later.attributes_remove
            self.attributes_set = merged
            self.attributes_remove = sorted(set(removed) - merged.keys())


def validate_customers(rows: list[Any]) -> list[CustomerRow]:
    """Validate a customer batch; rows for the same external id are merged in order."""
    errors = Errors()
    by_id: dict[str, CustomerRow] = {}
    timezones = _timezones()
    for index, raw in enumerate(rows):
        if not isinstance(raw, dict):
            errors.add(index, None, "must be an object")
            continue
        unknown = raw.keys() - CUSTOMER_FIELDS
        for key in sorted(unknown):
            errors.add(index, key, "unknown field")
        external_id = _identifier(raw.get("external_id"), 255)
        if external_id is None:
            errors.add(index, "external_id", "is required: a non-empty string of at most 255 characters")
            continue
        if external_id.startswith(ERASED_PREFIX):
            errors.add(index, "external_id", f"ids starting with '{ERASED_PREFIX}' are reserved for erased customers")
            continue
        row = CustomerRow(row=index, external_id=external_id)
        values = row.values
        for key, value in raw.items():
            if key == "external_id" or key in unknown:
                continue
            if key == "email":
                if value is None or value == "":
                    values["email"] = ""
                elif isinstance(value, str) and len(value) <= 254 and EMAIL.match(value.strip()):
                    values["email"] = value.strip().lower()
                else:
                    errors.add(index, key, "is not a valid email address")
            elif key == "phone":
                if value is None or value == "":
                    values["phone"] = ""
                elif isinstance(value, str) and E164.match(PHONE_NOISE.sub("", value)):
                    values["phone"] = PHONE_NOISE.sub("", value)
                else:
                    errors.add(index, key, "must be an E.164 number, e.g. +14155550123")
            elif key in CUSTOMER_TEXT_FIELDS:
                text = _text(value, CUSTOMER_TEXT_FIELDS[key])
                if text is None:
                    errors.add(index, key, f"must be a string of at most {CUSTOMER_TEXT_FIELDS[key]} characters")
                else:
                    values[key] = text
            elif key == "country":
                if value is None or value == "":
                    values["country"] = ""
                elif isinstance(value, str) and COUNTRY.match(value):
                    values["country"] = value.upper()
                else:
                    errors.add(index, key, "must be an ISO 3166-1 alpha-2 code, e.g. DE")
            elif key == "timezone":
                if value is None or value == "":
                    values["timezone"] = ""
                elif isinstance(value, str) and value in timezones:
                    values["timezone"] = value
                else:
                    errors.add(index, key, "must be an IANA timezone name, e.g. Europe/Berlin")
            elif key == "locale":
                if value is None or value == "":
                    values["locale"] = ""
                elif isinstance(value, str) and len(value) <= 16 and LOCALE.match(value):
                    values["locale"] = value
                else:
                    errors.add(index, key, "must be a locale like en, en-US or pt_BR")
            elif key in CONSENT_FIELDS or key == "unsubscribed":
                if value is None:
                    values[key] = False
                elif isinstance(value, bool):
                    values[key] = value
                else:
                    errors.add(index, key, "must be true, false or null")
            elif key == "attributes":
                if value is None:
                    row.attributes_clear = True
                elif isinstance(value, dict):
                    row.attributes_set = {k: v for k, v in value.items() if v is not None}
                    row.attributes_remove = sorted(k for k, v in value.items() if v is None)
                else:
                    errors.add(index, key, "must be an object or null")
        if _row_has_nul(raw):
            errors.add(index, None, "text must not contain NUL (\\u0000) characters")
        earlier = by_id.get(external_id)
        if earlier is None:
            by_id[external_id] = row
        else:
            earlier.merge(row)
    errors.raise_if_any()
    return list(by_id.values())


# --- touchpoints ------------------------------------------------------------------------

TOUCHPOINT_FIELDS = frozenset(
    {
        "event_id",
        "customer_external_id",
        "kind",
        "channel",
        "occurred_at",
        "revenue",
        "currency",
        "campaign_id",
        "message_id",
        "creative_id",
        "order_id",
        "sku",
        "properties",
    }
)
ID_FIELDS = ("campaign_id", "message_id", "creative_id")
# The staging table's columns, in the order validate_touchpoints emits them.
TOUCHPOINT_COLUMNS = (
    "row_no",
    "event_id",
    "customer_external_id",
    "kind",
    "channel",
    "campaign_id",
    "message_id",
    "creative_id",
    "occurred_at",
    "revenue",
    "currency",
    "revenue_original",
    "order_id",
    "sku",
    "properties",
)


def validate_touchpoints(rows: list[Any]) -> list[tuple]:
    """Validate a touchpoint batch; returns staging tuples in TOUCHPOINT_COLUMNS order.
    Money is converted to the reporting currency here and passed on as text; so is
    occurred_at, in an ISO form with an offset that both databases' writers accept."""
    errors = Errors()
    out: list[tuple] = []
    reporting = settings.REPORTING_CURRENCY
    rates = settings.CURRENCY_RATES
    latest_allowed = datetime.now(UTC) + FUTURE_TOLERANCE
    dumps = orjson.dumps
    fields = TOUCHPOINT_FIELDS
    kind_match = KIND.match
    plain_timestamp = PLAIN_TIMESTAMP.match
    for index, raw in enumerate(rows):
        if not isinstance(raw, dict):
            errors.add(index, None, "must be an object")
            continue
        failed = errors.total
        if not raw.keys() <= fields:
            for key in sorted(raw.keys() - fields):
                errors.add(index, key, "unknown field")

        # The common, valid case takes the first branch of each check without a call.
        event_id = raw.get("event_id")
        if type(event_id) is not str or not 0 < len(event_id) <= 255 or event_id.isspace():
            event_id = _identifier(event_id, 255)
            if event_id is None:
                errors.add(index, "event_id", "is required: a non-empty string of at most 255 characters")
        external_id = raw.get("customer_external_id")
        if type(external_id) is not str or not 0 < len(external_id) <= 255 or external_id.isspace():
            external_id = _identifier(external_id, 255)
        if external_id is None:
            errors.add(index, "customer_external_id", "is required: a non-empty string of at most 255 characters")
        elif external_id.startswith(ERASED_PREFIX):
            errors.add(index, "customer_external_id", f"ids starting with '{ERASED_PREFIX}' are reserved")
        kind = raw.get("kind")
        if type(kind) is not str or not kind_match(kind):
            errors.add(index, "kind", "is required: a lower-case slug like purchase or trial_started")
            kind = ""
        channel = raw.get("channel")
        if channel is None:
            channel = ""
        elif type(channel) is not str or len(channel) > 32:
            errors.add(index, "channel", "must be a string of at most 32 characters")

        occurred_at = raw.get("occurred_at")
        occurred = parse_timestamp(occurred_at)
        if occurred_at is None and "occurred_at" not in raw:
            errors.add(index, "occurred_at", "is required: an ISO 8601 timestamp with a timezone")
        elif type(occurred) is str:
            errors.add(index, "occurred_at", occurred)
        elif occurred > latest_allowed:
            errors.add(index, "occurred_at", "is more than a day in the future")
        elif occurred < EARLIEST:
            errors.add(index, "occurred_at", "is before 1900-01-01; check the date")
        elif not plain_timestamp(occurred_at):
            # PostgreSQL parses the plain form itself (cheaper than formatting a datetime
            # in Python); anything else ISO 8601 allows is normalised first.
            occurred_at = occurred.isoformat()

        ids = [None, None, None]
        for position, key in enumerate(ID_FIELDS):
            value = raw.get(key)
            if value is not None:
                value = _optional_id(value)
                if value is False:
                    errors.add(index, key, "must be a positive integer or null")
                ids[position] = value

        revenue = revenue_original = None
        currency = ""
        raw_revenue = raw.get("revenue")
        raw_currency = raw.get("currency")
        if raw_currency is not None and (not isinstance(raw_currency, str) or not CURRENCY.match(raw_currency)):
            errors.add(index, "currency", "must be an upper-case ISO 4217 code, e.g. USD")
        elif raw_revenue is not None:
            revenue_original = _money(raw_revenue)
            if revenue_original is None:
                errors.add(index, "revenue", 'must be a non-negative decimal below 10^10, e.g. "19.90"')
            else:
                currency = raw_currency or reporting
                if currency == reporting:
                    revenue = revenue_original
                elif currency in rates:
                    revenue = (revenue_original * rates[currency]).quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)
                    if revenue > MONEY_MAX:
                        errors.add(index, "revenue", f"is too large once converted to {reporting}")
                else:
                    errors.add(
                        index,
                        "currency",
                        f"{currency} has no configured rate to {reporting} (CURRENCY_RATES); "
                        f"send revenue in {reporting} or configure a rate",
                    )
        elif raw_currency is not None:
            currency = raw_currency

        order_id = raw.get("order_id")
        order_id = "" if order_id is None or order_id == "" else _identifier(order_id, 64)
        if order_id is None:
            errors.add(index, "order_id", "must be a string of at most 64 characters")
        sku = raw.get("sku")
        sku = "" if sku is None or sku == "" else _identifier(sku, 64)
        if sku is None:
            errors.add(index, "sku", "must be a string of at most 64 characters")
        if kind in ("purchase", "refund") and not order_id:
            errors.add(index, "order_id", f"is required for {kind} touchpoints")
        if kind == "purchase":
            if not sku:
                errors.add(index, "sku", "is required for purchase touchpoints (one touchpoint per order line)")
            if raw_revenue is None:
                errors.add(index, "revenue", "is required for purchase touchpoints")

        properties = raw.get("properties")
        if properties is None:
            properties_json = b"{}"
        elif isinstance(properties, dict):
            properties_json = dumps(properties)
        else:
            errors.add(index, "properties", "must be an object or null")

        if errors.total == failed and (
            # the byte test is a cheap filter; _has_nul tells a NUL from an escaped "\\u0000"
            (b"\\u0000" in properties_json and _has_nul(properties))
            or "\x00" in event_id
            or "\x00" in external_id
            or "\x00" in channel
            or "\x00" in order_id
            or "\x00" in sku
        ):
            errors.add(index, None, "text must not contain NUL (\\u0000) characters")
        if errors.total == failed:
            out.append(
                (
                    index,
                    event_id,
                    external_id,
                    kind,
                    channel,
                    ids[0],
                    ids[1],
                    ids[2],
                    occurred_at,
                    None if revenue is None else str(revenue),
                    currency,
                    None if revenue_original is None else str(revenue_original),
                    order_id,
                    sku,
                    properties_json.decode(),
                )
            )
    errors.raise_if_any()
    return out


# --- products ---------------------------------------------------------------------------

PRODUCT_FIELDS = frozenset({"sku", "name", "category", "price", "attributes", "active"})


@dataclass
class ProductRow:
    row: int
    sku: str
    values: dict[str, Any] = field(default_factory=dict)


def validate_products(rows: list[Any]) -> list[ProductRow]:
    errors = Errors()
    by_sku: dict[str, ProductRow] = {}
    for index, raw in enumerate(rows):
        if not isinstance(raw, dict):
            errors.add(index, None, "must be an object")
            continue
        unknown = raw.keys() - PRODUCT_FIELDS
        for key in sorted(unknown):
            errors.add(index, key, "unknown field")
        sku = _identifier(raw.get("sku"), 64)
        if sku is None:
            errors.add(index, "sku", "is required: a non-empty string of at most 64 characters")
            continue
        row = ProductRow(row=index, sku=sku)
        for key, value in raw.items():
            if key == "sku" or key in unknown:
                continue
            if key == "name":
                if not isinstance(value, str) or not value.strip() or len(value) > 255:
                    errors.add(index, key, "must be a non-empty string of at most 255 characters")
                else:
                    row.values["name"] = value.strip()
            elif key == "category":
                text = _text(value, 128)
                if text is None:
                    errors.add(index, key, "must be a string of at most 128 characters")
                else:
                    row.values["category"] = text
            elif key == "price":
                if value is None:
                    row.values["price"] = None
                else:
                    price = _money(value)
                    if price is None or price > Decimal("99999999.9999"):
                        errors.add(index, key, 'must be a non-negative decimal, e.g. "19.90"')
                    else:
                        row.values["price"] = price
            elif key == "attributes":
                if value is None:
                    row.values["attributes"] = {}
                elif isinstance(value, dict):
                    row.values["attributes"] = value
                else:
                    errors.add(index, key, "must be an object or null")
            elif key == "active":
                if not isinstance(value, bool):
                    errors.add(index, key, "must be true or false")
                else:
                    row.values["active"] = value
        if _row_has_nul(raw):
            errors.add(index, None, "text must not contain NUL (\\u0000) characters")
        earlier = by_sku.get(sku)
        if earlier is None:
            by_sku[sku] = row
        else:
            earlier.values.update(row.values)
    errors.raise_if_any()
    return list(by_sku.values())
