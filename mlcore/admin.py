"""Admin of the mlcore layer: the model registry (read-only) and the association rules as a
rules browser, with "Mine rules now" on its list. Clusterings are administered from
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
from django.utils.html import format_html

from marketing.admin import ReadOnlyMixin
from marketing.api_common import is_id
from mlcore import registry
from mlcore.affinity import DEFAULTS as RULES_DEFAULTS
from mlcore.affinity import rules_param_errors
from mlcore.models import AssociationRule, ModelVersion
from mlcore.selectors import rules_with_items
from mlcore.tasks import association_rules_mine

MINE_PERMISSION = "mlcore.add_modelversion"


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
        return super().get_queryset(request).defer("result")  # profiles: see the clustering's page


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
