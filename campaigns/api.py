"""REST API v1 of segments: CRUD, preview of an unsaved definition, explain (why a
customer is or is not in a segment), rebuild, members and the change log. Thin views over
campaigns.segments services and selectors."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Segment
from campaigns.segments import selectors, services
from campaigns.segments.rebuild import segment_rebuild, segment_rebuild_check
from campaigns.segments.rules import RuleInvalid
from campaigns.serializers import (
    RuleErrorsSerializer,
    SegmentChangeSerializer,
    SegmentExplainSerializer,
    SegmentMemberSerializer,
    SegmentPreviewRequestSerializer,
    SegmentPreviewSerializer,
    SegmentRebuildQueuedSerializer,
    SegmentRebuildSerializer,
    SegmentSerializer,
)
from campaigns.tasks import segment_rebuild_task
from marketing.api_common import IdCursorPagination
from marketing.errors import BatchInvalid, NotFound, RowError

RULE_ERRORS = {
    400: OpenApiResponse(RuleErrorsSerializer, description="An invalid rule tree: every problem with its JSON Pointer.")
}


class MemberCursorPagination(IdCursorPagination):
    """Members page by customer id (unique within a segment, indexed with the segment)."""

    ordering = "customer_id"


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise BatchInvalid([RowError(row=None, field=name, message="must be true or false")])
    return value in ("true", "1")


def _checkpoint(request: Request) -> int:
    value = request.query_params.get("after", "0")
    if not value.isdigit():
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
    retrieve=extend_schema(summary="A segment"),
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
        description="Each node of the rule tree with its result for the customer.",
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
            raise RuleInvalid([])  # pragma: no cover - only rules segments exist yet
        return Response(SegmentExplainSerializer(services.segment_explain(segment.definition, customer)).data)

    @extend_schema(
        summary="Rebuild a segment",
        description=(
            "Recomputes the segment's members and appends who entered and who exited to its change "
            "log. By default the rebuild is queued (202) and runs on a worker; with `wait=true` it runs "
            "in the request and answers with the counts (200): fine for small segments and scripts, "
            "but a large segment may take seconds. Rebuilds of one segment never overlap: a second one "
            "waits for the first and writes only what changed since. Only rules segments can be rebuilt."
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
        if _flag(request, "wait"):
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
