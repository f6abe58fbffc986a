"""Segment reads."""

from __future__ import annotations

from django.db.models import F, QuerySet

from campaigns.models import Segment, SegmentChange, SegmentMembership
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


def segment_members(segment: Segment) -> QuerySet[SegmentMembership]:
    """A segment's members as of its last rebuild, with their external ids (one join)."""
    return (
        SegmentMembership.objects.filter(segment=segment)
        .annotate(external_id=F("customer__external_id"))
        .only("customer_id", "since")
    )


def segment_changes(segment: Segment, after: int = 0) -> QuerySet[SegmentChange]:
    """A segment's change log after checkpoint `after` (ids ascending), with external ids."""
    return (
        SegmentChange.objects.filter(segment=segment, id__gt=after)
        .annotate(external_id=F("customer__external_id"))
        .only("id", "customer_id", "change", "at")
        .order_by("id")
    )
