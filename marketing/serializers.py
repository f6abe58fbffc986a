"""API serializers. Output serializers render rows; the input ("row") serializers document
request bodies in the OpenAPI schema only: the values themselves are validated by the
ingest service, so a single create/update and a bulk batch follow exactly the same rules
(and a 10,000-row batch never pays for a serializer per row)."""

from __future__ import annotations

from rest_framework import serializers

from marketing.models import Customer, CustomerRFM, Product, Touchpoint
from marketing.rfm import RFM_GROUPS, rfm_group

# --- output -------------------------------------------------------------------------------


class CustomerRFMSerializer(serializers.ModelSerializer):
    group = serializers.SerializerMethodField(
        help_text="Named group of the R and F scores: " + ", ".join(RFM_GROUPS) + "; null when unscored."
    )

    class Meta:
        model = CustomerRFM
        fields = ["recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "group", "as_of"]
        read_only_fields = fields
        extra_kwargs = {
            "r_score": {"help_text": "1-5, 5 best (fewest days since the last purchase); equal values, equal scores."},
            "f_score": {"help_text": "1-5, 5 best (most orders); equal values, equal scores."},
            "m_score": {"help_text": "1-5, 5 best (most revenue net of refunds); equal values, equal scores."},
        }

    def get_group(self, rfm: CustomerRFM) -> str | None:
        return rfm_group(rfm.r_score, rfm.f_score, rfm.m_score)


class CustomerSerializer(serializers.ModelSerializer):
    unsubscribed = serializers.SerializerMethodField(help_text="True when unsubscribed from all marketing.")
    rfm = CustomerRFMSerializer(
        read_only=True, allow_null=True, help_text="Recency, frequency, monetary; null until first computed (nightly)."
    )

    class Meta:
        model = Customer
        fields = [
            "id",
            "external_id",
            "email",
            "phone",
            "first_name",
            "last_name",
            "country",
            "timezone",
            "locale",
            "attributes",
            "email_opt_in",
            "email_opt_in_at",
            "email_opt_in_source",
            "sms_opt_in",
            "sms_opt_in_at",
            "sms_opt_in_source",
            "push_opt_in",
            "push_opt_in_at",
            "push_opt_in_source",
            "unsubscribed",
            "unsubscribed_at",
            "is_stub",
            "erased_at",
            "created_at",
            "updated_at",
            "last_seen_at",
            "rfm",
        ]
        read_only_fields = fields

    def get_unsubscribed(self, customer: Customer) -> bool:
        return customer.unsubscribed_at is not None


class TouchpointSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True)

    class Meta:
        model = Touchpoint
        fields = [
            "id",
            "event_id",
            "customer",
            "customer_external_id",
            "kind",
            "channel",
            "occurred_at",
            "received_at",
            "revenue",
            "currency",
            "revenue_original",
            "campaign_id",
            "message_id",
            "creative_id",
            "order_id",
            "sku",
            "properties",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "customer": {"help_text": "The customer's id."},
            "revenue": {"help_text": "In the reporting currency."},
            "revenue_original": {"help_text": "In the currency the event was sent in (`currency`)."},
        }


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "sku", "name", "category", "price", "attributes", "active", "created_at", "updated_at"]
        read_only_fields = fields


# --- input, documented ------------------------------------------------------------------------

_NULL_CLEARS = "Omitted: unchanged; null: cleared."


class CustomerRowSerializer(serializers.Serializer):
    """One customer in a bulk upsert (and the body of a single create)."""

    external_id = serializers.CharField(max_length=255, help_text="The CRM's id for the customer (required).")
    email = serializers.EmailField(required=False, allow_null=True, allow_blank=True, help_text=_NULL_CLEARS)
    phone = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="E.164, e.g. +14155550123. " + _NULL_CLEARS
    )
    first_name = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=150)
    last_name = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=150)
    country = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=2, help_text="ISO 3166-1 alpha-2, e.g. DE."
    )
    timezone = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="IANA name, e.g. Europe/Berlin."
    )
    locale = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=16, help_text="e.g. en, en-US, pt_BR."
    )
    attributes = serializers.DictField(
        required=False,
        allow_null=True,
        help_text="Shallow-merged into the stored attributes; a key set to null removes that key; "
        "attributes: null removes them all.",
    )
    email_opt_in = serializers.BooleanField(required=False, allow_null=True, help_text="null means false.")
    sms_opt_in = serializers.BooleanField(required=False, allow_null=True, help_text="null means false.")
    push_opt_in = serializers.BooleanField(required=False, allow_null=True, help_text="null means false.")
    unsubscribed = serializers.BooleanField(
        required=False, allow_null=True, help_text="Unsubscribed from all marketing; null means false."
    )


