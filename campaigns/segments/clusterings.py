"""Clusterings as the campaigns layer sees them: a run (mlcore.clusters) keeps one segment
per cluster in step (campaigns.segments.ml) and rebuilds those segments; the segments that
depend on a clustering; deleting one only when none does."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.db import transaction

from campaigns.models import Segment
from campaigns.segments.ml import cluster_segments_sync
from campaigns.segments.rebuild import segment_rebuild
from marketing.errors import Conflict
from mlcore.clusters import clustering_run
from mlcore.models import Clustering, ModelVersion


def clustering_refresh(clustering_id: int, *, now: datetime | None = None) -> dict:
    """Run a clustering, sync its segments and rebuild them; returns what happened, with
    the seconds each stage took."""
    started = time.monotonic()
    synced: list[int] = []
    version, timings = clustering_run(
        clustering_id, now=now, on_stored=lambda v: synced.extend(cluster_segments_sync(v))
    )
    t = time.monotonic()
    results = [segment_rebuild(segment_id, now=now) for segment_id in synced]
    timings["segments_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - started
    names = dict(Segment.objects.filter(pk__in=synced).values_list("pk", "name"))
    definitions = dict(Segment.objects.filter(pk__in=synced).values_list("pk", "definition"))
    return {
        "clustering_id": clustering_id,
        "model_version_id": version.pk,
        "k": version.metrics["k"],
        "customers": version.metrics["customers"],
        "silhouette": version.metrics["silhouette"],
        **{key: round(value, 3) for key, value in timings.items()},
        "segments": [
            {
                "segment_id": result.segment_id,
                "name": names[result.segment_id],
                "cluster": definitions[result.segment_id].get("cluster"),
                "members": result.members,
                "entered": result.entered,
                "exited": result.exited,
            }
            for result in results
        ],
    }


def clusterings_enabled() -> list[int]:
    return list(Clustering.objects.filter(enabled=True).order_by("pk").values_list("pk", flat=True))


def clustering_segments(clustering_ids: list[int]) -> dict[int, list[dict]]:
    """The cluster segments of each clustering, in one query: {clustering id: [{"id",
    "name", "cluster", "member_count"}]}, live ones by cluster, then the retired ones
    (cluster null) by id."""
    rows = (
        Segment.objects.filter(kind=Segment.Kind.CLUSTER, definition__clustering__in=clustering_ids)
        .order_by("id")
        .values("id", "name", "definition", "member_count")
    )
    found: dict[int, list[dict]] = {}
    for row in rows:
        definition = row.pop("definition")
        found.setdefault(definition["clustering"], []).append({**row, "cluster": definition.get("cluster")})
    for segments in found.values():
        segments.sort(key=lambda s: (s["cluster"] is None, s["cluster"] or 0, s["id"]))
    return found


def _uses_clustering(node: Any, clustering_id: int) -> bool:
    """Whether a rule tree holds a {"cluster": {"clustering": id, …}} leaf for it."""
    if isinstance(node, dict):
        leaf = node.get("cluster")
        if len(node) == 1 and isinstance(leaf, dict) and leaf.get("clustering") == clustering_id:
            return True
        return any(_uses_clustering(value, clustering_id) for value in node.values())
    if isinstance(node, list):
        return any(_uses_clustering(item, clustering_id) for item in node)
    return False


def clustering_references(clustering_id: int) -> list[int]:
    """Ids of the segments that need the clustering: its cluster segments, live or retired
    (their definitions name it), and rules segments with a cluster leaf on it (a handful of
    rows to scan)."""
    ids = set(
        Segment.objects.filter(kind=Segment.Kind.CLUSTER, definition__clustering=clustering_id).values_list(
            "pk", flat=True
        )
    )
    for segment in Segment.objects.filter(kind=Segment.Kind.RULES).only("definition"):
        if _uses_clustering(segment.definition, clustering_id):
            ids.add(segment.pk)
    return sorted(ids)


@transaction.atomic
def clustering_delete(clustering: Clustering) -> None:
    """Delete a clustering and its versions (with their cluster assignments). Refused
    (Conflict) while a segment needs it: those segments would fail every rebuild once their
    clustering is gone, and a campaign may still aim at them. Disable it instead to stop its
    nightly runs."""
    clustering = Clustering.objects.select_for_update().get(pk=clustering.pk)
    users = clustering_references(clustering.pk)
    if users:
        raise Conflict(
            f"Clustering {clustering.pk} is used by segment(s) {', '.join(map(str, users))}; delete those "
            "first, or disable the clustering to stop its runs."
        )
    ModelVersion.objects.filter(task=ModelVersion.Task.CLUSTERS, scope=clustering.scope).delete()
    clustering.delete()
