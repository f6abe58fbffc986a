"""Reads of the marketing layer, shared by the API and the admin."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from django.db.models import Count, Max, Q, QuerySet, Sum

from marketing.models import Customer, Product, Touchpoint


class OrderStats(TypedDict):
    orders: int
    revenue: Decimal
    last_purchase_at: datetime | None


def customer_order_stats(customer_id: int) -> OrderStats:
    """A customer's orders (distinct order ids of purchase touchpoints), revenue net of
    refunds (ingest stores refund amounts as positive money), and last purchase time, in
    one query over the customer's timeline index."""
    totals = Touchpoint.objects.filter(customer_id=customer_id, kind__in=("purchase", "refund")).aggregate(
        orders=Count("order_id", filter=Q(kind="purchase"), distinct=True),
        purchased=Sum("revenue", filter=Q(kind="purchase")),
        refunded=Sum("revenue", filter=Q(kind="refund")),
        last_purchase_at=Max("occurred_at", filter=Q(kind="purchase")),
    )
    revenue = (totals["purchased"] or Decimal(0)) - (totals["refunded"] or Decimal(0))
    return {
        "orders": totals["orders"],
        "revenue": Decimal(revenue),
        "last_purchase_at": totals["last_purchase_at"],
    }


def customer_list() -> QuerySet[Customer]:
    return Customer.objects.all()


def touchpoint_list() -> QuerySet[Touchpoint]:
    # The customer's external id is part of every touchpoint the API returns: one join,
    # not one query per row.
    return Touchpoint.objects.select_related("customer").only(
        *(f.name for f in Touchpoint._meta.concrete_fields), "customer__external_id"
    )


def product_list() -> QuerySet[Product]:
    return Product.objects.all()
