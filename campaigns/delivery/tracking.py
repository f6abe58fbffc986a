"""Tracking and compliance: what comes back from messages becomes touchpoints.

Services (plain functions; the views below are thin):
- `record_open` / `record_click`: one INSERT … SELECT from the message row (no ORM object
  graph: the pixel and click endpoints are the busiest of the installation); the first
  open of a message and the first click per (message, URL) count, by event id.
- `unsubscribe_by_message`: sets Customer.unsubscribed_at once and writes an `unsubscribe`
  touchpoint for that message; idempotent. GET never unsubscribes (mail scanners and link
  previews fetch links); POST does, from our page's form and from a mailbox provider's RFC
  8058 one-click POST alike.
- `provider_events_apply`: delivery/bounce/complaint events from a channel's provider.
- `inbound_sms_apply`: inbound SMS; STOP and its synonyms withdraw SMS consent.

Every effect is committed before the response, so the sender's per-message re-check of
unsubscribed/consent/suppression sees it for every later send.

Decisions where the issue is silent:
- An unsubscribe or STOP writes its touchpoint only when it changed something (the
  customer was still subscribed / SMS opted in); repeating it is a no-op.
- Provider events for messages we do not know (or of another channel) are skipped and
  listed in the answer, not rejected: a provider retries a rejected webhook, and one stale
  id must not block the rest. Malformed rows reject the whole batch (400, nothing written).
- A complaint suppresses the address and writes a `complaint` touchpoint but leaves the
  message's status alone: the message was delivered (a complaint comes from the inbox).
  A hard bounce fails it.
- STOP: sms_opt_in = False (sms_opt_in_at/source record the withdrawal: "sms_stop") for
  every customer with the number, AND a phone Suppression (reason "unsubscribe"): a CRM
  that later re-sends its stale opt-in for the number (a periodic full sync) must not bring
  the number back. Re-subscribing takes removing the suppression (admin) — the
  conservative reading of carrier (CTIA) and TCPA rules.
- Other inbound texts become an `sms_inbound` touchpoint (properties.text) per customer
  with the number, tied like STOP to the customer's latest SMS message of the channel; a
  number we do not know is recorded nowhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from campaigns.delivery import links, timing
from campaigns.models import Campaign, Channel, Device, Message
from marketing.errors import BatchInvalid, RowError
from marketing.models import E164_RE, Customer, Suppression, Touchpoint

# The classic 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0"
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
EVENTS = ("delivered", "bounce", "complaint")
BOUNCE_TYPES = ("hard", "soft")
_E164 = re.compile(E164_RE)
_MAX_ID = 2**63 - 1

# --- touchpoints from a message row ----------------------------------------------------


@cache
def _insert_from_message_sql(vendor: str) -> str:
    tp, msg, ch = (m._meta.db_table for m in (Touchpoint, Message, Channel))
    quote = connection.ops.quote_name
    json_param = "%s::jsonb" if vendor == "postgresql" else "%s"
    return (
        f"INSERT INTO {quote(tp)} (customer_id, kind, channel, campaign_id, message_id, creative_id, "
        "occurred_at, currency, order_id, sku, event_id, properties) "
        f"SELECT m.customer_id, %s, COALESCE(c.kind, ''), m.campaign_id, m.id, m.creative_id, %s, '', '', '', "
        f"%s, {json_param} "
        f"FROM {quote(msg)} m LEFT JOIN {quote(ch)} c ON c.id = m.channel_id WHERE m.id = %s "
        "ON CONFLICT DO NOTHING"
    )


def record_message_touchpoint(
    message_id: int, kind: str, event_id: str, *, properties: dict | None = None, occurred_at: datetime | None = None
) -> bool:
    """One touchpoint of `kind` for the message's customer, campaign, creative and channel
    kind, in one statement; False when the message does not exist or the event id is
    already recorded."""
    if not 0 < message_id <= _MAX_ID:
        return False
    params = [kind, occurred_at or timezone.now(), event_id, json.dumps(properties or {}), message_id]
    with connection.cursor() as cursor:
        cursor.execute(_insert_from_message_sql(connection.vendor), params)
        return cursor.rowcount == 1


def record_open(message_id: int) -> bool:
    """The first open of a message (later ones are the same event id)."""
    return record_message_touchpoint(message_id, "open", f"open:{message_id}")


def click_event_id(message_id: int, url: str) -> str:
    return f"click:{message_id}:{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def record_click(message_id: int, url: str) -> bool:
    """The first click of a message's link (one per distinct URL)."""
    return record_message_touchpoint(message_id, "click", click_event_id(message_id, url), properties={"url": url})


