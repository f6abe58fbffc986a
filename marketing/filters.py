"""Query-string filters of the API lists. Time filters are inclusive at the lower bound
(`updated_after=T` includes rows updated at T), so a sync that pages from its last seen
time never misses a row; it may see one twice."""

from __future__ import annotations

from django.db.models import QuerySet
from django.db.models.functions import Upper
from django_filters import rest_framework as filters

from marketing.models import Customer, Product, Touchpoint

# Database ids are 64-bit: a larger number is a 400, not an overflow in the driver.
ID_BOUNDS = {"min_value": 1, "max_value": 2**63 - 1, "decimal_places": 0}


class CustomerFilter(filters.FilterSet):
    email = filters.CharFilter(method="filter_email", help_text="Exact address, case-insensitive.")
    external_id = filters.CharFilter()
    country = filters.CharFilter(method="filter_country", help_text="ISO 3166-1 alpha-2, case-insensitive.")
    email_opt_in = filters.BooleanFilter()
    sms_opt_in = filters.BooleanFilter()
    push_opt_in = filters.BooleanFilter()
    unsubscribed = filters.BooleanFilter(field_name="unsubscribed_at", lookup_expr="isnull", exclude=True)
    updated_after = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    last_seen_after = filters.IsoDateTimeFilter(field_name="last_seen_at", lookup_expr="gte")
    is_stub = filters.BooleanFilter()
    erased = filters.BooleanFilter(field_name="erased_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Customer
        fields = []

    def filter_email(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # The same expression as the customer_email_upper index, so the lookup uses it.
        return queryset.alias(email_upper=Upper("email")).filter(email_upper=value.strip().upper())

    def filter_country(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(country=value.strip().upper())


class TouchpointFilter(filters.FilterSet):
    kind = filters.CharFilter()
    channel = filters.CharFilter()
    customer = filters.NumberFilter(field_name="customer_id", help_text="The customer's id.", **ID_BOUNDS)
    customer_external_id = filters.CharFilter(field_name="customer__external_id")
    campaign_id = filters.NumberFilter(**ID_BOUNDS)
    occurred_after = filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    order_id = filters.CharFilter()
    sku = filters.CharFilter()
    event_id = filters.CharFilter()

    class Meta:
        model = Touchpoint
        fields = []


class ProductFilter(filters.FilterSet):
    category = filters.CharFilter()
    active = filters.BooleanFilter()
    updated_after = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Product
        fields = []
