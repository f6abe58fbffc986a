"""Segment reads."""

from __future__ import annotations

from django.db.models import QuerySet

from campaigns.models import Segment
from marketing.models import Customer


def segment_list() -> QuerySet[Segment]:
    return Segment.objects.order_by("id")


def customer_by_reference(reference: str) -> Customer | None:
    """A customer by external id, else by numeric id: integrations know the CRM's id,
    the admin shows ours."""
    customer = Customer.objects.filter(external_id=reference).first()
    if customer is None and reference.isdigit():
        customer = Customer.objects.filter(pk=int(reference)).first()
    return customer
