"""Launching a campaign run: from the audience to the outbox in a few set-based statements.

`run_launch(campaign_id, run_key)` in one transaction, under the campaign's row lock:

1. the run (CampaignRun, unique per campaign and key): when it already has its messages,
   it is returned as it is, so a launch or a schedule firing twice creates nothing new;
2. one SELECT of the audience (segment members minus exclusion members; for a triggered
   run the given customers, minus exclusion members, and when the campaign also has
   audience segments only their members) with, per customer, a bit set: erased, unsubscribed,
   over the frequency cap, in the holdout (`holdout.HoldoutBucket`, computed in SQL), and
   per channel kind consent, suppressed address and usable address (PostgreSQL streams
   it with COPY; two integers per customer);
3. numpy: the drop reason of each customer, the policies' picks (`policies`; vectorised),
   the budget cut;
4. COPY of one Message per customer (`queued`, `held_out` or `suppressed` with the reason
   in `error`), then one INSERT … SELECT of the held-out customers' touchpoints;
5. after commit: `send.send_enqueue` for the channels that got queued messages.

The statement count does not depend on the audience size (tests/test_launch.py checks it).

Rules (where the issue leaves a choice, the reason is given):

- Drop reasons, the first that applies: erased, unsubscribed, no_consent, suppressed,
  no_address, frequency_cap, budget. With several candidate channels a customer is
  dropped only when no channel can reach them, with the reason of the channel that got
  furthest through consent -> suppression -> address (email without consent and sms
  suppressed: "suppressed").
- Usable address: a non-empty email; a phone (Customer's constraint keeps phones E.164);
  an enabled Device for push; webhooks need none (and no consent).
- Frequency cap: messages of any campaign sent within the last `frequency_cap_days`, plus
  those still queued or sending (they are about to be sent: counting them keeps two
  campaigns launched together from both passing the cap).
- Holdout among the eligible (after the drops above), by the campaign's salt: stable for
  a customer across runs.
- Budget: budget - fixed cost - what the campaign spent or committed (the cost of sent
  messages; the channel cost of those queued, sending or unknown) buys messages in
  customer-id order; the cut falls at the first treated customer it cannot pay for and
  drops everyone from there on, held-out customers included, so treated and control come
  from the same customers (an unbiased comparison) and the holdout costs nothing.
- Held-out customers get the channel and creative the policy would have picked, a
  `held_out` message and a `held_out` touchpoint at launch time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import repeat

import numpy as np
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.expressions import RawSQL
from django.utils import timezone

from campaigns.delivery.holdout import HoldoutBucket, holdout_threshold
from campaigns.delivery.persuadables import persuadables_errors, persuadables_filter
from campaigns.delivery.policies import (
    CampaignPolicies,
    ChannelOption,
    CreativeOption,
    PolicyContext,
    features_grouped,
    policies_for,
)
from campaigns.models import (
    Campaign,
    CampaignRun,
    Channel,
    ChannelKind,
    Creative,
    Device,
    Message,
    SegmentMembership,
)
from marketing.bulk import insert_rows
from marketing.errors import BatchInvalid, Conflict, NotFound, RowError
from marketing.models import Customer, Suppression, Touchpoint

logger = logging.getLogger(__name__)

LAUNCH_KEY = "launch"
# Drop reasons, in the order they are checked (Message.error of a `suppressed` message).
REASONS = ("erased", "unsubscribed", "no_consent", "suppressed", "no_address", "frequency_cap", "budget")
ERASED, UNSUBSCRIBED, NO_CONSENT, SUPPRESSED, NO_ADDRESS, FREQUENCY_CAP, BUDGET = range(len(REASONS))
FINISHED = (Campaign.Status.COMPLETED, Campaign.Status.CANCELLED)

# The per-customer bit set of the selection query.
_ERASED_BIT, _UNSUBSCRIBED_BIT, _OVER_CAP_BIT, _HELD_BIT = 1, 2, 4, 8
KINDS = (ChannelKind.EMAIL, ChannelKind.SMS, ChannelKind.PUSH, ChannelKind.WEBHOOK)


def _kind_bits(kind: str) -> tuple[int, int, int]:
    """(consent, suppressed, address) bits of a channel kind."""
    base = 4 + 3 * KINDS.index(kind)
    return 1 << base, 1 << (base + 1), 1 << (base + 2)


# Per kind: SQL for consent, suppressed and usable address (None: always yes / never).
_KIND_SQL = {
    ChannelKind.EMAIL: ("c.email_opt_in", "se.value IS NOT NULL", "c.email <> ''"),
    ChannelKind.SMS: ("c.sms_opt_in", "sp.value IS NOT NULL", "c.phone <> ''"),
    ChannelKind.PUSH: ("c.push_opt_in", None, "d.customer_id IS NOT NULL"),
    ChannelKind.WEBHOOK: (None, None, None),
}
_MICRO = Decimal("0.000001")


# --- the campaign's policies -----------------------------------------------------------------


def policy_context(campaign: Campaign, run_key: str = "", now: datetime | None = None) -> PolicyContext:
    channels = tuple(
        ChannelOption(id=c.pk, kind=c.kind, name=c.name, cost=c.cost_per_message, enabled=c.enabled)
        for c in Channel.objects.order_by("pk")
    )
    creatives = tuple(
        CreativeOption(id=c.pk, channel_kind=c.channel_kind, name=c.name, weight=c.weight, enabled=c.enabled)
        for c in Creative.objects.filter(campaign_id=campaign.pk).order_by("pk")
    )
    return PolicyContext(
        campaign_id=campaign.pk, run_key=run_key, salt=campaign.salt, channels=channels, creatives=creatives, now=now
    )


def campaign_policies(campaign: Campaign, run_key: str = "", now: datetime | None = None) -> CampaignPolicies:
    """The campaign's channel and creative policies for a run; BatchInvalid naming the
    field ("channel_policy", "creative_policy", "creatives") when they cannot pick."""
    policies, problems = policies_for(
        campaign.channel_policy, campaign.creative_policy, policy_context(campaign, run_key, now)
    )
    if policies is None:
        raise BatchInvalid(
            [
                RowError(row=None, field=field, message=message)
                for field, messages in problems.by_field.items()
                for message in messages
            ]
        )
    return policies


# --- the launch ------------------------------------------------------------------------------


def run_launch(
    campaign_id: int, run_key: str, *, customer_ids: Iterable[int] | None = None, now: datetime | None = None
) -> CampaignRun:
    """Launch one run of a campaign (see the module docstring): its audience, or
    `customer_ids` (a triggered run; exclusions still apply, and audience segments when
    the campaign has any). Idempotent per (campaign, run key): a run that has its messages
    is returned unchanged. The run's `counts`: {"audience", "eligible", "held_out",
    "queued", "suppressed": {reason: n}} with audience = eligible + all suppressed and
    eligible = held_out + queued. NotFound for an unknown campaign, Conflict for a
    completed or cancelled one, BatchInvalid (naming the field) when the campaign cannot
    pick a channel and creative or has no audience."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
        if campaign is None:
            raise NotFound(f"Campaign {campaign_id} does not exist.")
        run = CampaignRun.objects.filter(campaign=campaign, key=run_key).first()
        if run is not None and (run.counts or Message.objects.filter(campaign_id=campaign.pk, run=run).exists()):
            return run
        if campaign.status in FINISHED:
            raise Conflict(f"Campaign {campaign.pk} is {campaign.status}: it makes no new runs.")
        policies = campaign_policies(campaign, run_key, now)
        audience = list(campaign.audience.values_list("pk", flat=True))
        if customer_ids is None and not audience:
            raise BatchInvalid([RowError(row=None, field="audience", message="choose at least one audience segment")])
        problems = persuadables_errors(campaign)
        if problems:
            raise BatchInvalid(problems)
        if run is None:
            run = CampaignRun.objects.create(campaign=campaign, key=run_key, started_at=now)

        channel_ids = policies.channel.channel_ids()
        channels = {c.pk: c for c in Channel.objects.filter(pk__in=channel_ids)}
        kinds = [channels[channel_id].kind for channel_id in channel_ids]
        ids, flags = _select(campaign, audience, customer_ids, set(kinds), now)
        plan = _decide(campaign, policies, ids, flags, channel_ids, kinds, channels, _budget_left(campaign))
        _write_messages(campaign, run, policies, ids, plan, now)
        if plan.counts["held_out"]:
            _write_held_out_touchpoints(run, now)

        run.counts = plan.counts
        if not plan.counts["queued"]:
            run.status, run.finished_at = CampaignRun.Status.COMPLETED, now
        run.save(update_fields=["counts", "status", "finished_at"])
        queued_channels = sorted({int(c) for c in np.unique(plan.channel[plan.status == _QUEUED])})
        if queued_channels:
            transaction.on_commit(lambda: send_after_launch(queued_channels), robust=True)
    return run


