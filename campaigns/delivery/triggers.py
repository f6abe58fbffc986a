"""Firing campaigns on time and on what happens: `campaigns_fire_due`, run every minute by
beat (campaigns.tasks.campaigns_fire_due), and the cron expressions recurring campaigns use.

Each firing is a run with its own key, launched by `launch.run_launch`, so firing twice
creates nothing new:

- a one-off campaign `scheduled` for a `send_at` that has passed: its "launch" run;
- a recurring campaign: the latest cron firing at or before now (UTC), key = the firing
  time in ISO form ("2026-11-20T12:00:00+00:00"). After downtime only the latest missed
  firing runs, never a backlog; firings before the campaign was launched never run;
- a segment-entry campaign: the "entered" rows of its trigger segment's change log after
  its checkpoint (a SegmentChange id), in batches, key "changes:<first id>-<last id>";
- an event campaign: the touchpoints of its trigger kind after its checkpoint (a
  Touchpoint id), key "events:<first id>-<last id>". Only touchpoints received at least
  EVENT_SETTLE ago are read, up to the first one that is not: touchpoint ids are handed
  out at insert, not at commit, so a recent id may still have lower ones in flight.

A triggered batch's run and the checkpoint's advance commit together. Paused campaigns do
not fire; what their triggers logged meanwhile fires after resume (the checkpoint waited).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, SegmentChange
from marketing.errors import DomainError
from marketing.models import Touchpoint

logger = logging.getLogger(__name__)

BATCH = 10_000  # customers per triggered run
MAX_BATCHES = 10  # triggered runs per campaign per call (the next call goes on)
EVENT_SETTLE = timedelta(seconds=60)
_SEARCH_DAYS = 5 * 366 + 1  # a 29 February schedule fires at least once in this many days


# --- cron ------------------------------------------------------------------------------------

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_WEEKDAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")


class CronInvalid(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    """A parsed "minute hour day-of-month month day-of-week" expression (UTC). As in
    Vixie cron, when both day fields are restricted a day matches either of them."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return (in_days or not self.days_restricted) and (in_weekdays or not self.weekdays_restricted)


