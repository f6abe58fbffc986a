"""REST API v1 of the marketing layer: customers, touchpoints, products, health.

Thin views over the ingest service, services and selectors. Every write goes through the
ingest service, a single create/update as a one-row batch, so one customer sent alone and
the same customer in a 10,000-row batch meet exactly the same rules. The bulk views hand
the parsed list straight to the service: no serializer per row.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from django.db import connection
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketing import ingest, selectors, services
from marketing.celery import app as celery_app
from marketing.errors import BatchInvalid, Conflict, RowError
from marketing.filters import CustomerFilter, ProductFilter, TouchpointFilter
from marketing.ingest.validate import CONSENT_FIELDS, CUSTOMER_TEXT_KEYS
from marketing.models import ApiKey, Customer, Product, WorkerHeartbeat
from marketing.serializers import (
    CustomerRowSerializer,
    CustomersBulkSerializer,
    CustomerSerializer,
    CustomerUpdateSerializer,
    DetailSerializer,
    ErrorsSerializer,
    HealthSerializer,
    InsertResultSerializer,
    ProductRowSerializer,
    ProductsBulkSerializer,
    ProductSerializer,
    ProductUpdateSerializer,
    TouchpointsBulkSerializer,
    TouchpointSerializer,
    UpsertResultSerializer,
)

# A worker's health-check task beats every 60 s; three missed beats mean it is gone.
WORKER_STALE_AFTER = timedelta(minutes=3)
BROKER_TIMEOUT_SECONDS = 2.0
# consent sources are stored in 64 characters
SOURCE_MAX_LENGTH = 64


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "marketing.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` (or `Bearer <key>`). Create a key with "
            "`python manage.py create_api_key NAME`.",
        }


class OrjsonParser(BaseParser):
    """JSON through orjson: several times faster than the standard library on 16 MiB
    batches. Malformed JSON is a 400 like any other parse error."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        raw = stream.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error: {exc}") from None
        if _has_nul_escape(raw):
            # PostgreSQL can store a NUL character in neither text nor jsonb: refuse it
            # here rather than fail halfway through a write.
            raise exceptions.ParseError("JSON strings must not contain NUL characters (\\u0000).")
        return data


NUL_ESCAPE = b"\\u0000"


