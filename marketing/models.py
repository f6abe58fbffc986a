"""The core CRM domain: customers, their touchpoint log, products, suppressions, API keys.

The touchpoint log is the one history of every customer. It is append-only and will
reach billions of rows: BigAutoField, a BRIN index on time, and no foreign key from it
to anything above `marketing` (campaign, message and creative ids are plain columns).
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now, Upper

E164_RE = r"^\+[1-9][0-9]{1,14}$"
SLUG_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"

e164_validator = RegexValidator(E164_RE, "Enter a phone number in E.164 form, e.g. +14155550123.")
kind_validator = RegexValidator(
    SLUG_RE, "A kind is a lower-case slug: letters, digits, '_', '-', '.', at most 64 characters."
)


class TouchpointKind(models.TextChoices):
    """The built-in kinds. Any other slug an integration sends (`trial_started`) is a
    custom kind and just as usable in segments, funnels and campaign goals."""

    SENT = "sent"
    HELD_OUT = "held_out"
    DELIVERED = "delivered"
    OPEN = "open"
    CLICK = "click"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    IMPRESSION = "impression"
    VISIT = "visit"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    REFUND = "refund"
    SIGNUP = "signup"


# Kinds that we record about a customer rather than the customer doing something: they do
# not make a customer "seen".
SYSTEM_KINDS = frozenset({"sent", "held_out", "delivered", "bounce"})
# Kinds that carry money and name an order line.
ORDER_KINDS = frozenset({"purchase", "refund"})


class Customer(models.Model):
    external_id = models.CharField(max_length=255, unique=True, help_text="The CRM's id for this customer.")
    email = models.CharField(max_length=254, blank=True, default="")
    phone = models.CharField(max_length=16, blank=True, default="", validators=[e164_validator])
    first_name = models.CharField(max_length=150, blank=True, default="")
    last_name = models.CharField(max_length=150, blank=True, default="")
    country = models.CharField(max_length=2, blank=True, default="", help_text="ISO 3166-1 alpha-2, upper case.")
    timezone = models.CharField(max_length=64, blank=True, default="", help_text="IANA name, e.g. Europe/Berlin.")
    locale = models.CharField(max_length=16, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)

    email_opt_in = models.BooleanField(default=False)
    email_opt_in_at = models.DateTimeField(null=True, blank=True)
    email_opt_in_source = models.CharField(max_length=64, blank=True, default="")
    sms_opt_in = models.BooleanField(default=False)
    sms_opt_in_at = models.DateTimeField(null=True, blank=True)
    sms_opt_in_source = models.CharField(max_length=64, blank=True, default="")
    push_opt_in = models.BooleanField(default=False)
    push_opt_in_at = models.DateTimeField(null=True, blank=True)
    push_opt_in_source = models.CharField(max_length=64, blank=True, default="")
    unsubscribed_at = models.DateTimeField(null=True, blank=True, help_text="Unsubscribed from all marketing.")

    is_stub = models.BooleanField(
        default=False, help_text="Created by a touchpoint for an unknown external id; no consent until upserted."
    )
    erased_at = models.DateTimeField(null=True, blank=True, help_text="GDPR erase: PII anonymised, history kept.")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="Latest customer-initiated touchpoint.")

    class Meta:
        indexes = [
            models.Index(Upper("email"), name="customer_email_upper"),
            models.Index(fields=["country"], name="customer_country"),
            # Inbound SMS (STOP) and suppression checks look customers up by number.
            models.Index(fields=["phone"], name="customer_phone", condition=~Q(phone="")),
            models.Index(fields=["last_seen_at"], name="customer_last_seen"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(phone="") | Q(phone__regex=E164_RE), name="customer_phone_e164"),
        ]

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return f"{name or self.email or self.external_id} ({self.external_id})"


class Touchpoint(models.Model):
    id = models.BigAutoField(primary_key=True)
    # The timeline index (customer, occurred_at) serves customer lookups; a second index
    # on customer alone would only slow every insert.
    # No database-level constraint: PostgreSQL's FK check takes a KEY SHARE lock on the
    # customer row for every inserted event, a heap write per event that halved raw COPY
    # throughput in bench/ingest.py (35k -> 15k rows/s). Integrity comes from the write
    # paths (ingest joins on existing customers) and PROTECT (customers are never deleted:
    # GDPR erase anonymises them in place); tests/test_models.py checks both.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="touchpoints", db_index=False, db_constraint=False
    )
    kind = models.CharField(max_length=64, validators=[kind_validator])
    channel = models.CharField(max_length=32, blank=True, default="", help_text="Free source label: email, web, pos…")
    campaign_id = models.BigIntegerField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    creative_id = models.BigIntegerField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(db_default=Now())
    revenue = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, help_text="In the reporting currency."
    )
    currency = models.CharField(max_length=3, blank=True, default="", help_text="The currency the event was sent in.")
    revenue_original = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    order_id = models.CharField(max_length=64, blank=True, default="")
    sku = models.CharField(max_length=64, blank=True, default="")
    event_id = models.CharField(max_length=255, help_text="The integration's idempotency key (unique).")
    properties = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["customer", "occurred_at"], name="touchpoint_timeline"),
            # A campaign's touchpoints per kind in customer order, covering what the outcome
            # join reads: each customer's first send/hold-out (marketing.outcomes), the
            # sends per day/channel/creative (analytics.roi) and the clicked/opened
            # customers come from index-only scans in order, with no sort. It replaced
            # (campaign_id, kind, occurred_at) in migration 0010 rather than joining it.
            models.Index(
                fields=["campaign_id", "kind", "customer", "occurred_at", "id"],
                include=["channel", "creative_id"],
                name="touchpoint_campaign_customer",
                condition=Q(campaign_id__isnull=False),
            ),
            # Per kind, each customer's touchpoints in time order: the funnel reads it by
            # index-only scans in customer order (analytics.funnels.sql), segment event
            # leaves probe (kind, customer, time); a time slice of one kind scans the
            # kind's part (or uses the BRIN index). It replaced (kind, occurred_at) in
            # migration 0009 rather than joining it: each index costs ingest throughput.
            models.Index(fields=["kind", "customer", "occurred_at"], name="touchpoint_kind_customer"),
            # A BRIN index on occurred_at is added by migration 0002 on PostgreSQL only.
        ]
        constraints = [
            # A constraint rather than unique=True: no extra varchar_pattern_ops index to
            # maintain on every insert.
            models.UniqueConstraint(fields=["event_id"], name="touchpoint_event_id_unique"),
            # One purchase row per order line, whatever event ids an integration sends.
            models.UniqueConstraint(
                fields=["order_id", "sku"], condition=Q(kind="purchase"), name="touchpoint_purchase_line"
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=sorted(ORDER_KINDS)) | ~Q(order_id=""), name="touchpoint_order_has_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.occurred_at:%Y-%m-%d %H:%M} ({self.event_id})"


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    category = models.CharField(max_length=128, blank=True, default="")
    price = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["category"], name="product_category")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class Suppression(models.Model):
    """An address or number that must never be messaged, checked at send time."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        PHONE = "phone"

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        COMPLAINT = "complaint", "Spam complaint"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribed"
        MANUAL = "manual", "Added by hand"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    value = models.CharField(max_length=254, help_text="Lower-case email address or E.164 number.")
    reason = models.CharField(max_length=16, choices=Reason.choices, default=Reason.MANUAL)
    note = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "value"], name="suppression_unique_value")]

    def __str__(self) -> str:
        return f"{self.value} ({self.get_reason_display()})"


