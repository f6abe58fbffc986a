"""When a message may go: quiet hours in the customer's own timezone (DST-correct) and
retry backoff with jitter. Plain functions of their inputs (no database), so the sender
and the tests call them the same way."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Retries: base * 2^(attempt-1), capped, then "full jitter" (a uniform draw up to it), so
# a provider outage does not come back as a thundering herd.
BACKOFF_BASE_S = 30
BACKOFF_CAP_S = 6 * 3600
MAX_ATTEMPTS = 8


def customer_zone(name: str, fallback: str) -> ZoneInfo:
    """The customer's IANA zone, or `fallback` (the reporting timezone) when unset or unknown."""
    for candidate in (name, fallback):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _in_window(local: time, start: time, end: time) -> bool:
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end  # spans midnight, e.g. 21:00-08:00


def _first_instant_at_or_after(day, wall: time, zone: ZoneInfo) -> datetime:
    """The first UTC instant on local date `day` whose local wall time is >= `wall`. When
    `wall` falls in a spring-forward gap that is the moment the clocks jump (e.g. 03:00
    for a 02:30 that never happens); in an autumn fold, the first of the two instants."""
    candidate = datetime.combine(day, wall, tzinfo=zone)  # fold=0: the earlier offset
    instant = candidate.astimezone(UTC)
    back = instant.astimezone(zone)
    if back.replace(tzinfo=None) == candidate.replace(tzinfo=None):
        return instant
    # A gap: local `wall` does not exist; the transition is the latest instant before
    # `instant` whose local time is still before the gap; find it to the minute.
    low, high = instant - timedelta(hours=3), instant
    while high - low > timedelta(minutes=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).time() >= wall and middle.astimezone(zone).date() == day:
            high = middle
        else:
            low = middle
    return high.replace(second=0, microsecond=0)


def quiet_hours_release(now: datetime, zone: ZoneInfo, start: time | None, end: time | None) -> datetime | None:
    """None when `now` is outside the quiet hours [start, end) in `zone` (local wall time);
    otherwise the UTC instant they end, the message's new `not_before`. Never drops a
    message: a message in quiet hours is only deferred."""
    if start is None or end is None:
        return None
    local = now.astimezone(zone)
    if not _in_window(local.time().replace(tzinfo=None), start, end):
        return None
    day = local.date()
    if start > end and local.time() >= start:  # evening part of a window that spans midnight
        day += timedelta(days=1)
    release = _first_instant_at_or_after(day, end, zone)
    return release if release > now else now


def backoff_delay(attempt: int, rng: random.Random | None = None) -> timedelta:
    """The wait before retry number `attempt` (1 = the first retry): full jitter over an
    exponential ceiling."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=(rng or random).uniform(BACKOFF_BASE_S / 2, ceiling))
