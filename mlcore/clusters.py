"""Clustering runs (the Django glue of mlcore.engine.clustering): features from the
database, the engine, and the result stored: one CustomerCluster row per customer under a
new ModelVersion that becomes the clustering's champion, with the cluster profiles in its
`result`. Segments per cluster are the campaigns layer's part (campaigns.segments.ml)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from marketing.bulk import insert_rows
from marketing.errors import NotFound
from mlcore import registry
from mlcore.engine.clustering import cluster, prepare_features, profile_clusters
from mlcore.features import DEFAULT_FEATURES, LOG_FEATURES, customer_features
from mlcore.models import Clustering, CustomerCluster, ModelVersion

MIN_CUSTOMERS = 10


class ClusteringFailed(Exception):
    pass


def clustering_run(
    clustering_id: int,
    *,
    now: datetime | None = None,
    on_stored: Callable[[ModelVersion], object] | None = None,
) -> tuple[ModelVersion, dict[str, float]]:
    """Run a clustering over every customer; returns the new champion version and the
    seconds each stage took ({"features_s", "cluster_s", "store_s"}). `on_stored(version)`
    runs in the transaction that stores the assignments and promotes the version (the
    layers above keep their segments in step there). A failed run is recorded as a failed
    version (the champion stays) and raises."""
    clustering = Clustering.objects.filter(pk=clustering_id).first()
    if clustering is None:
        raise NotFound(f"Clustering {clustering_id} does not exist.")
    features = list(clustering.features or DEFAULT_FEATURES)
    method = clustering.method
    version = ModelVersion.objects.create(
        task=ModelVersion.Task.CLUSTERS,
        scope=clustering.scope,
        algorithm=method,
        params={"features": features, "k": clustering.k, "method": method},
    )
    timings: dict[str, float] = {}
    with registry.recorded_run(version) as elapsed_ms:
        t = time.monotonic()
        frame = customer_features(features, now=now or timezone.now())
        timings["features_s"] = time.monotonic() - t
        if len(frame) < MIN_CUSTOMERS:
            raise ClusteringFailed(f"{len(frame)} customers; a clustering needs at least {MIN_CUSTOMERS}")

        t = time.monotonic()
        X, names, scaling = prepare_features(frame, log_columns=LOG_FEATURES)
        result = cluster(X, k=clustering.k, method=method)
        profiles = profile_clusters(frame, result.labels, names)
        timings["cluster_s"] = time.monotonic() - t

        t = time.monotonic()
        with transaction.atomic():
            insert_rows(
                CustomerCluster._meta.db_table,
                ("model_version_id", "customer_id", "cluster"),
                zip([version.pk] * len(frame), frame.index.tolist(), result.labels.tolist(), strict=True),
            )
            if connection.vendor == "postgresql":
                # Statistics that know this version's rows (visible to this transaction), so
                # the segments' sync and rebuilds that follow plan hash joins, not loops.
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(CustomerCluster._meta.db_table)}")
            registry.promote(version)
            # Only the champion's assignments are kept: segments hold who was in each cluster.
            CustomerCluster.objects.filter(
                model_version__in=ModelVersion.objects.filter(task=version.task, scope=version.scope).exclude(
                    pk=version.pk
                )
            ).delete()
            registry.finish(
                version,
                elapsed_ms(),
                algorithm=result.method,
                metrics={
                    "customers": len(frame),
                    "k": result.k,
                    "silhouette": result.silhouette,
                    "silhouettes": {str(k): v for k, v in result.silhouettes.items()},
                    "inertia": result.inertia,
                    "eps": result.eps,
                    "min_samples": result.min_samples,
                },
                result={
                    "feature_names": names,
                    "scaling": asdict(scaling),
                    "profiles": [asdict(profile) for profile in profiles],
                },
            )
            if on_stored is not None:
                on_stored(version)
        timings["store_s"] = time.monotonic() - t
    return version, timings
