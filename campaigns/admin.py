"""Segment admin: a JSON rule editor that validates on save (every problem with its path),
and a "Rebuild now" action that queues rebuilds."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone

from campaigns.models import Segment
from campaigns.segments.rebuild import REBUILDABLE_KINDS
from campaigns.segments.rules import RuleInvalid
from campaigns.segments.services import segment_definition_check
from campaigns.tasks import segment_rebuild_task


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["name", "description", "kind", "definition"]

    def clean(self):
        cleaned = super().clean()
        if "definition" in cleaned and "kind" in cleaned:
            try:
                segment_definition_check(cleaned["kind"], cleaned["definition"], segment_id=self.instance.pk)
            except RuleInvalid as exc:
                self.add_error("definition", [f"{error.path or '/'}: {error.message}" for error in exc.errors])
        return cleaned


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ["name", "kind", "member_count", "last_rebuilt_at", "last_rebuild_duration_ms", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at", "member_count", "last_rebuilt_at", "last_rebuild_duration_ms"]
    actions = ["rebuild_now"]

    @admin.action(description="Rebuild now")
    def rebuild_now(self, request, queryset):
        ids = list(queryset.filter(kind__in=REBUILDABLE_KINDS).values_list("id", flat=True))
        for segment_id in ids:
            # after commit: the admin runs in a transaction (ATOMIC_REQUESTS or not).
            transaction.on_commit(lambda segment_id=segment_id: segment_rebuild_task.delay(segment_id))
        skipped = queryset.count() - len(ids)
        self.message_user(request, f"Queued a rebuild of {len(ids)} segment(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped}: only rules segments can be rebuilt.", messages.WARNING)

    def save_model(self, request, obj, form, change):
        if change:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
