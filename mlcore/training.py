"""Training rows for the propensity and uplift models, from the touchpoint log alone.

One row per (customer, send): every `sent` touchpoint of the campaigns that sent in the last
`days` days (treated), and every `held_out` touchpoint (untreated: the uplift model's
control rows; the propensity model trains on the treated rows only), through the per-send
exposure -> outcome join (marketing.outcomes.send_outcomes_sql):

- label: a touchpoint of the campaign's goal kind in (send, send + the campaign's window];
  sends whose window has not closed by `now` are left out (their label is not known yet);
- channel: the touchpoint's channel label, creative: its creative id, both as indexes
  (`channels`, `creatives`: index 0 is "unknown", so a model scores arms it never saw);
- features (FEATURE_NAMES), known at decision time only: computed in SQL from the
  customer's touchpoints strictly before the send's occurred_at (and the customer's
  created_at); where the send's properties["features"] carry what the policy saw
  ({"channel"|"creative": {"decision": {name: number}}}, see `decision_features`), those
  logged values win, since they are exactly what the decision used.

`decision_features` computes the same vector for live scoring at any instant, so a model is
trained and used on one definition. Where a campaign's goal and window come from: the
campaigns layer registers `campaign_goals` (a hook, mlcore sits below campaigns); without
it every campaign counts "purchase" within 7 days.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connection
from django.utils import timezone

from marketing.models import SYSTEM_KINDS, Customer, Touchpoint
from marketing.outcomes import send_outcomes_sql

FEATURE_NAMES = (
    "recency_days",  # days since the last purchase (LOOKBACK_DAYS + 1 when none in the lookback)
    "frequency_365",  # distinct orders in the last 365 days
    "monetary_365",  # purchase revenue minus refunds in the last 365 days
    "opens_180",
    "clicks_180",
    "sends_180",  # `sent` touchpoints in the last 180 days: how often we already wrote
    "tenure_days",  # days since the customer was created (0 at the earliest)
    "days_since_seen",  # days since the last customer-initiated touchpoint (LOOKBACK_DAYS + 1 when none)
)
LOOKBACK_DAYS = 365
ENGAGEMENT_DAYS = 180
MISSING_DAYS = float(LOOKBACK_DAYS + 1)
DEFAULT_GOAL = ("purchase", 7)
UNKNOWN_CHANNEL = "<unknown>"

CampaignGoals = Callable[[list[int]], dict[int, tuple[str, int]]]
_campaign_goals: CampaignGoals | None = None


def register_campaign_goals(goals: CampaignGoals) -> None:
    """The campaigns layer tells training each campaign's (goal kind, window days)."""
    global _campaign_goals
    _campaign_goals = goals


def campaign_goals(campaign_ids: list[int]) -> dict[int, tuple[str, int]]:
    """(goal kind, window days) of each campaign id (DEFAULT_GOAL when unknown)."""
    found = _campaign_goals(campaign_ids) if _campaign_goals is not None else {}
    return {int(c): tuple(found.get(int(c), DEFAULT_GOAL)) for c in campaign_ids}


@dataclass
class TrainingSet:
    """Rows in touchpoint-id order within each (goal, window) group of campaigns."""

    X: np.ndarray  # (n, d) float32, FEATURE_NAMES order
    channel: np.ndarray  # (n,) int64 index into `channels`
    creative: np.ndarray  # (n,) int64 index into `creatives`
    y: np.ndarray  # (n,) float32 0/1
    treated: np.ndarray  # (n,) bool: sent (True) or held out (False)
    touchpoint_id: np.ndarray  # (n,) int64: the send
    customer_id: np.ndarray  # (n,) int64
    campaign_id: np.ndarray  # (n,) int64
    channels: list[str] = field(default_factory=list)  # index -> channel label (0: unknown)
    creatives: list[int] = field(default_factory=list)  # index -> creative id (0: unknown)
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))

    def __len__(self) -> int:
        return len(self.y)

    def rows(self, mask: np.ndarray) -> TrainingSet:
        return TrainingSet(
            X=self.X[mask],
            channel=self.channel[mask],
            creative=self.creative[mask],
            y=self.y[mask],
            treated=self.treated[mask],
            touchpoint_id=self.touchpoint_id[mask],
            customer_id=self.customer_id[mask],
            campaign_id=self.campaign_id[mask],
            channels=self.channels,
            creatives=self.creatives,
            feature_names=self.feature_names,
        )


