"""The analytics admin: saved funnels (a JSON spec editor checked on save, and a report
page per funnel with a date range and a breakdown), the per-campaign dashboard (sends,
conversions, revenue, cost, ROI, holdout lift with its interval, charts) and the stored
report runs (read-only).

Views are thin: the numbers come from the analytics services through analytics.dashboards,
which also draws the charts (server-side SVG: no CDN, no JavaScript)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from analytics import dashboards
from analytics.models import Funnel, ReportRun
from campaigns import admin as campaigns_admin
from campaigns.models import Campaign, Segment
from marketing.admin import ReadOnlyMixin, StampUpdatedAtMixin
from marketing.errors import DomainError, RowError
from marketing.models import SLUG_RE
from mlcore.models import Clustering

CAMPAIGN_VIEW_PERMISSION = "campaigns.view_campaign"
MAX_FUNNEL_DAYS = 366
RESULT_PREVIEW_CHARS = 4000
CAMPAIGNS_LISTED = 100


def _pretty_json(value: Any, limit: int | None = None) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}\n… ({len(text) - limit:,} more characters)"
    return format_html("<pre>{}</pre>", text)


def _error_text(exc: DomainError) -> str:
    """A domain error in one line; a batch error with each field it names."""
    errors = getattr(exc, "errors", None) or []
    if errors and all(isinstance(error, RowError) for error in errors):
        return "; ".join(f"{error.field}: {error.message}" if error.field else error.message for error in errors)
    return exc.message


def _refresh(request: HttpRequest) -> bool:
    """ "Recompute" asks for a fresh run instead of the cached one."""
    return request.GET.get("refresh") == "1"


def _reload_urls(request: HttpRequest) -> dict[str, str]:
    """The page without "refresh" (a waiting page reloads itself there: reloading with it
    would recompute forever) and with it (the Recompute link)."""
    query = request.GET.copy()
    query.pop("refresh", None)
    plain = f"{request.path}?{query.urlencode()}" if query else request.path
    query["refresh"] = "1"
    return {"reload_url": plain, "recompute_url": f"{request.path}?{query.urlencode()}"}


def _answer(request_run: Callable[[], ReportRun], shape: Callable[[dict], dict]) -> tuple:
    """(shown, run status, error, HTTP status) of a dashboard: the run's result shaped for
    the page once it succeeded; nothing yet while it is queued or running; its error if it
    failed; a bad parameter or unknown object as the domain error's status."""
    try:
        run = request_run()
    except DomainError as exc:
        return None, None, _error_text(exc), exc.status_code
    shown = shape(run.result) if run.status == ReportRun.Status.SUCCEEDED else None
    return shown, dashboards.run_status(run), None, 200


# --- funnels -----------------------------------------------------------------------------

SPEC_HELP = (
    'Steps in order, the window, the order mode and a range, e.g. {"steps": [{"kind": "visit"}, '
    '{"kind": "add_to_cart"}, {"kind": "purchase", "channel": "web"}], "window": {"days": 7}, '
    '"order": "ordered", "last_days": 30}; optional "breakdown": "channel". Checked on save; the report '
    "page can change the range and breakdown."
)


class FunnelForm(forms.ModelForm):
    class Meta:
        model = Funnel
        fields = ["name", "description", "spec"]
        help_texts = {"spec": SPEC_HELP}

    def clean_spec(self):
        # Stored normalised (defaults filled in, shorthands expanded), as funnel_save does.
        spec, errors = dashboards.funnel_spec_check(self.cleaned_data.get("spec"))
        if errors:
            raise forms.ValidationError(errors)
        return spec


BREAKDOWNS = [
    ("", "as saved"),
    ("none", "none"),
    ("campaign", "campaign"),
    ("channel", "channel"),
    ("creative", "creative"),
    ("segment", "segment membership…"),
    ("cluster", "cluster…"),
    ("attribute", "customer attribute…"),
]


