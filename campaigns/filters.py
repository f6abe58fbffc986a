"""Query-string filters of the delivery API lists. Messages reach hundreds of millions of
rows: every filter there lands on an index (campaign and status together, the customer's
sends) or narrows a campaign's rows."""

from __future__ import annotations

from django.db.models import QuerySet
from django_filters import rest_framework as filters

from campaigns.models import Campaign, Channel, ChannelKind, Creative, Device, Message
from campaigns.segments.selectors import customer_by_reference
from marketing.filters import ID_BOUNDS

CUSTOMER_HELP = "The customer's external id, or our numeric id."


def _by_customer(queryset: QuerySet, name: str, value: str) -> QuerySet:
    customer = customer_by_reference(value.strip())
    return queryset.filter(customer_id=customer.pk) if customer is not None else queryset.none()


class ChannelFilter(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=ChannelKind.choices)
    enabled = filters.BooleanFilter()

    class Meta:
        model = Channel
        fields = []


class DeviceFilter(filters.FilterSet):
    customer = filters.CharFilter(method=_by_customer, help_text=CUSTOMER_HELP)
    platform = filters.ChoiceFilter(choices=Device.Platform.choices)
    enabled = filters.BooleanFilter()

    class Meta:
        model = Device
        fields = []


class CampaignFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Campaign.Status.choices)
    trigger = filters.ChoiceFilter(choices=Campaign.Trigger.choices)

    class Meta:
        model = Campaign
        fields = []


class CreativeFilter(filters.FilterSet):
    campaign = filters.NumberFilter(field_name="campaign_id", help_text="The campaign's id.", **ID_BOUNDS)
    channel_kind = filters.ChoiceFilter(choices=ChannelKind.choices)
    enabled = filters.BooleanFilter()

    class Meta:
        model = Creative
        fields = []


class MessageFilter(filters.FilterSet):
    campaign = filters.NumberFilter(field_name="campaign_id", help_text="The campaign's id.", **ID_BOUNDS)
    run = filters.NumberFilter(field_name="run_id", help_text="The run's id.", **ID_BOUNDS)
    status = filters.ChoiceFilter(choices=Message.Status.choices)
    customer = filters.CharFilter(method=_by_customer, help_text=CUSTOMER_HELP)
    channel = filters.NumberFilter(field_name="channel_id", help_text="The channel's id.", **ID_BOUNDS)

    class Meta:
        model = Message
        fields = []
