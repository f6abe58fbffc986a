"""REST API v1 of segments: CRUD, preview of an unsaved definition, and explain (why a
customer is or is not in a segment). Thin views over campaigns.segments services."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Segment
from campaigns.segments import selectors, services
from campaigns.segments.rules import RuleInvalid
from campaigns.serializers import (
    RuleErrorsSerializer,
    SegmentExplainSerializer,
    SegmentPreviewRequestSerializer,
    SegmentPreviewSerializer,
    SegmentSerializer,
)
from marketing.errors import BatchInvalid, NotFound, RowError

RULE_ERRORS = {
    400: OpenApiResponse(RuleErrorsSerializer, description="An invalid rule tree: every problem with its JSON Pointer.")
}


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
