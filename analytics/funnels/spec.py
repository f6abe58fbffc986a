"""The funnel spec: what a marketer asks for, parsed and validated from JSON into a
FunnelSpec (a frozen dataclass) that the query builders in analytics.funnels.sql read.

    {
      "steps": [                                   # 2 to 20 steps
        {"kind": "visit", "channel": "web", "properties": {"source": "ads"}},
        {"kind": "add_to_cart", "category": "shoes"},
        {"kind": "purchase", "sku": "SKU-1", "campaign": 7}
      ],
      "window": {"days": 7},                       # or {"hours": 2} or {"seconds": 90}
      "order": "ordered",                          # "ordered" (default) | "strict" | "any"
      "date_from": "2026-10-01",                   # a date (reporting timezone) or an ISO datetime
      "date_to": "2026-10-31",                     # with its offset; or "last_days": 30
      "breakdown": "channel"                       # optional, see below
    }

A step is a touchpoint kind (built-in or custom slug) with optional filters, all of which
must hold: `channel` (exact), `campaign` (the touchpoint's campaign id), `sku` (exact),
`category` (the category of the touchpoint's sku in the product catalogue), `properties`
(exact matches of scalar values: string, number or boolean, all keys must match).

Date range: the customer's step-1 entry must fall in [date_from, date_to). A date means
the whole day in REPORTING_TIMEZONE: date_from from its midnight, date_to up to the end of
that day (inclusive); a datetime is taken as given (date_to exclusive). `last_days: N` is the
N x 24 hours up to now.

Breakdown: "campaign" | "channel" | "creative" (of the step-1 entry touchpoint),
"attributes.<key>" (the customer's attribute, current value), {"by": "segment",
"segments": [ids]} (current membership; a customer in several segments counts in each),
{"by": "cluster", "clustering": id} (the clustering's champion version). The dict form
takes "limit" (default 20, 1..100): the values with the most step-1 customers are shown,
the rest are summed up as "other".

The semantics of the order modes, the window and the times live in analytics.funnels.sql.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from marketing.errors import DomainError
from marketing.models import SLUG_RE

MIN_STEPS, MAX_STEPS = 2, 20
MAX_WINDOW = timedelta(days=365)
MAX_LAST_DAYS = 3660
ORDERS = ("ordered", "strict", "any")
BREAKDOWNS = ("campaign", "channel", "creative", "segment", "cluster", "attribute")
DEFAULT_BREAKDOWN_LIMIT, MAX_BREAKDOWN_LIMIT = 20, 100
MAX_SEGMENTS = 20
MAX_PROPERTIES = 10
STEP_KEYS = {"kind", "name", "channel", "campaign", "sku", "category", "properties"}
SPEC_KEYS = {"steps", "window", "order", "date_from", "date_to", "last_days", "breakdown"}
WINDOW_UNITS = {"seconds": 1, "hours": 3600, "days": 86400}
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")  # property and attribute keys

PropertyValue = str | int | float | bool


class FunnelSpecInvalid(DomainError):
    """A spec with one or more problems; `errors` lists them as {"field", "message"}."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{error['field']}: {error['message']}" for error in errors))


@dataclass(frozen=True)
class FunnelStep:
    kind: str
    name: str = ""
    channel: str | None = None
    campaign: int | None = None
    sku: str | None = None
    category: str | None = None
    properties: tuple[tuple[str, PropertyValue], ...] = ()

    @property
    def label(self) -> str:
        """The step's name, or its kind with its filters ("purchase (channel web)")."""
        if self.name:
            return self.name
        filters = [
            f"{key} {value}"
            for key, value in (
                ("channel", self.channel),
                ("campaign", self.campaign),
                ("sku", self.sku),
                ("category", self.category),
            )
            if value is not None
        ] + [f"{key}={value}" for key, value in self.properties]
        return f"{self.kind} ({', '.join(filters)})" if filters else self.kind

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.name:
            out["name"] = self.name
        for key in ("channel", "campaign", "sku", "category"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.properties:
            out["properties"] = dict(self.properties)
        return out


@dataclass(frozen=True)
class Breakdown:
    by: str  # one of BREAKDOWNS
    limit: int = DEFAULT_BREAKDOWN_LIMIT
    key: str = ""  # attribute: the attribute's key
    segments: tuple[int, ...] = ()  # segment: the segments' ids
    clustering: int | None = None  # cluster: the clustering's id

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"by": f"attributes.{self.key}" if self.by == "attribute" else self.by}
        if self.by == "segment":
            out["segments"] = list(self.segments)
        if self.by == "cluster":
            out["clustering"] = self.clustering
        out["limit"] = self.limit
        return out