class FunnelReportForm(forms.Form):
    """The report's date range and breakdown; empty fields keep the saved funnel's."""

    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    date_to = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        label="To",
        help_text="Inclusive, in the reporting timezone. Empty: the saved funnel's range (To empty: today).",
    )
    breakdown = forms.ChoiceField(choices=BREAKDOWNS, required=False, label="Break down by")
    attribute = forms.RegexField(
        regex=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$",
        required=False,
        label="Attribute",
        help_text="The customer attribute's key, for a breakdown by attribute.",
        error_messages={"invalid": "An attribute key: letters, digits, _ . : -; at most 64."},
    )
    segments = forms.ModelMultipleChoiceField(
        queryset=Segment.objects.order_by("name"), required=False, help_text="For a breakdown by segment."
    )
    clustering = forms.ModelChoiceField(
        queryset=Clustering.objects.order_by("name"), required=False, help_text="For a breakdown by cluster."
    )

    def clean(self):
        cleaned = super().clean()
        date_from, date_to = cleaned.get("date_from"), cleaned.get("date_to")
        if date_to and not date_from:
            self.add_error("date_from", "Give From with To.")
        if date_from and not date_to and "date_to" not in self.errors:
            cleaned["date_to"] = date_to = timezone.localdate()
        if date_from and date_to:
            if date_from > date_to:
                self.add_error("date_to", "Must be on or after From.")
            elif (date_to - date_from).days >= MAX_FUNNEL_DAYS:
                self.add_error("date_to", f"At most {MAX_FUNNEL_DAYS} days from From.")
        breakdown = cleaned.get("breakdown")
        if breakdown == "attribute" and not cleaned.get("attribute") and "attribute" not in self.errors:
            self.add_error("attribute", "Name the attribute to break down by.")
        if breakdown == "segment" and not cleaned.get("segments") and "segments" not in self.errors:
            self.add_error("segments", "Choose the segments to break down by.")
        if breakdown == "cluster" and not cleaned.get("clustering") and "clustering" not in self.errors:
            self.add_error("clustering", "Choose the clustering to break down by.")
        return cleaned

    def report_options(self) -> dict:
        """funnel_report_spec's keyword arguments for the valid form."""
        data = self.cleaned_data
        options: dict[str, Any] = {"date_from": data.get("date_from"), "date_to": data.get("date_to")}
        breakdown = data.get("breakdown")
        if breakdown == "none":
            options["breakdown"] = None
        elif breakdown == "attribute":
            options["breakdown"] = f"attributes.{data['attribute']}"
        elif breakdown == "segment":
            options["breakdown"] = {"by": "segment", "segments": sorted(segment.pk for segment in data["segments"])}
        elif breakdown == "cluster":
            options["breakdown"] = {"by": "cluster", "clustering": data["clustering"].pk}
        elif breakdown:
            options["breakdown"] = breakdown
        return options


@admin.register(Funnel)
class FunnelAdmin(StampUpdatedAtMixin, admin.ModelAdmin):
    form = FunnelForm
    list_display = ["name", "steps", "updated_at", "report_link"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at"]
    change_form_template = "admin/analytics/funnel/change_form.html"

    @admin.display(description="steps")
    def steps(self, obj: Funnel) -> str:
        steps = obj.spec.get("steps") if isinstance(obj.spec, dict) else None
        if not isinstance(steps, list):
            return "—"
        return " → ".join(str(step.get("kind", "?")) if isinstance(step, dict) else "?" for step in steps)

    @admin.display(description="report")
    def report_link(self, obj: Funnel) -> str:
        return format_html('<a href="{}">Report</a>', reverse("admin:analytics_funnel_report", args=[obj.pk]))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:funnel_id>/report/", view(self.report_view), name="analytics_funnel_report"),
            *super().get_urls(),
        ]

    def report_view(self, request: HttpRequest, funnel_id: int) -> HttpResponse:
        """The funnel over a date range, optionally broken down: bars and a step table."""
        funnel = get_object_or_404(Funnel, pk=funnel_id)
        if not self.has_view_or_change_permission(request, funnel):
            raise PermissionDenied
        form = FunnelReportForm(request.GET)
        report, run, error, status = None, None, None, 200
        if not form.is_valid():
            status = 400  # the form says which field and why; nothing is computed
        else:
            spec = dashboards.funnel_report_spec(funnel.spec, **form.report_options())
            # Checked here, database references included, so a bad range, breakdown or saved
            # spec is a 400 naming the field rather than a failed run.
            _, problems = dashboards.funnel_spec_check(funnel.spec if spec is None else spec)
            if problems:
                error, status = "; ".join(problems), 400
            else:
                report, run, error, status = _answer(
                    lambda: dashboards.funnel_run(funnel.pk, spec, refresh=_refresh(request)),
                    lambda result: dashboards.funnel_dashboard(result, name=funnel.name),
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": funnel,
            "title": f"Funnel report: {funnel.name}",
            "funnel": funnel,
            "form": form,
            "report": report,
            "run": run,
            "error": error,
            **_reload_urls(request),
        }
        return TemplateResponse(request, "admin/analytics/funnel/report.html", context, status=status)


# --- report runs and campaign dashboards -------------------------------------------------

MAX_WINDOW_DAYS = 365


class CampaignDashboardForm(forms.Form):
    """Optional overrides of what the dashboard measures (as the ROI API's goal= and
    window_days=); empty: the campaign's own goal and attribution window."""

    goal = forms.RegexField(
        regex=SLUG_RE,
        required=False,
        label="Goal",
        help_text="A touchpoint kind, e.g. purchase or signup.",
        error_messages={"invalid": "A touchpoint kind: lower-case letters, digits, _ . -; at most 64."},
    )
    window_days = forms.IntegerField(required=False, min_value=0, max_value=MAX_WINDOW_DAYS, label="Window (days)")


