"""Analytics services (writes and business rules; views, admin, tasks and the report runs
of analytics.reports call these).

Funnels: `funnel_validate` (the spec's form and what it names in the database),
`funnel_compute` (the answer, see analytics.funnels.compute for its shape), `funnel_save`
(a saved funnel definition, stored in its normalised form).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from analytics.funnels import FunnelSpec, FunnelSpecInvalid, funnel_references, funnel_result, parse_funnel_spec
from analytics.models import Funnel

FUNNEL_NAME_MAX = Funnel._meta.get_field("name").max_length


def funnel_validate(spec: dict[str, Any] | FunnelSpec) -> FunnelSpec:
    """The spec parsed and checked, or FunnelSpecInvalid (a 400) naming every bad field:
    "steps[2].kind: ...", "breakdown.segments: no such segment(s): 9"."""
    parsed = spec if isinstance(spec, FunnelSpec) else parse_funnel_spec(spec)
    funnel_references(parsed)
    return parsed


def funnel_compute(spec: dict[str, Any] | FunnelSpec) -> dict[str, Any]:
    """The funnel's answer: totals, per step (customers, conversion from the previous and
    the first step, drop-off, median and p90 seconds to convert) and per breakdown value.
    No entered customer is an answer too (zeros, None rates), never an error. On
    PostgreSQL it runs with report settings (no JIT, more work_mem), in the report's
    statement timeout (analytics.db.report_timeout), and a per-customer funnel without a
    breakdown in customer ranges on several connections (analytics.funnels.sql)."""
    parsed = spec if isinstance(spec, FunnelSpec) else parse_funnel_spec(spec)
    refs = funnel_references(parsed)
    return funnel_result(parsed, refs)


def funnel_save(*, name: str, spec: dict[str, Any], description: str = "", funnel: Funnel | None = None) -> Funnel:
    """Create a saved funnel (or update `funnel`) with a valid spec, stored normalised
    (defaults filled in, shorthands expanded). Nothing is written when anything is bad."""
    errors = []
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > FUNNEL_NAME_MAX:
        errors.append({"field": "name", "message": f"required: a text of 1 to {FUNNEL_NAME_MAX} characters"})
    elif Funnel.objects.filter(name=name).exclude(pk=funnel.pk if funnel else None).exists():
        errors.append({"field": "name", "message": f"a funnel named {name!r} already exists"})
    if not isinstance(description, str):
        errors.append({"field": "description", "message": "must be a text"})
    try:
        parsed = funnel_validate(spec)
    except FunnelSpecInvalid as error:
        errors += [{"field": f"spec.{item['field']}", "message": item["message"]} for item in error.errors]
    if errors:
        raise FunnelSpecInvalid(errors)
    with transaction.atomic():
        if funnel is None:
            return Funnel.objects.create(name=name, description=description, spec=parsed.as_json())
        funnel.name, funnel.description, funnel.spec = name, description, parsed.as_json()
        funnel.updated_at = timezone.now()
        funnel.save(update_fields=["name", "description", "spec", "updated_at"])
        return funnel
