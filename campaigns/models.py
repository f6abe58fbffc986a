"""Segments, campaigns, channels, creatives and messages (see ../shared/DESIGN.md).

Segments (with their memberships and the change log their rebuilds append to), and the
delivery side: channels, devices, campaigns with their runs and creatives, and messages
(the outbox; see campaigns.delivery).
"""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from marketing.models import Customer


class Segment(models.Model):
    class Kind(models.TextChoices):
        RULES = "rules", "Rules"
        CLUSTER = "cluster", "Cluster"
        AFFINITY = "affinity", "Affinity"
        PROPENSITY = "propensity", "Propensity"
        UPLIFT = "uplift", "Uplift"
        STATIC = "static", "Static list"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.RULES)
    definition = models.JSONField(
        default=dict,
        blank=True,
        help_text="For a rules segment: the rule tree (see campaigns.segments.rules).",
    )
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    # Written by each rebuild (campaigns.segments.rebuild); null until the first one.
    last_rebuilt_at = models.DateTimeField(null=True, blank=True)
    last_rebuild_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    member_count = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class SegmentMembership(models.Model):
    """Who is in a segment as of its last rebuild. Derived data: a rebuild rewrites it from
    the definition, so deleting the segment deletes its memberships."""

    id = models.BigAutoField(primary_key=True)
    # No database constraints (CASCADE is Django's): a first build inserts a row per member,
    # and deferred FK checks cost a quarter of it at commit (bench/segments.py).
    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False, db_constraint=False
    )
    # No database constraint, as Touchpoint.customer: customers are never deleted (GDPR
    # erase anonymises in place), and a rebuild inserts hundreds of thousands of rows at
    # once, where a per-row FK check only costs.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    since = models.DateTimeField(help_text="When the rebuild that let the customer in ran.")

    class Meta:
        constraints = [
            # Its index (segment, customer) also serves the rebuild's diff and /members paging.
            models.UniqueConstraint(fields=["segment", "customer"], name="segment_membership_unique"),
        ]

    def __str__(self) -> str:
        return f"customer {self.customer_id} in segment {self.segment_id}"


class SegmentChange(models.Model):
    """The append-only log of customers entering and exiting a segment. Ids increase with
    time within a segment (its rebuilds run one after the other under the segment's row
    lock), so a reader keeps the last id it saw and asks for the rows after it."""

    class Change(models.TextChoices):
        ENTERED = "entered", "Entered"
        EXITED = "exited", "Exited"

    id = models.BigAutoField(primary_key=True)
    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="changes", db_index=False, db_constraint=False
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    change = models.CharField(max_length=8, choices=Change.choices)
    at = models.DateTimeField(help_text="When the rebuild that found the change ran.")

    class Meta:
        indexes = [models.Index(fields=["segment", "id"], name="segment_change_after")]

    def __str__(self) -> str:
        return f"customer {self.customer_id} {self.change} segment {self.segment_id}"


# --- delivery -----------------------------------------------------------------------------


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    WEBHOOK = "webhook", "Webhook"


class Channel(models.Model):
    """A way to reach customers: its kind, the backend that sends (settings validated per
    backend by campaigns.delivery.backends), the cost of one message and a rate limit
    shared by all workers."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    backend = models.CharField(
        max_length=32,
        default="default",
        help_text='email: "default" (settings.EMAIL_BACKEND) or "smtp"/"anymail"; sms/push/webhook: "http".',
    )
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Backend settings (from address, URL, auth, timeouts…); secrets by env var name (…_env).",
    )
    cost_per_message = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    rate_limit_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Messages per second across all workers; empty: no limit."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Device(models.Model):
    """A push token of a customer's app install or browser."""

    class Platform(models.TextChoices):
        IOS = "ios", "iOS"
        ANDROID = "android", "Android"
        WEB = "web", "Web push"

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="devices")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    token = models.CharField(max_length=4096)
    token_hash = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the token.")
    enabled = models.BooleanField(default=True, help_text="Off once the provider says the token is invalid.")
    created_at = models.DateTimeField(db_default=Now())
    last_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.platform} device of customer {self.customer_id}"