# --- unsubscribe ------------------------------------------------------------------------


def unsubscribe_by_message(message_id: int, *, method: str, now: datetime | None = None) -> bool | None:
    """Unsubscribe the customer a message went to from all marketing. True when this call
    unsubscribed them (and wrote the `unsubscribe` touchpoint), False when they already
    were, None when there is no such message. `method`: "page" or "one_click"."""
    now = now or timezone.now()
    row = Message.objects.filter(pk=message_id).values("customer_id", "campaign_id", "creative_id", "channel__kind")
    row = row.first() if 0 < message_id <= _MAX_ID else None
    if row is None:
        return None
    with transaction.atomic():
        changed = Customer.objects.filter(pk=row["customer_id"], unsubscribed_at__isnull=True).update(
            unsubscribed_at=now, updated_at=now
        )
        if changed:
            Touchpoint.objects.bulk_create(
                [
                    Touchpoint(
                        customer_id=row["customer_id"],
                        kind="unsubscribe",
                        channel=row["channel__kind"] or "",
                        campaign_id=row["campaign_id"],
                        message_id=message_id,
                        creative_id=row["creative_id"],
                        occurred_at=now,
                        event_id=f"unsubscribe:{message_id}",
                        properties={"method": method},
                    )
                ],
                ignore_conflicts=True,
            )
    return bool(changed)


def _masked_email(email: str) -> str:
    local, _, domain = email.partition("@")
    if not domain:
        return ""
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}@{domain}"


# --- provider webhooks ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderEvent:
    row: int
    message_id: int | None
    provider_id: str
    event: str
    bounce_type: str
    occurred_at: datetime


def _parse_time(value: Any, now: datetime) -> datetime | None:
    if value is None:
        return now
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            return None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return None


def _parse_events(rows: Any, now: datetime) -> list[ProviderEvent]:
    if not isinstance(rows, list):
        raise BatchInvalid([RowError(row=None, field=None, message="The body must be a JSON list of events.")])
    if len(rows) > settings.BULK_MAX_ROWS:
        message = f"{len(rows)} events; at most {settings.BULK_MAX_ROWS} per request."
        raise BatchInvalid([RowError(row=None, field=None, message=message)])
    events, errors = [], []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append(RowError(index, None, "Each event must be a JSON object."))
            continue
        before = len(errors)
        message_id, provider_id = row.get("message_id"), row.get("provider_id")
        if message_id is not None:
            if isinstance(message_id, str) and message_id.isascii() and message_id.isdigit():
                message_id = int(message_id)
            if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 < message_id <= _MAX_ID:
                errors.append(RowError(index, "message_id", "must be a message id (a whole number >= 1)"))
        elif provider_id is None:
            errors.append(RowError(index, "message_id", "give message_id or provider_id"))
        if (
            message_id is None
            and provider_id is not None
            and (not isinstance(provider_id, str) or not provider_id or len(provider_id) > 255)
        ):
            errors.append(RowError(index, "provider_id", "must be a non-empty string of at most 255 characters"))
        event = row.get("event")
        if event not in EVENTS:
            errors.append(RowError(index, "event", f"must be one of {', '.join(EVENTS)}"))
        bounce_type = row.get("bounce_type")
        if event == "bounce" and bounce_type not in BOUNCE_TYPES:
            errors.append(RowError(index, "bounce_type", "a bounce needs bounce_type hard or soft"))
        occurred_at = _parse_time(row.get("occurred_at"), now)
        if occurred_at is None:
            errors.append(RowError(index, "occurred_at", "must be an ISO 8601 time with a UTC offset, or Unix seconds"))
        if len(errors) == before:
            events.append(
                ProviderEvent(
                    row=index,
                    message_id=message_id,
                    provider_id=provider_id if message_id is None else "",
                    event=event,
                    bounce_type=bounce_type if event == "bounce" else "",
                    occurred_at=occurred_at,
                )
            )
    if errors:
        raise BatchInvalid(errors[:100], total_errors=len(errors))
    return events


