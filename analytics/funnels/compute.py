"""A validated FunnelSpec in, the funnel's answer (plain JSON) out: the database
references of the spec checked (segments, clustering, campaigns), the query run
(analytics.funnels.sql), the figures shaped per step with labels for breakdown values.

Result shape (times in seconds; rates are fractions rounded to 4 places, None when the
denominator is 0):

    {
      "spec": {...the normalised spec...},
      "order": "ordered", "window_seconds": 604800,
      "date_from": "2026-10-01T00:00:00+00:00", "date_to": "2026-11-01T00:00:00+00:00",
      "totals": {"entered": 1000, "converted": 80, "conversion_rate": 0.08},
      "steps": [
        {"step": 1, "kind": "visit", "label": "visit", "customers": 1000,
         "conversion_from_previous": 1.0, "conversion_from_first": 1.0,
         "drop_off": 0, "drop_off_rate": 0.0,
         "time_from_previous": {"median": None, "p90": None},
         "time_from_first": {"median": None, "p90": None}},
        {"step": 2, ..., "customers": 300, "conversion_from_previous": 0.3, "drop_off": 700, ...,
         "time_from_previous": {"median": 312.0, "p90": 901.5}, ...},
      ],
      "breakdown": None | {
        "by": "channel", "limit": 20,
        "values": [{"value": "web", "label": "web", "other_values": 0,
                    "totals": {...}, "steps": [...]}, ...,
                   {"value": None, "label": "other (3 values)", "other_values": 3, ...}]
      }
    }

drop_off of step k = customers who reached step k-1 but not step k (0 for step 1);
drop_off_rate = drop_off / customers of step k-1.
"""

from __future__ import annotations

from typing import Any

from analytics.funnels.spec import FunnelSpec, FunnelSpecInvalid
from analytics.funnels.sql import GroupStats, funnel_stats


def funnel_references(spec: FunnelSpec) -> dict[str, Any]:
    """Check what the spec names in the database; raises FunnelSpecInvalid naming the
    field. Returns what the query needs (the clustering's champion version)."""
    from campaigns.models import Campaign, Segment
    from mlcore import registry
    from mlcore.models import Clustering, ModelVersion, clustering_scope

    errors: list[dict[str, str]] = []
    refs: dict[str, Any] = {}
    campaigns = {step.campaign for step in spec.steps if step.campaign is not None}
    known = set(Campaign.objects.filter(pk__in=campaigns).values_list("pk", flat=True))
    for index, step in enumerate(spec.steps):
        if step.campaign is not None and step.campaign not in known:
            errors.append({"field": f"steps[{index}].campaign", "message": f"campaign {step.campaign} does not exist"})
    breakdown = spec.breakdown
    if breakdown is not None and breakdown.by == "segment":
        found = set(Segment.objects.filter(pk__in=breakdown.segments).values_list("pk", flat=True))
        missing = [segment for segment in breakdown.segments if segment not in found]
        if missing:
            errors.append(
                {"field": "breakdown.segments", "message": f"no such segment(s): {', '.join(map(str, missing))}"}
            )
    if breakdown is not None and breakdown.by == "cluster":
        if not Clustering.objects.filter(pk=breakdown.clustering).exists():
            errors.append(
                {"field": "breakdown.clustering", "message": f"clustering {breakdown.clustering} does not exist"}
            )
        else:
            version = registry.champion_id(ModelVersion.Task.CLUSTERS, clustering_scope(breakdown.clustering))
            if version is None:
                errors.append(
                    {
                        "field": "breakdown.clustering",
                        "message": f"clustering {breakdown.clustering} has not been run yet (no champion version)",
                    }
                )
            refs["cluster_version"] = version
    if errors:
        raise FunnelSpecInvalid(errors)
    return refs


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _times(values: list[float] | None) -> dict[str, float | None]:
    return {"median": values[0], "p90": values[1]} if values else {"median": None, "p90": None}


