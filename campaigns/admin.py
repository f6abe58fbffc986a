"""Segment admin: a JSON rule editor that validates on save (every problem with its path)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone

from campaigns.models import Segment
from campaigns.segments.rules import RuleInvalid
from campaigns.segments.services import segment_definition_check


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
    list_display = ["name", "kind", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
