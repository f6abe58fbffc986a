"""Writes and business rules of the marketing layer that are not bulk ingest: integration
API keys, and GDPR erase and export of a customer."""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from marketing import registries
from marketing.auth import hash_key
from marketing.errors import Conflict, DomainError, NotFound

# The tombstone hash ingest checks against: one definition, or erased ids would come back.
from marketing.ingest.service import external_id_sha256
from marketing.models import ApiKey, Customer, ErasedIdentity, Touchpoint

API_KEY_PREFIX = "mk_"
API_KEY_SHOWN_PREFIX = 10  # "mk_" and 7 random characters: enough to recognise, useless to guess
ERASED_EXTERNAL_ID = "erased:{id}"


# --- API keys ---------------------------------------------------------------------------


def api_key_create(name: str, rate_limit_per_minute: int | None = None) -> tuple[ApiKey, str]:
    """Create an integration key. Returns the row and the raw key; the raw key is stored
    nowhere (only its SHA-256), so the caller must show it now or never."""
    name = (name or "").strip()
    if not name or len(name) > ApiKey._meta.get_field("name").max_length:
        raise DomainError("An API key needs a name of 1 to 100 characters (the integration it is for).")
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise DomainError("The rate limit must be a positive number of requests per minute.")
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            api_key = ApiKey.objects.create(
                name=name,
                prefix=raw_key[:API_KEY_SHOWN_PREFIX],
                key_sha256=hash_key(raw_key),
                rate_limit_per_minute=rate_limit_per_minute,
            )
    except IntegrityError:
        raise Conflict(f"An API key named {name!r} already exists; pick another name or revoke it first.") from None
    return api_key, raw_key


def api_key_revoke(name_or_key: str) -> ApiKey:
    """Revoke a key found by its name or by the raw key itself. Revoking twice keeps the
    first revocation time."""
    api_key = (
        ApiKey.objects.filter(name=name_or_key).first()
        or ApiKey.objects.filter(key_sha256=hash_key(name_or_key)).first()
    )
    if api_key is None:
        raise NotFound("No API key has that name or value.")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=api_key.revoked_at)
    return api_key


# --- GDPR erase and export ---------------------------------------------------------------


# Everything that identifies or describes the person, reset to its empty value. The
# touchpoints stay (kind, time, money, campaign ids) so aggregates and lift do not change.
_ANONYMOUS_PROFILE = {
    "email": "",
    "phone": "",
    "first_name": "",
    "last_name": "",
    "country": "",
    "timezone": "",
    "locale": "",
    "attributes": {},
    "email_opt_in": False,
    "email_opt_in_at": None,
    "email_opt_in_source": "",
    "sms_opt_in": False,
    "sms_opt_in_at": None,
    "sms_opt_in_source": "",
    "push_opt_in": False,
    "push_opt_in_at": None,
    "push_opt_in_source": "",
}


def customer_erase(customer: Customer) -> bool:
    """GDPR erase: anonymise the customer in place, scrub their touchpoints' properties,
    keep a tombstone of the hashed external id so a CRM replay cannot bring them back, and
    let every higher app scrub what it holds (registered erasers).

    All of it happens in one transaction: if an eraser fails, nothing is erased. Returns
    False (and does nothing) when the customer was already erased. No suppression is
    added: that would keep the address, which is what erasure removes."""
    with transaction.atomic():
        # The row lock makes two concurrent erases of the same customer run one after the
        # other, so the second sees erased_at and stops.
        current = Customer.objects.select_for_update().filter(pk=customer.pk).first()
        if current is None:
            raise NotFound(f"Customer {customer.pk} does not exist.")
        if current.erased_at is not None:
            _refresh(customer, current)
            return False
        now = timezone.now()
        ErasedIdentity.objects.get_or_create(external_id_sha256=external_id_sha256(current.external_id))
        Customer.objects.filter(pk=current.pk).update(
            **_ANONYMOUS_PROFILE,
            external_id=ERASED_EXTERNAL_ID.format(id=current.pk),
            erased_at=now,
            updated_at=now,
        )
        Touchpoint.objects.filter(customer_id=current.pk).exclude(properties={}).update(properties={})
        for erase in registries.erasers().values():
            erase(current.pk)
        _refresh(customer, Customer.objects.get(pk=current.pk))
    return True


def _refresh(target: Customer, source: Customer) -> None:
    """Bring the caller's instance up to date, so it never holds erased PII after this."""
    for model_field in Customer._meta.concrete_fields:
        setattr(target, model_field.attname, getattr(source, model_field.attname))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


CUSTOMER_PROFILE_FIELDS = (
    "id",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "timezone",
    "locale",
    "attributes",
    "is_stub",
    "unsubscribed_at",
    "erased_at",
    "created_at",
    "updated_at",
    "last_seen_at",
)
TOUCHPOINT_EXPORT_FIELDS = (
    "id",
    "event_id",
    "kind",
    "channel",
    "occurred_at",
    "received_at",
    "revenue",
    "currency",
    "revenue_original",
    "order_id",
    "sku",
    "campaign_id",
    "message_id",
    "creative_id",
    "properties",
)


def customer_export(customer: Customer) -> dict[str, Any]:
    """Everything held about a customer (GDPR access request), JSON-ready: the profile,
    consents, the full touchpoint history, and each registered exporter's data under its
    name."""
    customer = Customer.objects.get(pk=customer.pk)
    consents = {
        channel: {
            "opt_in": getattr(customer, f"{channel}_opt_in"),
            "at": _jsonable(getattr(customer, f"{channel}_opt_in_at")),
            "source": getattr(customer, f"{channel}_opt_in_source"),
        }
        for channel in ("email", "sms", "push")
    }
    touchpoints = [
        {key: _jsonable(value) for key, value in row.items()}
        for row in Touchpoint.objects.filter(customer_id=customer.pk)
        .order_by("occurred_at", "id")
        .values(*TOUCHPOINT_EXPORT_FIELDS)
        .iterator(chunk_size=2000)
    ]
    export: dict[str, Any] = {
        "exported_at": timezone.now().isoformat(),
        "profile": {name: _jsonable(getattr(customer, name)) for name in CUSTOMER_PROFILE_FIELDS},
        "consents": consents,
        "touchpoints": touchpoints,
    }
    for name, exporter in registries.exporters().items():
        if name in export:
            raise DomainError(f"An exporter may not be named {name!r}: that key is part of the export itself.")
        export[name] = exporter(customer.pk)
    return export