def send_after_launch(channel_ids: list[int]) -> None:
    """Wake the senders for these channels (the sweeper would find the messages within
    seconds anyway: this only saves that wait)."""
    try:
        from campaigns.delivery.send import send_enqueue
    except ImportError:  # the sender is not there (yet): the sweeper's job
        logger.warning("campaigns.delivery.send is missing: messages wait for the sweeper")
        return
    send_enqueue(channel_ids)


# --- 2. the selection ------------------------------------------------------------------------


def _qn(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _selection_sql(
    campaign: Campaign, audience: list[int], customer_ids: Iterable[int] | None, kinds: set[str], now: datetime
) -> tuple[str, list]:
    members = _qn(SegmentMembership)
    base_params: list = []
    if customer_ids is not None:
        given = sorted({int(customer_id) for customer_id in customer_ids})
        if connection.vendor == "postgresql":
            base = "SELECT DISTINCT unnest(%s::bigint[]) AS customer_id"
            base_params.append(given)
        else:
            base = "SELECT DISTINCT CAST(value AS INTEGER) AS customer_id FROM json_each(%s)"
            base_params.append(json.dumps(given))
        if audience:  # a triggered campaign with an audience reaches only its members
            base = (
                f"SELECT g.customer_id FROM ({base}) g WHERE EXISTS ("
                f"SELECT 1 FROM {members} m WHERE m.segment_id IN ({', '.join(['%s'] * len(audience))}) "
                f"AND m.customer_id = g.customer_id)"
            )
            base_params += audience
    else:
        distinct = "DISTINCT " if len(audience) > 1 else ""
        base = f"SELECT {distinct}customer_id FROM {members} WHERE segment_id IN ({', '.join(['%s'] * len(audience))})"
        base_params += audience
    exclusions = list(campaign.exclusions.values_list("pk", flat=True))
    if exclusions:
        base = (
            f"SELECT a.customer_id FROM ({base}) a WHERE NOT EXISTS ("
            f"SELECT 1 FROM {members} x WHERE x.segment_id IN ({', '.join(['%s'] * len(exclusions))}) "
            f"AND x.customer_id = a.customer_id)"
        )
        base_params += exclusions
    base, base_params = persuadables_filter(base, base_params, campaign)

    bits = [
        f"CASE WHEN c.erased_at IS NOT NULL THEN {_ERASED_BIT} ELSE 0 END",
        f"CASE WHEN c.unsubscribed_at IS NOT NULL THEN {_UNSUBSCRIBED_BIT} ELSE 0 END",
    ]
    bit_params: list = []
    joins: list[str] = []
    join_params: list = []
    if campaign.frequency_cap is not None:
        bits.append(f"CASE WHEN COALESCE(f.n, 0) >= %s THEN {_OVER_CAP_BIT} ELSE 0 END")
        bit_params.append(campaign.frequency_cap)
        joins.append(
            f"LEFT JOIN (SELECT customer_id, COUNT(*) AS n FROM {_qn(Message)} "
            f"WHERE sent_at >= %s OR status IN (%s, %s) GROUP BY customer_id) f ON f.customer_id = c.id"
        )
        join_params += [
            connection.ops.adapt_datetimefield_value(now - timedelta(days=campaign.frequency_cap_days)),
            Message.Status.QUEUED.value,
            Message.Status.SENDING.value,
        ]
    bucket_sql, bucket_params = _compile(HoldoutBucket(Value(campaign.salt), Value(campaign.pk), RawSQL("c.id", [])))
    bits.append(f"CASE WHEN {bucket_sql} < %s THEN {_HELD_BIT} ELSE 0 END")
    bit_params += [*bucket_params, holdout_threshold(campaign.holdout_percent)]
    for kind in sorted(kinds):
        for condition, bit in zip(_KIND_SQL[kind], _kind_bits(kind), strict=True):
            if condition is not None:
                bits.append(f"CASE WHEN {condition} THEN {bit} ELSE 0 END")
    if ChannelKind.EMAIL in kinds:
        joins.append(f"LEFT JOIN {_qn(Suppression)} se ON se.kind = %s AND se.value = LOWER(c.email)")
        join_params.append(Suppression.Kind.EMAIL.value)
    if ChannelKind.SMS in kinds:
        joins.append(f"LEFT JOIN {_qn(Suppression)} sp ON sp.kind = %s AND sp.value = c.phone")
        join_params.append(Suppression.Kind.PHONE.value)
    if ChannelKind.PUSH in kinds:
        joins.append(
            f"LEFT JOIN (SELECT DISTINCT customer_id FROM {_qn(Device)} WHERE enabled) d ON d.customer_id = c.id"
        )
    sql = (
        f"SELECT c.id, {' + '.join(bits)} FROM ({base}) a JOIN {_qn(Customer)} c ON c.id = a.customer_id "
        f"{' '.join(joins)} ORDER BY c.id"
    )
    # Parameters in textual order: the bit expressions, the audience, the joins.
    return sql, [*bit_params, *base_params, *join_params]


def _compile(expression) -> tuple[str, list]:
    compiler = Customer.objects.none().query.get_compiler(connection=connection)
    sql, params = compiler.compile(expression)
    return sql, list(params)


def _select(
    campaign: Campaign, audience: list[int], customer_ids: Iterable[int] | None, kinds: set[str], now: datetime
) -> tuple[np.ndarray, np.ndarray]:
    """(customer ids ascending, their bit sets), both int64."""
    sql, params = _selection_sql(campaign, audience, customer_ids, kinds, now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY streams the two integers as text, which numpy parses in C: several times
            # faster than a million fetched tuples.
            with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", params) as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
            values = np.fromstring(data, dtype=np.int64, sep=" ") if data else np.zeros(0, dtype=np.int64)
        else:
            cursor.execute(sql, params)
            values = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1)
    pairs = values.reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _budget_left(campaign: Campaign) -> int | None:
    """What the campaign may still spend, in millionths, or None without a budget."""
    if campaign.budget is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM(CASE WHEN m.cost IS NOT NULL THEN m.cost "
            f"WHEN m.status IN (%s, %s, %s) THEN ch.cost_per_message ELSE 0 END), 0) "
            f"FROM {_qn(Message)} m LEFT JOIN {_qn(Channel)} ch ON ch.id = m.channel_id WHERE m.campaign_id = %s",
            [Message.Status.QUEUED, Message.Status.SENDING, Message.Status.UNKNOWN, campaign.pk],
        )
        (spent,) = cursor.fetchone()
    left = Decimal(campaign.budget) - Decimal(campaign.fixed_cost) - Decimal(str(spent or 0))
    return _micros(left)


def _micros(amount: Decimal) -> int:
    return int((Decimal(amount) / _MICRO).to_integral_value())


# --- 3. the decisions ------------------------------------------------------------------------

_QUEUED, _HELD_OUT, _SUPPRESSED = 0, 1, 2
_STATUS_NAMES = np.array(
    [Message.Status.QUEUED.value, Message.Status.HELD_OUT.value, Message.Status.SUPPRESSED.value], dtype=object
)


@dataclass
class LaunchPlan:
    """Per customer (aligned with the selected ids): status code, drop reason (-1: none),
    channel and creative id (0: none), probability (nan: none), features index (-1: none)
    into `features_json`."""

    status: np.ndarray
    reason: np.ndarray
    channel: np.ndarray
    creative: np.ndarray
    probability: np.ndarray
    features: np.ndarray
    features_json: list[str]
    counts: dict


def _decide(
    campaign: Campaign,
    policies: CampaignPolicies,
    ids: np.ndarray,
    flags: np.ndarray,
    channel_ids: list[int],
    kinds: list[str],
    channels: dict[int, Channel],
    budget_left: int | None,
) -> LaunchPlan:
    n = len(ids)
    # How far each customer got with each candidate channel: 0 no consent, 1 suppressed,
    # 2 no address, 3 reachable.
    progress = np.empty((n, len(channel_ids)), dtype=np.int8)
    for column, kind in enumerate(kinds):
        consent_bit, suppressed_bit, address_bit = _kind_bits(kind)
        consent_sql, suppressed_sql, address_sql = _KIND_SQL[kind]
        consent = (flags & consent_bit) != 0 if consent_sql else np.ones(n, dtype=bool)
        suppressed = (flags & suppressed_bit) != 0 if suppressed_sql else np.zeros(n, dtype=bool)
        address = (flags & address_bit) != 0 if address_sql else np.ones(n, dtype=bool)
        progress[:, column] = np.where(~consent, 0, np.where(suppressed, 1, np.where(~address, 2, 3)))
    best = progress.max(axis=1) if len(channel_ids) else np.zeros(n, dtype=np.int8)
    reason = np.where(best < 3, NO_CONSENT + best, -1)
    reason = np.where((reason < 0) & ((flags & _OVER_CAP_BIT) != 0), FREQUENCY_CAP, reason)
    reason = np.where((flags & _UNSUBSCRIBED_BIT) != 0, UNSUBSCRIBED, reason)
    reason = np.where((flags & _ERASED_BIT) != 0, ERASED, reason)

    channel = np.zeros(n, dtype=np.int64)
    creative = np.zeros(n, dtype=np.int64)
    probability = np.full(n, np.nan)
    features = np.full(n, -1, dtype=np.int64)
    features_json: list[str] = []
    picked = np.flatnonzero(reason < 0)
    if len(picked):
        picked_ids = ids[picked]
        channel_picks = policies.channel.pick(picked_ids, np.array(channel_ids, dtype=np.int64), progress[picked] == 3)
        columns = _columns(np.array(channel_ids, dtype=np.int64), channel_picks.choice)
        if (columns < 0).any() or not (progress[picked, columns] == 3).all():
            raise ValueError(
                f"channel policy {policies.channel.label} picked a channel a customer cannot be reached on"
            )
        kind_of = np.array(kinds, dtype=object)
        creative_picks = policies.creative.pick(picked_ids, channel_picks.choice, kind_of[columns])
        channel[picked] = channel_picks.choice
        creative[picked] = creative_picks.choice
        probability[picked] = channel_picks.probability * creative_picks.probability
        features[picked], features_json = _combined_features(
            channel_picks.features, creative_picks.features, len(picked)
        )

    held = ((flags & _HELD_BIT) != 0) & (reason < 0)
    if budget_left is not None and len(picked):
        cost_of = np.array([_micros(channels[channel_id].cost_per_message) for channel_id in channel_ids])
        costs = cost_of[_columns(np.array(channel_ids, dtype=np.int64), channel[picked])]
        spend = np.cumsum(np.where(held[picked], 0, costs))
        over = picked[spend > budget_left]
        reason[over] = BUDGET
        held[over] = False

    status = np.full(n, _SUPPRESSED, dtype=np.int8)
    status[(reason < 0) & ~held] = _QUEUED
    status[(reason < 0) & held] = _HELD_OUT
    dropped = np.bincount(reason[reason >= 0], minlength=len(REASONS))
    counts = {
        "audience": int(n),
        "eligible": int(np.count_nonzero(reason < 0)),
        "held_out": int(np.count_nonzero(status == _HELD_OUT)),
        "queued": int(np.count_nonzero(status == _QUEUED)),
        "suppressed": {REASONS[code]: int(count) for code, count in enumerate(dropped) if count},
    }
    return LaunchPlan(status, reason, channel, creative, probability, features, features_json, counts)


def _columns(channel_ids: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The column of each chosen channel id in `channel_ids` (-1 when it is not there)."""
    order = np.argsort(channel_ids)
    positions = np.clip(np.searchsorted(channel_ids[order], chosen), 0, len(channel_ids) - 1)
    columns = order[positions]
    return np.where(channel_ids[columns] == chosen, columns, -1)


def _combined_features(channel_features, creative_features, n: int) -> tuple[np.ndarray, list[str]]:
    """Each customer's {"channel": …, "creative": …} as an index into distinct JSON texts."""
    channel_grouped = features_grouped(channel_features, n)
    creative_grouped = features_grouped(creative_features, n)
    width = max(len(creative_grouped.values), 1)
    combined = np.asarray(channel_grouped.index, dtype=np.int64) * width + np.asarray(creative_grouped.index)
    distinct, index = np.unique(combined, return_inverse=True)
    texts = [
        json.dumps(
            {
                "channel": channel_grouped.values[int(key) // width],
                "creative": creative_grouped.values[int(key) % width],
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        for key in distinct.tolist()
    ]
    return index.reshape(-1), texts


# --- 4. the writes ---------------------------------------------------------------------------

_MESSAGE_COLUMNS = (
    "campaign_id",
    "run_id",
    "customer_id",
    "channel_id",
    "creative_id",
    "status",
    "not_before",
    "claimed_by",
    "policy",
    "probability",
    "features",
    "attempts",
    "recipient",
    "provider_id",
    "error",
    "created_at",
    "updated_at",
)


def _write_messages(
    campaign: Campaign, run: CampaignRun, policies: CampaignPolicies, ids: np.ndarray, plan: LaunchPlan, now: datetime
) -> None:
    if not len(ids):
        return
    at = connection.ops.adapt_datetimefield_value(now)
    has_pick = plan.channel != 0

    def nullable(values: np.ndarray) -> list:
        column = values.astype(object)
        column[~has_pick] = None
        return column.tolist()

    features = np.array([*plan.features_json, "{}"], dtype=object)[plan.features].tolist()  # -1: "{}"
    labels = np.where(has_pick, policies.label, "").astype(object).tolist()
    errors = np.array(["", *REASONS], dtype=object)[plan.reason + 1].tolist()
    rows = zip(
        repeat(campaign.pk),
        repeat(run.pk),
        ids.tolist(),
        nullable(plan.channel),
        nullable(plan.creative),
        _STATUS_NAMES[plan.status].tolist(),
        repeat(at),
        repeat(""),
        labels,
        nullable(plan.probability),
        features,
        repeat(0),
        repeat(""),
        repeat(""),
        errors,
        repeat(at),
        repeat(at),
    )
    insert_rows(Message._meta.db_table, _MESSAGE_COLUMNS, rows)


def _write_held_out_touchpoints(run: CampaignRun, now: datetime) -> None:
    """One `held_out` touchpoint per held-out message of the run (event id
    "held_out:<message id>"; a replay adds nothing), in one INSERT … SELECT."""
    if connection.vendor == "postgresql":
        properties = (
            "jsonb_build_object('run_id', m.run_id, 'channel_id', m.channel_id, 'policy', m.policy, "
            "'probability', m.probability, 'features', m.features)"
        )
    else:
        properties = (
            "json_object('run_id', m.run_id, 'channel_id', m.channel_id, 'policy', m.policy, "
            "'probability', m.probability, 'features', json(m.features))"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_qn(Touchpoint)} (customer_id, kind, channel, campaign_id, message_id, creative_id, "
            f"occurred_at, currency, order_id, sku, event_id, properties) "
            f"SELECT m.customer_id, %s, ch.kind, m.campaign_id, m.id, m.creative_id, %s, '', '', '', "
            f"%s || m.id, {properties} "
            f"FROM {_qn(Message)} m JOIN {_qn(Channel)} ch ON ch.id = m.channel_id "
            f"WHERE m.campaign_id = %s AND m.run_id = %s AND m.status = %s "
            f"ON CONFLICT DO NOTHING",
            [
                "held_out",
                connection.ops.adapt_datetimefield_value(now),
                "held_out:",
                run.campaign_id,
                run.pk,
                Message.Status.HELD_OUT.value,
            ],
        )