def _suppression_value(kind: str, message: dict) -> tuple[str, str] | None:
    if kind == "email":
        address = parseaddr(message["recipient"] or message["customer__email"] or "")[1].strip().lower()
        return ("email", address) if "@" in address else None
    if kind == "sms":
        phone = (message["recipient"] or message["customer__phone"] or "").strip()
        return ("phone", phone) if _E164.match(phone) else None
    return None


_MESSAGE_FIELDS = (
    "id",
    "customer_id",
    "campaign_id",
    "creative_id",
    "status",
    "attempts",
    "error",
    "not_before",
    "claimed_by",
    "lease_until",
    "provider_id",
    "recipient",
    "customer__email",
    "customer__phone",
)
S = Message.Status


def provider_events_apply(channel: Channel, rows: Any, *, now: datetime | None = None) -> dict:
    """Apply a provider's delivery/bounce/complaint events to the channel's messages, in
    order, in one transaction:

    - delivered: `sent`/`unknown` → `delivered`; a `delivered` touchpoint.
    - bounce hard: Suppression of the address (email lower-cased, SMS E.164; push: the
      device token is disabled); `sent`/`delivered`/`unknown` → `failed` ("hard_bounce");
      a `bounce` touchpoint {"type": "hard"}.
    - bounce soft: `sent`/`delivered`/`unknown` → `queued` with not_before = now +
      timing.backoff_delay(attempts) and the claim cleared (or `failed` once attempts
      reached timing.MAX_ATTEMPTS); a `bounce` touchpoint {"type": "soft"}.
    - complaint: Suppression of the address; a `complaint` touchpoint; status unchanged.

    Raises BatchInvalid (nothing written) for malformed rows. Returns {"received",
    "applied", "unknown": [row indexes whose message was not found on this channel]}."""
    now = now or timezone.now()
    events = _parse_events(rows, now)
    touchpoints: dict[str, Touchpoint] = {}
    suppressions: dict[tuple[str, str], Suppression] = {}
    device_hashes: set[str] = set()
    unknown: list[int] = []
    with transaction.atomic():
        ids = {e.message_id for e in events if e.message_id is not None}
        provider_ids = {e.provider_id for e in events if e.message_id is None}
        # Locked in id order (concurrent batches never deadlock), then the events applied in
        # the order the provider sent them.
        found = list(
            Message.objects.select_for_update(of=("self",))
            .filter(Q(pk__in=ids) | Q(provider_id__in=provider_ids), channel_id=channel.pk)
            .order_by("pk")
            .values(*_MESSAGE_FIELDS)
        )
        by_id = {m["id"]: m for m in found}
        by_provider: dict[str, list[dict]] = {}
        for m in found:
            if m["provider_id"]:
                by_provider.setdefault(m["provider_id"], []).append(m)
        original = {m["id"]: (m["status"], m["not_before"], m["error"]) for m in found}
        for event in events:
            if event.message_id is not None:
                targets = [by_id[event.message_id]] if event.message_id in by_id else []
            else:
                targets = by_provider.get(event.provider_id, [])
            if not targets:
                unknown.append(event.row)
                continue
            for message in targets:
                _apply(channel, event, message, now, touchpoints, suppressions, device_hashes)
        changed = [
            Message(
                pk=m["id"],
                campaign_id=m["campaign_id"],
                status=m["status"],
                error=m["error"],
                not_before=m["not_before"],
                claimed_by=m["claimed_by"],
                lease_until=m["lease_until"],
                updated_at=now,
            )
            for m in found
            if (m["status"], m["not_before"], m["error"]) != original[m["id"]]
        ]
        if changed:
            Message.objects.bulk_update(
                changed, ["status", "error", "not_before", "claimed_by", "lease_until", "updated_at"], batch_size=1000
            )
            # A soft bounce re-queues a message of a campaign that may have completed since:
            # reopen it, or the sender (which serves running campaigns) would never retry.
            requeued = {m.campaign_id for m in changed if m.status == S.QUEUED}
            if requeued:
                Campaign.objects.filter(pk__in=requeued, status=Campaign.Status.COMPLETED).update(
                    status=Campaign.Status.RUNNING, finished_at=None, updated_at=now
                )
        Touchpoint.objects.bulk_create(touchpoints.values(), ignore_conflicts=True, batch_size=1000)
        Suppression.objects.bulk_create(suppressions.values(), ignore_conflicts=True, batch_size=1000)
        if device_hashes:
            Device.objects.filter(token_hash__in=device_hashes, enabled=True).update(enabled=False)
    return {"received": len(events), "applied": len(events) - len(unknown), "unknown": unknown}