# --- SQL helpers (PostgreSQL and SQLite) ----------------------------------------------------------


def _qn(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _minus_days(column: str, days: int) -> tuple[str, list]:
    if connection.vendor == "postgresql":
        return f"({column} - %s * INTERVAL '1 day')", [days]
    return f"django_format_dtdelta('-', {column}, %s)", [int(timedelta(days=days).total_seconds()) * 10**6]


def _days_between(later: str, earlier: str) -> str:
    if connection.vendor == "postgresql":
        return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) / 86400.0)"
    return f"(julianday({later}) - julianday({earlier}))"


def _logged(path: tuple[str, ...]) -> str:
    """A number at `path` of the touchpoint p's properties (NULL when absent or not a number)."""
    if connection.vendor == "postgresql":
        pointer = "{" + ",".join(path) + "}"
        return (
            f"CASE WHEN jsonb_typeof(p.properties #> '{pointer}') = 'number' "
            f"THEN (p.properties #>> '{pointer}')::float8 END"
        )
    json_path = "$." + ".".join(path)
    return (
        f"CASE WHEN json_type(p.properties, '{json_path}') IN ('integer', 'real') "
        f"THEN json_extract(p.properties, '{json_path}') END"
    )


def _features_sql(anchors: str, anchor_params: list) -> tuple[str, list]:
    """Point-in-time features of each anchor (anchor_id, customer_id, at): one row
    (anchor_id, <FEATURE_NAMES>) with NULL recency/days_since_seen when nothing was found,
    from the customer's touchpoints with at - LOOKBACK_DAYS <= occurred_at < at only."""
    tp, customers = _qn(Touchpoint), _qn(Customer)
    lookback, lookback_params = _minus_days("a.at", LOOKBACK_DAYS)
    recent, recent_params = _minus_days("a.at", ENGAGEMENT_DAYS)
    system = ", ".join(f"'{kind}'" for kind in sorted(SYSTEM_KINDS))
    money = "DOUBLE PRECISION" if connection.vendor == "postgresql" else "REAL"
    sql = f"""
        SELECT a.anchor_id,
               {_days_between("a.at", "MAX(CASE WHEN h.kind = 'purchase' THEN h.occurred_at END)")} AS recency_days,
               COUNT(DISTINCT CASE WHEN h.kind = 'purchase' THEN
                   CASE WHEN h.order_id <> '' THEN 'o:' || h.order_id ELSE 'e:' || h.event_id END END)
                   AS frequency_365,
               CAST(COALESCE(SUM(CASE WHEN h.kind = 'purchase' THEN h.revenue END), 0)
                    - COALESCE(SUM(CASE WHEN h.kind = 'refund' THEN h.revenue END), 0) AS {money}) AS monetary_365,
               SUM(CASE WHEN h.kind = 'open' AND h.occurred_at >= {recent} THEN 1 ELSE 0 END) AS opens_180,
               SUM(CASE WHEN h.kind = 'click' AND h.occurred_at >= {recent} THEN 1 ELSE 0 END) AS clicks_180,
               SUM(CASE WHEN h.kind = 'sent' AND h.occurred_at >= {recent} THEN 1 ELSE 0 END) AS sends_180,
               {_days_between("a.at", "MIN(c.created_at)")} AS tenure_days,
               {_days_between("a.at", f"MAX(CASE WHEN h.kind NOT IN ({system}) THEN h.occurred_at END)")}
                   AS days_since_seen
        FROM ({anchors}) a
        LEFT JOIN {customers} c ON c.id = a.customer_id
        LEFT JOIN {tp} h ON h.customer_id = a.customer_id AND h.occurred_at < a.at AND h.occurred_at >= {lookback}
        GROUP BY a.anchor_id, a.at
    """
    # Parameters in textual order: the three `recent` bounds, the anchors, the lookback.
    return sql, [*recent_params, *recent_params, *recent_params, *anchor_params, *lookback_params]


