"""Sending: a coarse task claims a batch of due messages, then sends them one at a time.

The outbox row is the truth; Celery only says "there may be work". Per batch:

1. Claim (one statement): up to `limit` queued messages whose `not_before` has passed, whose
   claim is free (none, or its lease expired), of running campaigns and enabled channels,
   oldest first. On PostgreSQL a conditional UPDATE over a `FOR UPDATE SKIP LOCKED`
   selection, so concurrent workers never wait on, or take, each other's rows. The status
   stays `queued`; `claimed_by` and `lease_until` (SEND_CLAIM_LEASE_SECONDS, renewed while
   the batch runs) mark the claim. SQLite has one worker process: a plain conditional
   update.
2. Load what the batch needs in one query (messages with their customers' fields), plus the
   few campaigns, channels and creatives (and push devices) it names.
3. Per message: quiet hours (in the customer's timezone, DST-correct; the message gets a
   new `not_before` and loses its claim, still `queued`); render; the channel's rate limit
   (shared by all workers, campaigns.delivery.ratelimit); then the gate, one conditional
   UPDATE that commits `sending` (lease SEND_LEASE_SECONDS) only if the message is still
   queued and ours, its campaign still running, its channel enabled, and its customer not
   erased, not unsubscribed, with consent for the channel, an address and no suppression
   of it. So a pause, an unsubscribe or a suppression holds for the very next message,
   and the recipient recorded is the address that was checked. A gate that fails says
   why: the customer's reason makes the message `suppressed`; a campaign no longer running
   or a disabled channel releases that campaign's (channel's) claims; a message taken by a
   cancel or another worker is left alone.
4. The provider call, after the `sending` commit; its outcome is written in the same
   transaction as the next message's gate (one commit per message; on PostgreSQL a single
   statement of data-modifying CTEs, prepared once per connection): `sent` with the `sent`
   touchpoint (its ids and properties read from the message row by the statement itself),
   back to `queued` with backoff, `failed`, a hard bounce (failed, suppressed
   address, `bounce` touchpoint), or in doubt (see backends: left `sending` for the
   sweeper when the channel can reconcile, else `unknown`). The last write of a batch,
   having no gate with it, commits with synchronous_commit off: losing it in a database
   crash leaves a `sending` row that reconciles to unknown/sent, never a re-send.

A worker killed at any point leaves at most one `sending` message per slot (the sweeper
settles it) and claims that expire on their own; nothing depends on Celery redelivery.
The campaign's status is part of every gate, so a pause stops a batch at its next message
(rather than at a periodic re-read), and a resume sends only what is still `queued`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from campaigns.delivery import ratelimit, timing
from campaigns.delivery.backends import (
    AMBIGUOUS,
    BOUNCE,
    FAILED,
    RETRY,
    SENT,
    Outcome,
    Outgoing,
    idempotency_key,
    open_sender,
)
from campaigns.delivery.render import (
    CUSTOMER_CONTEXT_FIELDS,
    batch_recommendations,
    customer_context,
    render_creative,
)
from campaigns.models import Campaign, Channel, ChannelKind, Creative, Device, Message

logger = logging.getLogger(__name__)

CONSENT_FIELDS = {ChannelKind.EMAIL: "email_opt_in", ChannelKind.SMS: "sms_opt_in", ChannelKind.PUSH: "push_opt_in"}
ADDRESS_SQL = {ChannelKind.EMAIL: "c.email", ChannelKind.SMS: "c.phone", ChannelKind.WEBHOOK: "c.external_id"}

M = Message._meta.db_table
TOUCHPOINT_COLUMNS = (
    "customer_id, kind, channel, campaign_id, message_id, creative_id, occurred_at, currency, order_id, sku, "
    "event_id, properties"
)


def _dt(value: datetime):
    """A datetime as the database driver wants it in raw SQL (SQLite stores text)."""
    if _postgresql():
        return value  # psycopg takes aware datetimes as they are
    return connection.ops.adapt_datetimefield_value(value)


@functools.cache
def _postgresql() -> bool:
    """Whether the database is PostgreSQL, looked up once: `connection` is a thread-local
    proxy, and the few attribute reads per message through it added up."""
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def _json_param() -> str:
    return "CAST(%s AS jsonb)" if _postgresql() else "%s"


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100_000}"


def _execute_prepared(cursor: psycopg.Cursor, sql: str, params: list) -> None:
    """Execute as a server-side prepared statement: parsed and planned once per connection
    rather than per message (the parse and plan of the gate's joins cost more than running
    it). Django opens connections with prepare_threshold=None, under which psycopg ignores
    prepare=True; a threshold it never reaches, for this call only, prepares just this."""
    conn = cursor.connection
    threshold = conn.prepare_threshold
    conn.prepare_threshold = threshold if threshold is not None else 1 << 30
    try:
        cursor.execute(sql, params, prepare=True)
    finally:
        conn.prepare_threshold = threshold


# --- writes shared with the sweeper ---------------------------------------------------------


class Writes:
    """Statements to commit together: one message's outcome, then the next one's gate."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list]] = []
        self.durable = False  # a suppression must not be lost with a database crash

    def __bool__(self) -> bool:
        return bool(self.statements)

    def add(self, sql: str, params: list) -> None:
        self.statements.append((sql, params))

    def touchpoint(
        self, row: dict, kind: str, channel_kind: str, when: datetime, event_id: str, properties: dict
    ) -> None:
        self.add(
            f"INSERT INTO marketing_touchpoint ({TOUCHPOINT_COLUMNS}) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, '', '', '', %s, {_json_param()}) ON CONFLICT DO NOTHING",
            [
                row["customer_id"],
                kind,
                channel_kind,
                row["campaign_id"],
                row["id"],
                row["creative_id"],
                _dt(when),
                event_id,
                json.dumps(properties),
            ],
        )

    def sent(self, row: dict, channel: Channel, when: datetime, provider_id: str, recipient: str | None) -> None:
        """`sent` (also from `unknown`: a late answer beats a guess) and its touchpoint."""
        set_recipient = ", recipient = %s" if recipient is not None else ""
        self.add(
            f"UPDATE {M} SET status = 'sent', sent_at = %s, provider_id = %s, cost = %s, lease_until = NULL, "
            f"error = '', updated_at = %s{set_recipient} WHERE id = %s AND status IN ('sending', 'unknown')",
            [
                _dt(when),
                provider_id[:255],
                channel.cost_per_message,
                _dt(when),
                *([recipient[:4096]] if recipient is not None else []),
                row["id"],
            ],
        )
        self.sent_touchpoint(row["id"], channel.kind, when)

    def sent_touchpoint(self, message_id: int, channel_kind: str, when: datetime) -> None:
        """The `sent` touchpoint, its ids and properties (sent_properties_sql) read from the
        message row by the statement itself: nothing to serialise or pass per message."""
        self.add(
            f"INSERT INTO marketing_touchpoint ({TOUCHPOINT_COLUMNS}) "
            f"SELECT m.customer_id, 'sent', %s, m.campaign_id, m.id, m.creative_id, %s, '', '', '', "
            f"'sent:' || m.id, {sent_properties_sql()} FROM {M} m WHERE m.id = %s ON CONFLICT DO NOTHING",
            [channel_kind, _dt(when), message_id],
        )

    def settle(self, message_id: int, status: str, error: str, when: datetime) -> None:
        """A terminal status for a `sending` message (failed, unknown)."""
        self.add(
            f"UPDATE {M} SET status = %s, error = %s, lease_until = NULL, updated_at = %s "
            "WHERE id = %s AND status = 'sending'",
            [status, error, _dt(when), message_id],
        )

    def requeue(self, message_id: int, not_before: datetime, error: str, when: datetime) -> None:
        """Back to `queued` from `sending`, due at `not_before`, unclaimed."""
        self.add(
            f"UPDATE {M} SET status = 'queued', not_before = %s, claimed_by = '', lease_until = NULL, error = %s, "
            "updated_at = %s WHERE id = %s AND status = 'sending'",
            [_dt(not_before), error, _dt(when), message_id],
        )

    def flush(self, gate: tuple[str, list] | None = None) -> tuple | None:
        """Commit the pending statements, plus `gate` last; the gate's RETURNING row."""
        if not self.statements and gate is None:
            return None
        row = None
        if gate is not None and _postgresql():
            # One statement, one round trip, atomic by itself: the previous message's
            # outcome and this one's gate as data-modifying CTEs (different rows).
            # Prepared on the server (psycopg's server-side binding): a handful of distinct
            # texts, each planned once per connection rather than once per message.
            parts = [f"s{n} AS ({sql})" for n, (sql, _) in enumerate(self.statements)]
            params = [param for _, statement_params in self.statements for param in statement_params]
            sql = f"WITH {', '.join([*parts, f'gate AS ({gate[0]})'])} SELECT recipient FROM gate"
            db = connections[DEFAULT_DB_ALIAS]
            db.ensure_connection()
            with db.wrap_database_errors, psycopg.Cursor(db.connection) as cursor:
                _execute_prepared(cursor, sql, [*params, *gate[1]])
                row = cursor.fetchone()
            self.statements = []
            self.durable = False
            return row
        with transaction.atomic(), connection.cursor() as cursor:
            if gate is None and not self.durable and _postgresql():
                cursor.execute("SET LOCAL synchronous_commit = off")
            for sql, params in self.statements:
                cursor.execute(sql, params)
            if gate is not None:
                cursor.execute(*gate)
                row = cursor.fetchone()
        self.statements = []
        self.durable = False
        return row


