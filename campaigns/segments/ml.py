"""Segments from models: cluster segments (one per cluster of a clustering run) and affinity
segments ("likely buyers of X" from the champion association rules), plus the rule-tree
leaves that use the same outputs:

- a cluster segment's definition is `{"clustering": <id>, "cluster": <n>}`: the customers
  the clustering's champion version put in cluster n (`"cluster": null` selects nobody: a
  retired cluster). `clustering_refresh` runs the clustering and keeps one segment per
  cluster: a new cluster takes over the segment whose members it shares most (an optimal
  assignment on the overlap), so a campaign aimed at "high value, recent" keeps its
  audience when a nightly run renumbers the clusters; an old segment no new cluster matches
  is retired (renamed, emptied by its rebuild, with "exited" changes).
- an affinity segment's definition is `{"sku": X, "min_confidence"?: c, "min_lift"?: l,
  "within_days"?: N}`: customers who bought every antecedent of at least one champion rule
  whose consequents hold X (with at least that confidence and lift; antecedents bought in
  the last N days when given) and who never bought X. One SQL query: a grouped scan of the
  purchases of the antecedent items with a HAVING per distinct antecedent set.
- leaves `{"cluster": {"clustering": id, "in": [n, ...]}}` and `{"likely_buyers": {…the
  affinity definition…}}` for rule trees.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone
from scipy.optimize import linear_sum_assignment

from campaigns.models import Segment, SegmentMembership
from campaigns.segments.rules import MAX_WITHIN_DAYS, Context, RuleError, _is_number, _ptr, register_leaf
from marketing.models import Touchpoint
from mlcore import registry
from mlcore.models import AssociationRule, Clustering, CustomerCluster, ModelVersion, clustering_scope, items_hold

NOBODY = Q(pk__isnull=True)
# The rules an affinity condition uses, best confidence first: past a few hundred, more
# rules only add customers whose evidence is weaker than the ones already in.
MAX_AFFINITY_RULES = 500
AFFINITY_KEYS = {"sku", "min_confidence", "min_lift", "within_days"}


# --- cluster segments ------------------------------------------------------------------


def _validate_clustering_id(value: Any, path: str) -> list[RuleError]:
    if not isinstance(value, int) or isinstance(value, bool):
        return [RuleError(path, "must be a clustering id (an integer)")]
    if not Clustering.objects.filter(pk=value).exists():
        return [RuleError(path, f"unknown clustering {value}")]
    return []


def _is_cluster_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= -1


def cluster_definition_errors(definition: Any, path: str = "") -> list[RuleError]:
    if not isinstance(definition, dict):
        return [RuleError(path, 'must be an object {"clustering": id, "cluster": n}')]
    errors = [RuleError(_ptr(path, key), "unknown key") for key in sorted(set(definition) - {"clustering", "cluster"})]
    if "clustering" not in definition:
        errors.append(RuleError(path, "clustering is required"))
    else:
        errors += _validate_clustering_id(definition["clustering"], _ptr(path, "clustering"))
    if "cluster" not in definition:
        errors.append(RuleError(path, "cluster is required (null for nobody)"))
    elif definition["cluster"] is not None and not _is_cluster_number(definition["cluster"]):
        errors.append(RuleError(_ptr(path, "cluster"), "must be a cluster number (0, 1, …; -1 for DBSCAN noise)"))
    return errors


def _champion_assignments(clustering_id: int, clusters: list[int]):
    version_id = registry.champion_id(ModelVersion.Task.CLUSTERS, clustering_scope(clustering_id))
    if version_id is None or not clusters:
        return None
    return CustomerCluster.objects.filter(model_version_id=version_id, cluster__in=clusters)


def cluster_q(definition: dict) -> Q:
    """The customers a (valid) cluster segment definition selects."""
    cluster = definition["cluster"]
    rows = _champion_assignments(definition["clustering"], [] if cluster is None else [cluster])
    return NOBODY if rows is None else Q(pk__in=rows.values("customer_id"))


def _validate_cluster_leaf(body: Any, path: str, ctx: Context) -> list[RuleError]:
    if not isinstance(body, dict):
        return [RuleError(path, 'must be an object {"clustering": id, "in": [n, ...]}')]
    errors = [RuleError(_ptr(path, key), "unknown key") for key in sorted(set(body) - {"clustering", "in"})]
    if "clustering" not in body:
        errors.append(RuleError(path, "clustering is required"))
    else:
        errors += _validate_clustering_id(body["clustering"], _ptr(path, "clustering"))
    clusters = body.get("in")
    if not isinstance(clusters, list) or not clusters or not all(_is_cluster_number(n) for n in clusters):
        errors.append(RuleError(_ptr(path, "in"), "must be a non-empty list of cluster numbers"))
    return errors


def _compile_cluster_leaf(body: dict, ctx: Context) -> Q:
    rows = _champion_assignments(body["clustering"], body["in"])
    return NOBODY if rows is None else Q(Exists(rows.filter(customer_id=OuterRef("pk"))))


# --- affinity segments ------------------------------------------------------------------


def affinity_definition_errors(definition: Any, path: str = "") -> list[RuleError]:
    if not isinstance(definition, dict):
        return [RuleError(path, 'must be an object {"sku": "…", "min_confidence"?, "min_lift"?, "within_days"?}')]
    errors = [RuleError(_ptr(path, key), "unknown key") for key in sorted(set(definition) - AFFINITY_KEYS)]
    sku = definition.get("sku")
    if not isinstance(sku, str) or not sku.strip():
        errors.append(RuleError(_ptr(path, "sku"), "must be a non-empty string (the product whose buyers to find)"))
    elif "|" in sku:
        errors.append(RuleError(_ptr(path, "sku"), "must not contain '|'"))
    for key, low, high in (("min_confidence", 0, 1), ("min_lift", 0, None)):
        if key in definition:
            value = definition[key]
            if not _is_number(value) or value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f">= {low}"
                errors.append(RuleError(_ptr(path, key), f"must be a number {bound}"))
    if "within_days" in definition:
        value = definition["within_days"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WITHIN_DAYS:
            errors.append(RuleError(_ptr(path, "within_days"), f"must be a whole number from 1 to {MAX_WITHIN_DAYS}"))
    return errors


def affinity_rules(definition: dict) -> list[tuple[list[str], float, float]]:
    """(antecedents, confidence, lift) of the champion rules an affinity definition uses."""
    version_id = registry.champion_id(ModelVersion.Task.RULES)
    if version_id is None:
        return []
    rules = AssociationRule.objects.filter(
        items_hold("consequent_items", definition["sku"]),
        model_version_id=version_id,
        confidence__gte=definition.get("min_confidence", 0),
        lift__gte=definition.get("min_lift", 0),
    ).order_by("-confidence", "rank")[:MAX_AFFINITY_RULES]
    return [(rule.antecedents, rule.confidence, rule.lift) for rule in rules.only("antecedents", "confidence", "lift")]


def affinity_q(definition: dict, now: datetime | None = None) -> Q:
    """The customers a (valid) affinity definition selects (see the module docstring)."""
    antecedent_sets = sorted({tuple(sorted(a)) for a, _c, _l in affinity_rules(definition)})
    if not antecedent_sets:
        return NOBODY
    purchases = Touchpoint.objects.filter(kind="purchase")
    if "within_days" in definition:
        purchases = purchases.filter(
            occurred_at__gte=(now or timezone.now()) - timedelta(days=definition["within_days"])
        )
    items = sorted({item for antecedent in antecedent_sets for item in antecedent})
    counts = {
        f"a{i}": Count("sku", distinct=True, filter=Q(sku__in=antecedent))
        for i, antecedent in enumerate(antecedent_sets)
    }
    having = Q()
    for i, antecedent in enumerate(antecedent_sets):
        having |= Q(**{f"a{i}": len(antecedent)})
    buyers = (
        purchases.filter(sku__in=items).values("customer_id").annotate(**counts).filter(having).values("customer_id")
    )
    bought_target = Touchpoint.objects.filter(kind="purchase", sku=definition["sku"], customer_id=OuterRef("pk"))
    return Q(pk__in=buyers) & ~Q(Exists(bought_target))


def _validate_likely_buyers(body: Any, path: str, ctx: Context) -> list[RuleError]:
    return affinity_definition_errors(body, path)


def _compile_likely_buyers(body: dict, ctx: Context) -> Q:
    return affinity_q(body, ctx.now)


# --- clustering runs and their segments ----------------------------------------------------


def cluster_segments(clustering_id: int):
    return Segment.objects.filter(kind=Segment.Kind.CLUSTER, definition__clustering=clustering_id)


def _profile_description(clustering: Clustering, version: ModelVersion, profile: dict) -> str:
    parts = [
        f"Cluster {profile['cluster']} of clustering '{clustering.name}' (version {version.pk}): "
        f"{profile['size']:,} customers, {profile['share']:.1%} of all."
    ]
    for feature in profile["features"][:3]:
        if feature["mean"] is None or feature["population_mean"] is None:
            continue
        parts.append(
            f"{feature['feature']}: {feature['mean']:.4g} against {feature['population_mean']:.4g} overall "
            f"(percentile {feature['percentile']:.2f})."
        )
    return " ".join(parts)


def cluster_segments_sync(version: ModelVersion) -> list[int]:
    """Bring the clustering's segments in line with its new champion `version` (see the
    module docstring): called inside the run's transaction, right after the promotion, so
    no rebuild ever sees new cluster numbers with old definitions. Returns the ids of the
    segments to rebuild (live and newly retired)."""
    clustering = Clustering.objects.get(pk=int(version.scope.split(":", 1)[1]))
    profiles = {profile["cluster"]: profile for profile in version.result["profiles"]}
    segments = list(cluster_segments(clustering.pk).select_for_update().order_by("pk"))
    live = [segment for segment in segments if segment.definition.get("cluster") is not None]
    new_clusters = sorted(profiles, key=lambda c: (c < 0, c))

    matched: dict[int, Segment] = {}  # new cluster -> segment
    if live:
        overlap = np.zeros((len(live), len(new_clusters)), dtype=np.int64)
        row_of = {segment.pk: i for i, segment in enumerate(live)}
        column_of = {cluster: j for j, cluster in enumerate(new_clusters)}
        q = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT m.segment_id, c.cluster, COUNT(*) FROM {q(SegmentMembership._meta.db_table)} m "
                f"JOIN {q(CustomerCluster._meta.db_table)} c ON c.customer_id = m.customer_id "
                f"AND c.model_version_id = %s WHERE m.segment_id IN ({', '.join(['%s'] * len(live))}) "
                "GROUP BY m.segment_id, c.cluster",
                [version.pk, *row_of],
            )
            for segment_id, cluster, count in cursor.fetchall():
                overlap[row_of[segment_id], column_of[cluster]] = count
        rows, columns = linear_sum_assignment(-overlap)
        for i, j in zip(rows.tolist(), columns.tolist(), strict=True):
            if overlap[i, j] > 0:
                matched[new_clusters[j]] = live[i]

    # Names are unique: park this clustering's segments on temporary names first.
    for segment in segments:
        Segment.objects.filter(pk=segment.pk).update(name=f"~clustering-{clustering.pk}-{segment.pk}")
    now = timezone.now()
    kept = {segment.pk for segment in matched.values()}
    touched: list[int] = []
    for segment in segments:
        if segment.pk in kept:
            continue
        if segment.definition.get("cluster") is None:
            Segment.objects.filter(pk=segment.pk).update(name=_free_name(segment.name))
            continue
        Segment.objects.filter(pk=segment.pk).update(
            name=_free_name(f"{segment.name} (retired by version {version.pk})"),
            definition={"clustering": clustering.pk, "cluster": None},
            description=f"Retired by version {version.pk}: its members went to other clusters' segments. "
            f"{segment.description}"[:5000],
            updated_at=now,
        )
        touched.append(segment.pk)
    for cluster in new_clusters:
        profile = profiles[cluster]
        fields = {
            "name": _free_name(f"{clustering.name}: {profile['label']}"),
            "definition": {"clustering": clustering.pk, "cluster": cluster},
            "description": _profile_description(clustering, version, profile),
        }
        segment = matched.get(cluster)
        if segment is None:
            segment = Segment.objects.create(kind=Segment.Kind.CLUSTER, **fields)
        else:
            Segment.objects.filter(pk=segment.pk).update(updated_at=now, **fields)
        touched.append(segment.pk)
    return sorted(touched)


def _free_name(name: str) -> str:
    name = name[:190]
    candidate, n = name, 2
    while Segment.objects.filter(name=candidate).exists():
        candidate, n = f"{name} ({n})", n + 1
    return candidate


register_leaf(
    "cluster",
    _validate_cluster_leaf,
    _compile_cluster_leaf,
    {
        "type": "object",
        "description": "In one of these clusters of the clustering's champion run.",
        "properties": {
            "clustering": {"type": "integer"},
            "in": {"type": "array", "items": {"type": "integer", "minimum": -1}, "minItems": 1},
        },
        "required": ["clustering", "in"],
        "additionalProperties": False,
    },
)
AFFINITY_SCHEMA = {
    "type": "object",
    "description": (
        "Likely buyers of sku: bought every antecedent of a champion association rule whose consequents hold sku "
        "(with at least min_confidence and min_lift; antecedents bought in the last within_days days when given) "
        "and never bought sku."
    ),
    "properties": {
        "sku": {"type": "string", "minLength": 1},
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "min_lift": {"type": "number", "minimum": 0},
        "within_days": {"type": "integer", "minimum": 1, "maximum": MAX_WITHIN_DAYS},
    },
    "required": ["sku"],
    "additionalProperties": False,
}
register_leaf("likely_buyers", _validate_likely_buyers, _compile_likely_buyers, AFFINITY_SCHEMA)
