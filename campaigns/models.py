"""Segments, campaigns, channels, creatives and messages (see ../shared/DESIGN.md).

So far: segments, their memberships and the change log their rebuilds append to.
"""

from __future__ import annotations

from django.db import models
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
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False)
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
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes", db_index=False)
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    change = models.CharField(max_length=8, choices=Change.choices)
    at = models.DateTimeField(help_text="When the rebuild that found the change ran.")

    class Meta:
        indexes = [models.Index(fields=["segment", "id"], name="segment_change_after")]

    def __str__(self) -> str:
        return f"customer {self.customer_id} {self.change} segment {self.segment_id}"