def sent_properties_sql() -> str:
    """The properties of a `sent` touchpoint, from the message row `m`: run_id, channel_id,
    policy, probability (of the policy's pick) and features (what it saw)."""
    if _postgresql():
        return (
            "jsonb_build_object('run_id', m.run_id, 'channel_id', m.channel_id, 'policy', m.policy, "
            "'probability', m.probability, 'features', m.features)"
        )
    return (
        "json_object('run_id', m.run_id, 'channel_id', m.channel_id, 'policy', m.policy, "
        "'probability', m.probability, 'features', json(m.features))"
    )


# --- claim ------------------------------------------------------------------------------------


def _due_conditions(channel_ids: Iterable[int] | None) -> tuple[str, list] | None:
    """SQL conditions (on `m`) of a due, unclaimed message of a running campaign and an
    enabled channel, two parameters (now, now) first; None when no campaign runs or no
    channel is enabled. The campaigns and channels are looked up first (a handful of ids):
    as literal lists the claim is a scan of the due index in order that stops at its limit,
    where a join would read and sort every due message (tens of ms per claim at 100k)."""
    campaigns = list(Campaign.objects.filter(status=Campaign.Status.RUNNING).values_list("id", flat=True))
    channels = Channel.objects.filter(enabled=True)
    if channel_ids is not None:
        channels = channels.filter(id__in=[int(i) for i in channel_ids])
    channels = list(channels.values_list("id", flat=True))
    if not campaigns or not channels:
        return None
    sql = (
        "m.status = 'queued' AND m.not_before <= %s AND (m.lease_until IS NULL OR m.lease_until < %s) "
        f"AND m.campaign_id IN ({', '.join(['%s'] * len(campaigns))}) "
        f"AND m.channel_id IN ({', '.join(['%s'] * len(channels))})"
    )
    return sql, [*campaigns, *channels]


