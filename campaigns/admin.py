"""Segment admin: a JSON definition editor that validates on save (every problem with its
path), a "Rebuild now" action that queues rebuilds, and a cluster segment's profile.

Clustering admin (the mlcore model, here because a run keeps campaigns' segments in step):
features validated on save, the champion run's results in the list, "Run now" as an action
and a button, and the champion's cluster profiles on the change page.

Delivery: channels (settings checked per backend, no secrets stored), push devices (tokens
shown truncated), the campaign editor (creatives inline with their templates checked,
launch/pause/resume/cancel as buttons and actions, live progress, creative preview and
"send a test to me") and the outbox, read-only, with counts capped as on every huge table
(marketing.admin.HugeTableAdmin)."""

from __future__ import annotations

import copy
import re
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import CharField, JSONField, OuterRef, Subquery, Value
from django.db.models.functions import Cast, Concat
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.delivery import control, definitions
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message, Segment
from campaigns.segments.clusterings import clustering_delete, clustering_references, clustering_segments
from campaigns.segments.rebuild import REBUILDABLE_KINDS
from campaigns.segments.rules import RuleInvalid
from campaigns.segments.selectors import customer_by_reference
from campaigns.segments.services import segment_definition_check, segment_delete, segment_delete_blocker
from campaigns.serializers import token_preview
from campaigns.tasks import clustering_refresh_task, segment_rebuild_task
from marketing.admin import HugeTableAdmin, ReadOnlyMixin, StampUpdatedAtMixin
from marketing.api_common import is_id
from marketing.errors import BatchInvalid, Conflict, DomainError, RowError
from marketing.models import SLUG_RE, Customer
from mlcore import selectors as ml_selectors
from mlcore.features import DEFAULT_FEATURES, FEATURES, feature_errors
from mlcore.models import Clustering, ModelVersion

PROFILES_TEMPLATE = "admin/campaigns/cluster_profiles.html"
MAX_K = 50

DEFINITION_HELP = (
    'Rules: a rule tree, e.g. {"all": [{"field": "country", "op": "eq", "value": "DE"}, {"consent": "email"}]}. '
    'Cluster: {"clustering": <id>, "cluster": <n>} (made by the clustering\'s runs). '
    'Affinity: {"sku": "A-1", "min_confidence": 0.3} (likely buyers of A-1). Checked on save.'
)


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["name", "description", "kind", "definition"]
        help_texts = {"definition": DEFINITION_HELP}

    def clean(self):
        cleaned = super().clean()
        if "definition" in cleaned and "kind" in cleaned:
            try:
                segment_definition_check(cleaned["kind"], cleaned["definition"], segment_id=self.instance.pk)
            except RuleInvalid as exc:
                self.add_error("definition", [f"{error.path or '/'}: {error.message}" for error in exc.errors])
        return cleaned


