"""Segment rebuilds: bring a segment's stored memberships in line with its definition and
append who entered and who exited to the change log, in a constant number of set-based
SQL statements (PostgreSQL and SQLite), whatever the segment's size.

One rebuild, in one transaction:

1. `SELECT … FOR UPDATE` the segment row. Two overlapping rebuilds of the same segment
   therefore run one after the other; the second sees the first's memberships and finds
   only what changed since (usually nothing). This is also what keeps change ids
   increasing in commit order within a segment.
2. `INSERT INTO change (…, 'exited') SELECT customer FROM membership WHERE NOT EXISTS target`
3. `INSERT INTO change (…, 'entered') SELECT target WHERE NOT EXISTS membership`
4. `DELETE FROM membership WHERE NOT EXISTS target`
5. `INSERT INTO membership SELECT … FROM this rebuild's 'entered' rows`
6. count the memberships and record count, time and duration on the segment.

`target` is the segment's query (a compiled rule tree, or a cluster's or an affinity's
selection), run once into a keyed temporary table that steps 2-4 probe. "This rebuild's
rows" are the segment's change rows with an id above the largest one before step 2:
under the row lock no other rebuild of the segment can add any.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from campaigns.models import Segment, SegmentChange, SegmentMembership
from campaigns.segments.rules import RuleError, RuleInvalid
from campaigns.segments.services import IMPLEMENTED_KINDS, segment_definition_check, segment_target
from marketing.errors import NotFound

REBUILDABLE_KINDS = IMPLEMENTED_KINDS
# The session's temporary table holding one rebuild's target customer ids.
TARGET_TABLE = "segment_rebuild_target"


@dataclass(frozen=True)
class RebuildResult:
    segment_id: int
    entered: int
    exited: int
    members: int
    duration_ms: int
    rebuilt_at: datetime


def segment_rebuild_check(segment: Segment) -> None:
    """Raise RuleInvalid when `segment` is of a kind that cannot be rebuilt yet."""
    if segment.kind not in REBUILDABLE_KINDS:
        raise RuleInvalid([RuleError("", f"{segment.kind} segments cannot be rebuilt yet")])
    segment_definition_check(segment.kind, segment.definition, segment_id=segment.pk)


def segment_rebuild(segment_id: int, now: datetime | None = None) -> RebuildResult:
    """Rebuild one segment (see the module docstring). `now` is the instant relative
    windows ("within 30 days") count back from; default: when the row lock is taken.
    Raises NotFound for an unknown segment, RuleInvalid for a kind that cannot be rebuilt
    yet or a definition that no longer compiles (nothing is written then)."""
    with transaction.atomic():
        segment = Segment.objects.select_for_update().filter(pk=segment_id).first()
        if segment is None:
            raise NotFound(f"Segment {segment_id} does not exist.")
        segment_rebuild_check(segment)
        started = time.monotonic()
        now = now or timezone.now()
        target_sql, target_params = (
            segment_target(segment.kind, segment.definition, now=now, segment_id=segment.pk)
            .order_by()
            .values("id")
            .query.sql_with_params()
        )
        q = connection.ops.quote_name
        change_table, member_table = q(SegmentChange._meta.db_table), q(SegmentMembership._meta.db_table)
        entered, exited = SegmentChange.Change.ENTERED.value, SegmentChange.Change.EXITED.value
        at = connection.ops.adapt_datetimefield_value(now)  # SQLite stores naive UTC text
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {change_table} WHERE segment_id = %s", [segment.pk])
            (last_change_id,) = cursor.fetchone()
            # The target, computed once, with a key: the differences below are anti-joins
            # probing it (and the membership's unique index) whatever the planner's
            # statistics say, never nested loops over two unindexed sets.
            cursor.execute(f"DROP TABLE IF EXISTS {TARGET_TABLE}")
            cursor.execute(f"CREATE TEMPORARY TABLE {TARGET_TABLE} (id bigint PRIMARY KEY)")
            cursor.execute(f"INSERT INTO {TARGET_TABLE} (id) {target_sql}", target_params)
            if connection.vendor == "postgresql":
                cursor.execute(f"ANALYZE {TARGET_TABLE}")
            not_in_target = f"NOT EXISTS (SELECT 1 FROM {TARGET_TABLE} t WHERE t.id = {member_table}.customer_id)"

            # Ordered by customer, so change ids follow customer ids within a rebuild.
            cursor.execute(
                f"INSERT INTO {change_table} (segment_id, customer_id, change, at) "
                f"SELECT %s, customer_id, %s, %s FROM {member_table} WHERE segment_id = %s AND {not_in_target} "
                "ORDER BY customer_id",
                [segment.pk, exited, at, segment.pk],
            )
            exited_count = cursor.rowcount
            cursor.execute(
                f"INSERT INTO {change_table} (segment_id, customer_id, change, at) "
                f"SELECT %s, t.id, %s, %s FROM {TARGET_TABLE} t WHERE NOT EXISTS ("
                f"SELECT 1 FROM {member_table} m WHERE m.segment_id = %s AND m.customer_id = t.id) ORDER BY t.id",
                [segment.pk, entered, at, segment.pk],
            )
            entered_count = cursor.rowcount

            this_rebuild = f"SELECT customer_id FROM {change_table} WHERE segment_id = %s AND id > %s AND change = %s"
            if exited_count:
                cursor.execute(f"DELETE FROM {member_table} WHERE segment_id = %s AND {not_in_target}", [segment.pk])
            if entered_count:
                cursor.execute(
                    f"INSERT INTO {member_table} (segment_id, customer_id, since) "
                    f"SELECT %s, customer_id, %s FROM ({this_rebuild}) e",
                    [segment.pk, at, segment.pk, last_change_id, entered],
                )
            cursor.execute(f"SELECT COUNT(*) FROM {member_table} WHERE segment_id = %s", [segment.pk])
            (members,) = cursor.fetchone()
            cursor.execute(f"DROP TABLE {TARGET_TABLE}")

        duration_ms = round((time.monotonic() - started) * 1000)
        Segment.objects.filter(pk=segment.pk).update(
            last_rebuilt_at=now, last_rebuild_duration_ms=duration_ms, member_count=members
        )
    return RebuildResult(
        segment_id=segment.pk,
        entered=entered_count,
        exited=exited_count,
        members=members,
        duration_ms=duration_ms,
        rebuilt_at=now,
    )


def segments_rebuildable() -> list[int]:
    """Ids of the segments a scheduled run rebuilds, lowest first."""
    return list(Segment.objects.filter(kind__in=REBUILDABLE_KINDS).order_by("id").values_list("id", flat=True))


def segment_memberships_erase(customer_id: int) -> None:
    """GDPR erase hook (registered in CampaignsConfig.ready): an erased customer leaves
    every segment at once, with an "exited" change so that campaigns reading the change
    log see it, instead of lingering until each segment's next rebuild. It runs inside
    the erase transaction and locks the segments in id order, as a rebuild does, so change
    ids stay in commit order within each segment. (A scan of memberships by customer:
    erase is rare, and an index on customer would slow every rebuild.)"""
    segment_ids = sorted(SegmentMembership.objects.filter(customer_id=customer_id).values_list("segment_id", flat=True))
    if not segment_ids:
        return
    list(Segment.objects.select_for_update().filter(pk__in=segment_ids).order_by("pk").values_list("pk", flat=True))
    now = timezone.now()
    SegmentChange.objects.bulk_create(
        SegmentChange(segment_id=segment_id, customer_id=customer_id, change=SegmentChange.Change.EXITED, at=now)
        for segment_id in segment_ids
    )
    SegmentMembership.objects.filter(customer_id=customer_id).delete()
    Segment.objects.filter(pk__in=segment_ids, member_count__gt=0).update(member_count=F("member_count") - 1)