def _finish_features(raw: np.ndarray) -> np.ndarray:
    """NULLs (NaN) to their stated defaults; tenure never negative."""
    X = np.array(raw, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))  # a copy: filled in place
    names = list(FEATURE_NAMES)
    for name in ("recency_days", "days_since_seen"):
        column = X[:, names.index(name)]
        column[np.isnan(column)] = MISSING_DAYS
    tenure = X[:, names.index("tenure_days")]
    X[:, names.index("tenure_days")] = np.where(np.isnan(tenure), 0.0, np.maximum(tenure, 0.0))
    X[np.isnan(X)] = 0.0
    return X.astype(np.float32)


def _frame(sql: str, params: list, names: Sequence[str], text: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of `sql` as a DataFrame with these column names: numbers as float64 (NULL:
    NaN), the `text` columns as strings. PostgreSQL streams them with COPY as CSV, which
    pandas parses in C: a million training rows cost no Python tuple each."""
    if connection.vendor == "postgresql":
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
        ):
            data = b"".join(bytes(chunk) for chunk in copy)
        if not data:
            return pd.DataFrame({name: pd.Series(dtype=object if name in text else np.float64) for name in names})
        return pd.read_csv(
            io.BytesIO(data),
            header=None,
            names=list(names),
            dtype={name: str for name in text},
            keep_default_na=False,
            na_values={name: [""] for name in names if name not in text},
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    frame = pd.DataFrame.from_records(rows, columns=list(names))
    for name in names:
        frame[name] = frame[name].astype(str) if name in text else pd.to_numeric(frame[name], errors="coerce")
    return frame


# --- the training set ---------------------------------------------------------------------------


def training_set(
    *,
    days: int = 90,
    now: datetime | None = None,
    campaign_ids: Sequence[int] | None = None,
    include_held_out: bool = True,
) -> TrainingSet:
    """The rows of every send (and held-out assignment) in [now - days, now) whose outcome
    window closed by `now`, of all campaigns or the given ones (module docstring)."""
    now = now or timezone.now()
    since = now - timedelta(days=days)
    kinds = ["sent", "held_out"] if include_held_out else ["sent"]
    sends = Touchpoint.objects.filter(kind__in=kinds, occurred_at__gte=since, occurred_at__lt=now).exclude(
        campaign_id__isnull=True
    )
    if campaign_ids is not None:
        sends = sends.filter(campaign_id__in=list(campaign_ids))
    found = sorted(sends.values_list("campaign_id", flat=True).distinct().order_by())
    groups: dict[tuple[str, int], list[int]] = {}
    for campaign_id, goal in campaign_goals(found).items():
        groups.setdefault(goal, []).append(campaign_id)

    parts = [_group_rows([], "", 0, since, since, include_held_out)]  # the columns, when nothing else
    for (goal_kind, window_days), ids in sorted(groups.items()):
        until = now - timedelta(days=window_days)
        if until <= since:
            continue
        parts.append(_group_rows(ids, goal_kind, window_days, since, until, include_held_out))
    return _assemble(pd.concat(parts, ignore_index=True))


_LOGGED_LEVELS = ("channel", "creative")


_ROW_COLUMNS = ("id", "customer_id", "campaign_id", "kind", "channel", "creative_id", "converted", *FEATURE_NAMES)


def _group_rows(
    campaign_ids: list[int], goal_kind: str, window_days: int, since: datetime, until: datetime, held_out: bool
) -> pd.DataFrame:
    if not campaign_ids:
        return pd.DataFrame(
            {name: pd.Series(dtype=object if name in ("kind", "channel") else np.float64) for name in _ROW_COLUMNS}
        )
    sends_sql, sends_params = send_outcomes_sql(
        campaign_ids, goal_kind=goal_kind, window_days=window_days, since=since, until=until
    )
    anchors = "SELECT s.id AS anchor_id, s.customer_id, s.occurred_at AS at FROM s"
    features_sql, features_params = _features_sql(anchors, [])
    # A logged value wins over the computed one (module docstring).
    columns = []
    for name in FEATURE_NAMES:
        logged = [_logged(("features", level, "decision", name)) for level in _LOGGED_LEVELS]
        columns.append(f"COALESCE({', '.join(logged)}, f.{name})")
    kind_filter = "" if held_out else "WHERE s.kind = 'sent'"
    sql = f"""
        WITH s AS ({sends_sql}), f AS ({features_sql})
        SELECT s.id, s.customer_id, s.campaign_id, s.kind, s.channel, COALESCE(s.creative_id, 0), s.converted,
               {", ".join(columns)}
        FROM s JOIN f ON f.anchor_id = s.id JOIN {_qn(Touchpoint)} p ON p.id = s.id
        {kind_filter}
        ORDER BY s.id
    """
    return _frame(sql, [*sends_params, *features_params], _ROW_COLUMNS, text=("kind", "channel"))


def _assemble(frame: pd.DataFrame) -> TrainingSet:
    channel_labels = frame["channel"].to_numpy(dtype=object)
    creative_ids = frame["creative_id"].to_numpy(dtype=np.int64)
    channels = [UNKNOWN_CHANNEL, *sorted(set(channel_labels.tolist()))]
    creatives = [0, *sorted(int(c) for c in np.unique(creative_ids) if c)]
    channel, creative = encode_arms(channels, creatives, channel_labels, creative_ids)
    return TrainingSet(
        X=_finish_features(frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)),
        channel=channel,
        creative=creative,
        y=frame["converted"].to_numpy(dtype=np.float32),
        treated=(frame["kind"] == "sent").to_numpy(dtype=bool),
        touchpoint_id=frame["id"].to_numpy(dtype=np.int64),
        customer_id=frame["customer_id"].to_numpy(dtype=np.int64),
        campaign_id=frame["campaign_id"].to_numpy(dtype=np.int64),
        channels=channels,
        creatives=creatives,
    )


def encode_arms(
    channels: Sequence[str], creatives: Sequence[int], channel_labels, creative_ids
) -> tuple[np.ndarray, np.ndarray]:
    """Channel labels and creative ids as indexes into a model's `channels` / `creatives`
    lists (0, "unknown", for anything the model never saw)."""
    channel = pd.Index(list(channels)).get_indexer(pd.Index(np.asarray(channel_labels, dtype=object)))
    creative = pd.Index(np.asarray(creatives, dtype=np.int64)).get_indexer(np.asarray(creative_ids, dtype=np.int64))
    channel = np.where(channel < 0, 0, channel).astype(np.int64)
    creative = np.where(creative < 0, 0, creative).astype(np.int64)
    creative[np.asarray(creative_ids, dtype=np.int64) == 0] = 0
    return channel, creative


# --- live features ------------------------------------------------------------------------------


def decision_features(customer_ids: Sequence[int] | np.ndarray, at: datetime | None = None) -> np.ndarray:
    """The FEATURE_NAMES vector of each customer at instant `at` (default now), from their
    touchpoints before `at`: float32 (n, d), rows in the order of `customer_ids` (an
    unknown id gets the "nothing known" row). The same definition training uses, in one
    SQL statement."""
    ids = np.asarray(customer_ids, dtype=np.int64).reshape(-1)
    if not len(ids):
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    at = at or timezone.now()
    if connection.vendor == "postgresql":
        anchors = (
            "SELECT (u.ord - 1) AS anchor_id, u.customer_id, %s::timestamptz AS at "
            "FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(customer_id, ord)"
        )
        anchor_params = [at, ids.tolist()]
    else:
        anchors = (
            "SELECT CAST(j.key AS INTEGER) AS anchor_id, CAST(j.value AS INTEGER) AS customer_id, %s AS at "
            "FROM json_each(%s) j"
        )
        anchor_params = [connection.ops.adapt_datetimefield_value(at), json.dumps(ids.tolist())]
    sql, params = _features_sql(anchors, anchor_params)
    frame = _frame(f"SELECT * FROM ({sql}) f ORDER BY f.anchor_id", params, ("anchor_id", *FEATURE_NAMES))
    raw = np.full((len(ids), len(FEATURE_NAMES)), np.nan)
    raw[frame["anchor_id"].to_numpy(dtype=np.int64)] = frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    return _finish_features(raw)


def customers_to_score() -> np.ndarray:
    """Every customer a champion scores (not erased), by id."""
    return np.asarray(
        Customer.objects.filter(erased_at__isnull=True).order_by("id").values_list("id", flat=True), dtype=np.int64
    )


def decision_logged(customer_features: np.ndarray) -> list[dict]:
    """What a policy logs for the rows of `decision_features` (Picks.features under its
    kind: {"decision": {name: value}}), so training reads back exactly what it saw."""
    return [
        {"decision": {name: float(value) for name, value in zip(FEATURE_NAMES, row, strict=True)}}
        for row in np.asarray(customer_features, dtype=np.float64)
    ]