def _apply(
    channel: Channel,
    event: ProviderEvent,
    message: dict,
    now: datetime,
    touchpoints: dict[str, Touchpoint],
    suppressions: dict[tuple[str, str], Suppression],
    device_hashes: set[str],
) -> None:
    status = message["status"]
    kind = "bounce" if event.event == "bounce" else event.event
    # A bounce per attempt (a soft bounce is retried, and the retry may bounce again).
    event_id = f"bounce:{message['id']}:{message['attempts']}" if kind == "bounce" else f"{kind}:{message['id']}"
    properties = {"type": event.bounce_type} if event.event == "bounce" else {}
    if event.provider_id:
        properties["provider_id"] = event.provider_id
    touchpoints.setdefault(
        event_id,
        Touchpoint(
            customer_id=message["customer_id"],
            kind=kind,
            channel=channel.kind,
            campaign_id=message["campaign_id"],
            message_id=message["id"],
            creative_id=message["creative_id"],
            occurred_at=event.occurred_at,
            event_id=event_id,
            properties=properties,
        ),
    )
    if event.event == "delivered":
        if status in (S.SENT, S.UNKNOWN):
            message["status"] = S.DELIVERED
        return
    if event.event == "complaint" or event.bounce_type == "hard":
        value = _suppression_value(channel.kind, message)
        if value is not None:
            reason = Suppression.Reason.COMPLAINT if event.event == "complaint" else Suppression.Reason.HARD_BOUNCE
            note = f"{event.event} via channel {channel.name}, message {message['id']}"[:255]
            suppressions.setdefault(value, Suppression(kind=value[0], value=value[1], reason=reason, note=note))
        elif channel.kind == "push" and message["recipient"]:
            device_hashes.add(hashlib.sha256(message["recipient"].encode()).hexdigest())
        if event.event == "complaint":
            return
        if status in (S.SENT, S.DELIVERED, S.UNKNOWN):
            message["status"], message["error"] = S.FAILED, "hard_bounce"
        return
    # A soft bounce: the provider gave up for now; send again later, as a transient failure.
    if status in (S.SENT, S.DELIVERED, S.UNKNOWN):
        if message["attempts"] >= timing.MAX_ATTEMPTS:
            message["status"], message["error"] = S.FAILED, f"soft_bounce: gave up after {message['attempts']} attempts"
        else:
            message["status"], message["error"] = S.QUEUED, "soft_bounce"
            message["not_before"] = now + timing.backoff_delay(max(message["attempts"], 1))
            message["claimed_by"], message["lease_until"] = "", None


# --- inbound SMS ----------------------------------------------------------------------------


def _latest_messages(channel: Channel, customer_ids: list[int]) -> dict[int, dict]:
    """Each customer's latest sent message of the channel: what a reply answers."""
    latest = {}
    for customer_id in customer_ids:  # the customers who share one phone number: a handful
        row = (
            Message.objects.filter(
                customer_id=customer_id, channel_id=channel.pk, status__in=(S.SENT, S.DELIVERED, S.UNKNOWN)
            )
            .order_by("-sent_at", "-id")
            .values("id", "campaign_id", "creative_id")
            .first()
        )
        if row:
            latest[customer_id] = row
    return latest


