"""Models of the analytics layer (see ../shared/DESIGN.md): saved funnel definitions and
stored report runs.

- Funnel: a marketer's saved funnel spec (steps, window, order mode, breakdown), run on
  demand or nightly; its spec is validated by analytics.funnels before it is saved.
- ReportRun: one computation of a report (funnel, roi, attribution) with its parameters,
  status, result and duration. Runs with the same parameters share `params_key`, so a
  fresh enough succeeded run answers again from the cache.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Funnel(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    spec = models.JSONField(
        default=dict,
        help_text="Steps, window, order mode, breakdown and date range (see analytics.funnels).",
    )
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ReportRun(models.Model):
    class Kind(models.TextChoices):
        FUNNEL = "funnel", "Funnel"
        ROI = "roi", "ROI and lift"
        ATTRIBUTION = "attribution", "Attribution"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True)
    params_key = models.CharField(max_length=64, help_text="sha256 of the kind and canonical parameters.")
    funnel = models.ForeignKey(Funnel, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["kind", "params_key", "-id"], name="report_run_cache")]

    def __str__(self) -> str:
        return f"{self.kind} report run {self.pk} ({self.status})"