def _new_salt() -> str:
    return secrets.token_hex(8)


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        ONE_OFF = "one_off", "One-off"
        RECURRING = "recurring", "Recurring (cron)"
        SEGMENT_ENTRY = "segment_entry", "On entering a segment"
        EVENT = "event", "On a touchpoint kind"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.ONE_OFF)

    audience = models.ManyToManyField(Segment, blank=True, related_name="campaigns", help_text="Members of any.")
    exclusions = models.ManyToManyField(Segment, blank=True, related_name="excluded_from")
    send_at = models.DateTimeField(null=True, blank=True, help_text="One-off: when to launch; empty: on launch.")
    cron = models.CharField(
        max_length=100, blank=True, default="", help_text='Recurring: "minute hour day month weekday" (UTC).'
    )
    trigger_segment = models.ForeignKey(
        Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="triggered_campaigns"
    )
    trigger_event_kind = models.CharField(max_length=64, blank=True, default="")
    # Where a triggered campaign has read up to: a SegmentChange id or a Touchpoint id.
    trigger_checkpoint = models.BigIntegerField(default=0)

    holdout_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("10.00"))
    salt = models.CharField(max_length=32, default=_new_salt, help_text="Keeps the holdout stable per campaign.")
    frequency_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many messages per customer (all campaigns)…"
    )
    frequency_cap_days = models.PositiveIntegerField(default=7, help_text="…within this many days.")
    quiet_hours_start = models.TimeField(null=True, blank=True, help_text="Customer's local time; e.g. 21:00.")
    quiet_hours_end = models.TimeField(null=True, blank=True, help_text="e.g. 08:00.")
    budget = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    fixed_cost = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    goal_event = models.CharField(max_length=64, default="purchase")
    attribution_window_days = models.PositiveIntegerField(default=7)
    channel_policy = models.JSONField(
        default=dict, blank=True, help_text='e.g. {"type": "fixed", "channel": 1} or {"type": "weighted", …}.'
    )
    creative_policy = models.JSONField(default=dict, blank=True, help_text='e.g. {"type": "weighted"}.')
    # Audience option "only persuadables" (issue 5): keep the customers whose predicted
    # uplift (the uplift champion's score) is above min_uplift; applied before the holdout,
    # so treated and held-out customers come from the same persuadables.
    persuadables_only = models.BooleanField(
        default=False, help_text="Only customers the uplift model predicts the campaign persuades."
    )
    min_uplift = models.FloatField(
        default=0.0, help_text="With persuadables only: predicted uplift must be above this (incremental P(goal))."
    )

    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    launched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status"], name="campaign_status")]

    def __str__(self) -> str:
        return self.name


class CampaignRun(models.Model):
    """One firing of a campaign: the launch of a one-off, each cron firing of a recurring
    campaign, each batch of a triggered one. `key` makes a firing idempotent."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    key = models.CharField(max_length=100, help_text='"launch", a cron firing time, "changes:<from>-<to>"…')
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    counts = models.JSONField(default=dict, blank=True, help_text="Audience, dropped by reason, held out, queued.")
    started_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "key"], name="campaign_run_key")]

    def __str__(self) -> str:
        return f"run {self.key} of campaign {self.campaign_id}"


class Creative(models.Model):
    """A variant of a campaign's message for one channel kind. Subject and body are Django
    templates rendered from a prepared context (customer fields and attributes,
    recommendations, links): never model instances that could query per message."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="creatives")
    channel_kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    name = models.CharField(max_length=100, default="A", help_text="The variant's name.")
    subject = models.CharField(max_length=500, blank=True, default="", help_text="Email subject / push title.")
    body = models.TextField(help_text="Text body (email text part, SMS text, push body, webhook JSON).")
    html_body = models.TextField(blank=True, default="", help_text="Email HTML part (optional).")
    weight = models.PositiveIntegerField(default=1, help_text="Share under a weighted creative policy.")
    sku = models.CharField(max_length=64, blank=True, default="", help_text="Product or offer it promotes.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["campaign", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "channel_kind", "name"], name="creative_variant_unique")
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.channel_kind}/{self.name}"


class Message(models.Model):
    """The outbox: one row per (campaign, run, customer). Held-out customers get a
    `held_out` row and are never sent to."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        SUPPRESSED = "suppressed", "Suppressed"
        HELD_OUT = "held_out", "Held out"
        UNKNOWN = "unknown", "Unknown (in doubt; never re-sent)"
        CANCELLED = "cancelled", "Cancelled"

    id = models.BigAutoField(primary_key=True)
    # No database constraints on the message's references (Django enforces CASCADE and
    # PROTECT): a launch writes a row per customer, and the deferred FK checks were half of
    # a 1M-customer launch at commit.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="messages", db_index=False, db_constraint=False
    )
    run = models.ForeignKey(
        CampaignRun, on_delete=models.CASCADE, related_name="messages", db_index=False, db_constraint=False
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    # No indexes of their own: messages are read by campaign, status and customer, and
    # every index costs on the million-row writes of a launch.
    channel = models.ForeignKey(
        Channel, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    creative = models.ForeignKey(
        Creative,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    not_before = models.DateTimeField(db_default=Now(), help_text="Not sent before (quiet hours, retry backoff).")
    claimed_by = models.CharField(max_length=100, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    policy = models.CharField(max_length=64, blank=True, default="")
    probability = models.FloatField(null=True, blank=True, help_text="P(policy picks this channel and creative).")
    features = models.JSONField(default=dict, blank=True, help_text="What the policy saw when it picked.")
    attempts = models.PositiveSmallIntegerField(default=0)
    recipient = models.CharField(max_length=4096, blank=True, default="", help_text="Address used at send time.")
    provider_id = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "run", "customer"], name="message_once_per_run"),
        ]
        indexes = [
            # What senders claim: due queued messages, oldest first, then by id (a fixed
            # order among messages due at the same instant, read from the index unsorted).
            models.Index(fields=["not_before", "id"], name="message_due", condition=Q(status="queued")),
            # Leases to reconcile.
            models.Index(fields=["lease_until"], name="message_sending", condition=Q(status="sending")),
            models.Index(fields=["campaign", "status"], name="message_campaign_status"),
            # Frequency caps: a customer's recent sends across campaigns.
            models.Index(fields=["customer", "sent_at"], name="message_customer_sent"),
            # Provider webhooks and status answers name the provider's id.
            models.Index(fields=["channel", "provider_id"], name="message_provider_id", condition=~Q(provider_id="")),
        ]

    def __str__(self) -> str:
        return f"message {self.pk} ({self.status})"
