"""Customer feature vectors from the database, for clustering (and later the models): one
row per customer (erased customers left out), one raw numeric column per feature, missing
values as NaN. The engine (mlcore.engine) scales and imputes them.

The catalogue (FEATURES):
- recency_days, frequency, monetary: the customer's RFM row (marketing.rfm; refreshed
  nightly), missing for customers who never bought;
- tenure_days: days since the customer was created; days_since_seen: days since the last
  touchpoint the customer made (missing when never seen);
- <channel>_open_rate, <channel>_click_rate for email, sms and push: opens (clicks) per
  `sent` touchpoint of that channel over the last ENGAGEMENT_DAYS days, missing when
  nothing was sent;
- attributes.<key>: a customer attribute, when it holds a JSON number (a boolean counts
  as 0/1); any other value is missing, so one customer's odd value never fails a run.

Two queries, both set-based: customers with their RFM row and chosen attributes, and the
engagement counts grouped by customer; joined in pandas.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from marketing.models import Customer, Touchpoint

ENGAGEMENT_DAYS = 180
ENGAGEMENT_CHANNELS = ("email", "sms", "push")
ATTRIBUTE_PREFIX = "attributes."
ATTRIBUTE_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")

RFM_FEATURES = ("recency_days", "frequency", "monetary")
TIME_FEATURES = ("tenure_days", "days_since_seen")
ENGAGEMENT_FEATURES = tuple(
    f"{channel}_{action}_rate" for channel in ENGAGEMENT_CHANNELS for action in ("open", "click")
)
FEATURES = RFM_FEATURES + TIME_FEATURES + ENGAGEMENT_FEATURES
DEFAULT_FEATURES = ("recency_days", "frequency", "monetary", "tenure_days", "email_open_rate", "email_click_rate")
# Heavy-tailed columns the engine log-scales.
LOG_FEATURES = ("frequency", "monetary", "tenure_days", "days_since_seen", "recency_days")


def feature_errors(names: object) -> list[str]:
    """What is wrong with a feature list (empty when it is usable)."""
    if not isinstance(names, list):
        return ["must be a list of feature names"]
    errors = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            errors.append(f"item {i}: must be a string")
        elif name.startswith(ATTRIBUTE_PREFIX):
            if not ATTRIBUTE_KEY_RE.match(name.removeprefix(ATTRIBUTE_PREFIX)):
                errors.append(f"item {i}: {name!r} is not a valid attribute key")
        elif name not in FEATURES:
            errors.append(f"item {i}: unknown feature {name!r}; use one of {', '.join(FEATURES)} or attributes.<key>")
    if len(set(n for n in names if isinstance(n, str))) != len([n for n in names if isinstance(n, str)]):
        errors.append("features are listed more than once")
    return errors


def _days(now: datetime, instants: list) -> np.ndarray:
    """Days from each instant to `now` (NaN for None), as floats."""
    stamps = pd.to_datetime(pd.Series(instants, dtype=object), utc=True)
    return ((pd.Timestamp(now) - stamps).dt.total_seconds() / 86400.0).to_numpy(dtype=np.float64)


def _attribute_number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return math.nan


def customer_features(names: list[str] | tuple[str, ...] | None = None, *, now: datetime | None = None) -> pd.DataFrame:
    """Raw features of every customer who is not erased: a DataFrame indexed by customer id
    (ascending), one float64 column per name (default DEFAULT_FEATURES), NaN where missing."""
    names = list(names or DEFAULT_FEATURES)
    errors = feature_errors(names)
    if errors:
        raise ValueError("; ".join(errors))
    now = now or timezone.now()

    lookups = {"id": "id"}
    if "tenure_days" in names:
        lookups["tenure_days"] = "created_at"
    if "days_since_seen" in names:
        lookups["days_since_seen"] = "last_seen_at"
    for name in RFM_FEATURES:
        if name in names:
            lookups[name] = f"rfm__{name}"
    attributes = [name for name in names if name.startswith(ATTRIBUTE_PREFIX)]
    # SQLite's JSON_EXTRACT returns a JSON string as bare text, which Django json-decodes
    # again (the string "2" would read as the number 2): read the whole object there.
    whole_objects = connection.vendor == "sqlite"
    for name in attributes:
        lookups[name] = "attributes" if whole_objects else "attributes__" + name.removeprefix(ATTRIBUTE_PREFIX)
    rows = list(Customer.objects.filter(erased_at__isnull=True).order_by("id").values_list(*lookups.values()))
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in lookups]
    data = dict(zip(lookups, columns, strict=True))

    frame = pd.DataFrame(index=pd.Index(np.asarray(data["id"], dtype=np.int64), name="customer_id"))
    for name in names:
        if name in TIME_FEATURES:
            frame[name] = _days(now, list(data[name]))
        elif name in RFM_FEATURES:
            frame[name] = pd.to_numeric(pd.Series(data[name], dtype=object), errors="coerce").to_numpy(np.float64)
        elif name in attributes:
            values = data[name]
            if whole_objects:
                key = name.removeprefix(ATTRIBUTE_PREFIX)
                values = [v.get(key) if isinstance(v, dict) else None for v in values]
            frame[name] = np.fromiter((_attribute_number(v) for v in values), dtype=np.float64, count=len(frame))
    engagement = [name for name in names if name in ENGAGEMENT_FEATURES]
    if engagement:
        _add_engagement(frame, engagement, now)
    return frame[names]


def _add_engagement(frame: pd.DataFrame, names: list[str], now: datetime) -> None:
    channels = sorted({name.split("_", 1)[0] for name in names}, key=ENGAGEMENT_CHANNELS.index)
    counts = {}
    for channel in channels:
        for kind in ("sent", "open", "click"):
            counts[f"{channel}__{kind}"] = Count("id", filter=Q(kind=kind, channel=channel))
    grouped = pd.DataFrame.from_records(
        list(
            Touchpoint.objects.filter(
                occurred_at__gte=now - timedelta(days=ENGAGEMENT_DAYS),
                occurred_at__lte=now,
                kind__in=("sent", "open", "click"),
                channel__in=channels,
            )
            .values("customer_id")
            .annotate(**counts)
            .order_by()
            .values_list("customer_id", *counts)
        ),
        columns=["customer_id", *counts],
    ).set_index("customer_id")
    grouped = grouped.reindex(frame.index)
    for name in names:
        channel, action, _rate = name.split("_")
        sent = grouped[f"{channel}__sent"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = grouped[f"{channel}__{action}"].to_numpy(dtype=np.float64) / sent
        frame[name] = np.where(sent > 0, rate, np.nan)
