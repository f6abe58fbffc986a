"""Segment admin: a JSON definition editor that validates on save (every problem with its
path), a "Rebuild now" action that queues rebuilds, and a cluster segment's profile.

Clustering admin (the mlcore model, here because a run keeps campaigns' segments in step):
features validated on save, the champion run's results in the list, "Run now" as an action
and a button, and the champion's cluster profiles on the change page."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import CharField, JSONField, OuterRef, Subquery, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone

from campaigns.models import Segment
from campaigns.segments.clusterings import clustering_delete, clustering_references, clustering_segments
from campaigns.segments.rebuild import REBUILDABLE_KINDS
from campaigns.segments.rules import RuleInvalid
from campaigns.segments.services import segment_definition_check
from campaigns.tasks import clustering_refresh_task, segment_rebuild_task
from marketing.errors import Conflict
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
class SegmentAdmin(admin.ModelAdmin):
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

    def save_model(self, request, obj, form, change):
        if change:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


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
class ClusteringAdmin(admin.ModelAdmin):
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

    def save_model(self, request, obj, form, change):
        if change:
            obj.updated_at = timezone.now()  # the column's database default covers inserts only
        super().save_model(request, obj, form, change)

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