class ErasedIdentity(models.Model):
    """Tombstone of an erased customer: only the SHA-256 of the external id, so a CRM
    replay of the same id is refused without keeping the id itself."""

    external_id_sha256 = models.CharField(max_length=64, unique=True)
    erased_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.external_id_sha256[:12]


class ApiKey(models.Model):
    """One key per integration. Only the SHA-256 of the random key is stored: the key has
    256 bits of entropy, so a fast hash is safe and costs microseconds per request."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12, help_text="First characters of the key, to recognise it.")
    key_sha256 = models.CharField(max_length=64, unique=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty means the installation's default."
    )
    created_at = models.DateTimeField(db_default=Now())
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WorkerHeartbeat(models.Model):
    """Written by the health-check task, so the admin and /api/v1/health show that a worker
    is alive and which queue it serves."""

    hostname = models.CharField(max_length=255, unique=True)
    seen_at = models.DateTimeField()
    token = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return self.hostname


class IngestCheckpoint(models.Model):
    """Where a set-based follow-up job (e.g. last_seen refresh) has got to in the
    touchpoint log, by touchpoint id."""

    name = models.CharField(max_length=64, unique=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_id}"


class CustomerRFM(models.Model):
    """A customer's recency, frequency and monetary value and their 1-5 scores, as of a
    date. One row per customer, rewritten as a whole by `marketing.rfm.rfm_refresh`
    (nightly); a customer without a purchase has a row with nulls. Segments join it."""

    customer = models.OneToOneField(Customer, on_delete=models.PROTECT, primary_key=True, related_name="rfm")
    as_of = models.DateField(help_text="Touchpoints up to the end of this day (reporting timezone) count.")
    recency_days = models.IntegerField(null=True, blank=True, help_text="Whole days since the last purchase.")
    frequency = models.IntegerField(null=True, blank=True, help_text="Distinct orders.")
    monetary = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Purchases net of refunds, reporting currency.",
    )
    r_score = models.SmallIntegerField(null=True, blank=True)
    f_score = models.SmallIntegerField(null=True, blank=True)
    m_score = models.SmallIntegerField(null=True, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = "customer RFM"
        verbose_name_plural = "customer RFM"

    def __str__(self) -> str:
        return f"RFM of customer {self.customer_id} as of {self.as_of}"
