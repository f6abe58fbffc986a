"""Segments, campaigns, channels, creatives and messages (see ../shared/DESIGN.md).

Only the Segment itself exists so far; its memberships and change log arrive with
rebuilds.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


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

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"