def _claim(channel_id: int | None, token: str, limit: int, now: datetime, until: datetime) -> list[int]:
    conditions = _due_conditions(None if channel_id is None else [channel_id])
    if conditions is None:
        return []
    where, params = conditions
    due = [_dt(now), _dt(now), *params]
    if _postgresql():
        sql = (
            f"WITH picked AS (SELECT m.id FROM {M} m WHERE {where} ORDER BY m.not_before, m.id LIMIT %s "
            f"FOR UPDATE OF m SKIP LOCKED) "
            f"UPDATE {M} SET claimed_by = %s, lease_until = %s FROM picked WHERE {M}.id = picked.id RETURNING {M}.id"
        )
        args = [*due, limit, token, _dt(until)]
    else:
        # One worker process on SQLite (no SKIP LOCKED there): a plain conditional update.
        sql = (
            f"UPDATE {M} SET claimed_by = %s, lease_until = %s WHERE id IN "
            f"(SELECT m.id FROM {M} m WHERE {where} ORDER BY m.not_before, m.id LIMIT %s) RETURNING id"
        )
        args = [token, _dt(until), *due, limit]
    with transaction.atomic(), connection.cursor() as cursor:
        if _postgresql():
            # The claim must read the due index in (not_before, id) order and stop at its limit.
            # Right after a launch the table's statistics still say it is (nearly) empty, and
            # the planner would fetch and sort every due message instead: 80 ms a claim at
            # 100k due, measured (bench/send.py). Without a sort, only the due index is left.
            cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(sql, args)
        return sorted(row[0] for row in cursor.fetchall())


