"""REST API v1 of reports: ROI and holdout lift of a campaign, attribution, funnels, and
report-run status. Thin views over analytics.reports: it validates and canonicalises the
parameters, answers from the cache, computes small reports in the request and queues
large ones (202 with the run's status URL)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from analytics import reports
from analytics.models import ReportRun
from analytics.serializers import (
    AttributionAnswerSerializer,
    AttributionReportSerializer,
    FunnelAnswerSerializer,
    FunnelRequestSerializer,
    QueuedSerializer,
    ReportRunSerializer,
    RoiAnswerSerializer,
    RoiReportSerializer,
    run_status_url,
)
from marketing.api import OrjsonParser
from marketing.api_common import query_flag
from marketing.serializers import DetailSerializer, ErrorsSerializer

BAD_INPUT = OpenApiResponse(ErrorsSerializer, description="Bad parameters, each named; nothing was computed.")
QUEUED = OpenApiResponse(
    QueuedSerializer, description="A large report: queued as a task; poll `run.status_url` for its result."
)
FAILED = OpenApiResponse(DetailSerializer, description="The computation failed (e.g. the statement timeout).")
REFRESH = OpenApiParameter("refresh", OpenApiTypes.BOOL, description="Compute again even if a fresh run exists.")

ROI_EXAMPLE = {
    "campaign": {"id": 7, "name": "Autumn sale"},
    "goal": "purchase",
    "window_days": 7,
    "currency": "USD",
    "timezone": "Europe/Berlin",
    "sends": 9000,
    "messages_sent": 9000,
    "opens": 3150,
    "clicks": 720,
    "conversions": 540,
    "orders": 561,
    "revenue": "27000.0000",
    "messages_cost": "9.0000",
    "fixed_cost": "500.0000",
    "cost": "509.0000",
    "open_rate": 0.35,
    "ctr": 0.08,
    "cvr": 0.125,
    "cpa": "0.9426",
    "roas": 53.045,
    "roi": 52.045,
    "treated": {
        "customers": 9000,
        "conversions": 540,
        "conversion_rate": 0.06,
        "orders": 561,
        "revenue": "27000.0000",
        "revenue_per_customer": "3.0000",
    },
    "control": {
        "customers": 1000,
        "conversions": 40,
        "conversion_rate": 0.04,
        "orders": 41,
        "revenue": "2000.0000",
        "revenue_per_customer": "2.0000",
    },
    "lift": {
        "conversion_rate": {
            "absolute": 0.02,
            "relative": 0.5,
            "ci_low": 0.0057,
            "ci_high": 0.0318,
            "p_value": 0.0093,
            "relative_ci_low": 0.089,
            "relative_ci_high": 1.063,
            "reason": "",
        },
        "revenue_per_customer": {
            "absolute": 1.0,
            "relative": 0.5,
            "ci_low": 0.12,
            "ci_high": 1.88,
            "p_value": 0.026,
            "relative_ci_low": 0.05,
            "relative_ci_high": 1.14,
            "reason": "",
        },
    },
    "incremental_conversions": 180.0,
    "incremental_revenue": "9000.0000",
    "incremental_roi": 16.68,
    "by_channel": [
        {
            "channel": "email",
            "label": "email",
            "sends": 9000,
            "customers": 9000,
            "clicks": 720,
            "conversions": 540,
            "conversion_rate": 0.06,
            "revenue": "27000.0000",
            "cost": "9.0000",
            "cpa": "0.0167",
            "roas": 3000.0,
            "roi": 2999.0,
        }
    ],
    "by_creative": [
        {
            "creative": 12,
            "label": "A (email)",
            "sends": 4500,
            "customers": 4500,
            "clicks": 400,
            "conversions": 300,
            "conversion_rate": 0.0667,
            "revenue": "15000.0000",
            "cost": "4.5000",
            "cpa": "0.0150",
            "roas": 3333.33,
            "roi": 3332.33,
        }
    ],
    "daily": [{"date": "2026-10-01", "sends": 9000, "conversions": 210, "revenue": "10500.0000"}],
    "notes": [],
    "run": {
        "id": 41,
        "status": "succeeded",
        "status_url": "/api/v1/reports/runs/41",
        "cached": False,
        "computed_at": "2026-11-02T08:00:01Z",
        "duration_ms": 412,
    },
}

ATTRIBUTION_EXAMPLE = {
    "model": "position_based",
    "goal": "purchase",
    "date_from": "2026-10-01",
    "date_to": "2026-10-31",
    "window_days": 30,
    "half_life_days": None,
    "currency": "USD",
    "timezone": "UTC",
    "conversions": 3,
    "revenue": "130.00",
    "attributed": {"conversions": 2, "revenue": "100.00"},
    "unattributed": {"conversions": 1, "revenue": "30.00"},
    "by_campaign": [
        {"campaign": 7, "label": "Autumn sale", "conversions": "1.4000", "revenue": "70.00"},
        {"campaign": 8, "label": "Win-back", "conversions": "0.6000", "revenue": "30.00"},
    ],
    "by_channel": [{"channel": "email", "label": "email", "conversions": "2.0000", "revenue": "100.00"}],
    "by_creative": [{"creative": 12, "label": "A (email)", "conversions": "2.0000", "revenue": "100.00"}],
    "run": {
        "id": 42,
        "status": "succeeded",
        "status_url": "/api/v1/reports/runs/42",
        "cached": True,
        "computed_at": "2026-11-02T08:00:01Z",
        "duration_ms": 95,
    },
}

QUEUED_EXAMPLE = OpenApiExample(
    "Queued (a large report)",
    value={
        "run": {
            "id": 43,
            "status": "queued",
            "status_url": "/api/v1/reports/runs/43",
            "cached": False,
            "computed_at": None,
            "duration_ms": None,
        },
        "message": "The report is being computed; GET /api/v1/reports/runs/43 for its status and result.",
    },
    response_only=True,
    status_codes=["202"],
)
NOT_FOUND_EXAMPLE = OpenApiExample(
    "Unknown campaign",
    value={"detail": "Campaign 999 does not exist."},
    response_only=True,
    status_codes=["404"],
)
BAD_EXAMPLE = OpenApiExample(
    "A bad parameter",
    value={"errors": [{"row": None, "field": "window_days", "message": "must be a whole number from 0 to 365"}]},
    response_only=True,
    status_codes=["400"],
)


def _run_ref(run: ReportRun, *, cached: bool) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_url": run_status_url(run.pk),
        "cached": cached,
        "computed_at": run.computed_at,
        "duration_ms": run.duration_ms,
    }


def _answer(run: ReportRun, created_before: int | None, shape=None) -> Response:
    """200 with the result (and the run), 202 while it is queued or running, 500 with
    the stored error when the computation failed."""
    cached = created_before is not None and run.pk <= created_before
    ref = _run_ref(run, cached=cached)
    if run.status == ReportRun.Status.SUCCEEDED:
        if shape is None:
            return Response({"run": ref, "result": run.result})
        body = shape(run.result).data
        return Response({**body, "run": ref})
    if run.status == ReportRun.Status.FAILED:
        return Response(
            {"detail": f"The report failed: {run.error}", "run": ref}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    message = f"The report is being computed; GET {ref['status_url']} for its status and result."
    return Response(
        {"run": ref, "message": message}, status=status.HTTP_202_ACCEPTED, headers={"Location": ref["status_url"]}
    )


def _last_run_id() -> int:
    """Runs with an id up to this one existed before the request: one of them answering
    means the cache (or a run under way) did."""
    return ReportRun.objects.order_by("-id").values_list("id", flat=True).first() or 0


class ReportViewSet(viewsets.GenericViewSet):
    parser_classes = [OrjsonParser]
    pagination_class = None
    filter_backends: list = []
    serializer_class = RoiReportSerializer

    @extend_schema(
        summary="ROI and holdout lift of a campaign",
        description=(
            "Cost (the sent messages' cost + the campaign's fixed cost), revenue net of refunds, ROAS, CPA, ROI, "
            "CTR/CVR; treated (customers first exposed by a `sent` touchpoint) against control (`held_out`): "
            "conversion rate and revenue per customer with the absolute and relative lift, the 95% interval of the "
            "ABSOLUTE difference and the p-value; incremental conversions, revenue and ROI; breakdowns per channel "
            "and creative; a daily series in the reporting timezone. The goal kind and window are the campaign's "
            "unless `goal`/`window_days` override them. A campaign created with just a name whose touchpoints were "
            "imported is measured the same way. Campaigns with more than REPORT_SYNC_MAX_MESSAGES messages are "
            "computed by a task: 202 with the run's status URL."
        ),
        parameters=[
            OpenApiParameter("campaign", OpenApiTypes.INT, required=True, description="The campaign's id."),
            OpenApiParameter("goal", OpenApiTypes.STR, description="Goal touchpoint kind (default: the campaign's)."),
            OpenApiParameter(
                "window_days", OpenApiTypes.INT, description="Days after exposure (default: the campaign's)."
            ),
            REFRESH,
        ],
        responses={
            200: RoiAnswerSerializer,
            202: QUEUED,
            400: BAD_INPUT,
            404: DetailSerializer,
            500: FAILED,
        },
        examples=[
            OpenApiExample("A campaign with a holdout", value=ROI_EXAMPLE, response_only=True, status_codes=["200"]),
            QUEUED_EXAMPLE,
            NOT_FOUND_EXAMPLE,
            BAD_EXAMPLE,
        ],
    )
    @action(detail=False, methods=["get"], url_path="roi")
    def roi(self, request: Request) -> Response:
        before = _last_run_id()
        run = reports.report_request(
            ReportRun.Kind.ROI, request.query_params.dict(), refresh=query_flag(request, "refresh")
        )
        return _answer(run, before, RoiReportSerializer)

    @extend_schema(
        summary="Attribution of conversions to campaign touches",
        description=(
            "Conversions (goal touchpoints, an order counted once, revenue net of its refunds) in [from, to] (days in "
            "the reporting timezone), credited to the customer's `sent` and `click` touchpoints of any campaign in "
            "the `window_days` before: last_touch (default), first_touch, linear, time_decay (`half_life_days`) or "
            "position_based (40/20/40). Totals per campaign, channel and creative add up exactly (to the cent) to "
            "the attributed revenue; conversions without a touch are `unattributed`. Ranges over "
            "REPORT_SYNC_MAX_DAYS days are computed by a task (202)."
        ),
        parameters=[
            OpenApiParameter(
                "model",
                OpenApiTypes.STR,
                enum=["last_touch", "first_touch", "linear", "time_decay", "position_based"],
                description="Default last_touch.",
            ),
            OpenApiParameter("from", OpenApiTypes.DATE, required=True, description="First day (inclusive)."),
            OpenApiParameter("to", OpenApiTypes.DATE, required=True, description="Last day (inclusive)."),
            OpenApiParameter("window_days", OpenApiTypes.INT, description="Lookback window (default 30)."),
            OpenApiParameter("half_life_days", OpenApiTypes.NUMBER, description="time_decay only (default 7)."),
            OpenApiParameter("goal", OpenApiTypes.STR, description="Goal touchpoint kind (default purchase)."),
            REFRESH,
        ],
        responses={200: AttributionAnswerSerializer, 202: QUEUED, 400: BAD_INPUT, 500: FAILED},
        examples=[
            OpenApiExample("Position-based", value=ATTRIBUTION_EXAMPLE, response_only=True, status_codes=["200"]),
            QUEUED_EXAMPLE,
            BAD_EXAMPLE,
        ],
    )
    @action(detail=False, methods=["get"], url_path="attribution")
    def attribution(self, request: Request) -> Response:
        before = _last_run_id()
        run = reports.report_request(
            ReportRun.Kind.ATTRIBUTION, request.query_params.dict(), refresh=query_flag(request, "refresh")
        )
        return _answer(run, before, AttributionReportSerializer)

    @extend_schema(
        summary="Compute a funnel",
        description=(
            "A saved funnel (`funnel`: its id) or an inline `spec` (steps, window, order mode, date range, "
            "breakdown; see analytics.funnels.spec). The answer holds the run and the funnel's `result`. Ranges over "
            "REPORT_SYNC_MAX_DAYS days are computed by a task (202)."
        ),
        request=FunnelRequestSerializer,
        responses={200: FunnelAnswerSerializer, 202: QUEUED, 400: BAD_INPUT, 404: DetailSerializer, 500: FAILED},
        examples=[
            OpenApiExample(
                "An inline spec",
                value={
                    "spec": {
                        "steps": [{"kind": "visit"}, {"kind": "add_to_cart"}, {"kind": "purchase"}],
                        "window": {"days": 7},
                        "order": "ordered",
                        "date_from": "2026-10-01",
                        "date_to": "2026-10-31",
                    }
                },
                request_only=True,
            ),
            OpenApiExample("A saved funnel", value={"funnel": 3}, request_only=True),
            QUEUED_EXAMPLE,
            BAD_EXAMPLE,
        ],
    )
    @action(detail=False, methods=["post"], url_path="funnel")
    def funnel(self, request: Request) -> Response:
        body = FunnelRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        raw = {key: value for key, value in body.validated_data.items() if key in ("funnel", "spec")}
        before = _last_run_id()
        run = reports.report_request(ReportRun.Kind.FUNNEL, raw, refresh=body.validated_data["refresh"])
        return _answer(run, before)


@extend_schema(
    summary="A report run",
    description="Its status (queued, running, succeeded, failed), parameters, result once succeeded, error if failed.",
    responses={200: ReportRunSerializer, 404: DetailSerializer},
)
class ReportRunViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = ReportRun.objects.all()
    serializer_class = ReportRunSerializer
    lookup_value_regex = r"[0-9]+"
    pagination_class = None
    filter_backends: list = []