def _steps(spec: FunnelSpec, stats: GroupStats) -> list[dict[str, Any]]:
    counts = stats.customers
    out = []
    for index, step in enumerate(spec.steps):
        previous = counts[index - 1] if index else counts[0]
        dropped = previous - counts[index]
        out.append(
            {
                "step": index + 1,
                "kind": step.kind,
                "label": step.label,
                "customers": counts[index],
                "conversion_from_previous": _rate(counts[index], previous),
                "conversion_from_first": _rate(counts[index], counts[0]),
                "drop_off": dropped,
                "drop_off_rate": _rate(dropped, previous),
                "time_from_previous": _times(stats.from_previous[index]),
                "time_from_first": _times(stats.from_first[index]),
            }
        )
    return out


def _totals(stats: GroupStats) -> dict[str, Any]:
    entered, converted = stats.customers[0], stats.customers[-1]
    return {"entered": entered, "converted": converted, "conversion_rate": _rate(converted, entered)}


def _labels(spec: FunnelSpec, values: list[str]) -> dict[str, str]:
    """Marketing names for breakdown values (campaign, creative, segment and cluster ids)."""
    from campaigns.models import Campaign, Creative, Segment
    from mlcore.models import ModelVersion, clustering_scope

    by = spec.breakdown.by
    ids = [int(value) for value in values if value.lstrip("-").isdigit()]
    labels: dict[str, str] = {}
    if by == "campaign":
        labels = {str(pk): name for pk, name in Campaign.objects.filter(pk__in=ids).values_list("pk", "name")}
    elif by == "creative":
        labels = {
            str(creative.pk): f"{creative.campaign.name} / {creative.channel_kind} {creative.name}"
            for creative in Creative.objects.filter(pk__in=ids).select_related("campaign")
        }
    elif by == "segment":
        labels = {str(pk): name for pk, name in Segment.objects.filter(pk__in=ids).values_list("pk", "name")}
    elif by == "cluster":
        version = ModelVersion.objects.filter(
            task=ModelVersion.Task.CLUSTERS, scope=clustering_scope(spec.breakdown.clustering), is_champion=True
        ).first()
        profiles = (version.result or {}).get("profiles", []) if version else []
        labels = {str(p["cluster"]): f"cluster {p['cluster']}: {p.get('label', '')}".rstrip(": ") for p in profiles}
    fallback = {"campaign": "campaign {}", "creative": "creative {}", "segment": "segment {}", "cluster": "cluster {}"}
    return {
        value: "(none)" if value == "" else labels.get(value) or fallback.get(by, "{}").format(value)
        for value in values
    }


def _typed(spec: FunnelSpec, value: str) -> str | int:
    """Ids as numbers (campaign, creative, segment, cluster); channels and attributes as text."""
    return int(value) if spec.breakdown.by in ("campaign", "creative", "segment", "cluster") else value


def funnel_result(spec: FunnelSpec, refs: dict[str, Any]) -> dict[str, Any]:
    """Run the funnel (references already checked) and shape its answer."""
    stats = funnel_stats(spec, refs)
    total = stats[0]
    result: dict[str, Any] = {
        "spec": spec.as_json(),
        "order": spec.order,
        "window_seconds": spec.window_seconds,
        "date_from": spec.date_from.isoformat(),
        "date_to": spec.date_to.isoformat(),
        "totals": _totals(total),
        "steps": _steps(spec, total),
        "breakdown": None,
    }
    if spec.breakdown is None:
        return result
    labels = _labels(spec, [row.value for row in stats[1:] if row.group == "value"])
    values = []
    for row in stats[1:]:
        other = row.group == "other"
        values.append(
            {
                "value": None if other or row.value == "" else _typed(spec, row.value),
                "label": f"other ({row.merged} value{'' if row.merged == 1 else 's'})" if other else labels[row.value],
                "other_values": row.merged if other else 0,
                "totals": _totals(row),
                "steps": _steps(spec, row),
            }
        )
    result["breakdown"] = {**spec.breakdown.as_json(), "values": values}
    return result