def _release(ids: Iterable[int], token: str, when: datetime) -> int:
    if not ids:
        return 0
    return Message.objects.filter(id__in=list(ids), status=Message.Status.QUEUED, claimed_by=token).update(
        claimed_by="", lease_until=None, updated_at=when
    )


# --- the gate ----------------------------------------------------------------------------------


def _customer_checks(kind: str) -> str:
    checks = ["c.erased_at IS NULL", "c.unsubscribed_at IS NULL"]
    if kind in CONSENT_FIELDS:
        checks.append(f"c.{CONSENT_FIELDS[kind]}")
    if kind == ChannelKind.EMAIL:
        checks.append("c.email <> ''")
        checks.append(
            "NOT EXISTS (SELECT 1 FROM marketing_suppression s WHERE s.kind = 'email' AND s.value = lower(c.email))"
        )
    elif kind == ChannelKind.SMS:
        checks.append("c.phone <> ''")
        checks.append("NOT EXISTS (SELECT 1 FROM marketing_suppression s WHERE s.kind = 'phone' AND s.value = c.phone)")
    elif kind == ChannelKind.PUSH:
        checks.append("EXISTS (SELECT 1 FROM campaigns_device d WHERE d.customer_id = c.id AND d.enabled)")
    return " AND ".join(checks)


def gate_sql(kind: str) -> str:
    """The conditional UPDATE that commits `sending` (see the module docstring); it records
    the address it checked and returns it. Parameters: lease_until, now, message id, claim."""
    address = ADDRESS_SQL.get(kind, "''")
    return (
        f"UPDATE {M} SET status = 'sending', lease_until = %s, attempts = attempts + 1, updated_at = %s, "
        f"recipient = {address} FROM marketing_customer c "
        f"WHERE {M}.id = %s AND {M}.status = 'queued' AND {M}.claimed_by = %s AND c.id = {M}.customer_id "
        f"AND {_customer_checks(kind)} "
        f"AND EXISTS (SELECT 1 FROM campaigns_campaign k WHERE k.id = {M}.campaign_id AND k.status = 'running') "
        f"AND EXISTS (SELECT 1 FROM campaigns_channel ch WHERE ch.id = {M}.channel_id AND ch.enabled) "
        f"RETURNING {M}.recipient"
    )


