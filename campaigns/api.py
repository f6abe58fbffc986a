"""REST API v1 of segments, clusterings and delivery.

Segments: CRUD, preview of an unsaved definition, explain (why a customer is or is not in
a segment), rebuild, members and the change log. Clusterings: CRUD, a run on demand (which
keeps one segment per cluster), and the champion run's cluster profiles. Delivery:
channels, push devices, campaigns with their launch/pause/resume/cancel actions and
progress, creatives with preview and test send, and the outbox (read-only). Thin views
over campaigns.segments services and selectors, campaigns.delivery (definitions, control)
and mlcore.selectors."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.delivery import control, definitions
from campaigns.filters import CampaignFilter, ChannelFilter, CreativeFilter, DeviceFilter, MessageFilter
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message, Segment
from campaigns.segments import selectors, services
from campaigns.segments.clusterings import clustering_delete, clustering_refresh, clustering_segments
from campaigns.segments.rebuild import segment_rebuild, segment_rebuild_check
from campaigns.segments.rules import RuleError, RuleInvalid
from campaigns.serializers import (
    CampaignActionSerializer,
    CampaignDetailSerializer,
    CampaignProgressSerializer,
    CampaignSerializer,
    ChannelSerializer,
    ClusteringProfilesSerializer,
    ClusteringRunQueuedSerializer,
    ClusteringRunSerializer,
    ClusteringSerializer,
    CreativePreviewRequestSerializer,
    CreativeSerializer,
    CreativeTestRequestSerializer,
    CreativeTestResultSerializer,
    DeviceRegisterSerializer,
    DeviceSerializer,
    MessageSerializer,
    RenderedSerializer,
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
    campaign_progress_body,
)
from campaigns.tasks import clustering_refresh_task, segment_rebuild_task
from marketing.api import OrjsonParser
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
    destroy=extend_schema(
        summary="Delete a segment",
        description="409 while a campaign uses it (as audience, exclusion or trigger; finished campaigns keep "
        "theirs as their record) or another rules segment refers to it; the answer names them.",
        responses={204: None, 404: DetailSerializer, 409: DetailSerializer},
    ),
)
class SegmentViewSet(RuleErrorsMixin, viewsets.ModelViewSet):
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
class ClusteringViewSet(viewsets.ModelViewSet):
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


# --- delivery: channels, devices, campaigns, creatives, messages ------------------------------

CONFLICT = {409: DetailSerializer}
VALIDATION_ERROR_EXAMPLE = OpenApiExample(
    "Invalid fields",
    value={
        "errors": [
            {"row": None, "field": "holdout_percent", "message": "Ensure this value is less than or equal to 100."}
        ]
    },
    response_only=True,
    status_codes=["400"],
)
CONFLICT_EXAMPLE = OpenApiExample(
    "A transition the status does not allow",
    value={"detail": "Campaign 7 is completed: only a running campaign can be paused."},
    response_only=True,
    status_codes=["409"],
)


class JsonViewSet(viewsets.GenericViewSet):
    """Objects addressed by numeric id, JSON bodies parsed by orjson (a NUL in a JSON
    string is a 400, not a database error)."""

    parser_classes = [OrjsonParser]
    lookup_value_regex = r"[0-9]+"


class JsonCrudViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    JsonViewSet,
):
    pass


@extend_schema_view(
    list=extend_schema(summary="List channels", description="Cursor-paginated by id."),
    retrieve=extend_schema(summary="A channel", responses={200: ChannelSerializer, **NOT_FOUND}),
    create=extend_schema(
        summary="Create a channel",
        description=(
            "Settings are checked for the kind and backend. Secrets are never stored or echoed: a settings key "
            '(at any depth, headers included) ending in "password", "token", "secret", "api_key" or named '
            '"Authorization" is a 400; name an environment variable in "<key>_env" instead.'
        ),
        responses={201: ChannelSerializer, **BAD_INPUT},
        examples=[
            OpenApiExample(
                "SMTP email",
                value={
                    "name": "newsletter",
                    "kind": "email",
                    "backend": "smtp",
                    "settings": {
                        "from_email": "news@shop.example",
                        "host": "smtp.example.net",
                        "port": 587,
                        "username": "news",
                        "password_env": "NEWS_SMTP_PASSWORD",
                        "use_tls": True,
                    },
                    "cost_per_message": "0.000800",
                    "rate_limit_per_second": 50,
                },
                request_only=True,
            ),
            OpenApiExample(
                "A secret in clear",
                value={
                    "errors": [
                        {
                            "row": None,
                            "field": "settings.password",
                            "message": "secrets are not stored: put it in an environment variable and name that "
                            'in "password_env"',
                        }
                    ],
                    "message": "1 invalid row(s); nothing was written",
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
    ),
    update=extend_schema(summary="Replace a channel", responses={200: ChannelSerializer, **BAD_INPUT, **NOT_FOUND}),
    partial_update=extend_schema(
        summary="Change a channel", responses={200: ChannelSerializer, **BAD_INPUT, **NOT_FOUND}
    ),
    destroy=extend_schema(
        summary="Delete a channel",
        description="409 once it has messages (they keep it for their history): set enabled to false instead.",
        responses={204: None, **NOT_FOUND, **CONFLICT},
    ),
)
@extend_schema(tags=["channels"])
class ChannelViewSet(JsonCrudViewSet):
    serializer_class = ChannelSerializer
    filterset_class = ChannelFilter
    queryset = Channel.objects.all()

    def perform_create(self, serializer: ChannelSerializer) -> None:
        serializer.instance = definitions.channel_create(**serializer.validated_data)

    def perform_update(self, serializer: ChannelSerializer) -> None:
        serializer.instance = definitions.channel_update(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Channel) -> None:
        definitions.channel_delete(instance)


@extend_schema_view(
    list=extend_schema(summary="List devices", description="Cursor-paginated by id; `customer` narrows to one."),
    retrieve=extend_schema(summary="A device", responses={200: DeviceSerializer, **NOT_FOUND}),
    destroy=extend_schema(
        summary="Forget a device (its token is never used again)", responses={204: None, **NOT_FOUND}
    ),
)
@extend_schema(tags=["devices"])
class DeviceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, JsonViewSet):
    """Push tokens of customers' app installs and browsers. The token itself is never
    echoed (a preview and its SHA-256 are)."""

    serializer_class = DeviceSerializer
    filterset_class = DeviceFilter

    def get_queryset(self):
        return Device.objects.select_related("customer").only(
            *(f.name for f in Device._meta.concrete_fields if f.name != "customer"), "customer__external_id"
        )

    @extend_schema(
        summary="Register a push token",
        description=(
            "Upsert by token: 201 when the token is new, 200 when it was known (it then moves to this customer, "
            "platform and enabled flag: a token belongs to one app install). The customer is named by external id "
            "or numeric id; an unknown or erased customer is a 400."
        ),
        request=DeviceRegisterSerializer,
        responses={201: DeviceSerializer, 200: DeviceSerializer, **BAD_INPUT},
        examples=[
            OpenApiExample(
                "An iOS install",
                value={"customer": "crm-1001", "platform": "ios", "token": "a3f1c2…"},
                request_only=True,
            )
        ],
    )
    def create(self, request: Request) -> Response:
        body = DeviceRegisterSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        customer = selectors.customer_by_reference(data["customer"].strip())
        if customer is None:
            raise BatchInvalid(
                [
                    RowError(
                        row=None, field="customer", message=f"no customer with external id or id {data['customer']!r}"
                    )
                ]
            )
        device, created = definitions.device_upsert(
            customer, platform=data["platform"], token=data["token"], enabled=data["enabled"]
        )
        device = self.get_queryset().get(pk=device.pk)
        return Response(
            DeviceSerializer(device).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def perform_destroy(self, instance: Device) -> None:
        definitions.device_delete(instance)


CAMPAIGN_EDIT_DESCRIPTION = (
    "Omitted fields are unchanged. Once the campaign has launched, who is treated and who is held out is fixed: "
    "audience, exclusions, holdout_percent, trigger, trigger_segment, trigger_event_kind and send_at answer 409 "
    "if changed. A completed or cancelled campaign is a record: only name, description, goal_event, "
    "attribution_window_days and fixed_cost can change. Sending a field with its current value is no change."
)


@extend_schema_view(
    list=extend_schema(
        summary="List campaigns", description="Cursor-paginated by id. The progress is on each campaign's own page."
    ),
    retrieve=extend_schema(
        summary="A campaign, with its progress", responses={200: CampaignDetailSerializer, **NOT_FOUND}
    ),
    create=extend_schema(
        summary="Create a campaign",
        description=(
            "Only `name` is needed: a campaign that runs elsewhere is measured from imported touchpoints "
            "(`campaign_id`) with its goal_event and attribution window. Everything else can follow; the launch "
            "checks the whole definition."
        ),
        responses={201: CampaignSerializer, **BAD_INPUT},
        examples=[
            OpenApiExample("Just a name", value={"name": "Spring sale (sent by the ESP)"}, request_only=True),
            OpenApiExample(
                "A one-off email campaign",
                value={
                    "name": "Spring sale",
                    "audience": [12],
                    "exclusions": [3],
                    "holdout_percent": "10.00",
                    "frequency_cap": 3,
                    "frequency_cap_days": 7,
                    "quiet_hours_start": "21:00",
                    "quiet_hours_end": "08:00",
                    "goal_event": "purchase",
                    "attribution_window_days": 7,
                    "channel_policy": {"type": "fixed", "channel": 1},
                    "creative_policy": {"type": "weighted"},
                },
                request_only=True,
            ),
            VALIDATION_ERROR_EXAMPLE,
        ],
    ),
    update=extend_schema(
        summary="Replace a campaign's definition",
        description=CAMPAIGN_EDIT_DESCRIPTION,
        responses={200: CampaignSerializer, **BAD_INPUT, **NOT_FOUND, **CONFLICT},
    ),
    partial_update=extend_schema(
        summary="Change a campaign",
        description=CAMPAIGN_EDIT_DESCRIPTION,
        responses={200: CampaignSerializer, **BAD_INPUT, **NOT_FOUND, **CONFLICT},
    ),
    destroy=extend_schema(
        summary="Delete a draft campaign",
        description="Only drafts that never made a message; anything else is 409 (cancel it instead).",
        responses={204: None, **NOT_FOUND, **CONFLICT},
    ),
)
@extend_schema(tags=["campaigns"])
class CampaignViewSet(JsonCrudViewSet):
    """Campaigns: definition (audience and exclusions, trigger, holdout, caps, quiet hours,
    budget, goal, policies) and the status machine, driven by the launch, pause, resume and
    cancel actions (campaigns.delivery.control)."""

    filterset_class = CampaignFilter

    def get_queryset(self):
        return Campaign.objects.prefetch_related("audience", "exclusions")

    def get_serializer_class(self):
        return CampaignDetailSerializer if self.action == "retrieve" else CampaignSerializer

    def perform_create(self, serializer: CampaignSerializer) -> None:
        serializer.instance = definitions.campaign_create(**serializer.validated_data)

    def perform_update(self, serializer: CampaignSerializer) -> None:
        campaign = definitions.campaign_update(serializer.instance, **serializer.validated_data)
        serializer.instance = self.get_queryset().get(pk=campaign.pk)

    def perform_destroy(self, instance: Campaign) -> None:
        definitions.campaign_delete(instance)

    def _answer(self, campaign_id: int, run: CampaignRun | None = None) -> Response:
        campaign_status = Campaign.objects.values_list("status", flat=True).get(pk=campaign_id)
        body = {"campaign_id": campaign_id, "status": campaign_status, "run": run}
        return Response(CampaignActionSerializer(body).data)

    @extend_schema(
        summary="Launch a campaign",
        description=(
            "Checks the whole definition first (400 naming every bad field: no audience, no enabled creative for "
            "a channel the policy can pick, a recurring campaign without cron…). A one-off without send_at (or "
            "with a past one) selects its audience now, in this request, and answers the run with its counts; "
            "with a future send_at it becomes `scheduled`. Recurring and triggered campaigns start `running` and "
            "fire on their schedule or trigger. Launching twice makes nothing new. 409 from any status but draft "
            "or scheduled."
        ),
        request=None,
        responses={200: CampaignActionSerializer, **BAD_INPUT, **NOT_FOUND, **CONFLICT},
        examples=[
            OpenApiExample(
                "A one-off launched",
                value={
                    "campaign_id": 7,
                    "status": "running",
                    "run": {
                        "id": 31,
                        "key": "launch",
                        "status": "running",
                        "counts": {"audience": 1000, "held_out": 98, "queued": 861, "suppressed": 41},
                        "started_at": "2026-11-01T10:00:00Z",
                        "finished_at": None,
                    },
                },
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample(
                "An incomplete definition",
                value={
                    "errors": [
                        {"row": None, "field": "audience", "message": "choose at least one segment"},
                        {"row": None, "field": "creatives", "message": "no enabled creative"},
                    ],
                    "message": "2 invalid row(s); nothing was written",
                },
                response_only=True,
                status_codes=["400"],
            ),
            CONFLICT_EXAMPLE,
        ],
    )
    @action(detail=True, methods=["post"], url_path="launch")
    def launch(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        run = control.campaign_launch(campaign.pk)
        return self._answer(campaign.pk, run)

    @extend_schema(
        summary="Pause a campaign",
        description="Senders stop claiming its messages within seconds; queued messages wait. 409 unless running.",
        request=None,
        responses={200: CampaignActionSerializer, **NOT_FOUND, **CONFLICT},
        examples=[CONFLICT_EXAMPLE],
    )
    @action(detail=True, methods=["post"], url_path="pause")
    def pause(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        control.campaign_pause(campaign.pk)
        return self._answer(campaign.pk)

    @extend_schema(
        summary="Resume a paused campaign",
        description="Sends what is still queued (nothing already sent or in doubt is sent again). 409 unless paused.",
        request=None,
        responses={200: CampaignActionSerializer, **NOT_FOUND, **CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path="resume")
    def resume(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        control.campaign_resume(campaign.pk)
        return self._answer(campaign.pk)

    @extend_schema(
        summary="Cancel a campaign",
        description="Its queued messages become `cancelled` and no run starts again; sent ones stay sent. "
        "409 once completed or cancelled.",
        request=None,
        responses={200: CampaignActionSerializer, **NOT_FOUND, **CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path="cancel")
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        control.campaign_cancel(campaign.pk)
        return self._answer(campaign.pk)

    @extend_schema(
        summary="Progress of a campaign",
        description="Its messages by status, in all and per run, and the suppressed ones by reason.",
        responses={200: CampaignProgressSerializer, **NOT_FOUND},
        examples=[
            OpenApiExample(
                "Mid-send",
                value={
                    "campaign_id": 7,
                    "queued": 400,
                    "sending": 2,
                    "sent": 420,
                    "delivered": 39,
                    "failed": 1,
                    "suppressed": 41,
                    "held_out": 98,
                    "unknown": 0,
                    "cancelled": 0,
                    "total": 1001,
                    "campaign_status": "running",
                    "suppressed_reasons": {"no_consent": 30, "unsubscribed": 9, "suppressed": 2},
                    "runs_total": 1,
                    "runs": [
                        {
                            "id": 31,
                            "key": "launch",
                            "status": "running",
                            "started_at": "2026-11-01T10:00:00Z",
                            "finished_at": None,
                            "counts": {"audience": 1000, "held_out": 98, "queued": 861, "suppressed": 41},
                            "messages": {
                                "queued": 400,
                                "sending": 2,
                                "sent": 420,
                                "delivered": 39,
                                "failed": 1,
                                "suppressed": 41,
                                "held_out": 98,
                                "unknown": 0,
                                "cancelled": 0,
                            },
                        }
                    ],
                },
                response_only=True,
            )
        ],
    )
    @action(detail=True, methods=["get"], url_path="progress", filter_backends=[])
    def progress(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        return Response(CampaignProgressSerializer(campaign_progress_body(campaign.pk)).data)


@extend_schema_view(
    list=extend_schema(summary="List creatives", description="Cursor-paginated by id; `campaign` narrows to one."),
    retrieve=extend_schema(summary="A creative", responses={200: CreativeSerializer, **NOT_FOUND}),
    create=extend_schema(
        summary="Add a creative to a campaign",
        description=(
            "Subject, body and HTML body are Django templates over the customer's fields ({{ first_name }}, "
            "{{ attributes.tier }}, {{ unsubscribe_url }}…); each is compiled and rendered for a sample customer, "
            "and a problem is a 400 naming the field. 409 for a completed or cancelled campaign."
        ),
        responses={201: CreativeSerializer, **BAD_INPUT, **CONFLICT},
        examples=[
            OpenApiExample(
                "An email variant",
                value={
                    "campaign": 7,
                    "channel_kind": "email",
                    "name": "B",
                    "subject": "{{ first_name|default:'Hello' }}, 20% off this week",
                    "body": "Hi {{ first_name }}, shop now: https://shop.example/sale",
                    "html_body": '<p>Hi {{ first_name }}, <a href="https://shop.example/sale">shop now</a></p>',
                    "weight": 1,
                },
                request_only=True,
            ),
            OpenApiExample(
                "A broken template",
                value={
                    "errors": [
                        {
                            "row": None,
                            "field": "subject",
                            "message": "Unclosed tag on line 1: 'if'. Looking for one of: elif, else, endif.",
                        }
                    ],
                    "message": "1 invalid row(s); nothing was written",
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
    ),
    update=extend_schema(
        summary="Replace a creative",
        description="Edits reach the messages still queued. The campaign cannot change; the channel kind cannot "
        "once messages were made with it (409).",
        responses={200: CreativeSerializer, **BAD_INPUT, **NOT_FOUND, **CONFLICT},
    ),
    partial_update=extend_schema(
        summary="Change a creative",
        description="Edits reach the messages still queued. The campaign cannot change; the channel kind cannot "
        "once messages were made with it (409).",
        responses={200: CreativeSerializer, **BAD_INPUT, **NOT_FOUND, **CONFLICT},
    ),
    destroy=extend_schema(
        summary="Delete a creative",
        description="409 once messages were made with it (set enabled to false instead), or when its campaign "
        "is completed or cancelled.",
        responses={204: None, **NOT_FOUND, **CONFLICT},
    ),
)
@extend_schema(tags=["creatives"])
class CreativeViewSet(JsonCrudViewSet):
    serializer_class = CreativeSerializer
    filterset_class = CreativeFilter
    queryset = Creative.objects.all()

    def perform_create(self, serializer: CreativeSerializer) -> None:
        fields = dict(serializer.validated_data)
        campaign = fields.pop("campaign")
        serializer.instance = definitions.creative_create(campaign, **fields)

    def perform_update(self, serializer: CreativeSerializer) -> None:
        serializer.instance = definitions.creative_update(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Creative) -> None:
        definitions.creative_delete(instance)

    @extend_schema(
        summary="Preview a creative",
        description=(
            "Renders subject, text and HTML as a customer would get them (without tracking: no message exists): "
            "for `customer` (external id or numeric id), or for a sample customer with the fields in `context` "
            "laid over it. A template that fails to render is a 400 naming the field."
        ),
        request=CreativePreviewRequestSerializer,
        responses={200: RenderedSerializer, **BAD_INPUT, **NOT_FOUND},
        examples=[
            OpenApiExample("For a customer", value={"customer": "crm-1001"}, request_only=True),
            OpenApiExample(
                "For sample fields",
                value={"context": {"first_name": "Ada", "attributes": {"tier": "gold"}}},
                request_only=True,
            ),
            OpenApiExample(
                "Rendered",
                value={
                    "creative_id": 12,
                    "customer_id": None,
                    "subject": "Ada, 20% off this week",
                    "text": "Hi Ada, shop now: https://shop.example/sale",
                    "html": '<p>Hi Ada, <a href="https://shop.example/sale">shop now</a></p>',
                },
                response_only=True,
            ),
        ],
    )
    @action(detail=True, methods=["post"], url_path="preview", filter_backends=[])
    def preview(self, request: Request, pk: str | None = None) -> Response:
        creative = self.get_object()
        body = CreativePreviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        customer = None
        reference = body.validated_data.get("customer")
        if reference is not None:
            customer = selectors.customer_by_reference(reference.strip())
            if customer is None:
                raise BatchInvalid(
                    [RowError(row=None, field="customer", message=f"no customer with external id or id {reference!r}")]
                )
        result = definitions.creative_preview(creative, customer=customer, fields=body.validated_data.get("context"))
        return Response(RenderedSerializer(result).data)

    @extend_schema(
        summary="Send a test of a creative",
        description=(
            "Sends the creative, rendered for the sample customer and marked as a test, to the address, number or "
            "token in `to` through the campaign's channel of the creative's kind. It is no campaign message: "
            "no outbox row, no touchpoint, no consent check. 400 for an address the channel cannot use."
        ),
        request=CreativeTestRequestSerializer,
        responses={
            200: CreativeTestResultSerializer,
            **BAD_INPUT,
            **NOT_FOUND,
            409: OpenApiResponse(DetailSerializer, description="No enabled channel of the creative's kind."),
            502: OpenApiResponse(DetailSerializer, description="The provider refused or could not be reached."),
        },
        examples=[
            OpenApiExample("To me", value={"to": "marketer@shop.example"}, request_only=True),
            OpenApiExample(
                "A bad address",
                value={
                    "errors": [{"row": None, "field": "to", "message": "Enter a valid email address."}],
                    "message": "1 invalid row(s); nothing was written",
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
    )
    @action(detail=True, methods=["post"], url_path="test", filter_backends=[])
    def test(self, request: Request, pk: str | None = None) -> Response:
        creative = self.get_object()
        body = CreativeTestRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = definitions.creative_send_test(creative, body.validated_data["to"])
        return Response(CreativeTestResultSerializer(result).data)


@extend_schema_view(
    list=extend_schema(
        summary="List messages (the outbox)",
        description=(
            "Cursor-paginated by id. Filter by campaign, run, status, customer (external id or numeric "
            "id) and channel; `status=unknown` lists the messages in doubt (a worker died mid-send: never re-sent "
            "blindly)."
        ),
    ),
    retrieve=extend_schema(summary="A message", responses={200: MessageSerializer, **NOT_FOUND}),
)
@extend_schema(tags=["messages"])
class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = MessageSerializer
    filterset_class = MessageFilter
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return Message.objects.annotate(customer_external_id=F("customer__external_id"))
