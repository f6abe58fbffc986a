"""Report runs: every report (funnel, ROI, attribution) is a ReportRun with its canonical
parameters, status, result and duration.

- Parameters are validated and canonicalised per kind (defaults filled in, keys sorted),
  and `params_key` = sha256(kind + canonical JSON): the same question asked twice has the
  same key, however it was spelled.
- Cache: a succeeded run with the same key computed less than REPORT_CACHE_SECONDS ago
  answers again (the same run, not a copy); `refresh` skips it. A queued or running run
  with the same key is returned rather than a second one queued.
- Sync or queue: small reports are computed in the request: ROI for a campaign with at
  most REPORT_SYNC_MAX_MESSAGES messages (its exposures, for an imported experiment),
  funnels and attribution over at most REPORT_SYNC_MAX_DAYS days. Larger ones are queued
  as a Celery task (analytics.tasks.report_run_compute, after commit) and the caller
  polls the run's status URL.
- Every statement of a computation runs with SET LOCAL statement_timeout =
  REPORT_STATEMENT_TIMEOUT_MS (PostgreSQL; analytics.db.report_timeout), on every
  connection it uses; a failure (timeout included) is stored on the run with its error,
  and the run's status says `failed`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date

from analytics.models import Funnel, ReportRun
from campaigns.models import Campaign
from marketing.errors import BatchInvalid, NotFound, RowError
from marketing.models import SLUG_RE

Kind = ReportRun.Kind
Status = ReportRun.Status
MAX_WINDOW_DAYS = 365
MAX_RANGE_DAYS = 3660


def _bad(field: str, message: str) -> BatchInvalid:
    return BatchInvalid([RowError(row=None, field=field, message=message)])


def _int(params: dict, name: str, *, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad(name, f"must be a whole number from {low} to {high}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(name, f"must be a whole number from {low} to {high}") from None
    if str(number) != str(value).strip() and not isinstance(value, int):
        raise _bad(name, f"must be a whole number from {low} to {high}")
    if not low <= number <= high:
        raise _bad(name, f"must be a whole number from {low} to {high}")
    return number


def _float(params: dict, name: str, *, low: float, high: float) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(name, f"must be a number more than {low} and at most {high}") from None
    if not low < number <= high:  # also refuses nan
        raise _bad(name, f"must be a number more than {low} and at most {high}")
    return number


def _slug(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.match(SLUG_RE, value):
        raise _bad(name, "must be a touchpoint kind (a lower-case slug: letters, digits, '_', '-', '.')")
    return value


def _date(params: dict, name: str) -> date | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        parsed = parse_date(value) if isinstance(value, str) else None
    except ValueError:  # well formed, but no such day (2026-13-01)
        parsed = None
    if parsed is None:
        raise _bad(name, "must be a date (YYYY-MM-DD)")
    return parsed


# --- canonical parameters per kind ----------------------------------------------------------


def roi_params(raw: dict) -> dict:
    """{"campaign", "goal", "window_days"}, the goal and window resolved from the campaign
    when not given: asking with the campaign's own goal is the same question, and editing
    the campaign's goal is a new one. NotFound for an unknown campaign."""
    if raw.get("campaign") in (None, ""):
        raise _bad("campaign", "is required (a campaign id)")
    campaign_id = _int(raw, "campaign", low=1, high=2**63 - 1)
    goal = _slug(raw, "goal")
    window = _int(raw, "window_days", low=0, high=MAX_WINDOW_DAYS)
    campaign = Campaign.objects.filter(pk=campaign_id).values("goal_event", "attribution_window_days").first()
    if campaign is None:
        raise NotFound(f"Campaign {campaign_id} does not exist.")
    return {
        "campaign": campaign_id,
        "goal": campaign["goal_event"] if goal is None else goal,
        "window_days": campaign["attribution_window_days"] if window is None else window,
    }