def _why_not(message_id: int, token: str, kind: str) -> tuple[str, str]:
    """Why a gate failed: ("lost", _) the message is no longer ours to send; ("campaign",
    status) or ("channel", _) stop; ("suppressed", reason) the customer must not get it."""
    consent = f"c.{CONSENT_FIELDS[kind]}" if kind in CONSENT_FIELDS else "1 = 1"
    devices = (
        "EXISTS (SELECT 1 FROM campaigns_device d WHERE d.customer_id = c.id AND d.enabled)"
        if kind == ChannelKind.PUSH
        else "1 = 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT m.status, m.claimed_by, k.status, ch.enabled, c.erased_at IS NOT NULL, "
            f"c.unsubscribed_at IS NOT NULL, {consent}, c.email, c.phone, {devices} "
            f"FROM {M} m JOIN campaigns_campaign k ON k.id = m.campaign_id "
            "JOIN campaigns_channel ch ON ch.id = m.channel_id "
            "LEFT JOIN marketing_customer c ON c.id = m.customer_id WHERE m.id = %s",
            [message_id],
        )
        row = cursor.fetchone()
        if row is None or row[0] != Message.Status.QUEUED or row[1] != token:
            return "lost", ""
        _, _, campaign_status, enabled, erased, unsubscribed, consent_ok, email, phone, has_device = row
        if campaign_status != Campaign.Status.RUNNING:
            return "campaign", campaign_status
        if not enabled:
            return "channel", ""
        if erased:
            return "suppressed", "erased"
        if unsubscribed:
            return "suppressed", "unsubscribed"
        if not consent_ok:
            return "suppressed", "no_consent"
        address = {ChannelKind.EMAIL: (email or "").lower(), ChannelKind.SMS: phone or ""}.get(kind)
        if address == "" or (kind == ChannelKind.PUSH and not has_device):
            return "suppressed", "no_address"
        if address:
            cursor.execute(
                "SELECT 1 FROM marketing_suppression WHERE kind = %s AND value = %s",
                ["email" if kind == ChannelKind.EMAIL else "phone", address],
            )
            if cursor.fetchone():
                return "suppressed", "suppressed"
    # The customer changed back between the gate and this look: try again next batch.
    return "retry", ""


# --- the batch ----------------------------------------------------------------------------------