@dataclass(frozen=True)
class FunnelSpec:
    steps: tuple[FunnelStep, ...]
    window: timedelta
    date_from: datetime  # UTC, inclusive
    date_to: datetime  # UTC, exclusive
    order: str = "ordered"
    breakdown: Breakdown | None = None
    # What the range was asked as (dates, datetimes or last_days), for the result.
    range_asked: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def window_seconds(self) -> int:
        return int(self.window.total_seconds())

    def as_json(self) -> dict[str, Any]:
        """The normalised spec (the stored form of a saved funnel's spec)."""
        seconds = self.window_seconds
        unit = next(u for u in ("days", "hours", "seconds") if seconds % WINDOW_UNITS[u] == 0)
        out: dict[str, Any] = {
            "steps": [step.as_json() for step in self.steps],
            "window": {unit: seconds // WINDOW_UNITS[unit]},
            "order": self.order,
            **(self.range_asked or {"date_from": self.date_from.isoformat(), "date_to": self.date_to.isoformat()}),
        }
        if self.breakdown is not None:
            out["breakdown"] = self.breakdown.as_json()
        return out


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, where: str, message: str) -> None:
        self.items.append({"field": where, "message": message})


def parse_funnel_spec(data: Any, *, now: datetime | None = None) -> FunnelSpec:
    """A FunnelSpec from its JSON form; raises FunnelSpecInvalid naming every bad field
    ("steps[2].kind: ...", 0-based). Checks the form only: references to segments,
    clusterings and campaigns are checked against the database by funnel_validate."""
    errors = _Errors()
    if not isinstance(data, dict):
        raise FunnelSpecInvalid([{"field": "spec", "message": "must be a JSON object"}])
    for key in sorted(set(data) - SPEC_KEYS):
        errors.add(key, f"unknown key (expected some of: {', '.join(sorted(SPEC_KEYS))})")

    steps = _steps(data.get("steps"), errors)
    window = _window(data.get("window"), errors)
    order = data.get("order", "ordered")
    if order not in ORDERS:
        errors.add("order", f"must be one of {', '.join(ORDERS)}, not {order!r}")
    date_from, date_to, asked = _range(data, errors, now or timezone.now())
    breakdown = _breakdown(data.get("breakdown"), errors) if data.get("breakdown") is not None else None
    if errors.items:
        raise FunnelSpecInvalid(errors.items)
    return FunnelSpec(
        steps=tuple(steps),
        window=window,
        date_from=date_from,
        date_to=date_to,
        order=order,
        breakdown=breakdown,
        range_asked=asked,
    )


def _steps(value: Any, errors: _Errors) -> list[FunnelStep]:
    if not isinstance(value, list):
        errors.add("steps", f"must be a list of {MIN_STEPS} to {MAX_STEPS} steps")
        return []
    if not MIN_STEPS <= len(value) <= MAX_STEPS:
        errors.add("steps", f"must have {MIN_STEPS} to {MAX_STEPS} steps, not {len(value)}")
    return [step for index, raw in enumerate(value) if (step := _step(raw, f"steps[{index}]", errors))]


def _step(raw: Any, where: str, errors: _Errors) -> FunnelStep | None:
    if isinstance(raw, str):  # shorthand: just the kind
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        errors.add(where, 'must be an object such as {"kind": "purchase"} or a kind')
        return None
    before = len(errors.items)
    for key in sorted(set(raw) - STEP_KEYS):
        errors.add(f"{where}.{key}", f"unknown filter (expected some of: {', '.join(sorted(STEP_KEYS))})")
    kind = raw.get("kind")
    if not isinstance(kind, str) or not re.match(SLUG_RE, kind):
        errors.add(
            f"{where}.kind",
            "required: a touchpoint kind, a lower-case slug (letters, digits, '_', '-', '.'; at most 64 characters)"
            + ("" if kind is None else f", not {kind!r}"),
        )
    name = raw.get("name", "")
    if not isinstance(name, str) or len(name) > 100:
        errors.add(f"{where}.name", "must be a text of at most 100 characters")
    texts = {}
    for key, limit in (("channel", 32), ("sku", 64), ("category", 128)):
        text = raw.get(key)
        if text is not None and (not isinstance(text, str) or not text or len(text) > limit):
            errors.add(f"{where}.{key}", f"must be a non-empty text of at most {limit} characters")
        texts[key] = text
    campaign = raw.get("campaign")
    if campaign is not None and (isinstance(campaign, bool) or not isinstance(campaign, int) or campaign <= 0):
        errors.add(f"{where}.campaign", f"must be a campaign id (a positive integer), not {campaign!r}")
    properties = _properties(raw.get("properties"), f"{where}.properties", errors)
    if len(errors.items) > before:
        return None
    return FunnelStep(
        kind=kind,
        name=name,
        channel=texts["channel"],
        campaign=campaign,
        sku=texts["sku"],
        category=texts["category"],
        properties=properties,
    )


