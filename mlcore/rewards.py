"""Per-arm rewards of a campaign's sends, for bandits: successes and trials per creative or
per channel (optionally per customer group), from the touchpoint log alone.

An exposure here is one `sent` touchpoint of the campaign (one per message: the decision a
policy made), and its conversion follows marketing.outcomes exactly: a goal-kind
touchpoint of the same customer with exposure_at < occurred_at <= exposure_at + W days,
whatever campaign it carries. For a one-off campaign (one send per customer) that is the
outcomes join itself; for recurring and triggered campaigns every send is a decision of
its own, so each counts (outcomes.py keeps only a customer's first exposure, which would
starve a bandit of every later run's feedback). Held-out customers saw no creative: they
are not trials.

Delayed rewards, as of `now`:
- success: an exposure with a conversion at or before `now` (within its window);
- trial: an exposure whose window has closed (exposure_at + W <= now), plus an open one that
  already converted. An open window without a conversion is not yet a failure, so counting
  it would bias every arm with recent sends downwards.

Set-based: one SQL statement on PostgreSQL and SQLite, grouped by arm (and group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.db import connection

from marketing.models import Touchpoint

# The window arithmetic is the outcomes join's own, so both definitions cannot drift.
from marketing.outcomes import _window_end

CREATIVE, CHANNEL = "creative", "channel"
ARMS = (CREATIVE, CHANNEL)


@dataclass(frozen=True)
class ArmStats:
    successes: int
    trials: int
    exposures: int  # every send, pending ones included

    @property
    def pending(self) -> int:
        return self.exposures - self.trials


@dataclass
class ArmRewards:
    """{group: {arm id: ArmStats}}; group None is campaign-wide (every exposure)."""

    by_group: dict[int | None, dict[int, ArmStats]] = field(default_factory=dict)

    def stats(self, arm_id: int, group: int | None = None) -> ArmStats:
        return self.by_group.get(group, {}).get(arm_id, ArmStats(0, 0, 0))

    def matrices(self, arm_ids: Sequence[int], groups: Sequence[int | None] = (None,)) -> tuple[np.ndarray, np.ndarray]:
        """(successes, trials), each (len(groups), len(arm_ids)) int64, zeros where unseen."""
        successes = np.zeros((len(groups), len(arm_ids)), dtype=np.int64)
        trials = np.zeros_like(successes)
        for row, group in enumerate(groups):
            for column, arm_id in enumerate(arm_ids):
                stats = self.stats(int(arm_id), group)
                successes[row, column], trials[row, column] = stats.successes, stats.trials
        return successes, trials


def _arm_sql(arm: str) -> str:
    if arm == CREATIVE:
        return "t.creative_id"
    # A sent touchpoint's `channel` column is the channel kind; the channel's id is in its
    # properties (campaigns.delivery.send.sent_properties).
    if connection.vendor == "postgresql":
        return "(t.properties ->> 'channel_id')::bigint"
    return "CAST(json_extract(t.properties, '$.channel_id') AS INTEGER)"


def arm_rewards_sql(
    campaign_id: int,
    *,
    arm: str,
    goal_kind: str,
    window_days: int,
    now: datetime,
    groups: tuple[str, list] | None = None,
) -> tuple[str, list]:
    """SQL and parameters of rows (grp, arm, successes, trials, exposures). `groups`: SQL
    (and its parameters) selecting (customer_id, grp) pairs; a customer in several groups
    counts in each; rows with grp NULL are campaign-wide."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {', '.join(ARMS)}")
    if window_days < 0:
        raise ValueError("window_days must be 0 or more")
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    end, end_params = _window_end("t.occurred_at", window_days)
    at = connection.ops.adapt_datetimefield_value(now)
    sql = f"""
        WITH exposure AS (
            SELECT t.customer_id, {_arm_sql(arm)} AS arm, t.occurred_at AS exposure_at, {end} AS window_end
            FROM {table} t
            WHERE t.campaign_id = %s AND t.kind = 'sent' AND t.occurred_at <= %s
        ),
        scored AS (
            SELECT e.customer_id, e.arm,
                   CASE WHEN EXISTS (
                       SELECT 1 FROM {table} g
                       WHERE g.customer_id = e.customer_id AND g.kind = %s
                         AND g.occurred_at > e.exposure_at AND g.occurred_at <= e.window_end
                         AND g.occurred_at <= %s
                   ) THEN 1 ELSE 0 END AS converted,
                   CASE WHEN e.window_end <= %s THEN 1 ELSE 0 END AS closed
            FROM exposure e
            WHERE e.arm IS NOT NULL
        )
        SELECT NULL AS grp, s.arm, SUM(s.converted),
               SUM(CASE WHEN s.closed = 1 OR s.converted = 1 THEN 1 ELSE 0 END), COUNT(*)
        FROM scored s GROUP BY s.arm
    """
    params: list = [*end_params, campaign_id, at, goal_kind, at, at]
    if groups is not None:
        group_sql, group_params = groups
        sql += f"""
        UNION ALL
        SELECT gr.grp, s.arm, SUM(s.converted),
               SUM(CASE WHEN s.closed = 1 OR s.converted = 1 THEN 1 ELSE 0 END), COUNT(*)
        FROM scored s JOIN ({group_sql}) gr ON gr.customer_id = s.customer_id
        GROUP BY gr.grp, s.arm
        """
        params += list(group_params)
    return sql, params


def arm_rewards(
    campaign_id: int,
    *,
    arm: str,
    goal_kind: str,
    window_days: int,
    now: datetime,
    groups: tuple[str, list] | None = None,
) -> ArmRewards:
    """Successes, trials and exposures per arm (creative or channel id) of the campaign's
    sends up to `now` (see the module docstring), campaign-wide and per group of `groups`."""
    sql, params = arm_rewards_sql(
        campaign_id, arm=arm, goal_kind=goal_kind, window_days=window_days, now=now, groups=groups
    )
    result = ArmRewards()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for group, arm_id, successes, trials, exposures in cursor.fetchall():
            key = None if group is None else int(group)
            result.by_group.setdefault(key, {})[int(arm_id)] = ArmStats(
                successes=int(successes or 0), trials=int(trials or 0), exposures=int(exposures or 0)
            )
    return result