class Batch:
    """One claim's messages, sent one at a time by one worker slot."""

    def __init__(self, ids: list[int], token: str, clock: Callable[[], datetime]):
        self.token = token
        self.clock = clock
        self.counts: Counter = Counter(claimed=len(ids))
        self.writes = Writes()
        self.senders: dict[int, object] = {}
        self.stopped_campaigns: set[int] = set()
        self.stopped_channels: set[int] = set()
        fields = [f"customer__{name}" for name in CUSTOMER_CONTEXT_FIELDS]
        self.rows = list(
            Message.objects.filter(id__in=ids, claimed_by=token)
            .order_by("id")
            .values(
                "id",
                "campaign_id",
                "run_id",
                "customer_id",
                "channel_id",
                "creative_id",
                "policy",
                "probability",
                "features",
                "attempts",
                *fields,
            )
        )
        self.pending_ids = {row["id"] for row in self.rows}
        self.campaigns = Campaign.objects.in_bulk({row["campaign_id"] for row in self.rows})
        self.channels = Channel.objects.in_bulk({row["channel_id"] for row in self.rows})
        self.creatives = Creative.objects.in_bulk({row["creative_id"] for row in self.rows if row["creative_id"]})
        # Only when a creative uses {{ recommendations }}: a fixed number of queries per batch.
        self.recommendations = batch_recommendations(self.creatives.values(), {row["customer_id"] for row in self.rows})
        push = {c.pk for c in self.channels.values() if c.kind == ChannelKind.PUSH}
        self.devices: dict[int, list[tuple[int, str]]] = {}
        if push:
            customers = {row["customer_id"] for row in self.rows if row["channel_id"] in push}
            for customer_id, device_id, token_value in (
                Device.objects.filter(customer_id__in=customers, enabled=True)
                .order_by("id")
                .values_list("customer_id", "id", "token")
            ):
                self.devices.setdefault(customer_id, []).append((device_id, token_value))
        self.claim_renewed = time.monotonic()

    # -- helpers --

    def sender(self, channel: Channel):
        sender = self.senders.get(channel.pk)
        if sender is None:
            sender = self.senders[channel.pk] = open_sender(channel)
        return sender

    def customer(self, row: dict) -> dict:
        return {name: row[f"customer__{name}"] for name in CUSTOMER_CONTEXT_FIELDS}

    def unclaim(self, message_id: int, not_before: datetime | None, now: datetime) -> None:
        """Back to the pool (still queued), optionally due later."""
        if not_before is None:
            sql = f"UPDATE {M} SET claimed_by = '', lease_until = NULL, updated_at = %s WHERE id = %s "
            params = [_dt(now), message_id]
        else:
            sql = f"UPDATE {M} SET claimed_by = '', lease_until = NULL, not_before = %s, updated_at = %s WHERE id = %s "
            params = [_dt(not_before), _dt(now), message_id]
        self.writes.add(sql + "AND status = 'queued' AND claimed_by = %s", [*params, self.token])

    def suppress(self, message_id: int, reason: str, now: datetime) -> None:
        self.writes.add(
            f"UPDATE {M} SET status = 'suppressed', error = %s, lease_until = NULL, updated_at = %s "
            "WHERE id = %s AND status = 'queued' AND claimed_by = %s",
            [reason, _dt(now), message_id, self.token],
        )

    def fail_unsent(self, message_id: int, error: str, now: datetime) -> None:
        """Failed before any provider call (e.g. a creative that does not render)."""
        self.writes.add(
            f"UPDATE {M} SET status = 'failed', error = %s, lease_until = NULL, updated_at = %s "
            "WHERE id = %s AND status = 'queued' AND claimed_by = %s",
            [error, _dt(now), message_id, self.token],
        )

    def renew_claim(self) -> None:
        lease = settings.SEND_CLAIM_LEASE_SECONDS
        if time.monotonic() - self.claim_renewed < lease / 3 or not self.pending_ids:
            return
        now = self.clock()
        Message.objects.filter(id__in=self.pending_ids, status=Message.Status.QUEUED, claimed_by=self.token).update(
            lease_until=now + timedelta(seconds=lease)
        )
        self.claim_renewed = time.monotonic()

    # -- the loop --

    def run(self) -> None:
        for row in self.rows:
            self.renew_claim()
            self.send_one(row)
            self.pending_ids.discard(row["id"])

    def send_one(self, row: dict) -> None:
        message_id = row["id"]
        campaign = self.campaigns[row["campaign_id"]]
        channel = self.channels[row["channel_id"]]
        if campaign.pk in self.stopped_campaigns or channel.pk in self.stopped_channels:
            self.counts["released"] += 1
            self.unclaim(message_id, None, self.clock())
            return
        now = self.clock()
        customer = self.customer(row)

        zone = timing.customer_zone(customer["timezone"], settings.REPORTING_TIMEZONE)
        release = timing.quiet_hours_release(now, zone, campaign.quiet_hours_start, campaign.quiet_hours_end)
        if release is not None and release > now:
            self.counts["deferred"] += 1
            self.unclaim(message_id, release, now)
            return

        creative = self.creatives.get(row["creative_id"])
        if creative is None:
            self.counts["failed"] += 1
            self.fail_unsent(message_id, "no creative for this message", now)
            return
        context = customer_context(
            customer,
            campaign=campaign,
            message_id=message_id,
            recommendations=self.recommendations.get(row["customer_id"]),
        )
        try:
            rendered = render_creative(creative, context)
        except Exception as exc:  # a creative that fails for this customer fails the message
            self.counts["failed"] += 1
            self.fail_unsent(message_id, f"render: {exc}", now)
            return

        wait = ratelimit.reserve(channel.pk, channel.rate_limit_per_second)
        if wait > 0:
            # Commit the previous message's outcome rather than hold it through the wait.
            self.writes.flush()
            time.sleep(wait)
            now = self.clock()

        lease_until = now + timedelta(seconds=settings.SEND_LEASE_SECONDS)
        gate = (gate_sql(channel.kind), [_dt(lease_until), _dt(now), message_id, self.token])
        returned = self.writes.flush(gate)
        if returned is None:
            self.gate_failed(row, channel, now)
            return

        tokens = [token for _, token in self.devices.get(row["customer_id"], [])]
        out = Outgoing(
            message_id=message_id,
            campaign_id=row["campaign_id"],
            creative_id=row["creative_id"],
            recipient=returned[0],
            rendered=rendered,
            context=context,
            tokens=tokens,
            idempotency_key=idempotency_key(message_id),
        )
        sender = self.sender(channel)
        outcome = sender.send(out)
        self.record(row, channel, sender, outcome)

    def gate_failed(self, row: dict, channel: Channel, now: datetime) -> None:
        why, detail = _why_not(row["id"], self.token, channel.kind)
        if why == "lost":
            self.counts["lost"] += 1
        elif why == "campaign":
            self.stopped_campaigns.add(row["campaign_id"])
            self.counts["released"] += 1
            self.unclaim(row["id"], None, now)
        elif why == "channel":
            self.stopped_channels.add(channel.pk)
            self.counts["released"] += 1
            self.unclaim(row["id"], None, now)
        elif why == "suppressed":
            self.counts["suppressed"] += 1
            self.suppress(row["id"], detail, now)
        else:
            self.counts["released"] += 1
            self.unclaim(row["id"], None, now)

    def record(self, row: dict, channel: Channel, sender, outcome: Outcome) -> None:
        now = self.clock()
        message_id = row["id"]
        writes = self.writes
        if outcome.status == SENT:
            self.counts["sent"] += 1
            recipient = None
            if channel.kind == ChannelKind.PUSH:
                recipient = ",".join(f"device:{d}" for d, _ in self.devices.get(row["customer_id"], []))
            writes.sent(row, channel, now, outcome.provider_id, recipient)
        elif outcome.status == RETRY:
            attempts = row["attempts"] + 1
            if attempts >= timing.MAX_ATTEMPTS:
                self.counts["failed"] += 1
                writes.settle(message_id, "failed", f"gave up after {attempts} attempts: {outcome.error}", now)
            else:
                self.counts["retried"] += 1
                delay = timing.backoff_delay(attempts)
                if outcome.retry_after:
                    delay = max(delay, timedelta(seconds=outcome.retry_after))
                writes.requeue(message_id, now + delay, f"attempt {attempts}: {outcome.error}", now)
        elif outcome.status == FAILED:
            self.counts["failed"] += 1
            writes.settle(message_id, "failed", outcome.error, now)
        elif outcome.status == BOUNCE:
            self.counts["bounced"] += 1
            writes.settle(message_id, "failed", f"hard bounce: {outcome.error}", now)
            address = (self.customer(row)["email"] or "").lower()
            writes.add(
                "INSERT INTO marketing_suppression (kind, value, reason, note, created_at) "
                "VALUES ('email', %s, 'hard_bounce', %s, %s) ON CONFLICT DO NOTHING",
                [address[:254], f"message {message_id}: {outcome.error}"[:255], _dt(now)],
            )
            writes.touchpoint(
                row, "bounce", channel.kind, now, f"bounce:{message_id}", {"type": "hard", "error": outcome.error}
            )
            writes.durable = True
        elif outcome.status == AMBIGUOUS:
            if sender.reconcilable:
                # Still `sending`, its lease over now: the next sweep asks the provider.
                self.counts["in_doubt"] += 1
                writes.add(
                    f"UPDATE {M} SET lease_until = %s, error = %s, updated_at = %s "
                    "WHERE id = %s AND status = 'sending'",
                    [_dt(now), f"in doubt: {outcome.error}", _dt(now), message_id],
                )
            else:
                self.counts["unknown"] += 1
                writes.settle(message_id, "unknown", f"in doubt, never re-sent: {outcome.error}", now)
        else:  # pragma: no cover - backends return only the statuses above
            raise ValueError(f"unknown outcome {outcome.status!r}")

    def close(self) -> None:
        """Commit what is pending and give back what was not reached."""
        now = self.clock()
        try:
            self.writes.flush()
        finally:
            released = _release(self.pending_ids, self.token, now)
            if released:
                self.counts["released"] += released
            for sender in self.senders.values():
                try:
                    sender.close()
                except Exception:  # closing a broken connection
                    logger.warning("closing a sender failed", exc_info=True)