def _properties(value: Any, where: str, errors: _Errors) -> tuple[tuple[str, PropertyValue], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not value or len(value) > MAX_PROPERTIES:
        errors.add(where, f"must be an object of 1 to {MAX_PROPERTIES} key: value pairs to match exactly")
        return ()
    out = []
    for key, item in value.items():
        if not _KEY_RE.match(key):
            errors.add(where, f"bad key {key!r}: letters, digits, '_', '.', ':', '-', at most 64 characters")
        elif not isinstance(item, str | int | float) or (isinstance(item, float) and not math.isfinite(item)):
            errors.add(f"{where}.{key}", "must be a string, number or boolean (matched exactly)")
        else:
            out.append((key, item))
    return tuple(sorted(out))


def _window(value: Any, errors: _Errors) -> timedelta:
    units = ", ".join(WINDOW_UNITS)
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in WINDOW_UNITS:
        errors.add("window", f'required: one of {units} with a positive whole number, e.g. {{"days": 7}}')
        return timedelta(0)
    unit, amount = next(iter(value.items()))
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        errors.add(f"window.{unit}", f"must be a whole number greater than 0, not {amount!r}")
        return timedelta(0)
    window = timedelta(seconds=amount * WINDOW_UNITS[unit])
    if window > MAX_WINDOW:
        errors.add(f"window.{unit}", f"at most {MAX_WINDOW.days} days")
    return window


def _range(data: dict, errors: _Errors, now: datetime) -> tuple[datetime, datetime, dict]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    if "last_days" in data:
        if "date_from" in data or "date_to" in data:
            errors.add("last_days", "give either last_days or date_from and date_to, not both")
            return epoch, epoch, {}
        days = data["last_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_LAST_DAYS:
            errors.add("last_days", f"must be a whole number of days from 1 to {MAX_LAST_DAYS}, not {days!r}")
            return epoch, epoch, {}
        end = now.astimezone(UTC)
        return end - timedelta(days=days), end, {"last_days": days}
    start = _instant(data.get("date_from"), "date_from", errors, end_of_day=False)
    end = _instant(data.get("date_to"), "date_to", errors, end_of_day=True)
    if start is None or end is None:
        return epoch, epoch, {}
    if end <= start:
        errors.add("date_to", f"must be after date_from ({start.isoformat()} to {end.isoformat()} is empty)")
    return start, end, {"date_from": data["date_from"], "date_to": data["date_to"]}


def _instant(value: Any, where: str, errors: _Errors, *, end_of_day: bool) -> datetime | None:
    if value is None:
        errors.add(where, "required (or give last_days)")
        return None
    try:  # both raise ValueError for well-formed but impossible values (month 13)
        parsed_date = parse_date(value) if isinstance(value, str) and len(value) == 10 else None
        parsed = parse_datetime(value) if isinstance(value, str) and parsed_date is None else None
    except ValueError:
        parsed_date = parsed = None
    if parsed_date is not None:
        day: date = parsed_date + timedelta(days=1) if end_of_day else parsed_date
        return datetime.combine(day, time(0), ZoneInfo(settings.REPORTING_TIMEZONE)).astimezone(UTC)
    if parsed is None:
        errors.add(where, f"must be a date (YYYY-MM-DD) or an ISO 8601 datetime with its offset, not {value!r}")
        return None
    if parsed.tzinfo is None:
        errors.add(where, f"a datetime needs its offset (e.g. Z or +02:00): {value!r}")
        return None
    return parsed.astimezone(UTC)


def _breakdown(value: Any, errors: _Errors) -> Breakdown | None:
    if isinstance(value, str):
        value = {"by": value}
    if not isinstance(value, dict):
        errors.add("breakdown", 'must be "campaign", "channel", "creative", "attributes.<key>" or an object')
        return None
    by = value.get("by")
    allowed = {"by", "limit"}
    key = ""
    if isinstance(by, str) and by.startswith("attributes."):
        key = by.removeprefix("attributes.")
        if not _KEY_RE.match(key):
            errors.add("breakdown.by", f"bad attribute key {key!r}: letters, digits, '_', '.', ':', '-'")
        by = "attribute"
    elif by == "segment":
        allowed.add("segments")
    elif by == "cluster":
        allowed.add("clustering")
    elif by not in ("campaign", "channel", "creative"):
        errors.add(
            "breakdown.by",
            f'must be one of campaign, channel, creative, segment, cluster or "attributes.<key>", not {by!r}',
        )
        return None
    for extra in sorted(set(value) - allowed):
        errors.add(f"breakdown.{extra}", f"not an option of a {by} breakdown")
    limit = value.get("limit", DEFAULT_BREAKDOWN_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BREAKDOWN_LIMIT:
        errors.add("breakdown.limit", f"must be a whole number from 1 to {MAX_BREAKDOWN_LIMIT}, not {limit!r}")
    segments: tuple[int, ...] = ()
    clustering = None
    if by == "segment":
        raw = value.get("segments")
        if (
            not isinstance(raw, list)
            or not 1 <= len(raw) <= MAX_SEGMENTS
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in raw)
        ):
            errors.add("breakdown.segments", f"required: a list of 1 to {MAX_SEGMENTS} segment ids")
        else:
            segments = tuple(sorted(set(raw)))
    if by == "cluster":
        clustering = value.get("clustering")
        if isinstance(clustering, bool) or not isinstance(clustering, int) or clustering <= 0:
            errors.add("breakdown.clustering", "required: a clustering id (a positive integer)")
    return Breakdown(by=by, limit=limit, key=key, segments=segments, clustering=clustering)
