"""Admin of the mlcore layer: the model registry (read-only; for propensity and uplift
versions a page with the metrics beside the baselines, the calibration table and the
training curve as inline SVG, "Train now", promote and rollback) and the association rules
as a rules browser, with "Mine rules now" on its list. Clusterings are administered from
campaigns/admin.py: a run keeps campaigns' segments in step."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from marketing.admin import ReadOnlyMixin
from marketing.api_common import is_id
from marketing.errors import DomainError
from mlcore import learning, registry
from mlcore.affinity import DEFAULTS as RULES_DEFAULTS
from mlcore.affinity import rules_param_errors
from mlcore.models import AssociationRule, ModelVersion
from mlcore.scores import SCORED_TASKS, model_promote, model_rollback
from mlcore.selectors import rules_with_items
from mlcore.tasks import association_rules_mine

MINE_PERMISSION = "mlcore.add_modelversion"
# Training, promoting and rolling back create or change model versions.
TRAIN_PERMISSION = "mlcore.add_modelversion"


def _pretty_json(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    """Written by training runs only (mlcore.registry)."""

    list_display = ["id", "task", "scope", "algorithm", "status", "is_champion", "started_at", "duration"]
    list_filter = ["task", "status", "is_champion"]
    search_fields = ["=scope"]
    search_help_text = 'A scope, exactly: e.g. "clustering:3".'
    ordering = ["-id"]
    show_full_result_count = False
    fields = [
        "task",
        "scope",
        "algorithm",
        "status",
        "is_champion",
        "device",
        "started_at",
        "trained_at",
        "duration",
        "params_pretty",
        "metrics_pretty",
        "error",
        "artifact",
    ]
    readonly_fields = fields

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: ModelVersion) -> str:
        if obj.duration_ms is None:
            return "—"
        return f"{obj.duration_ms / 1000:,.1f} s"

    @admin.display(description="parameters")
    def params_pretty(self, obj: ModelVersion) -> str:
        return _pretty_json(obj.params)

    @admin.display(description="metrics")
    def metrics_pretty(self, obj: ModelVersion) -> str:
        return _pretty_json(obj.metrics)

    def get_queryset(self, request):
        # The profiles (clusters) are long: the list does not need them; the learning page
        # reads the training curve from the result.
        queryset = super().get_queryset(request)
        return (
            queryset
            if request.resolver_match and "object_id" in request.resolver_match.kwargs
            else queryset.defer("result")
        )

    # -- learning: train now, promote, rollback, the version page ---------------------------

    change_list_template = "admin/mlcore/modelversion/change_list.html"
    change_form_template = "admin/mlcore/modelversion/change_form.html"

    def has_train_permission(self, request) -> bool:
        return request.user.has_perm(TRAIN_PERMISSION)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("train/", view(self.train_view), name="mlcore_modelversion_train"),
            path("<int:version_id>/promote/", view(self.promote_view), name="mlcore_modelversion_promote"),
            path("<int:version_id>/rollback/", view(self.rollback_view), name="mlcore_modelversion_rollback"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_train": self.has_train_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = ModelVersion.objects.filter(pk=object_id).first() if is_id(str(object_id)) else None
        extra_context = dict(extra_context or {})
        if version is not None and version.task in SCORED_TASKS:
            extra_context["learning"] = learning_page(version, can_train=self.has_train_permission(request))
        return super().change_view(request, object_id, form_url, extra_context)

    def train_view(self, request: HttpRequest) -> HttpResponse:
        """A form (task, days, in this request or queued); a valid one trains or queues."""
        if not self.has_train_permission(request):
            raise PermissionDenied
        form = TrainForm(request.POST or None, initial={"task": request.GET.get("task", "propensity")})
        if request.method == "POST" and form.is_valid():
            task, options, wait = form.cleaned_data["task"], form.options, form.cleaned_data["wait"]
            if not wait:
                task_id = learning.model_train_enqueue(task, options)
                self.message_user(
                    request,
                    f"Queued {task} training on the gpu queue (task {task_id}); the new version becomes the champion "
                    "only if it beats the current one.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:mlcore_modelversion_changelist"))
            try:
                version = learning.model_train(task, **options)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:mlcore_modelversion_changelist"))
            verdict = "is the champion now" if version.is_champion else "did not beat the champion"
            self.message_user(request, f"Trained {task} version {version.pk}: it {verdict}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:mlcore_modelversion_change", args=[version.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Train a model now",
            "form": form,
            "champions": {task: registry.champion(task) for task in SCORED_TASKS},
        }
        return TemplateResponse(request, "admin/mlcore/modelversion/train.html", context)

    def promote_view(self, request: HttpRequest, version_id: int) -> HttpResponse:
        return self._champion_change(request, version_id, lambda: model_promote(version_id), "is the champion now")

    def rollback_view(self, request: HttpRequest, version_id: int) -> HttpResponse:
        def rollback() -> ModelVersion:
            version = learning.model_version(version_id)
            if not version.is_champion:
                raise DomainError(f"Model version {version_id} is not the champion: only the champion is rolled back.")
            return model_rollback(version.task)

        return self._champion_change(request, version_id, rollback, "is the champion again (rolled back)")

    def _champion_change(self, request: HttpRequest, version_id: int, change, done: str) -> HttpResponse:
        if not self.has_train_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:mlcore_modelversion_change", args=[version_id]))
        try:
            version = change()
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:mlcore_modelversion_change", args=[version_id]))
        self.message_user(request, f"Version {version.pk} {done}; every customer was rescored.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:mlcore_modelversion_change", args=[version.pk]))


class TrainForm(forms.Form):
    task = forms.ChoiceField(choices=[("propensity", "Conversion propensity"), ("uplift", "Uplift")])
    days = forms.IntegerField(min_value=1, max_value=3650, initial=90, help_text="Sends of the last N days.")
    method = forms.ChoiceField(
        choices=[("t_learner", "T-learner"), ("x_learner", "X-learner")],
        initial="t_learner",
        required=False,
        help_text="Uplift only.",
    )
    wait = forms.BooleanField(
        required=False,
        label="Train in this request",
        help_text="For small data sets; otherwise the run is queued on the gpu queue.",
    )

    @property
    def options(self) -> dict:
        options = {"days": self.cleaned_data["days"]}
        if self.cleaned_data["task"] == "uplift":
            options["method"] = self.cleaned_data["method"] or "t_learner"
        return options


# --- the learning page of a version ---------------------------------------------------------

PROPENSITY_ROWS = (("auc", "AUC"), ("log_loss", "Log loss"), ("brier", "Brier score"), ("ece", "Calibration error"))
UPLIFT_ROWS = (("qini", "Qini"), ("auuc", "AUUC"), ("auuc_random", "AUUC of random targeting"))
BASELINE_NAMES = {
    "logistic_regression": "Logistic regression",
    "hist_gradient_boosting": "HistGradientBoosting",
    "response_model": "Response model",
    "random": "Random",
}


def learning_page(version: ModelVersion, *, can_train: bool) -> dict:
    """What the version page shows: the metrics table (this model beside its baselines and
    the champion it was compared with), the calibration or decile table, the curve."""
    metrics = version.metrics or {}
    baselines = metrics.get("baselines") or {}
    comparison = metrics.get("champion_comparison") or {}
    rows_spec = PROPENSITY_ROWS if version.task == ModelVersion.Task.PROPENSITY else UPLIFT_ROWS
    columns = ["This model", *[BASELINE_NAMES.get(name, name) for name in baselines]]
    compared = comparison.get("champion_id") is not None
    if compared:
        columns.append(f"Champion v{comparison['champion_id']} (same rows)")
    rows = []
    for key, label in rows_spec:
        values = [metrics.get(key), *[baseline.get(key) for baseline in baselines.values()]]
        if compared:
            # The champion scored on this version's validation rows (what the decision used).
            values.append(comparison.get(f"champion_{key}"))
        rows.append({"label": label, "values": [_number(value) for value in values]})
    curve = (version.result or {}).get("curve") or []
    return {
        "version": version,
        "columns": columns,
        "rows": rows,
        "comparison": comparison,
        "calibration": metrics.get("calibration") or [],
        "deciles": metrics.get("deciles") or [],
        "curve_svg": curve_svg(curve),
        "facts": [
            (label, _number(metrics.get(key)) if key not in ("device",) else metrics.get(key))
            for key, label in (
                ("rows", "Training rows"),
                ("n_train", "Train split"),
                ("n_valid", "Validation split"),
                ("positive_rate", "Conversion rate"),
                ("samples_per_s", "Samples per second"),
                ("epochs", "Epochs"),
                ("device", "Device"),
                ("train_rows", "Train split"),
                ("valid_rows", "Validation split"),
            )
            if metrics.get(key) is not None
        ],
        "can_promote": can_train and version.status == ModelVersion.Status.SUCCEEDED and not version.is_champion,
        "can_rollback": can_train and version.is_champion,
    }


def _number(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
    return str(value)


def curve_svg(curve: list[dict], width: int = 560, height: int = 220) -> SafeString:
    """Train and validation loss per epoch as an inline SVG line chart (no script, no CDN)."""
    points = [p for p in curve if isinstance(p.get("epoch"), int | float)]
    if not points:
        return format_html("<p>{}</p>", "No training curve (this model trains in one pass).")
    left, right, top, bottom = 56, 16, 16, 36
    epochs = [p["epoch"] for p in points]
    series = {
        "train_loss": ("#417690", "train loss"),
        "valid_loss": ("#e07b00", "validation loss"),
    }
    values = [p[key] for p in points for key in series if isinstance(p.get(key), int | float)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    first, last = min(epochs), max(epochs)
    span = max(last - first, 1)

    def x(epoch: float) -> float:
        return left + (epoch - first) / span * (width - left - right)

    def y(value: float) -> float:
        return top + (high - value) / (high - low) * (height - top - bottom)

    lines = []
    for key, (colour, _label) in series.items():
        coords = " ".join(f"{x(p['epoch']):.1f},{y(p[key]):.1f}" for p in points if isinstance(p.get(key), int | float))
        if coords:
            lines.append((coords, colour, key))
    polylines = format_html_join(
        "",
        '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" class="curve-{}"/>',
        lines,
    )
    legend = format_html_join(
        "",
        '<rect x="{}" y="{}" width="12" height="3" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>',
        [
            (left + 150 * i, height - 10, colour, left + 150 * i + 16, height - 6, label)
            for i, (colour, label) in enumerate(series.values())
        ],
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="training-curve" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" role="img" aria-label="Training curve: loss per epoch">'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<text x="4" y="{t2}" font-size="11">{high}</text><text x="4" y="{b}" font-size="11">{low}</text>'
        '<text x="{l}" y="{b2}" font-size="11">epoch {first}</text>'
        '<text x="{r2}" y="{b2}" font-size="11" text-anchor="end">epoch {last}</text>'
        "{polylines}{legend}</svg>",
        w=width,
        h=height,
        l=left,
        t=top,
        b=height - bottom,
        r=width - right,
        t2=top + 4,
        b2=height - bottom + 14,
        r2=width - right,
        high=f"{high:.4f}",
        low=f"{low:.4f}",
        first=first,
        last=last,
        polylines=polylines,
        legend=legend,
    )


class RulesVersionFilter(admin.SimpleListFilter):
    """The champion's rules unless another rules version is chosen."""

    title = "model version"
    parameter_name = "model_version"
    LIMIT = 20  # the latest; mlcore.affinity keeps the rules of the last few only

    def lookups(self, request, model_admin):
        versions = ModelVersion.objects.filter(task=ModelVersion.Task.RULES, status=ModelVersion.Status.SUCCEEDED)
        return [
            (
                str(version.pk),
                f"v{version.pk}{' (champion)' if version.is_champion else ''}, {version.trained_at:%Y-%m-%d}",
            )
            for version in versions.defer("result").order_by("-id")[: self.LIMIT]
        ]

    def choices(self, changelist):
        # No "All": rules of several versions side by side read as duplicates.
        champion = registry.champion_id(ModelVersion.Task.RULES)
        current = self.value() or (str(champion) if champion else None)
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        value = self.value()
        if value and is_id(value):
            return queryset.filter(model_version_id=int(value))
        champion = registry.champion_id(ModelVersion.Task.RULES)
        return queryset.filter(model_version_id=champion) if champion else queryset.none()