def send_due(
    channel_id: int | None = None, *, worker: str | None = None, limit: int | None = None, now: datetime | None = None
) -> dict:
    """Claim up to `limit` (SEND_BATCH_SIZE) due messages of the channel (or of any) and
    send them; returns counts: claimed, sent, retried, failed, bounced, suppressed,
    deferred (quiet hours), unknown, in_doubt (left for reconciliation), released, lost.
    `now` fixes the clock (tests); by default it is the real time at each step."""
    clock: Callable[[], datetime] = (lambda: now) if now is not None else timezone.now
    limit = limit or settings.SEND_BATCH_SIZE
    token = f"{worker or default_worker_name()}/{secrets.token_hex(3)}"[-100:]
    start = clock()
    ids = _claim(channel_id, token, limit, start, start + timedelta(seconds=settings.SEND_CLAIM_LEASE_SECONDS))
    if not ids:
        return {"claimed": 0}
    batch = Batch(ids, token, clock)
    try:
        batch.run()
    finally:
        batch.close()
    if len(ids) >= limit and now is None:
        _enqueue_successor(channel_id)
    return dict(batch.counts)


def _enqueue_successor(channel_id: int | None) -> None:
    """A full batch suggests more work: keep the chain going without waiting for a sweep."""
    from campaigns.tasks import send_due as send_due_task

    try:
        send_due_task.delay(channel_id)
    except Exception:  # the broker may be down; the sweeper enqueues again
        logger.warning("could not enqueue the next send batch of channel %s", channel_id, exc_info=True)