@admin.register(Segment)
class SegmentAdmin(StampUpdatedAtMixin, admin.ModelAdmin):
    form = SegmentForm
    list_display = ["name", "kind", "member_count", "last_rebuilt_at", "last_rebuild_duration_ms", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at", "member_count", "last_rebuilt_at", "last_rebuild_duration_ms"]
    actions = ["rebuild_now"]

    @admin.action(description="Rebuild now")
    def rebuild_now(self, request, queryset):
        ids = list(queryset.filter(kind__in=REBUILDABLE_KINDS).values_list("id", flat=True))
        for segment_id in ids:
            # after commit: the admin runs in a transaction (ATOMIC_REQUESTS or not).
            transaction.on_commit(lambda segment_id=segment_id: segment_rebuild_task.delay(segment_id))
        skipped = queryset.count() - len(ids)
        self.message_user(request, f"Queued a rebuild of {len(ids)} segment(s).", messages.SUCCESS)
        if skipped:
            kinds = ", ".join(sorted(REBUILDABLE_KINDS))
            self.message_user(request, f"Skipped {skipped}: only {kinds} segments can be rebuilt.", messages.WARNING)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.kind == Segment.Kind.CLUSTER:
            return [*self.readonly_fields, "cluster_profile"]
        return self.readonly_fields

    @admin.display(description="cluster profile")
    def cluster_profile(self, obj: Segment) -> str:
        definition = obj.definition if isinstance(obj.definition, dict) else {}
        clustering_id = definition.get("clustering")
        found = ml_selectors.cluster_profile(clustering_id, definition.get("cluster"))
        if found is None:
            return "No profile: the cluster is retired, or its clustering has not run yet."
        version, profile = found
        return render_to_string(
            PROFILES_TEMPLATE,
            {
                "clustering": Clustering.objects.filter(pk=clustering_id).first(),
                "version": version,
                "profiles": [_profile_rows(profile, None)],
            },
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletes go one by one, through segment_delete
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        segment = Segment.objects.filter(pk=object_id).first()
        blocker = segment_delete_blocker(segment) if segment is not None else None
        if blocker is not None:
            self.message_user(request, blocker, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:campaigns_segment_change", args=[segment.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        try:
            segment_delete(obj)
        except Conflict as exc:  # another segment refers to it, or a campaign took it meanwhile
            self.message_user(request, exc.message, messages.ERROR)


# --- clusterings -----------------------------------------------------------------------


class ClusteringForm(forms.ModelForm):
    class Meta:
        model = Clustering
        fields = ["name", "description", "features", "k", "method", "enabled"]
        help_texts = {
            "features": (
                f"A JSON list of {', '.join(FEATURES)}, or attributes.<key> (a numeric customer attribute). "
                f"Empty: {', '.join(DEFAULT_FEATURES)}."
            ),
            "k": f"Number of clusters, 2 to {MAX_K}; empty: chosen by silhouette (2-10). Not for DBSCAN.",
        }

    def clean_features(self):
        features = self.cleaned_data.get("features")
        if features is None:
            return []
        errors = feature_errors(features)
        if errors:
            raise forms.ValidationError(errors)
        return features

    def clean_k(self):
        k = self.cleaned_data.get("k")
        if k is not None and not 2 <= k <= MAX_K:
            raise forms.ValidationError(f"Ensure this value is between 2 and {MAX_K}.")
        return k

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("method") == Clustering.Method.DBSCAN and cleaned.get("k") is not None:
            self.add_error("k", "DBSCAN finds the number of clusters itself: leave k empty.")
        return cleaned


def _number(value: float | None) -> str:
    """A mean as people read it: thousands separated, a few significant digits."""
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _profile_rows(profile: dict, segment: dict | None) -> dict:
    """One cluster's profile as the template shows it: each feature's means and percentile
    formatted, the distinctive ones (those with a label word) flagged."""
    features = []
    for feature in profile["features"]:
        share = feature["feature"].endswith("_missing")  # the share of members without that value
        features.append(
            {
                "name": feature["feature"].removesuffix("_missing") + (" missing (share)" if share else ""),
                "mean": f"{feature['mean']:.0%}" if share and feature["mean"] is not None else _number(feature["mean"]),
                "population_mean": (
                    f"{feature['population_mean']:.0%}"
                    if share and feature["population_mean"] is not None
                    else _number(feature["population_mean"])
                ),
                "percentile": None if feature["percentile"] is None else round(feature["percentile"] * 100),
                "word": feature["word"],
                "higher": (feature["percentile"] or 0.5) > 0.5,
            }
        )
    return {**profile, "features": features, "segment": segment}


@admin.register(Clustering)
class ClusteringAdmin(StampUpdatedAtMixin, admin.ModelAdmin):
    form = ClusteringForm
    list_display = ["name", "method", "k_given", "enabled", "last_run", "k_found", "silhouette"]
    list_filter = ["enabled", "method"]
    search_fields = ["name"]
    actions = ["run_now"]
    change_form_template = "admin/campaigns/clustering_change_form.html"
    readonly_fields = ["created_at", "updated_at", "champion_run", "cluster_profiles"]
    add_fieldsets = ((None, {"fields": ["name", "description", "features", "k", "method", "enabled"]}),)
    fieldsets = (
        (None, {"fields": ["name", "description", "features", "k", "method", "enabled"]}),
        ("Latest run", {"fields": ["champion_run", "created_at", "updated_at"]}),
        (
            "Cluster profiles",
            {
                "description": (
                    "Each cluster of the champion run against the whole population: the cluster's mean of each "
                    "feature, the population's, and the members' mean percentile (50 is typical). Highlighted: "
                    "the features distinctive enough to name the cluster."
                ),
                "fields": ["cluster_profiles"],
            },
        ),
    )

    # -- list --------------------------------------------------------------------------

    def get_queryset(self, request):
        # The latest run and the champion's metrics as subqueries: one query for the page.
        versions = ModelVersion.objects.filter(task=ModelVersion.Task.CLUSTERS, scope=OuterRef("version_scope"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                version_scope=Concat(Value("clustering:"), Cast("pk", output_field=CharField())),
                last_run_at=Subquery(versions.order_by("-id").values("started_at")[:1]),
                last_run_status=Subquery(versions.order_by("-id").values("status")[:1]),
                champion_metrics=Subquery(
                    versions.filter(is_champion=True).values("metrics")[:1], output_field=JSONField()
                ),
            )
        )

    @admin.display(description="k", ordering="k")
    def k_given(self, obj: Clustering) -> str:
        return "auto" if obj.k is None else str(obj.k)

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, obj: Clustering) -> str:
        if obj.last_run_at is None:
            return "never"
        return f"{obj.last_run_at:%Y-%m-%d %H:%M} ({obj.last_run_status})"

    @admin.display(description="k found")
    def k_found(self, obj: Clustering) -> str:
        return "—" if not obj.champion_metrics else str(obj.champion_metrics.get("k"))

    @admin.display(description="silhouette")
    def silhouette(self, obj: Clustering) -> str:
        value = (obj.champion_metrics or {}).get("silhouette")
        return "—" if value is None else f"{value:.3f}"

    @admin.action(description="Run now", permissions=["change"])
    def run_now(self, request, queryset):
        queued = [(clustering, self._enqueue(clustering.pk)) for clustering in queryset.order_by("pk")]
        listed = "; ".join(f"{clustering.name} (task {task_id})" for clustering, task_id in queued)
        self.message_user(request, f"Queued a run of {len(queued)} clustering(s): {listed}.", messages.SUCCESS)

    @staticmethod
    def _enqueue(clustering_id: int) -> str:
        task_id = str(uuid.uuid4())
        # after commit: the admin runs in a transaction (ATOMIC_REQUESTS or not).
        transaction.on_commit(lambda: clustering_refresh_task.apply_async(args=[clustering_id], task_id=task_id))
        return task_id

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletes go one by one, through clustering_delete
        return actions

    # -- change page -------------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    @admin.display(description="champion")
    def champion_run(self, obj: Clustering) -> str:
        version = ml_selectors.clustering_champion(obj.pk)
        if version is None:
            return "No successful run yet: use Run now."
        metrics = version.metrics
        silhouette = metrics.get("silhouette")
        return (
            f"Version {version.pk}, {version.algorithm}, trained {version.trained_at:%Y-%m-%d %H:%M} UTC: "
            f"{metrics.get('k')} clusters over {metrics.get('customers', 0):,} customers, silhouette "
            f"{'—' if silhouette is None else f'{silhouette:.3f}'}."
        )

    @admin.display(description="profiles")
    def cluster_profiles(self, obj: Clustering) -> str:
        version = ml_selectors.clustering_champion(obj.pk)
        if version is None:
            return "No profiles before the first successful run."
        segments = clustering_segments([obj.pk]).get(obj.pk, [])
        segment_of = {segment["cluster"]: segment for segment in segments if segment["cluster"] is not None}
        for segment in segments:
            segment["url"] = reverse("admin:campaigns_segment_change", args=[segment["id"]])
        return render_to_string(
            PROFILES_TEMPLATE,
            {
                "profiles": [
                    _profile_rows(profile, segment_of.get(profile["cluster"]))
                    for profile in version.result.get("profiles", [])
                ],
                "retired": [segment for segment in segments if segment["cluster"] is None],
            },
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/run/", view(self.run_view), name="mlcore_clustering_run"),
            *super().get_urls(),
        ]

    def run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        clustering = get_object_or_404(Clustering, pk=object_id)
        change_url = reverse("admin:mlcore_clustering_change", args=[clustering.pk])
        if request.method != "POST" or not self.has_change_permission(request, clustering):
            return HttpResponseRedirect(change_url)
        task_id = self._enqueue(clustering.pk)
        self.message_user(request, f"Queued a run of {clustering.name} (task {task_id}).", messages.SUCCESS)
        return HttpResponseRedirect(change_url)

    def delete_view(self, request, object_id, extra_context=None):
        clustering = Clustering.objects.filter(pk=object_id).first()
        users = clustering_references(clustering.pk) if clustering is not None else []
        if users:
            self.message_user(
                request,
                f"{clustering.name} cannot be deleted while segment(s) {', '.join(map(str, users))} use it: "
                "delete those first, or untick enabled to stop its runs.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:mlcore_clustering_change", args=[clustering.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        try:
            clustering_delete(obj)
        except Conflict as exc:  # a segment appeared since the confirmation page
            self.message_user(request, exc.message, messages.ERROR)


# --- delivery: channels, devices, campaigns with creatives, messages ----------------------

PROGRESS_TEMPLATE = "admin/campaigns/campaign_progress.html"
# The statuses the progress panel shows, in the order a message moves through them.
PROGRESS_STATUSES = (
    "queued",
    "sending",
    "sent",
    "delivered",
    "failed",
    "suppressed",
    "held_out",
    "unknown",
    "cancelled",
)
CAMPAIGN_ACTIONS = {
    "launch": ("Launch", control.campaign_launch),
    "pause": ("Pause", control.campaign_pause),
    "resume": ("Resume", control.campaign_resume),
    "cancel": ("Cancel", control.campaign_cancel),
}
# Which buttons a status offers (the services decide; this only spares useless clicks).
ACTIONS_BY_STATUS = {
    Campaign.Status.DRAFT: ("launch",),
    Campaign.Status.SCHEDULED: ("cancel",),  # it launches itself at send_at
    Campaign.Status.RUNNING: ("pause", "cancel"),
    Campaign.Status.PAUSED: ("resume", "cancel"),
    Campaign.Status.COMPLETED: (),
    Campaign.Status.CANCELLED: (),
}
FILTER_CAMPAIGNS = 100  # the message list's campaign filter offers the latest ones
# Links that higher layers add to the campaign page (analytics: the campaign's dashboard):
# each takes the campaign id and returns (label, url). Registered at startup, because
# campaigns may not import analytics (DESIGN.md: hooks instead of upward imports).
CAMPAIGN_LINKS: list = []


def register_campaign_link(link) -> None:
    if link not in CAMPAIGN_LINKS:
        CAMPAIGN_LINKS.append(link)


def _policy_evaluation_link(campaign_id: int) -> tuple[str, str]:
    return "Policy evaluation", reverse("admin:campaigns_campaign_policy_evaluation", args=[campaign_id])


register_campaign_link(_policy_evaluation_link)


def _has_nul(value) -> bool:
    """PostgreSQL stores a NUL character in neither text nor jsonb: such input is refused
    (or finds nothing) rather than failing in the database."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _by_external_id(queryset, search_term: str):
    """A list narrowed to one customer's rows, the customer found by exact external id
    (one index lookup first, then the rows by customer)."""
    term = search_term.strip()
    if not term:
        return queryset, False
    if _has_nul(term):
        return queryset.none(), False
    customer_ids = list(Customer.objects.filter(external_id=term).values_list("pk", flat=True)[:1])
    return queryset.filter(customer_id__in=customer_ids), False


def _error_lines(exc: DomainError) -> list[str]:
    if isinstance(exc, BatchInvalid):
        return [f"{error.field}: {error.message}" if error.field else error.message for error in exc.errors]
    return [exc.message]


def _form_errors(form: forms.BaseForm, errors: list[RowError], default_field: str | None = None) -> None:
    """RowErrors onto a form: on the field they name (or whose JSON they point into), else
    on `default_field`, else the form."""
    for error in errors:
        name = (error.field or "").split(".")[0].split("[")[0]
        if name in form.fields:
            message = error.message if error.field == name else f"{error.field}: {error.message}"
            form.add_error(name, message)
        elif default_field:
            form.add_error(default_field, f"{error.field}: {error.message}" if error.field else error.message)
        else:
            form.add_error(None, f"{error.field}: {error.message}" if error.field else error.message)


class ChannelForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["name", "kind", "backend", "settings", "cost_per_message", "rate_limit_per_second", "enabled"]
        help_texts = {
            "settings": (
                'A JSON object, checked for the kind and backend. Secrets are never stored: instead of "password" '
                'write "password_env": "NAME_OF_AN_ENVIRONMENT_VARIABLE" (same for …token, …secret).'
            ),
            "cost_per_message": "In the reporting currency, up to 6 decimal places.",
        }

    def clean_cost_per_message(self):
        cost = self.cleaned_data.get("cost_per_message")
        if cost is not None and cost < 0:
            raise forms.ValidationError("Ensure this value is greater than or equal to 0.")
        return cost

    def clean_rate_limit_per_second(self):
        limit = self.cleaned_data.get("rate_limit_per_second")
        if limit == 0:
            raise forms.ValidationError("Ensure this value is at least 1, or leave it empty for no limit.")
        return limit

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind", self.instance.kind)
        if _has_nul(cleaned.get("settings")):
            self.add_error("settings", "Text must not contain NUL characters (\\u0000).")
        elif "settings" in cleaned and kind:
            settings = cleaned["settings"] if cleaned["settings"] is not None else {}
            cleaned["settings"] = settings
            _form_errors(
                self, definitions.channel_errors(kind, cleaned.get("backend") or "default", settings), "settings"
            )
        return cleaned


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "kind", "backend", "cost_per_message", "rate_limit_per_second", "enabled"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # The kind is what messages and creatives were made for.
        return [*self.readonly_fields, "kind"] if obj is not None else self.readonly_fields

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletes go one by one, through channel_delete
        return actions

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in form.cleaned_data if name in definitions.CHANNEL_FIELDS}
        saved = definitions.channel_update(obj, **fields) if change else definitions.channel_create(**fields)
        for model_field in Channel._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(saved, model_field.attname))

    def delete_view(self, request, object_id, extra_context=None):
        # Before the confirmation page, which would list every protected message.
        channel = Channel.objects.filter(pk=object_id).first()
        if channel is not None and Message.objects.filter(channel_id=channel.pk).exists():
            self.message_user(
                request,
                f"{channel.name} has sent messages and is kept for their history: untick enabled instead.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:campaigns_channel_change", args=[channel.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        try:
            definitions.channel_delete(obj)
        except Conflict as exc:
            self.message_user(request, exc.message, messages.ERROR)


class DeviceForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = ["customer", "platform", "token", "enabled"]

    def clean(self):
        cleaned = super().clean()
        token = (cleaned.get("token") or "").strip()
        if self.instance.pk is None and token:
            cleaned["token"] = token
            if Device.objects.filter(token_hash=definitions.token_hash(token)).exists():
                self.add_error("token", "This token is registered already (search for its customer).")
        customer = cleaned.get("customer")
        if customer is not None and customer.erased_at is not None:
            self.add_error("customer", "This customer was erased (GDPR).")
        return cleaned


@admin.register(Device)
class DeviceAdmin(HugeTableAdmin):
    form = DeviceForm
    list_display = ["id", "customer_link", "platform", "token_short", "enabled", "created_at", "last_seen_at"]
    list_filter = ["platform", "enabled"]
    raw_id_fields = ["customer"]
    search_fields = ["=customer__external_id"]
    search_help_text = "A customer's external id (exact)."
    sortable_by = ()
    ordering = ["-id"]

    @admin.display(description="customer")
    def customer_link(self, obj: Device) -> str:
        url = reverse("admin:marketing_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer)

    @admin.display(description="token")
    def token_short(self, obj: Device) -> str:
        return token_preview(obj.token)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("customer")

    def get_search_results(self, request, queryset, search_term):
        return _by_external_id(queryset, search_term)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["customer", "platform", "token", "enabled"]
        return ["customer", "platform", "token_short", "token_hash", "enabled", "created_at", "last_seen_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["customer", "token_short", "token_hash", "created_at", "last_seen_at"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["platform", "enabled"])
            return
        saved, _ = definitions.device_upsert(
            form.cleaned_data["customer"],
            platform=form.cleaned_data["platform"],
            token=form.cleaned_data["token"],
            enabled=form.cleaned_data["enabled"],
        )
        for model_field in Device._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(saved, model_field.attname))


# -- campaigns --------------------------------------------------------------------------


class CreativeForm(forms.ModelForm):
    class Meta:
        model = Creative
        fields = ["channel_kind", "name", "subject", "body", "html_body", "weight", "sku", "enabled"]
        widgets = {
            "subject": forms.TextInput(attrs={"size": 80}),
            "body": forms.Textarea(attrs={"rows": 6, "cols": 80}),
            "html_body": forms.Textarea(attrs={"rows": 6, "cols": 80}),
        }

    def clean(self):
        cleaned = super().clean()
        creative = self.instance
        if (
            creative.pk is not None
            and cleaned.get("channel_kind", creative.channel_kind) != creative.channel_kind
            and definitions.creative_has_messages(creative)
        ):
            self.add_error("channel_kind", "This creative has messages: add a new creative for another channel.")
        if cleaned.get("DELETE") and creative.pk is not None and definitions.creative_has_messages(creative):
            # Refused here, before the admin's own check would load every message it protects.
            cleaned["DELETE"] = False
            self.add_error(None, "This creative has messages and is kept for their history: untick enabled instead.")
        fields = {name: cleaned.get(name, "") or "" for name in ("subject", "body", "html_body")}
        _form_errors(self, definitions.creative_errors({**fields, "channel_kind": cleaned.get("channel_kind")}))
        return cleaned


class CreativeInline(admin.StackedInline):
    model = Creative
    form = CreativeForm
    extra = 0
    readonly_fields = ["preview_link"]
    fields = [("channel_kind", "name", "weight", "enabled"), "subject", "body", "html_body", "sku", "preview_link"]

    @admin.display(description="preview and test")
    def preview_link(self, obj: Creative) -> str:
        if obj.pk is None:
            return "Save first, then preview it or send yourself a test."
        url = reverse("admin:campaigns_creative_preview", args=[obj.pk])
        return format_html('<a href="{}">Preview / send a test to me</a>', url)

    def _finished(self, obj) -> bool:
        return obj is not None and obj.status in definitions.FINISHED

    def has_add_permission(self, request, obj=None):
        return not self._finished(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not self._finished(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not self._finished(obj) and super().has_delete_permission(request, obj)


class CampaignForm(forms.ModelForm):
    # Optional on the form (an empty box is the default 0), as the API's.
    min_uplift = forms.FloatField(
        required=False,
        min_value=-1,
        max_value=1,
        help_text="With persuadables only: predicted uplift must be above this (incremental P(goal)); default 0.",
    )

    def clean_min_uplift(self):
        value = self.cleaned_data.get("min_uplift")
        return 0.0 if value is None else value

    class Meta:
        model = Campaign
        fields = list(definitions.CAMPAIGN_FIELDS)
        help_texts = {
            "holdout_percent": "Share of the audience held out (never sent, measured as control); default 10.",
            "channel_policy": 'e.g. {"type": "fixed", "channel": <channel id>}; empty: the default.',
            "creative_policy": 'e.g. {"type": "weighted"}; empty: the default.',
            "goal_event": "The touchpoint kind measured as the outcome (purchase, signup, a custom kind…).",
        }

    def clean_holdout_percent(self):
        value = self.cleaned_data.get("holdout_percent")
        if value is not None and not 0 <= value <= 100:
            raise forms.ValidationError("Ensure this value is between 0 and 100.")
        return value

    def clean_goal_event(self):
        return self._slug("goal_event", required=True)

    def clean_trigger_event_kind(self):
        return self._slug("trigger_event_kind", required=False)

    def _slug(self, name: str, *, required: bool) -> str:
        value = (self.cleaned_data.get(name) or "").strip()
        if (value or required) and not re.fullmatch(SLUG_RE, value):
            raise forms.ValidationError("A touchpoint kind: lower-case letters, digits, _ . - (up to 64).")
        return value

    def clean(self):
        cleaned = super().clean()
        for name in ("frequency_cap", "frequency_cap_days", "attribution_window_days"):
            if cleaned.get(name) == 0:
                self.add_error(name, "Ensure this value is at least 1.")
        for name in ("channel_policy", "creative_policy"):
            if name in cleaned and cleaned[name] is None:
                cleaned[name] = {}
            if _has_nul(cleaned.get(name)):
                self.add_error(name, "Text must not contain NUL characters (\\u0000).")
        # The definition as it would be saved, checked as the API checks it; fields not on
        # the form (read-only once launched) keep their stored values.
        probe = copy.copy(self.instance)
        for name in definitions.CAMPAIGN_FIELDS:
            if name in cleaned and name not in definitions.M2M_FIELDS:
                setattr(probe, name, cleaned[name])
        segments = {
            name: {segment.pk for segment in cleaned[name]}
            if name in cleaned
            else definitions.campaign_value(self.instance, name)
            for name in definitions.M2M_FIELDS
        }
        errors = definitions.campaign_errors(probe, segments["audience"], segments["exclusions"])
        _form_errors(self, [error for error in errors if error.field not in self.errors])
        return cleaned


@admin.register(Campaign)
class CampaignAdmin(StampUpdatedAtMixin, admin.ModelAdmin):
    """The campaign editor: definition, creatives inline, the launch/pause/resume/cancel
    buttons (and actions), and the progress, refreshed live while it runs."""

    form = CampaignForm
    inlines = [CreativeInline]
    change_form_template = "admin/campaigns/campaign_change_form.html"
    list_display = ["name", "status", "trigger", "holdout_percent", "goal_event", "launched_at", "finished_at"]
    list_filter = ["status", "trigger"]
    search_fields = ["name"]
    filter_horizontal = ["audience", "exclusions"]
    actions = ["launch_selected", "pause_selected", "resume_selected", "cancel_selected"]
    readonly_fields = ["status", "salt", "created_at", "updated_at", "launched_at", "finished_at", "progress"]
    fieldsets = (
        (None, {"fields": ["name", "description", "status"]}),
        (
            "Audience",
            {"fields": ["audience", "exclusions", "holdout_percent", ("persuadables_only", "min_uplift"), "salt"]},
        ),
        (
            "When",
            {
                "description": "One-off: at launch, or at send_at. Recurring: by cron (UTC). Triggered: when a "
                "customer enters trigger_segment, or on each touchpoint of trigger_event_kind.",
                "fields": ["trigger", "send_at", "cron", "trigger_segment", "trigger_event_kind"],
            },
        ),
        (
            "Limits",
            {
                "description": "Quiet hours are in each customer's own timezone: messages wait, never dropped.",
                "fields": [
                    ("frequency_cap", "frequency_cap_days"),
                    ("quiet_hours_start", "quiet_hours_end"),
                    ("budget", "fixed_cost"),
                ],
            },
        ),
        ("Measurement", {"fields": ["goal_event", "attribution_window_days"]}),
        ("Policies", {"fields": ["channel_policy", "creative_policy"]}),
        ("Progress", {"fields": ["progress"]}),
        ("Record", {"fields": ["created_at", "updated_at", "launched_at", "finished_at"]}),
    )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        return [*self.readonly_fields, *definitions.campaign_locked_fields(obj)]

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing to show before it exists
            return [(name, options) for name, options in self.fieldsets if name not in ("Progress", "Record")]
        return self.fieldsets

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # only drafts may go, one by one
        return actions

    def has_delete_permission(self, request, obj=None):
        # No delete link on a launched campaign: it is history (cancel it instead).
        if obj is not None and obj.status != Campaign.Status.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(self, request, object_id, extra_context=None):
        campaign = Campaign.objects.filter(pk=object_id).first()
        if campaign is not None and (
            campaign.status != Campaign.Status.DRAFT or Message.objects.filter(campaign_id=campaign.pk).exists()
        ):
            self.message_user(
                request,
                f"{campaign.name} is {campaign.status}: only drafts without messages can be deleted; cancel it "
                "instead.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        try:
            definitions.campaign_delete(obj)
        except Conflict as exc:
            self.message_user(request, exc.message, messages.ERROR)

    # -- progress ------------------------------------------------------------------------

    @admin.display(description="messages")
    def progress(self, obj: Campaign) -> str:
        return _progress_html(obj)

    def progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The progress panel alone, for the change page to refresh every few seconds."""
        campaign = get_object_or_404(Campaign, pk=object_id)
        if not self.has_view_or_change_permission(request, campaign):
            raise PermissionDenied
        return HttpResponse(_progress_html(campaign))

    # -- launch, pause, resume, cancel ---------------------------------------------------

    def _apply(self, request, campaign: Campaign, name: str) -> bool:
        label, function = CAMPAIGN_ACTIONS[name]
        try:
            result = function(campaign.pk)
        except DomainError as exc:
            lines = _error_lines(exc)
            self.message_user(request, f"{campaign.name} was not {_past(name)}: {'; '.join(lines)}", messages.ERROR)
            return False
        status = Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk)
        detail = ""
        if name == "launch" and isinstance(result, CampaignRun):
            shown = _run_counts(result.counts or {})
            detail = f" Run {result.key}: {shown}." if shown else f" Run {result.key}."
        self.message_user(request, f"{campaign.name} {_past(name)}: now {status}.{detail}", messages.SUCCESS)
        self.log_change(request, campaign, label)
        return True

    def _apply_selected(self, request, queryset, name: str) -> None:
        for campaign in queryset.order_by("pk"):
            self._apply(request, campaign, name)

    @admin.action(description="Launch selected campaigns", permissions=["change"])
    def launch_selected(self, request, queryset):
        self._apply_selected(request, queryset, "launch")

    @admin.action(description="Pause selected campaigns", permissions=["change"])
    def pause_selected(self, request, queryset):
        self._apply_selected(request, queryset, "pause")

    @admin.action(description="Resume selected campaigns", permissions=["change"])
    def resume_selected(self, request, queryset):
        self._apply_selected(request, queryset, "resume")

    @admin.action(description="Cancel selected campaigns", permissions=["change"])
    def cancel_selected(self, request, queryset):
        self._apply_selected(request, queryset, "cancel")

    def action_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        campaign = get_object_or_404(Campaign, pk=object_id)
        change_url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
        if name not in CAMPAIGN_ACTIONS or request.method != "POST":
            return HttpResponseRedirect(change_url)
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        self._apply(request, campaign, name)
        return HttpResponseRedirect(change_url)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = Campaign.objects.filter(pk=object_id).only("status").first()
        buttons = []
        if campaign is not None and self.has_change_permission(request, campaign):
            buttons = [
                (name, CAMPAIGN_ACTIONS[name][0], reverse("admin:campaigns_campaign_action", args=[object_id, name]))
                for name in ACTIONS_BY_STATUS.get(campaign.status, ())
            ]
        extra_context = {
            **(extra_context or {}),
            "campaign_buttons": buttons,
            "progress_url": reverse("admin:campaigns_campaign_progress", args=[object_id]) if campaign else "",
            "live": campaign is not None and campaign.status in LIVE_STATUSES,
            "campaign_links": [link(campaign.pk) for link in CAMPAIGN_LINKS] if campaign else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    # -- creatives: preview and test ----------------------------------------------------

    def creative_preview_view(self, request: HttpRequest, creative_id: str) -> HttpResponse:
        """Render a creative for a customer (external id or id) or the sample customer;
        POST sends a test of it to the address in the form (default: the user's email)."""
        creative = get_object_or_404(Creative.objects.select_related("campaign"), pk=creative_id)
        if not self.has_view_or_change_permission(request, creative.campaign):
            raise PermissionDenied
        reference = request.GET.get("customer", "").strip()
        preview, error, customer = None, None, None
        if reference:
            customer = None if _has_nul(reference) else customer_by_reference(reference)
            if customer is None:
                error = f"No customer with external id or id {reference!r}: showing the sample customer."
        try:
            preview = definitions.creative_preview(creative, customer=customer)
        except DomainError as exc:
            error = "; ".join(_error_lines(exc))
        test_to = request.user.email
        if request.method == "POST":
            if not self.has_change_permission(request, creative.campaign):
                raise PermissionDenied
            test_to = request.POST.get("to", "").strip()
            try:
                result = definitions.creative_send_test(creative, test_to)
            except DomainError as exc:
                self.message_user(request, f"No test was sent: {'; '.join(_error_lines(exc))}", messages.ERROR)
            else:
                self.message_user(request, f"Sent a test of {creative.name} to {result['to']}.", messages.SUCCESS)
                return HttpResponseRedirect(request.get_full_path())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": creative.campaign,
            "title": f"Preview of {creative.channel_kind} creative {creative.name}",
            "creative": creative,
            "preview": preview,
            "error": error,
            "customer": customer,
            "reference": reference,
            "test_to": test_to,
            "can_send": self.has_change_permission(request, creative.campaign),
            "campaign_url": reverse("admin:campaigns_campaign_change", args=[creative.campaign_id]),
        }
        return TemplateResponse(request, "admin/campaigns/creative_preview.html", context)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/progress/", view(self.progress_view), name="campaigns_campaign_progress"),
            path("<path:object_id>/do/<str:name>/", view(self.action_view), name="campaigns_campaign_action"),
            path(
                "creative/<int:creative_id>/preview/",
                view(self.creative_preview_view),
                name="campaigns_creative_preview",
            ),
            path(
                "<path:object_id>/policy-evaluation/",
                view(self.policy_evaluation_view),
                name="campaigns_campaign_policy_evaluation",
            ),
            *super().get_urls(),
        ]

    def policy_evaluation_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Off-policy evaluation of creative policies on this campaign's sends (mlcore)."""
        from mlcore.admin_learning import policy_evaluation_page

        campaign = get_object_or_404(Campaign, pk=object_id) if is_id(object_id) else None
        if campaign is None:
            raise Http404
        if not self.has_view_or_change_permission(request, campaign):
            raise PermissionDenied
        creatives = [
            (c.pk, f"{c.name} ({c.channel_kind})") for c in Creative.objects.filter(campaign=campaign).order_by("pk")
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": campaign,
            "title": f"Policy evaluation of {campaign.name}",
        }
        return policy_evaluation_page(request, campaign_id=campaign.pk, creatives=creatives, context=context)


LIVE_STATUSES = frozenset({Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.PAUSED})


def _run_counts(counts: dict) -> str:
    """A run's launch counts in words: "4 audience, 3 queued, 1 suppressed (no_consent 1)"."""
    parts = []
    for key, value in counts.items():
        if isinstance(value, dict):
            total = sum(n for n in value.values() if isinstance(n, int))
            detail = ", ".join(f"{reason} {n}" for reason, n in value.items())
            parts.append(f"{total} {key.replace('_', ' ')}" + (f" ({detail})" if detail else ""))
        else:
            parts.append(f"{value} {key.replace('_', ' ')}")
    return ", ".join(parts)


def _past(action: str) -> str:
    return {"launch": "launched", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]


def _progress_html(campaign: Campaign) -> str:
    progress = control.campaign_progress(campaign.pk)
    messages_url = reverse("admin:campaigns_message_changelist")
    runs = [
        {
            **run,
            "cells": [run["messages"].get(status, 0) for status in PROGRESS_STATUSES],
            "total": sum(run["messages"].values()),
        }
        for run in progress["runs"]
    ]
    return render_to_string(
        PROGRESS_TEMPLATE,
        {
            "campaign": campaign,
            "live": campaign.status in LIVE_STATUSES,
            "statuses": [status.replace("_", " ") for status in PROGRESS_STATUSES],
            "cells": [progress[status] for status in PROGRESS_STATUSES],
            "total": progress["total"],
            "unknown": progress["unknown"],
            "unknown_url": f"{messages_url}?campaign={campaign.pk}&status=unknown",
            "messages_url": f"{messages_url}?campaign={campaign.pk}",
            "reasons": sorted(progress["suppressed_reasons"].items(), key=lambda item: (-item[1], item[0])),
            "runs": runs,
            "runs_total": progress["runs_total"],
        },
    )


# -- messages ---------------------------------------------------------------------------


class MessageCampaignFilter(admin.SimpleListFilter):
    title = "campaign"
    parameter_name = "campaign"

    def lookups(self, request, model_admin):
        campaigns = list(Campaign.objects.order_by("-id").values_list("pk", "name")[:FILTER_CAMPAIGNS])
        value = self.value()
        if value and is_id(value) and int(value) not in {pk for pk, _ in campaigns}:
            campaigns += list(Campaign.objects.filter(pk=int(value)).values_list("pk", "name"))
        return [(str(pk), name) for pk, name in campaigns]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not is_id(value):
            raise IncorrectLookupParameters(f"campaign must be an id, not {value!r}")
        return queryset.filter(campaign_id=int(value))


class MessageRunFilter(admin.SimpleListFilter):
    """Offered once a campaign is chosen: its runs."""

    title = "run"
    parameter_name = "run"

    def lookups(self, request, model_admin):
        campaign = request.GET.get(MessageCampaignFilter.parameter_name, "")
        if not is_id(campaign):
            return []
        runs = CampaignRun.objects.filter(campaign_id=int(campaign)).order_by("-id").values_list("pk", "key")[:100]
        return [(str(pk), key) for pk, key in runs]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not is_id(value):
            raise IncorrectLookupParameters(f"run must be an id, not {value!r}")
        return queryset.filter(run_id=int(value))


class MessageChannelFilter(admin.SimpleListFilter):
    title = "channel"
    parameter_name = "channel"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Channel.objects.order_by("name").values_list("pk", "name")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not is_id(value):
            raise IncorrectLookupParameters(f"channel must be an id, not {value!r}")
        return queryset.filter(channel_id=int(value))


class MessageStatusFilter(admin.SimpleListFilter):
    """The statuses from the model, `unknown` (in doubt, never re-sent) first."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        unknown = (Message.Status.UNKNOWN.value, "Unknown (in doubt)")
        return [unknown, *((value, label) for value, label in Message.Status.choices if value != unknown[0])]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value not in Message.Status.values:
            raise IncorrectLookupParameters(f"status must be one of {', '.join(Message.Status.values)}")
        return queryset.filter(status=value)


@admin.register(Message)
class MessageAdmin(ReadOnlyMixin, HugeTableAdmin):
    """The outbox, read-only: written by launches and senders only."""

    list_display = [
        "id",
        "campaign",
        "run_id",
        "customer_link",
        "channel",
        "creative",
        "status_label",
        "attempts",
        "not_before",
        "sent_at",
        "error",
    ]
    list_display_links = ["id"]
    list_filter = [MessageCampaignFilter, MessageStatusFilter, MessageChannelFilter, MessageRunFilter]
    list_select_related = ["campaign", "customer", "channel", "creative"]
    sortable_by = ()
    ordering = ["-id"]
    search_fields = ["=customer__external_id"]
    search_help_text = "A customer's external id (exact)."

    @admin.display(description="customer")
    def customer_link(self, obj: Message) -> str:
        url = reverse("admin:marketing_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer)

    @admin.display(description="status")
    def status_label(self, obj: Message) -> str:
        if obj.status == Message.Status.UNKNOWN:
            return format_html('<strong style="color:#ba2121">UNKNOWN</strong> (in doubt; never re-sent)')
        return obj.get_status_display()

    def get_search_results(self, request, queryset, search_term):
        return _by_external_id(queryset, search_term)
