"""Shared cast and helpers of the API tests: one integration ("crm") with its key, a
client that sends it, and small factories that write through the ORM."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.test import TestCase
from rest_framework.test import APIClient

from marketing.models import Customer, Touchpoint
from marketing.services import api_key_create

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def make_customer(external_id: str, **fields: Any) -> Customer:
    return Customer.objects.create(external_id=external_id, **fields)


def make_touchpoint(customer: Customer, event_id: str, kind: str = "open", **fields: Any) -> Touchpoint:
    fields.setdefault("occurred_at", T0)
    if kind == "purchase":
        fields.setdefault("order_id", f"o-{event_id}")
        fields.setdefault("sku", "A-1")
        fields.setdefault("revenue", Decimal("10.00"))
    return Touchpoint.objects.create(customer=customer, event_id=event_id, kind=kind, **fields)


def key_client(raw_key: str, keyword: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {raw_key}")
    return client


class ApiTestCase(TestCase):
    """An integration named "crm" with a key; `self.api` sends it."""

    def setUp(self) -> None:
        super().setUp()
        cache.clear()  # the per-key rate limit counts in the cache
        self.api_key, self.raw_key = api_key_create("crm")
        self.api = key_client(self.raw_key)

    def post_json(self, path: str, body: Any):
        return self.api.post(path, body, format="json")