# --- enqueue ----------------------------------------------------------------------------------


def due_counts(channel_ids: Iterable[int] | None = None, now: datetime | None = None, cap: int | None = None) -> dict:
    """{channel id: due messages}, counting at most `cap` rows in all."""
    now = now or timezone.now()
    conditions = _due_conditions(channel_ids)
    if conditions is None:
        return {}
    where, params = conditions
    cap = cap or settings.SEND_BATCH_SIZE * settings.SEND_MAX_TASKS_PER_CHANNEL * 4
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT channel_id, count(*) FROM (SELECT m.channel_id FROM {M} m WHERE {where} LIMIT %s) due "
            "GROUP BY channel_id",
            [_dt(now), _dt(now), *params, cap],
        )
        return dict(cursor.fetchall())


def _tasks_waiting() -> int:
    """send_due tasks already waiting in the broker's send queue (0 when it cannot tell)."""
    from marketing.celery import app, queue_name

    try:
        with app.connection_for_write() as conn:
            return conn.default_channel.queue_declare(queue=queue_name("send"), passive=True).message_count
    except Exception:  # a queue not declared yet, or no broker: assume none
        return 0


def send_enqueue(channel_ids: Iterable[int] | None = None) -> int:
    """Enqueue send_due tasks for the channels with due messages: about one per
    SEND_BATCH_SIZE due messages, at most SEND_MAX_TASKS_PER_CHANNEL per channel, fewer by
    the tasks already waiting in the queue. Returns how many were enqueued."""
    from campaigns.tasks import send_due as send_due_task

    counts = due_counts(channel_ids)
    wanted = {
        channel: min(settings.SEND_MAX_TASKS_PER_CHANNEL, math.ceil(n / settings.SEND_BATCH_SIZE))
        for channel, n in sorted(counts.items())
    }
    budget = sum(wanted.values()) - _tasks_waiting()
    enqueued = 0
    while budget > 0 and any(wanted.values()):
        for channel in wanted:
            if budget <= 0 or not wanted[channel]:
                continue
            try:
                send_due_task.delay(channel)
            except Exception:  # broker down: the next sweep tries again
                logger.warning("could not enqueue send batches (broker unavailable?)", exc_info=True)
                return enqueued
            wanted[channel] -= 1
            budget -= 1
            enqueued += 1
    return enqueued