def _field_values(text: str, name: str, lowest: int, highest: int, names: dict[str, int]) -> set[int]:
    def number(token: str) -> int:
        if token.isdigit():
            value = int(token)
        elif token in names:
            value = names[token]
        else:
            raise CronInvalid(f"{name}: {token!r} is not a number" + (" or a name" if names else ""))
        if not lowest <= value <= highest:
            raise CronInvalid(f"{name}: {value} is out of range {lowest}-{highest}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise CronInvalid(f"{name}: {item!r} is not a value, range (a-b), * or a step (/n)")
        star, start, end, step = match.groups()
        if star:
            first, last = lowest, highest
        else:
            first = number(start)
            # "a/n" is "a-highest/n", as in Vixie cron.
            last = number(end) if end is not None else (highest if step else first)
            if last < first:
                raise CronInvalid(f"{name}: the range {item} runs backwards")
        every = int(step) if step is not None else 1
        if every < 1:
            raise CronInvalid(f"{name}: a step must be at least 1")
        values.update(range(first, last + 1, every))
    return values


def cron_parse(expr: str) -> Cron:
    """Parse a 5-field cron expression (numbers, names jan-dec / sun-sat, ranges, lists,
    steps, and @hourly/@daily/@weekly/@monthly/@yearly); CronInvalid says what is wrong."""
    if not isinstance(expr, str) or not expr.strip():
        raise CronInvalid("is empty")
    text = expr.strip().lower()
    text = _MACROS.get(text, text)
    if text.startswith("@"):
        raise CronInvalid(f"unknown macro {text}: one of {', '.join(sorted(_MACROS))}")
    parts = text.split()
    if len(parts) != 5:
        raise CronInvalid(f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    values = [_field_values(part, *field) for part, field in zip(parts, _FIELDS, strict=True)]
    weekdays = {0 if day == 7 else day for day in values[4]}
    return Cron(
        minutes=tuple(sorted(values[0])),
        hours=tuple(sorted(values[1])),
        days=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=frozenset(weekdays),
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
    )


def cron_errors(expr: str) -> list[str]:
    """Why `expr` is not a usable cron expression (empty list: it is)."""
    try:
        cron = cron_parse(expr)
    except CronInvalid as exc:
        return [str(exc)]
    if cron_next(cron, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        return ["never fires (no such day, e.g. 30 February)"]
    return []


def _as_cron(expr: str | Cron) -> Cron:
    return expr if isinstance(expr, Cron) else cron_parse(expr)


def cron_previous(expr: str | Cron, at: datetime) -> datetime | None:
    """The latest firing at or before `at` (UTC, whole minutes); None when there is none
    in the last five years."""
    cron = _as_cron(expr)
    at = at.astimezone(UTC).replace(second=0, microsecond=0)
    for back in range(_SEARCH_DAYS):
        day = at.date() - timedelta(days=back)
        if not cron.day_matches(day):
            continue
        for hour in reversed(cron.hours):
            if back == 0 and hour > at.hour:
                continue
            minutes = [m for m in cron.minutes if back or hour < at.hour or m <= at.minute]
            if minutes:
                return datetime(day.year, day.month, day.day, hour, minutes[-1], tzinfo=UTC)
    return None


def cron_next(expr: str | Cron, after: datetime) -> datetime | None:
    """The first firing strictly after `after` (UTC); None when there is none in five years."""
    cron = _as_cron(expr)
    start = after.astimezone(UTC).replace(second=0, microsecond=0)
    for ahead in range(_SEARCH_DAYS):
        day = start.date() + timedelta(days=ahead)
        if not cron.day_matches(day):
            continue
        for hour in cron.hours:
            if ahead == 0 and hour < start.hour:
                continue
            minutes = [m for m in cron.minutes if ahead or hour > start.hour or m > start.minute]
            if minutes:
                return datetime(day.year, day.month, day.day, hour, minutes[0], tzinfo=UTC)
    return None


def cron_run_key(firing: datetime) -> str:
    return firing.astimezone(UTC).isoformat()


# --- firing ----------------------------------------------------------------------------------


def campaigns_fire_due(now: datetime | None = None) -> int:
    """Fire every campaign that is due (see the module docstring); returns how many runs
    were started. One campaign's failure (e.g. a definition that broke after it was
    scheduled) is logged and does not hold the others back."""
    now = now or timezone.now()
    running = Campaign.objects.filter(status=Campaign.Status.RUNNING)
    work: list[tuple[int, Callable[[int, datetime], int]]] = [
        *(
            (pk, _fire_scheduled)
            for pk in Campaign.objects.filter(
                status=Campaign.Status.SCHEDULED, trigger=Campaign.Trigger.ONE_OFF, send_at__lte=now
            ).values_list("pk", flat=True)
        ),
        *((pk, _fire_recurring) for pk in _ids(running, Campaign.Trigger.RECURRING)),
        *((pk, _fire_segment_entries) for pk in _ids(running, Campaign.Trigger.SEGMENT_ENTRY)),
        *((pk, _fire_events) for pk in _ids(running, Campaign.Trigger.EVENT)),
    ]
    started = 0
    for campaign_id, fire in work:
        try:
            started += fire(campaign_id, now)
        except DomainError as exc:
            logger.warning("campaign %s not fired (%s): %s", campaign_id, fire.__name__, _describe(exc))
        except Exception:
            logger.exception("campaign %s not fired (%s)", campaign_id, fire.__name__)
    return started


def _ids(running, trigger: str) -> list[int]:
    return list(running.filter(trigger=trigger).order_by("pk").values_list("pk", flat=True))


def _describe(exc: DomainError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(f"{error.field}: {error.message}" for error in errors)
    return exc.message


def _locked(campaign_id: int, status: str, trigger: str) -> Campaign | None:
    return Campaign.objects.select_for_update().filter(pk=campaign_id, status=status, trigger=trigger).first()


def _fire_scheduled(campaign_id: int, now: datetime) -> int:
    from campaigns.delivery.control import one_off_start

    with transaction.atomic():
        campaign = _locked(campaign_id, Campaign.Status.SCHEDULED, Campaign.Trigger.ONE_OFF)
        if campaign is None or campaign.send_at is None or campaign.send_at > now:
            return 0
        one_off_start(campaign, now)
    return 1


def _fire_recurring(campaign_id: int, now: datetime) -> int:
    from campaigns.delivery.launch import run_launch

    with transaction.atomic():
        campaign = _locked(campaign_id, Campaign.Status.RUNNING, Campaign.Trigger.RECURRING)
        if campaign is None:
            return 0
        firing = cron_previous(campaign.cron, now)
        if firing is None or (campaign.launched_at is not None and firing < campaign.launched_at):
            return 0
        key = cron_run_key(firing)
        if CampaignRun.objects.filter(campaign=campaign, key=key).exists():
            return 0
        run_launch(campaign.pk, key, now=now)
    return 1


def _fire_segment_entries(campaign_id: int, now: datetime) -> int:
    def entries(campaign: Campaign) -> tuple[list[tuple[int, int]], int]:
        rows = list(
            SegmentChange.objects.filter(
                segment_id=campaign.trigger_segment_id,
                id__gt=campaign.trigger_checkpoint,
                change=SegmentChange.Change.ENTERED,
            )
            .order_by("id")
            .values_list("id", "customer_id")[:BATCH]
        )
        return rows, rows[-1][0] if rows else campaign.trigger_checkpoint

    return _fire_batches(campaign_id, Campaign.Trigger.SEGMENT_ENTRY, "changes", entries, now)


def _fire_events(campaign_id: int, now: datetime) -> int:
    def events(campaign: Campaign) -> tuple[list[tuple[int, int]], int]:
        after = Touchpoint.objects.filter(id__gt=campaign.trigger_checkpoint)
        # Read up to just before the first touchpoint too recent to be sure that every
        # lower id has committed (or to the last one).
        horizon = after.filter(received_at__gt=now - EVENT_SETTLE).aggregate(first=Min("id"))["first"]
        upper = horizon - 1 if horizon is not None else after.aggregate(last=Max("id"))["last"]
        if upper is None or upper <= campaign.trigger_checkpoint:
            return [], campaign.trigger_checkpoint
        rows = list(
            after.filter(kind=campaign.trigger_event_kind, id__lte=upper)
            .order_by("id")
            .values_list("id", "customer_id")[:BATCH]
        )
        # The checkpoint passes the other kinds' touchpoints too, so the next call does
        # not read them again; a full batch stops at its last row.
        return rows, rows[-1][0] if len(rows) == BATCH else upper

    return _fire_batches(campaign_id, Campaign.Trigger.EVENT, "events", events, now)


def _fire_batches(
    campaign_id: int,
    trigger: str,
    prefix: str,
    read: Callable[[Campaign], tuple[list[tuple[int, int]], int]],
    now: datetime,
) -> int:
    """Launch a run per batch read after the campaign's checkpoint (`read` answers the
    (id, customer id) rows and the new checkpoint), advancing the checkpoint in the run's
    transaction."""
    from campaigns.delivery.launch import run_launch

    started = 0
    for _ in range(MAX_BATCHES):
        with transaction.atomic():
            campaign = _locked(campaign_id, Campaign.Status.RUNNING, trigger)
            if campaign is None:
                break
            rows, checkpoint = read(campaign)
            if rows:
                first, last = rows[0][0], rows[-1][0]
                run_launch(campaign.pk, f"{prefix}:{first}-{last}", customer_ids=[row[1] for row in rows], now=now)
                started += 1
            if checkpoint != campaign.trigger_checkpoint:
                Campaign.objects.filter(pk=campaign.pk).update(trigger_checkpoint=checkpoint)
        if len(rows) < BATCH:
            break
    return started