def inbound_sms_apply(channel: Channel, body: Any, *, now: datetime | None = None) -> dict:
    """An inbound SMS {"from": "+E164", "text": "…", "received_at": optional}. STOP,
    STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT (any case, trimmed, a trailing "." or "!"
    allowed) withdraws SMS consent of every customer with the number and suppresses the
    number; any other text is recorded as `sms_inbound`. Returns {"action", "customers"}."""
    now = now or timezone.now()
    errors = []
    if not isinstance(body, dict):
        raise BatchInvalid([RowError(None, None, 'The body must be a JSON object {"from": "+E164", "text": "…"}.')])
    phone, text = body.get("from"), body.get("text")
    if not isinstance(phone, str) or not _E164.match(phone.strip()):
        errors.append(RowError(None, "from", "must be a phone number in E.164 form, e.g. +14155550123"))
    if not isinstance(text, str):
        errors.append(RowError(None, "text", "must be a string"))
    received_at = _parse_time(body.get("received_at"), now)
    if received_at is None:
        errors.append(RowError(None, "received_at", "must be an ISO 8601 time with a UTC offset, or Unix seconds"))
    if errors:
        raise BatchInvalid(errors)
    phone = phone.strip()
    stamp = received_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    is_stop = text.strip().rstrip(".!").strip().upper() in STOP_WORDS
    with transaction.atomic():
        if is_stop:
            Suppression.objects.bulk_create(
                [
                    Suppression(
                        kind=Suppression.Kind.PHONE,
                        value=phone,
                        reason=Suppression.Reason.UNSUBSCRIBE,
                        note=f"SMS STOP via channel {channel.name}"[:255],
                    )
                ],
                ignore_conflicts=True,
            )
            customer_ids = list(
                Customer.objects.select_for_update()
                .filter(phone=phone, sms_opt_in=True)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            Customer.objects.filter(pk__in=customer_ids).update(
                sms_opt_in=False, sms_opt_in_at=now, sms_opt_in_source="sms_stop", updated_at=now
            )
            kind, properties, prefix = "unsubscribe", {"keyword": text.strip()[:32]}, "unsubscribe:sms"
        else:
            customer_ids = list(Customer.objects.filter(phone=phone).order_by("pk").values_list("pk", flat=True))
            kind, properties, prefix = "sms_inbound", {"text": text[:1600]}, "sms_inbound"
        latest = _latest_messages(channel, customer_ids)
        Touchpoint.objects.bulk_create(
            [
                Touchpoint(
                    customer_id=customer_id,
                    kind=kind,
                    channel="sms",
                    campaign_id=latest.get(customer_id, {}).get("campaign_id"),
                    message_id=latest.get(customer_id, {}).get("id"),
                    creative_id=latest.get(customer_id, {}).get("creative_id"),
                    occurred_at=received_at,
                    event_id=f"{prefix}:{customer_id}:{stamp}",
                    properties=properties,
                )
                for customer_id in customer_ids
            ],
            ignore_conflicts=True,
        )
    return {"action": "unsubscribed" if is_stop else "recorded", "customers": len(customer_ids)}


# --- views -----------------------------------------------------------------------------------


@require_safe
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """The open pixel: always the GIF (a broken image would only show the customer an
    icon); records only for a valid token, and not for HEAD."""
    message_id = links.verify_message_token(links.OPEN, token)
    if message_id is not None and request.method == "GET":
        record_open(message_id)
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    response["Cache-Control"] = NO_CACHE
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    return response


def _link_invalid(request: HttpRequest, what: str) -> HttpResponse:
    return render(request, "campaigns/link_invalid.html", {"what": what}, status=400)


@require_safe
def click(request: HttpRequest, token: str) -> HttpResponse:
    """Signed click redirect: only to the URL the token was signed for (no open redirect)."""
    verified = links.verify_click_token(token)
    if verified is None:
        return _link_invalid(request, "link")
    message_id, url = verified
    if request.method == "GET":
        record_click(message_id, url)
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = NO_CACHE
    response["X-Robots-Tag"] = "noindex"
    return response


@csrf_exempt  # the token is the credential; RFC 8058 POSTs come from mailbox providers without a CSRF cookie
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the confirmation page (changes nothing). POST: unsubscribe, from the page's
    form or as an RFC 8058 one-click POST (body List-Unsubscribe=One-Click)."""
    if token == links.PREVIEW_TOKEN:
        return render(request, "campaigns/unsubscribe.html", {"state": "preview"})
    message_id = links.verify_message_token(links.UNSUBSCRIBE, token)
    if message_id is None:
        return _link_invalid(request, "unsubscribe link")
    one_click = request.method == "POST" and request.POST.get("List-Unsubscribe") == "One-Click"
    if request.method == "POST":
        result = unsubscribe_by_message(message_id, method="one_click" if one_click else "page")
        if result is None:
            return _link_invalid(request, "unsubscribe link")
        if one_click:
            return HttpResponse("Unsubscribed.\n", content_type="text/plain; charset=utf-8")
        return render(request, "campaigns/unsubscribe.html", {"state": "done"})
    row = Message.objects.filter(pk=message_id).values("customer__email", "customer__unsubscribed_at").first()
    if row is None:
        return _link_invalid(request, "unsubscribe link")
    context = {
        "state": "already" if row["customer__unsubscribed_at"] else "confirm",
        "email": _masked_email(row["customer__email"] or ""),
    }
    response = render(request, "campaigns/unsubscribe.html", context)
    response["Cache-Control"] = NO_CACHE
    return response


def _webhook_channel(request: HttpRequest, channel_id: int) -> tuple[Channel | None, HttpResponse | None]:
    """The channel, once the body's X-Signature (sha256=<hex HMAC-SHA256 of the raw body>,
    keyed by the secret in the environment variable Channel.settings["webhook_secret_env"])
    checks out; else the error response."""
    channel = Channel.objects.filter(pk=channel_id).first() if 0 < channel_id <= _MAX_ID else None
    if channel is None:
        return None, JsonResponse({"detail": f"No channel {channel_id}."}, status=404)
    env_name = channel.settings.get("webhook_secret_env") if isinstance(channel.settings, dict) else None
    secret = os.environ.get(env_name, "") if isinstance(env_name, str) and env_name else ""
    if not secret:
        detail = (
            "Webhooks are not enabled for this channel: set its settings.webhook_secret_env to the name of an "
            "environment variable that holds the shared secret."
        )
        return None, JsonResponse({"detail": detail}, status=403)
    header = request.headers.get("X-Signature", "")
    if not header:
        detail = "Missing X-Signature header: sha256=<hex HMAC-SHA256 of the raw body with the channel's secret>."
        return None, JsonResponse({"detail": detail}, status=401)
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    algorithm, _, given = header.partition("=")
    if algorithm.strip().lower() != "sha256" or not hmac.compare_digest(expected, given.strip().lower()):
        return None, JsonResponse({"detail": "Bad X-Signature: the body's HMAC-SHA256 does not match."}, status=403)
    return channel, None


def _json_body(request: HttpRequest) -> tuple[Any, HttpResponse | None]:
    try:
        return json.loads(request.body), None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, JsonResponse({"detail": "The body is not valid JSON."}, status=400)


def _batch_invalid(error: BatchInvalid) -> JsonResponse:
    body = {"errors": [e.as_dict() for e in error.errors], "message": error.message}
    if error.total_errors > len(error.errors):
        body["errors_truncated"] = True
    return JsonResponse(body, status=400)


@csrf_exempt
@require_POST
def provider_events(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel, failure = _webhook_channel(request, channel_id)
    if failure is not None:
        return failure
    rows, failure = _json_body(request)
    if failure is not None:
        return failure
    try:
        return JsonResponse(provider_events_apply(channel, rows))
    except BatchInvalid as error:
        return _batch_invalid(error)


@csrf_exempt
@require_POST
def inbound_sms(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel, failure = _webhook_channel(request, channel_id)
    if failure is not None:
        return failure
    if channel.kind != "sms":
        return JsonResponse({"detail": "Inbound messages are accepted on SMS channels only."}, status=400)
    body, failure = _json_body(request)
    if failure is not None:
        return failure
    try:
        return JsonResponse(inbound_sms_apply(channel, body))
    except BatchInvalid as error:
        return _batch_invalid(error)
