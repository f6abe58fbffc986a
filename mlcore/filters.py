"""Query-string filters of the mlcore API lists. A bad value is a 400 naming the parameter
(django-filter's form errors, through the project's exception handler)."""

from __future__ import annotations

from django import forms
from django.db.models import QuerySet
from django_filters import rest_framework as filters

from mlcore.models import AssociationRule, ModelVersion
from mlcore.selectors import rules_with_items

# ?ordering= value -> ORDER BY; rank breaks ties, so pages never overlap.
RULE_ORDERINGS = {
    "rank": ("rank",),
    "-confidence": ("-confidence", "rank"),
    "-support": ("-support", "rank"),
}


class SkuFilter(filters.CharFilter):
    """One sku. '|' delimits the items in the stored columns, so it cannot be part of one."""

    def __init__(self, *args, side: str, **kwargs) -> None:
        kwargs.setdefault("validators", [_no_delimiter])
        super().__init__(*args, method=self.filter_side, **kwargs)
        self.side = side

    def filter_side(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return rules_with_items(queryset, [value], self.side)


def _no_delimiter(value: str) -> None:
    if "|" in value:
        raise forms.ValidationError("A sku cannot contain '|'.")


class AssociationRuleFilter(filters.FilterSet):
    item = SkuFilter(side="either", help_text="Rules with this sku among their antecedents or their consequents.")
    antecedent = SkuFilter(side="antecedents", help_text="Rules with this sku among their antecedents.")
    consequent = SkuFilter(side="consequents", help_text="Rules with this sku among their consequents.")
    min_support = filters.NumberFilter(field_name="support", lookup_expr="gte")
    min_confidence = filters.NumberFilter(field_name="confidence", lookup_expr="gte")
    min_lift = filters.NumberFilter(field_name="lift", lookup_expr="gte")
    ordering = filters.ChoiceFilter(
        choices=[(value, value) for value in RULE_ORDERINGS],
        method="filter_ordering",
        empty_label=None,
        help_text="rank (default: highest lift first), -confidence or -support (ties by rank).",
    )

    class Meta:
        model = AssociationRule
        fields = []

    def filter_ordering(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.order_by(*RULE_ORDERINGS[value])


class ModelVersionFilter(filters.FilterSet):
    task = filters.ChoiceFilter(choices=ModelVersion.Task.choices)
    scope = filters.CharFilter(help_text='E.g. "clustering:3".')
    status = filters.ChoiceFilter(choices=ModelVersion.Status.choices)
    is_champion = filters.BooleanFilter()

    class Meta:
        model = ModelVersion
        fields = []
