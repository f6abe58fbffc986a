"""The sweeper (beat, every 10 s): what keeps delivery going whatever happens to workers and
the broker. Send tasks are not acknowledged late and never redelivered: a worker killed
mid-batch simply loses its task, and Redis may lose its whole queue. What remains is the
outbox, and the sweeper works from it alone:

1. A `sending` message whose lease expired was being sent by a worker that is gone: it is
   in doubt, and is never re-sent blindly. Where the channel can tell (an HTTP provider
   with a status API that finds a message by our idempotency key) it is settled from the
   provider's answer: sent (with its `sent` touchpoint), failed, or back to `queued` when
   the provider never got it. Where the provider deduplicates by our idempotency key, it
   goes back to `queued`: sending again with the same key cannot send twice. Otherwise
   (SMTP has neither) it becomes `unknown`, with the reason, for a person to look at.
2. Campaigns with nothing left to send are completed (campaigns.delivery.control).
3. send_due tasks are enqueued for the channels with due messages.

Claims of a dead worker need nothing: they expire (SEND_CLAIM_LEASE_SECONDS) and the next
claim takes the messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from campaigns.delivery.backends import HttpSender, open_sender
from campaigns.delivery.send import M, Writes, _dt, send_enqueue
from campaigns.models import Channel, ChannelKind, Message

logger = logging.getLogger(__name__)

# Messages asked about per channel and sweep (one status request each).
RECONCILE_PER_SWEEP = 500


def _expired(now: datetime):
    return Message.objects.filter(status=Message.Status.SENDING, lease_until__lt=now)


def _mark_unknown(channel: Channel, now: datetime) -> int:
    reason = (
        f"in doubt: the worker stopped while sending (lease expired); the {channel.kind} channel "
        f"{channel.name!r} cannot tell whether it went out, so it is never re-sent"
    )
    return (
        _expired(now)
        .filter(channel=channel)
        .update(status=Message.Status.UNKNOWN, error=reason, lease_until=None, updated_at=now)
    )


def _reconcile_http(channel: Channel, sender: HttpSender, now: datetime, counts: Counter) -> None:
    give_up = now - timedelta(seconds=settings.SEND_RECONCILE_GIVE_UP_SECONDS)
    rows = list(
        _expired(now)
        .filter(channel=channel)
        .order_by("lease_until")
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
            "provider_id",
            "lease_until",
        )[:RECONCILE_PER_SWEEP]
    )
    for row in rows:
        answer = sender.status(row["id"], row["provider_id"]) if sender.status_url else None
        writes = Writes()
        guard = " WHERE id = %s AND status = 'sending' AND lease_until < %s"
        if answer is not None and answer.status in ("sent", "delivered"):
            writes.sent(row, channel, now, answer.provider_id or row["provider_id"], None)
            counts["sent"] += 1
        elif answer is not None and answer.status == "failed":
            writes.add(
                f"UPDATE {M} SET status = 'failed', error = %s, lease_until = NULL, updated_at = %s" + guard,
                ["the provider's status API says it failed", _dt(now), row["id"], _dt(now)],
            )
            counts["failed"] += 1
        elif (answer is not None and answer.status == "absent") or (answer is None and not sender.status_url):
            why = (
                "the provider's status API does not know it"
                if answer is not None
                else "the provider deduplicates by idempotency key"
            )
            writes.add(
                f"UPDATE {M} SET status = 'queued', not_before = %s, claimed_by = '', lease_until = NULL, "
                "error = %s, updated_at = %s" + guard,
                [_dt(now), f"was in doubt; {why}: sent again with the same key", _dt(now), row["id"], _dt(now)],
            )
            counts["requeued"] += 1
        elif row["lease_until"] < give_up:
            writes.add(
                f"UPDATE {M} SET status = 'unknown', error = %s, lease_until = NULL, updated_at = %s" + guard,
                [
                    "in doubt: the provider's status API gave no answer for "
                    f"{settings.SEND_RECONCILE_GIVE_UP_SECONDS} s; never re-sent",
                    _dt(now),
                    row["id"],
                    _dt(now),
                ],
            )
            counts["unknown"] += 1
        else:
            counts["waiting"] += 1  # ask again at the next sweep
            continue
        writes.durable = True
        writes.flush()


def reconcile_expired(now: datetime | None = None) -> dict:
    """Settle `sending` messages whose lease expired; counts by outcome."""
    now = now or timezone.now()
    counts: Counter = Counter()
    channel_ids = set(_expired(now).values_list("channel_id", flat=True).distinct())
    for channel in Channel.objects.filter(pk__in=channel_ids):
        if channel.kind == ChannelKind.EMAIL:
            counts["unknown"] += _mark_unknown(channel, now)
            continue
        sender = open_sender(channel)
        try:
            if sender.reconcilable:
                _reconcile_http(channel, sender, now, counts)
            else:
                counts["unknown"] += _mark_unknown(channel, now)
        finally:
            sender.close()
    return dict(counts)


def sweep(now: datetime | None = None) -> dict:
    """Reconcile expired leases, complete finished campaigns, enqueue due work."""
    now = now or timezone.now()
    from campaigns.delivery.control import campaigns_mark_completed

    reconciled = reconcile_expired(now)
    return {"reconciled": reconciled, "completed": campaigns_mark_completed(now), "enqueued": send_enqueue()}