def _has_nul_escape(raw: bytes) -> bool:
    """True when the JSON text holds an escaped NUL. A literal NUL is invalid JSON already;
    `\\\\u0000` (an escaped backslash, then "u0000") is harmless text and does not count."""
    start = raw.find(NUL_ESCAPE)
    while start != -1:
        backslashes = 0
        while start - backslashes - 1 >= 0 and raw[start - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            return True
        start = raw.find(NUL_ESCAPE, start + 1)
    return False


# --- request helpers ------------------------------------------------------------------------


def _require_json(request: Request) -> None:
    """Without a Content-Type, DRF would read the body as empty; say what is wrong instead."""
    if not request.content_type and (request.META.get("CONTENT_LENGTH") or "0") != "0":
        raise exceptions.UnsupportedMediaType("", detail="Send the body as JSON with 'Content-Type: application/json'.")


def _body_object(request: Request) -> dict:
    _require_json(request)
    data = request.data
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    return data


def _bulk_rows(request: Request, key: str) -> list:
    _require_json(request)
    data = request.data
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise exceptions.ValidationError(
            {key: [f'The body must be a JSON object with a list of rows under "{key}": {{"{key}": [...]}}.']}
        )
    unknown = sorted(data.keys() - {key})
    if unknown:
        raise exceptions.ValidationError({name: ["Unknown field."] for name in unknown})
    # Over BULK_MAX_ROWS the ingest service itself answers 413 (BatchTooLarge).
    return data[key]


def _source(request: Request) -> str:
    """Who made a change, recorded as the consent source: the integration's key name."""
    if isinstance(request.auth, ApiKey):
        who = request.auth.name
    else:
        who = f"staff:{request.user.get_username()}"
    return f"api:{who}"[:SOURCE_MAX_LENGTH]


def _identifier(value: Any) -> Any:
    """The ingest service stores integer ids as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _single_row_errors(exc: BatchInvalid) -> BatchInvalid:
    """A single-object endpoint's errors name no row."""
    return BatchInvalid([RowError(row=None, field=e.field, message=e.message) for e in exc.errors], exc.total_errors)


def _unchangeable(body: dict, key: str, current: str) -> None:
    if key in body and _identifier(body[key]) != current:
        raise BatchInvalid([RowError(row=None, field=key, message=f"cannot be changed (it is {current!r})")])


SINGLE_WRITE_ERRORS = {
    400: OpenApiResponse(ErrorsSerializer, description="Invalid fields: nothing was written."),
    401: DetailSerializer,
    429: DetailSerializer,
}
BULK_ERRORS = {
    400: OpenApiResponse(
        ErrorsSerializer, description="One entry per bad row and field (row = 0-based index); nothing was written."
    ),
    401: DetailSerializer,
    413: OpenApiResponse(
        DetailSerializer, description="Body over BULK_MAX_BYTES (16 MiB) or more than BULK_MAX_ROWS (10,000) rows."
    ),
    429: DetailSerializer,
}


# --- customers ------------------------------------------------------------------------------

# What PUT clears when the body omits it (PUT replaces the profile). `unsubscribed` is not
# among them: an integration that forgets the field must not re-subscribe anyone.
CUSTOMER_PUT_CLEARS = (*CUSTOMER_TEXT_KEYS, *CONSENT_FIELDS)


@extend_schema_view(
    list=extend_schema(summary="List customers", description="Cursor-paginated by id."),
    retrieve=extend_schema(summary="Get a customer"),
)
@extend_schema(tags=["customers"])
class CustomerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = CustomerSerializer
    parser_classes = [OrjsonParser]
    filterset_class = CustomerFilter

    def get_queryset(self):
        return selectors.customer_list().select_related("rfm")  # the "rfm" output: a join, not a query per row

    def _upsert(self, request: Request, row: dict) -> tuple[bool, Customer]:
        try:
            result = ingest.customers_bulk_upsert([row], source=_source(request))
        except BatchInvalid as exc:
            raise _single_row_errors(exc) from None
        return result.created == 1, Customer.objects.get(external_id=_identifier(row["external_id"]))

    @extend_schema(
        summary="Create (or update) a customer",
        description="Upsert by external_id, with exactly the rules of the bulk endpoint: 201 when the "
        "customer was created, 200 when an existing one (e.g. a stub) was updated. An external id that "
        "was erased (GDPR) is refused.",
        request=CustomerRowSerializer,
        responses={201: CustomerSerializer, 200: CustomerSerializer, **SINGLE_WRITE_ERRORS},
    )
    def create(self, request: Request) -> Response:
        body = _body_object(request)
        if "external_id" not in body:
            raise BatchInvalid([RowError(row=None, field="external_id", message="is required")])
        created, customer = self._upsert(request, dict(body))
        return Response(
            CustomerSerializer(customer).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def _update(self, request: Request, partial: bool) -> Response:
        customer = self.get_object()
        if customer.erased_at is not None:
            raise Conflict(f"Customer {customer.pk} was erased (GDPR) and can no longer be changed.")
        body = _body_object(request)
        _unchangeable(body, "external_id", customer.external_id)
        row = {**body, "external_id": customer.external_id}
        if not partial:
            for name in CUSTOMER_PUT_CLEARS:
                row.setdefault(name, None)
            attributes = body.get("attributes")
            if isinstance(attributes, dict):
                # Replace, expressed as the merge the ingest service speaks: drop the old keys.
                row["attributes"] = {key: None for key in customer.attributes if key not in attributes} | attributes
            elif "attributes" not in body:
                row["attributes"] = None
        _, customer = self._upsert(request, row)
        return Response(CustomerSerializer(customer).data)

    @extend_schema(
        summary="Replace a customer's profile",
        description="Fields the body omits are cleared and consents it omits are withdrawn; `unsubscribed` "
        "is left as it is unless sent. The external id cannot change. 409 for an erased customer.",
        request=CustomerUpdateSerializer,
        responses={200: CustomerSerializer, 404: DetailSerializer, 409: DetailSerializer, **SINGLE_WRITE_ERRORS},
    )
    def update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=False)

    @extend_schema(
        summary="Update a customer",
        description="Omitted fields are unchanged, null clears, attributes shallow-merge (a key set to null "
        "is removed). The external id cannot change. 409 for an erased customer.",
        request=CustomerUpdateSerializer,
        responses={200: CustomerSerializer, 404: DetailSerializer, 409: DetailSerializer, **SINGLE_WRITE_ERRORS},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=True)

    @extend_schema(
        summary="Erase a customer (GDPR)",
        description="Anonymises the customer in place (PII cleared, consents withdrawn, external id replaced), "
        "keeps the touchpoint history for aggregates with its properties scrubbed, and refuses the old external "
        "id from then on. Erasing an erased customer changes nothing.",
        responses={204: None, 404: DetailSerializer},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        services.customer_erase(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Upsert customers in bulk",
        description="Upsert by external_id: omitted keys unchanged, null clears, attributes shallow-merge. "
        "The whole batch is validated first; any bad row and nothing is written. `updated` counts matched rows.",
        request=CustomersBulkSerializer,
        responses={200: UpsertResultSerializer, **BULK_ERRORS},
    )
    @action(detail=False, methods=["post"], url_path="bulk", filter_backends=[])
    def bulk(self, request: Request) -> Response:
        rows = _bulk_rows(request, "customers")
        result = ingest.customers_bulk_upsert(rows, source=_source(request))
        return Response({"created": result.created, "updated": result.updated})

    @extend_schema(
        summary="Export everything held about a customer (GDPR)",
        description="The profile, consents and touchpoint history, plus what each app holds under its own key.",
        responses={200: OpenApiTypes.OBJECT, 404: DetailSerializer},
    )
    @action(detail=True, methods=["get"], url_path="export", filter_backends=[])
    def export(self, request: Request, pk: str) -> Response:
        return Response(services.customer_export(self.get_object()))


# --- touchpoints ----------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List touchpoints", description="Cursor-paginated by id."),
    retrieve=extend_schema(summary="Get a touchpoint"),
)
@extend_schema(tags=["touchpoints"])
class TouchpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = TouchpointSerializer
    parser_classes = [OrjsonParser]
    filterset_class = TouchpointFilter

    def get_queryset(self):
        return selectors.touchpoint_list()

    @extend_schema(
        summary="Insert touchpoints in bulk",
        description="Appends, deduplicated by event_id (a replayed batch adds nothing). An unknown "
        "customer_external_id creates a stub customer without consent. Any bad row and nothing is written.",
        request=TouchpointsBulkSerializer,
        responses={200: InsertResultSerializer, **BULK_ERRORS},
    )
    @action(detail=False, methods=["post"], url_path="bulk", filter_backends=[])
    def bulk(self, request: Request) -> Response:
        rows = _bulk_rows(request, "touchpoints")
        result = ingest.touchpoints_bulk_insert(rows, source=_source(request))
        return Response(
            {
                "inserted": result.inserted,
                "duplicates": result.duplicates,
                "customers_created": result.customers_created,
            }
        )


# --- products -------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List products", description="Cursor-paginated by id."),
    retrieve=extend_schema(summary="Get a product by sku"),
)
@extend_schema(tags=["products"])
class ProductViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ProductSerializer
    parser_classes = [OrjsonParser]
    filterset_class = ProductFilter
    lookup_field = "sku"
    lookup_value_regex = r"[^/]+"

    def get_queryset(self):
        return selectors.product_list()

    def get_object(self) -> Product:
        if "\x00" in self.kwargs["sku"]:  # PostgreSQL refuses NUL in a query parameter
            raise Http404
        return super().get_object()

    def _upsert(self, row: dict) -> tuple[bool, Product]:
        try:
            result = ingest.products_bulk_upsert([row])
        except BatchInvalid as exc:
            raise _single_row_errors(exc) from None
        return result.created == 1, Product.objects.get(sku=_identifier(row["sku"]))

    @extend_schema(
        summary="Create (or update) a product",
        description="Upsert by sku with the rules of the bulk endpoint: 201 when created, 200 when it existed.",
        request=ProductRowSerializer,
        responses={201: ProductSerializer, 200: ProductSerializer, **SINGLE_WRITE_ERRORS},
    )
    def create(self, request: Request) -> Response:
        body = _body_object(request)
        if "sku" not in body:
            raise BatchInvalid([RowError(row=None, field="sku", message="is required")])
        created, product = self._upsert(dict(body))
        return Response(
            ProductSerializer(product).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def _update(self, request: Request, partial: bool) -> Response:
        product = self.get_object()
        body = _body_object(request)
        _unchangeable(body, "sku", product.sku)
        row = {**body, "sku": product.sku}
        if not partial:
            row.setdefault("category", None)
            row.setdefault("price", None)
            row.setdefault("attributes", None)
            row.setdefault("active", True)
        _, product = self._upsert(row)
        return Response(ProductSerializer(product).data)

    @extend_schema(
        summary="Replace a product",
        description="Omitted fields get their defaults (no category, no price, no attributes, active).",
        request=ProductUpdateSerializer,
        responses={200: ProductSerializer, 404: DetailSerializer, **SINGLE_WRITE_ERRORS},
    )
    def update(self, request: Request, sku: str) -> Response:
        return self._update(request, partial=False)

    @extend_schema(
        summary="Update a product",
        description="Omitted fields are unchanged; attributes, when sent, replace the stored ones.",
        request=ProductUpdateSerializer,
        responses={200: ProductSerializer, 404: DetailSerializer, **SINGLE_WRITE_ERRORS},
    )
    def partial_update(self, request: Request, sku: str) -> Response:
        return self._update(request, partial=True)

    @extend_schema(
        summary="Delete a product",
        description="409 while something (e.g. a creative) still refers to it; set active=false instead.",
        responses={204: None, 404: DetailSerializer, 409: DetailSerializer},
    )
    def destroy(self, request: Request, sku: str) -> Response:
        product = self.get_object()
        try:
            product.delete()
        except (ProtectedError, RestrictedError):
            raise Conflict(f"Product {product.sku!r} is still in use; set active=false instead.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Upsert products in bulk",
        description="Upsert by sku; omitted keys unchanged. Any bad row and nothing is written.",
        request=ProductsBulkSerializer,
        responses={200: UpsertResultSerializer, **BULK_ERRORS},
    )
    @action(detail=False, methods=["post"], url_path="bulk", filter_backends=[])
    def bulk(self, request: Request) -> Response:
        rows = _bulk_rows(request, "products")
        result = ingest.products_bulk_upsert(rows)
        return Response({"created": result.created, "updated": result.updated})


# --- health ---------------------------------------------------------------------------------


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def _broker_ok() -> bool:
    try:
        with celery_app.connection_for_write(connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS)
        return True
    except Exception:
        return False


@extend_schema(tags=["health"])
class HealthView(APIView):
    """For load balancers and monitors: no key needed, and nothing in it names a customer,
    a host or a setting."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = []

    @extend_schema(
        summary="Service health",
        description="200 when the database and the broker answer (status `degraded` when no worker has "
        "sent a heartbeat in the last 3 minutes); 503 when either is down. No authentication.",
        responses={200: HealthSerializer, 503: HealthSerializer},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        database = _database_ok()
        broker = _broker_ok()
        heartbeat = None
        if database:
            heartbeat = WorkerHeartbeat.objects.order_by("-seen_at").values_list("seen_at", flat=True).first()
        now = timezone.now()
        worker_ok = heartbeat is not None and now - heartbeat <= WORKER_STALE_AFTER
        if not (database and broker):
            overall = "down"
        else:
            overall = "ok" if worker_ok else "degraded"
        body = {
            "status": overall,
            "database": "ok" if database else "error",
            "broker": "ok" if broker else "error",
            "worker": {
                "last_seen_at": heartbeat,
                "age_seconds": int((now - heartbeat).total_seconds()) if heartbeat else None,
                "ok": worker_ok,
            },
        }
        data = HealthSerializer(body).data
        return Response(data, status=status.HTTP_503_SERVICE_UNAVAILABLE if overall == "down" else status.HTTP_200_OK)