def attribution_params(raw: dict) -> dict:
    from analytics.attribution import DEFAULT_HALF_LIFE_DAYS, DEFAULT_WINDOW_DAYS, MODELS

    model = raw.get("model") or "last_touch"
    if model not in MODELS:
        raise _bad("model", f"must be one of {', '.join(MODELS)}")
    date_from, date_to = _date(raw, "from"), _date(raw, "to")
    if date_from is None:
        raise _bad("from", "is required (a date, YYYY-MM-DD)")
    if date_to is None:
        raise _bad("to", "is required (a date, YYYY-MM-DD)")
    if date_to < date_from:
        raise _bad("to", "must not be before from")
    if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
        raise _bad("to", f"the range must be at most {MAX_RANGE_DAYS} days")
    window = _int(raw, "window_days", low=1, high=MAX_WINDOW_DAYS)
    params: dict[str, Any] = {
        "model": model,
        "from": date_from.isoformat(),
        "to": date_to.isoformat(),
        "window_days": DEFAULT_WINDOW_DAYS if window is None else window,
        "goal": _slug(raw, "goal") or "purchase",
    }
    half_life = _float(raw, "half_life_days", low=0.0, high=float(MAX_WINDOW_DAYS))
    if model == "time_decay":
        params["half_life_days"] = DEFAULT_HALF_LIFE_DAYS if half_life is None else half_life
    return params


def funnel_params(raw: dict) -> dict:
    """{"funnel": id, "spec": its spec} for a saved funnel, {"spec": ...} for an inline one;
    the spec normalised by analytics.funnels (so a saved funnel's edit changes the key)."""
    from analytics.funnels import FunnelSpecInvalid
    from analytics.services import funnel_validate

    funnel_id, spec = raw.get("funnel"), raw.get("spec")
    if funnel_id is not None and spec is not None:
        raise _bad("funnel", "give either funnel (a saved funnel's id) or spec, not both")
    params: dict[str, Any] = {}
    if funnel_id is not None:
        funnel_id = _int(raw, "funnel", low=1, high=2**63 - 1)
        funnel = Funnel.objects.filter(pk=funnel_id).first()
        if funnel is None:
            raise NotFound(f"Funnel {funnel_id} does not exist.")
        params["funnel"] = funnel.pk
        spec = funnel.spec
    elif spec is None:
        raise _bad("spec", "is required: give spec (a funnel definition) or funnel (a saved funnel's id)")
    try:
        params["spec"] = funnel_validate(spec).as_json()
    except FunnelSpecInvalid as error:
        raise BatchInvalid(
            [RowError(row=None, field=f"spec.{item['field']}", message=item["message"]) for item in error.errors]
        ) from None
    return params


CANONICAL: dict[str, Callable[[dict], dict]] = {
    Kind.ROI: roi_params,
    Kind.ATTRIBUTION: attribution_params,
    Kind.FUNNEL: funnel_params,
}


