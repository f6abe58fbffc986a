"""REST API v1 of segments and clusterings. Segments: CRUD, preview of an unsaved
definition, explain (why a customer is or is not in a segment), rebuild, members and the
change log. Clusterings: CRUD, a run on demand (which keeps one segment per cluster), and
the champion run's cluster profiles. Thin views over campaigns.segments services and
selectors and mlcore.selectors."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Segment
from campaigns.segments import selectors, services
from campaigns.segments.clusterings import clustering_delete, clustering_refresh, clustering_segments
from campaigns.segments.rebuild import segment_rebuild, segment_rebuild_check
from campaigns.segments.rules import RuleError, RuleInvalid
from campaigns.serializers import (
    ClusteringProfilesSerializer,
    ClusteringRunQueuedSerializer,
    ClusteringRunSerializer,
    ClusteringSerializer,
    RuleErrorsSerializer,
    SegmentChangeSerializer,
    SegmentDetailSerializer,
    SegmentExplainSerializer,
    SegmentMemberSerializer,
    SegmentPreviewRequestSerializer,
    SegmentPreviewSerializer,
    SegmentRebuildQueuedSerializer,
    SegmentRebuildSerializer,
    SegmentSerializer,
)
from campaigns.tasks import clustering_refresh_task, segment_rebuild_task
from marketing.api_common import IdCursorPagination, is_id, query_flag
from marketing.errors import BatchInvalid, Conflict, NotFound, RowError
from marketing.serializers import DetailSerializer, ErrorsSerializer
from mlcore import selectors as ml_selectors
from mlcore.clusters import ClusteringFailed
from mlcore.models import Clustering

RULE_ERRORS = {
    400: OpenApiResponse(RuleErrorsSerializer, description="An invalid rule tree: every problem with its JSON Pointer.")
}


class MemberCursorPagination(IdCursorPagination):
    """Members page by customer id (unique within a segment, indexed with the segment)."""

    ordering = "customer_id"


def _checkpoint(request: Request) -> int:
    value = request.query_params.get("after", "0")
    if not is_id(value):
        raise BatchInvalid([RowError(row=None, field="after", message="must be a change id (a whole number >= 0)")])
    return int(value)


class RuleErrorsMixin:
    """A RuleInvalid becomes 400 with {"message", "errors": [{"path", "message"}]}: the
    paths point into the definition, which the project-wide row/field format cannot say."""

    def handle_exception(self, exc):
        if isinstance(exc, RuleInvalid):
            body = {"message": exc.message, "errors": [error.as_dict() for error in exc.errors]}
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)


@extend_schema_view(
    list=extend_schema(summary="List segments"),
    retrieve=extend_schema(
        summary="A segment",
        description="A cluster segment comes with its cluster's profile from the clustering's champion run.",
        responses={200: SegmentDetailSerializer},
    ),
    create=extend_schema(summary="Create a segment", responses={201: SegmentSerializer, **RULE_ERRORS}),
    update=extend_schema(summary="Replace a segment", responses={200: SegmentSerializer, **RULE_ERRORS}),
    partial_update=extend_schema(summary="Change a segment", responses={200: SegmentSerializer, **RULE_ERRORS}),
    destroy=extend_schema(summary="Delete a segment (409 while another segment refers to it)"),
)
class SegmentViewSet(
    RuleErrorsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = SegmentSerializer
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return selectors.segment_list()

    def get_serializer_class(self):
        return SegmentDetailSerializer if self.action == "retrieve" else SegmentSerializer

    def perform_create(self, serializer: SegmentSerializer) -> None:
        serializer.instance = services.segment_create(**serializer.validated_data)

    def perform_update(self, serializer: SegmentSerializer) -> None:
        serializer.instance = services.segment_update(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Segment) -> None:
        services.segment_delete(instance)

    @extend_schema(
        summary="Preview a definition without saving it",
        description="How many customers the definition selects now, and a sample (lowest ids first).",
        request=SegmentPreviewRequestSerializer,
        responses={200: SegmentPreviewSerializer, **RULE_ERRORS},
    )
    @action(detail=False, methods=["post"], url_path="preview")
    def preview(self, request: Request) -> Response:
        body = SegmentPreviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.segment_preview(
            body.validated_data["definition"],
            body.validated_data["sample_size"],
            kind=body.validated_data["kind"],
        )
        return Response(SegmentPreviewSerializer(result).data)

    @extend_schema(
        summary="Why a customer is (or is not) in a segment",
        description="Each node of the rule tree with its result for the customer (rules segments only).",
        parameters=[
            OpenApiParameter(
                "customer",
                OpenApiTypes.STR,
                required=True,
                description="The customer's external id, or our numeric id.",
            )
        ],
        responses={200: SegmentExplainSerializer, **RULE_ERRORS},
    )
    @action(detail=True, methods=["get"], url_path="explain")
    def explain(self, request: Request, pk: str | None = None) -> Response:
        segment = self.get_object()
        reference = request.query_params.get("customer", "")
        if not reference:
            raise BatchInvalid([RowError(row=None, field="customer", message="is required")])
        customer = selectors.customer_by_reference(reference)
        if customer is None:
            raise NotFound(f"No customer with external id or id {reference!r}.")
        if segment.kind != Segment.Kind.RULES:
            raise RuleInvalid([RuleError("", f"only rules segments can be explained, not {segment.kind} segments")])
        return Response(SegmentExplainSerializer(services.segment_explain(segment.definition, customer)).data)

    @extend_schema(
        summary="Rebuild a segment",
        description=(
            "Recomputes the segment's members and appends who entered and who exited to its change "
            "log. By default the rebuild is queued (202) and runs on a worker; with `wait=true` it runs "
            "in the request and answers with the counts (200): fine for small segments and scripts, "
            "but a large segment may take seconds. Rebuilds of one segment never overlap: a second one "
            "waits for the first and writes only what changed since. Rules, cluster and affinity segments "
            "can be rebuilt (a cluster segment's clustering runs rebuild it too)."
        ),
        request=None,
        parameters=[
            OpenApiParameter("wait", OpenApiTypes.BOOL, description="Run the rebuild now and answer with its result.")
        ],
        responses={
            200: SegmentRebuildSerializer,
            202: SegmentRebuildQueuedSerializer,
            **RULE_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], url_path="rebuild")
    def rebuild(self, request: Request, pk: str | None = None) -> Response:
        segment = self.get_object()
        if query_flag(request, "wait"):
            result = segment_rebuild(segment.pk)
            return Response(SegmentRebuildSerializer(result).data)
        segment_rebuild_check(segment)  # refuse now rather than fail on the worker
        transaction.on_commit(lambda: segment_rebuild_task.delay(segment.pk))
        body = {"segment_id": segment.pk, "message": "Rebuild queued; see last_rebuilt_at on the segment."}
        return Response(SegmentRebuildQueuedSerializer(body).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Members of a segment",
        description="As of its last rebuild, by customer id (cursor-paginated).",
        responses={200: SegmentMemberSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], url_path="members", pagination_class=MemberCursorPagination)
    def members(self, request: Request, pk: str | None = None) -> Response:
        segment = self.get_object()
        page = self.paginate_queryset(selectors.segment_members(segment))
        return self.get_paginated_response(SegmentMemberSerializer(page, many=True).data)

    @extend_schema(
        summary="The change log of a segment",
        description=(
            "Customers who entered or exited the segment, one row per change, ids ascending. Keep the "
            "last id you processed and ask for `after=<id>` next time (or follow `next`); ids increase "
            "within a segment in the order its rebuilds committed, so nothing is skipped."
        ),
        parameters=[
            OpenApiParameter(
                "after", OpenApiTypes.INT, description="Only changes with an id above this one (default 0)."
            )
        ],
        responses={200: SegmentChangeSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], url_path="changes", pagination_class=IdCursorPagination)
    def changes(self, request: Request, pk: str | None = None) -> Response:
        segment = self.get_object()
        page = self.paginate_queryset(selectors.segment_changes(segment, _checkpoint(request)))
        return self.get_paginated_response(SegmentChangeSerializer(page, many=True).data)


# --- clusterings ---------------------------------------------------------------------------

NOT_FOUND = {404: DetailSerializer}
BAD_INPUT = {400: OpenApiResponse(ErrorsSerializer, description="Bad fields, each with its path; nothing was written.")}
RUN_FAILED = OpenApiResponse(
    DetailSerializer,
    description="The run failed (e.g. fewer than 10 customers, or more clusters than customers): it is recorded as "
    "a failed model version and the champion and the segments are unchanged.",
)


@extend_schema_view(
    list=extend_schema(summary="List clusterings", description="Cursor-paginated by id."),
    retrieve=extend_schema(summary="A clustering", responses={200: ClusteringSerializer, **NOT_FOUND}),
    create=extend_schema(summary="Create a clustering", responses={201: ClusteringSerializer, **BAD_INPUT}),
    update=extend_schema(summary="Replace a clustering", responses={200: ClusteringSerializer, **BAD_INPUT}),
    partial_update=extend_schema(summary="Change a clustering", responses={200: ClusteringSerializer, **BAD_INPUT}),
    destroy=extend_schema(
        summary="Delete a clustering",
        description=(
            "Deletes the clustering and its model versions (with their cluster assignments). 409 while a segment "
            "needs it: its cluster segments (live or retired) and rules segments with a `cluster` leaf on it. "
            "Delete those first, or set `enabled` to false to stop its nightly runs."
        ),
        responses={204: None, **NOT_FOUND, 409: DetailSerializer},
    ),
)
class ClusteringViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Clusterings: which customer features to cluster on, how many clusters (or chosen by
    silhouette) and the method. Each run is a model version; the champion's clusters each
    have a segment, kept in step run after run. A clustering is deleted only while no
    segment needs it (409 otherwise): its segments would fail every rebuild without it."""

    serializer_class = ClusteringSerializer
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return ml_selectors.clustering_list()

    def list(self, request: Request) -> Response:
        # Champions and segments of the whole page in two queries, not two per clustering.
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        ids = [clustering.pk for clustering in page]
        context = {
            **self.get_serializer_context(),
            "champions": ml_selectors.clustering_champions(ids),
            "segments": clustering_segments(ids),
        }
        return self.get_paginated_response(ClusteringSerializer(page, many=True, context=context).data)

    def perform_update(self, serializer: ClusteringSerializer) -> None:
        serializer.save(updated_at=timezone.now())  # the column's database default covers inserts only

    def perform_destroy(self, instance: Clustering) -> None:
        clustering_delete(instance)

    @extend_schema(
        summary="Run a clustering",
        description=(
            "Clusters every customer on the clustering's features, stores the run as the new champion model "
            "version, keeps one segment per cluster (a new cluster takes over the segment whose members it shares "
            "most; a segment no cluster matches is retired) and rebuilds those segments. By default the run is "
            "queued (202, with the task id); with `wait=true` it runs in the request and answers with what "
            "happened (200): fine for small populations and scripts, a million customers takes tens of seconds."
        ),
        request=None,
        parameters=[OpenApiParameter("wait", OpenApiTypes.BOOL, description="Run now and answer with its result.")],
        responses={
            200: ClusteringRunSerializer,
            202: ClusteringRunQueuedSerializer,
            400: OpenApiResponse(ErrorsSerializer, description="A bad `wait` flag."),
            **NOT_FOUND,
            409: RUN_FAILED,
        },
    )
    @action(detail=True, methods=["post"], url_path="run")
    def run(self, request: Request, pk: str | None = None) -> Response:
        clustering = self.get_object()
        if query_flag(request, "wait"):
            try:
                result = clustering_refresh(clustering.pk)
            except (ClusteringFailed, ValueError) as exc:
                raise Conflict(
                    f"The run of clustering {clustering.pk} failed: {exc}. It is recorded as a failed model version; "
                    "the champion and the segments are unchanged."
                ) from None
            return Response(ClusteringRunSerializer(result).data)
        task_id = str(uuid.uuid4())
        # After commit, with the id chosen now so the answer can name it.
        transaction.on_commit(lambda: clustering_refresh_task.apply_async(args=[clustering.pk], task_id=task_id))
        body = {
            "clustering_id": clustering.pk,
            "task_id": task_id,
            "message": "Run queued; see champion on the clustering, or /api/v1/model-versions.",
        }
        return Response(ClusteringRunQueuedSerializer(body).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Cluster profiles of a clustering",
        description=(
            "Each cluster of the champion run, largest first (DBSCAN noise last): a label, its size and share, "
            "its segment, and every feature's cluster mean against the population mean with the members' mean "
            "percentile (0.5 is typical), most distinctive first. 404 before the first successful run."
        ),
        responses={200: ClusteringProfilesSerializer, **NOT_FOUND},
    )
    @action(detail=True, methods=["get"], url_path="profiles")
    def profiles(self, request: Request, pk: str | None = None) -> Response:
        clustering = self.get_object()
        version = ml_selectors.clustering_champion(clustering.pk)
        if version is None:
            raise NotFound(f"Clustering {clustering.pk} has no successful run yet: POST /api/v1/clusterings/{pk}/run.")
        segment_of = {
            segment["cluster"]: segment["id"]
            for segment in clustering_segments([clustering.pk]).get(clustering.pk, [])
            if segment["cluster"] is not None
        }
        body = {
            "clustering_id": clustering.pk,
            "model_version_id": version.pk,
            "trained_at": version.trained_at,
            "profiles": [
                {**profile, "segment_id": segment_of.get(profile["cluster"])}
                for profile in version.result.get("profiles", [])
            ],
        }
        return Response(ClusteringProfilesSerializer(body).data)