class CustomerUpdateSerializer(CustomerRowSerializer):
    """The body of PUT/PATCH /customers/{id}: the customer is named by the path."""

    external_id = serializers.CharField(
        max_length=255, required=False, help_text="If sent, must equal the customer's external id (it cannot change)."
    )


class TouchpointRowSerializer(serializers.Serializer):
    """One touchpoint in a bulk insert."""

    event_id = serializers.CharField(max_length=255, help_text="The integration's idempotency key (required).")
    customer_external_id = serializers.CharField(
        max_length=255, help_text="Required. An unknown id creates a stub customer without consent."
    )
    kind = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        help_text="Required. A built-in kind (sent, open, click, purchase, refund, …) or any custom slug.",
    )
    channel = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=32)
    occurred_at = serializers.DateTimeField(help_text="Required, ISO 8601 with a timezone.")
    revenue = serializers.DecimalField(
        max_digits=14,
        decimal_places=4,
        required=False,
        allow_null=True,
        help_text="Required for purchases. Non-negative; refunds carry the refunded amount.",
    )
    currency = serializers.CharField(
        required=False,
        allow_null=True,
        min_length=3,
        max_length=3,
        help_text="ISO 4217; default: the reporting currency. Others are converted with a configured rate.",
    )
    campaign_id = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    message_id = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    creative_id = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    order_id = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=64, help_text="Required for purchase/refund."
    )
    sku = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=64,
        help_text="Required for purchases: one touchpoint per order line.",
    )
    properties = serializers.DictField(required=False, allow_null=True)


class ProductRowSerializer(serializers.Serializer):
    """One product in a bulk upsert (and the body of a single create)."""

    sku = serializers.CharField(max_length=64, help_text="Required.")
    name = serializers.CharField(max_length=255, required=False, help_text="Required when the product is new.")
    category = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    price = serializers.DecimalField(max_digits=12, decimal_places=4, required=False, allow_null=True)
    attributes = serializers.DictField(required=False, allow_null=True, help_text="Replaces the stored attributes.")
    active = serializers.BooleanField(required=False)


class ProductUpdateSerializer(ProductRowSerializer):
    sku = serializers.CharField(
        max_length=64, required=False, help_text="If sent, must equal the product's sku (it cannot change)."
    )


class CustomersBulkSerializer(serializers.Serializer):
    customers = CustomerRowSerializer(many=True, help_text="At most BULK_MAX_ROWS (10,000) rows.")


class TouchpointsBulkSerializer(serializers.Serializer):
    touchpoints = TouchpointRowSerializer(many=True, help_text="At most BULK_MAX_ROWS (10,000) rows.")


class ProductsBulkSerializer(serializers.Serializer):
    products = ProductRowSerializer(many=True, help_text="At most BULK_MAX_ROWS (10,000) rows.")


class UpsertResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField(help_text="Rows that matched an existing record.")


class InsertResultSerializer(serializers.Serializer):
    inserted = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Rows whose event_id (or purchase line) was already stored.")
    customers_created = serializers.IntegerField(help_text="Stub customers created for unknown external ids.")


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text="0-based index in the request's list; null if none.")
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class ErrorsSerializer(serializers.Serializer):
    errors = RowErrorSerializer(many=True)
    message = serializers.CharField(required=False)
    errors_truncated = serializers.BooleanField(required=False, help_text="Only the first errors are listed.")


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class WorkerHealthSerializer(serializers.Serializer):
    last_seen_at = serializers.DateTimeField(allow_null=True)
    age_seconds = serializers.IntegerField(allow_null=True)
    ok = serializers.BooleanField()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "down"])
    # Plain strings, not enums: two fields with one choice set would make a shared enum
    # component named after whichever field spectacular meets first.
    database = serializers.CharField(help_text='"ok" or "error".')
    broker = serializers.CharField(help_text='"ok" or "error" (reachable within 2 seconds).')
    worker = WorkerHealthSerializer()