class MineRulesForm(forms.Form):
    min_support = forms.FloatField(
        required=False,
        help_text=f"Share of baskets holding the itemset, in (0, 1]; default {RULES_DEFAULTS['min_support']}.",
    )
    min_confidence = forms.FloatField(
        required=False, help_text=f"In (0, 1]; default {RULES_DEFAULTS['min_confidence']}."
    )
    min_lift = forms.FloatField(required=False, help_text=f">= 0; default {RULES_DEFAULTS['min_lift']}.")
    max_len = forms.IntegerField(required=False, help_text="Largest itemset; empty: no limit.")
    days = forms.IntegerField(required=False, help_text="Only the baskets of the last N days; empty: all.")

    def clean(self):
        cleaned = super().clean()
        for field, message in rules_param_errors(cleaned).items():
            self.add_error(field, message)
        return cleaned

    @property
    def params(self) -> dict:
        """The parameters given (the task fills in the rest from the settings)."""
        return {key: value for key, value in self.cleaned_data.items() if value is not None}


@admin.register(AssociationRule)
class AssociationRuleAdmin(ReadOnlyAdmin):
    """The rules browser: one rules version at a time (the champion by default), best lift
    first, searchable by sku."""

    list_display = ["rank", "rule", "support_pct", "confidence_pct", "lift_x", "model_version"]
    list_display_links = ["rule"]
    list_filter = [RulesVersionFilter]
    search_fields = ["antecedent_items"]  # shows the box; get_search_results does the work
    search_help_text = "Skus, separated by spaces: rules holding every one of them (either side)."
    ordering = ["rank"]
    sortable_by = ["rank", "support_pct", "confidence_pct", "lift_x"]
    show_full_result_count = False
    list_per_page = 100
    change_list_template = "admin/mlcore/associationrule/change_list.html"
    fields = [
        "model_version",
        "rank",
        "rule",
        "support",
        "confidence",
        "lift",
        "leverage",
        "conviction",
        "antecedent_support",
        "consequent_support",
    ]
    readonly_fields = fields

    @admin.display(description="rule")
    def rule(self, obj: AssociationRule) -> str:
        return f"{', '.join(obj.antecedents)} → {', '.join(obj.consequents)}"

    @admin.display(description="support", ordering="support")
    def support_pct(self, obj: AssociationRule) -> str:
        return f"{obj.support:.2%}"

    @admin.display(description="confidence", ordering="confidence")
    def confidence_pct(self, obj: AssociationRule) -> str:
        return f"{obj.confidence:.1%}"

    @admin.display(description="lift", ordering="lift")
    def lift_x(self, obj: AssociationRule) -> str:
        return f"{obj.lift:.2f}"

    def get_search_results(self, request, queryset, search_term):
        skus = [sku for sku in search_term.replace(",", " ").split() if "|" not in sku]
        if not skus:
            return queryset, False
        return rules_with_items(queryset, skus), False

    # -- mining ------------------------------------------------------------------------

    def has_mine_permission(self, request) -> bool:
        # A run creates a model version (the rules' champion).
        return request.user.has_perm(MINE_PERMISSION)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("mine/", view(self.mine_view), name="mlcore_associationrule_mine"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_mine": self.has_mine_permission(request)}
        return super().changelist_view(request, extra_context)

    def mine_view(self, request: HttpRequest) -> HttpResponse:
        """A form with the run's parameters; a valid one queues the run (after commit)."""
        if not self.has_mine_permission(request):
            raise PermissionDenied
        form = MineRulesForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            params, task_id = form.params, str(uuid.uuid4())
            transaction.on_commit(lambda: association_rules_mine.apply_async(kwargs=params, task_id=task_id))
            self.message_user(
                request,
                f"Queued a rules run (task {task_id}); the new rules become the champion when it finishes.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:mlcore_associationrule_changelist"))
        champion = registry.champion(ModelVersion.Task.RULES)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Mine association rules",
            "form": form,
            "champion": champion,
        }
        return TemplateResponse(request, "admin/mlcore/associationrule/mine.html", context)