@admin.register(ReportRun)
class ReportRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Written by the report service only (analytics.reports)."""

    list_display = ["id", "kind", "status", "subject", "created_at", "duration"]
    list_filter = ["kind", "status"]
    list_select_related = ["funnel"]
    ordering = ["-id"]
    show_full_result_count = False
    change_list_template = "admin/analytics/reportrun/change_list.html"
    fields = [
        "kind",
        "status",
        "funnel",
        "params_pretty",
        "params_key",
        "created_at",
        "started_at",
        "computed_at",
        "duration",
        "error",
        "result_preview",
    ]
    readonly_fields = fields

    @admin.display(description="parameters")
    def subject(self, obj: ReportRun) -> str:
        if obj.funnel_id:
            return format_html(
                '<a href="{}">funnel {}</a>', reverse("admin:analytics_funnel_report", args=[obj.funnel_id]), obj.funnel
            )
        params = obj.params if isinstance(obj.params, dict) else {}
        text = ", ".join(f"{key}={value}" for key, value in sorted(params.items())) or "—"
        campaign = params.get("campaign")
        if obj.kind == ReportRun.Kind.ROI and isinstance(campaign, int) and not isinstance(campaign, bool):
            # The marketer's next click from an ROI run: that campaign's dashboard.
            return format_html(
                '<a href="{}">{}</a>', reverse("admin:analytics_campaign_dashboard", args=[campaign]), text
            )
        return text

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: ReportRun) -> str:
        return "—" if obj.duration_ms is None else f"{obj.duration_ms / 1000:,.3f} s"

    @admin.display(description="parameters")
    def params_pretty(self, obj: ReportRun) -> str:
        return _pretty_json(obj.params)

    @admin.display(description="result (preview)")
    def result_preview(self, obj: ReportRun) -> str:
        if obj.result is None:
            return "—"
        return _pretty_json(obj.result, limit=RESULT_PREVIEW_CHARS)

    def get_queryset(self, request):
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            return super().get_queryset(request).defer("result")  # results can be large
        return super().get_queryset(request)

    # -- campaign dashboards -------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("campaigns/", view(self.campaigns_view), name="analytics_campaign_dashboards"),
            path("campaigns/<int:campaign_id>/", view(self.campaign_view), name="analytics_campaign_dashboard"),
            *super().get_urls(),
        ]

    @staticmethod
    def _check_campaign_permission(request: HttpRequest) -> None:
        user = request.user
        if not (user.has_perm(CAMPAIGN_VIEW_PERMISSION) or user.has_perm("campaigns.change_campaign")):
            raise PermissionDenied

    def campaigns_view(self, request: HttpRequest) -> HttpResponse:
        """The campaigns, latest first, each with a link to its dashboard."""
        self._check_campaign_permission(request)
        query = request.GET.get("q", "").strip()
        campaigns = Campaign.objects.order_by("-id")
        if query:
            campaigns = campaigns.filter(name__icontains=query)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Campaign dashboards",
            "query": query,
            "campaigns": list(campaigns.values("id", "name", "status", "launched_at")[:CAMPAIGNS_LISTED]),
            "limit": CAMPAIGNS_LISTED,
        }
        return TemplateResponse(request, "admin/analytics/campaign_dashboards.html", context)

    def campaign_view(self, request: HttpRequest, campaign_id: int) -> HttpResponse:
        """One campaign's ROI and holdout lift, measured by analytics.roi."""
        self._check_campaign_permission(request)
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        form = CampaignDashboardForm(request.GET)
        dashboard, run, error, status = None, None, None, 200
        if not form.is_valid():
            status = 400  # the form says which field and why; nothing is computed
        else:
            dashboard, run, error, status = _answer(
                lambda: dashboards.roi_run(
                    campaign.pk,
                    goal=form.cleaned_data.get("goal") or None,
                    window_days=form.cleaned_data.get("window_days"),
                    refresh=_refresh(request),
                ),
                dashboards.campaign_dashboard,
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "campaign_opts": Campaign._meta,
            "title": f"Dashboard: {campaign.name}",
            "campaign": campaign,
            "campaign_url": reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
            "form": form,
            "dashboard": dashboard,
            "run": run,
            "error": error,
            **_reload_urls(request),
        }
        return TemplateResponse(request, "admin/analytics/campaign_dashboard.html", context, status=status)


def _campaign_dashboard_link(campaign_id: int) -> tuple[str, str]:
    return "Dashboard", reverse("admin:analytics_campaign_dashboard", args=[campaign_id])


# The campaign page links to its dashboard through campaigns' hook (campaigns may not
# import analytics: DESIGN.md, hooks instead of upward imports).
campaigns_admin.register_campaign_link(_campaign_dashboard_link)