def params_key(kind: str, params: dict) -> str:
    canonical = json.dumps({"kind": kind, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- computing ----------------------------------------------------------------------------


def compute(kind: str, params: dict) -> dict:
    """The report's result (JSON-ready) for canonical params."""
    if kind == Kind.ROI:
        from analytics.roi import campaign_roi

        return campaign_roi(params["campaign"], goal=params.get("goal"), window_days=params.get("window_days"))
    if kind == Kind.ATTRIBUTION:
        from analytics.attribution import attribution_report

        return attribution_report(
            model=params["model"],
            date_from=date.fromisoformat(params["from"]),
            date_to=date.fromisoformat(params["to"]),
            window_days=params["window_days"],
            half_life_days=params.get("half_life_days", 7.0),
            goal=params["goal"],
        )
    if kind == Kind.FUNNEL:
        from analytics.services import funnel_compute

        return funnel_compute(params["spec"])
    raise ValueError(f"unknown report kind {kind!r}")


def is_small(kind: str, params: dict) -> bool:
    """Whether the report is answered in the request (see the module docstring)."""
    if kind == Kind.ROI:
        from analytics.roi import campaign_message_count

        return campaign_message_count(params["campaign"]) <= settings.REPORT_SYNC_MAX_MESSAGES
    if kind == Kind.ATTRIBUTION:
        days = (date.fromisoformat(params["to"]) - date.fromisoformat(params["from"])).days + 1
        return days <= settings.REPORT_SYNC_MAX_DAYS
    if kind == Kind.FUNNEL:
        from analytics.funnels.spec import parse_funnel_spec

        spec = parse_funnel_spec(params["spec"])
        return spec.date_to - spec.date_from <= timedelta(days=settings.REPORT_SYNC_MAX_DAYS)
    return False


def report_run_execute(run_id: int) -> ReportRun:
    """Compute a queued run and store its result or error. Idempotent by run id: a run
    that is not queued (already running elsewhere, done or failed) is returned as it is;
    the conditional UPDATE lets exactly one caller take it."""
    from analytics.db import report_timeout

    started = timezone.now()
    taken = ReportRun.objects.filter(pk=run_id, status=Status.QUEUED).update(status=Status.RUNNING, started_at=started)
    run = ReportRun.objects.get(pk=run_id)
    if not taken:
        return run
    clock = time.perf_counter()
    try:
        # Every report session of the computation (on any connection) gets the timeout; no
        # transaction around it, so a report may run its parts on several connections.
        with report_timeout(settings.REPORT_STATEMENT_TIMEOUT_MS):
            result = compute(run.kind, run.params)
    except Exception as error:  # stored on the run: a failed report must say why, not vanish
        run.status, run.error, run.result = Status.FAILED, _error_text(error), None
    else:
        run.status, run.error, run.result = Status.SUCCEEDED, "", result
    run.computed_at = timezone.now()
    run.duration_ms = int((time.perf_counter() - clock) * 1000)
    run.save(update_fields=["status", "error", "result", "computed_at", "duration_ms"])
    return run


def _error_text(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error).strip() or type(error).__name__
    if "statement timeout" in message:
        message = (
            f"The report ran longer than the statement timeout ({settings.REPORT_STATEMENT_TIMEOUT_MS} ms) "
            "and was stopped."
        )
    return f"{type(error).__name__}: {message}"[:4000]


def report_request(kind: str, raw_params: dict, *, refresh: bool = False, sync: bool | None = None) -> ReportRun:
    """The run answering this report: a fresh cached one, one already under way, one just
    computed (small reports) or one just queued (large ones: status `queued`). `sync`
    forces the choice (the nightly refresh queues everything; tests compute in place).
    Bad parameters raise BatchInvalid naming the parameter; unknown objects NotFound."""
    params = CANONICAL[kind](raw_params)
    key = params_key(kind, params)
    runs = ReportRun.objects.filter(kind=kind, params_key=key)
    if not refresh:
        fresh_after = timezone.now() - timedelta(seconds=settings.REPORT_CACHE_SECONDS)
        cached = runs.filter(status=Status.SUCCEEDED, computed_at__gte=fresh_after).order_by("-id").first()
        if cached is not None:
            return cached
    # A run already queued or running for the same question: the caller polls it.
    stale = timezone.now() - timedelta(milliseconds=settings.REPORT_STATEMENT_TIMEOUT_MS, minutes=5)
    pending = runs.filter(status__in=[Status.QUEUED, Status.RUNNING], created_at__gte=stale).order_by("-id").first()
    if pending is not None:
        return pending
    small = is_small(kind, params) if sync is None else sync
    run = ReportRun.objects.create(
        kind=kind, params=params, params_key=key, funnel_id=params.get("funnel"), status=Status.QUEUED
    )
    if small:
        return report_run_execute(run.pk)
    from analytics.tasks import report_run_compute

    transaction.on_commit(lambda: report_run_compute.delay(run.pk))
    return run


# --- nightly ---------------------------------------------------------------------------------


def reports_refresh_nightly() -> dict:
    """Queue fresh ROI runs for running campaigns and those whose last window closed in
    the last REPORT_NIGHTLY_RECENT_DAYS days, and a run of every saved funnel: the
    morning's dashboards answer from the cache. Returns the queued run ids by kind."""
    recent = timezone.now() - timedelta(days=settings.REPORT_NIGHTLY_RECENT_DAYS)
    campaigns = Campaign.objects.filter(status=Campaign.Status.RUNNING) | Campaign.objects.filter(
        finished_at__gte=recent
    )
    queued: dict[str, list[int]] = {Kind.ROI: [], Kind.FUNNEL: []}
    for campaign_id in sorted(set(campaigns.values_list("pk", flat=True))):
        queued[Kind.ROI].append(report_request(Kind.ROI, {"campaign": campaign_id}, refresh=True, sync=False).pk)
    for funnel_id in Funnel.objects.order_by("pk").values_list("pk", flat=True):
        try:
            run = report_request(Kind.FUNNEL, {"funnel": funnel_id}, refresh=True, sync=False)
        except BatchInvalid:  # a saved spec that no longer validates: its page says so when opened
            continue
        queued[Kind.FUNNEL].append(run.pk)
    return {str(kind): ids for kind, ids in queued.items()}
