"""Segment API serializers. The rule tree is checked by the service (every problem with a
JSON Pointer), so here `definition` is only "a JSON object"."""

from __future__ import annotations

import copy

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from campaigns.models import Segment, SegmentChange
from campaigns.segments.rules import rule_tree_json_schema

COMPONENT_PREFIX = "SegmentRule"


class RuleTreeField(serializers.JSONField):
    """A rule tree; documented in OpenAPI as the rule language's JSON Schema."""


def _component_name(name: str) -> str:
    return COMPONENT_PREFIX + "".join(part.capitalize() for part in name.split("_"))


def _rewrite_refs(schema):
    if isinstance(schema, dict):
        return {
            key: (
                f"#/components/schemas/{_component_name(value.removeprefix('#/$defs/'))}"
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                else _rewrite_refs(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rewrite_refs(item) for item in schema]
    return schema


class RuleTreeFieldExtension(OpenApiSerializerFieldExtension):
    """Publishes the draft 2020-12 rule schema's $defs as OpenAPI components (the subset
    both dialects share), so the docs show the recursive tree."""

    target_class = "campaigns.serializers.RuleTreeField"

    def map_serializer_field(self, auto_schema, direction):
        schema = rule_tree_json_schema()
        for name, definition in schema["$defs"].items():
            component = ResolvedComponent(
                name=_component_name(name),
                type=ResolvedComponent.SCHEMA,
                object=f"segment-rule-{name}",
                schema=_rewrite_refs(copy.deepcopy(definition)),
            )
            auto_schema.registry.register_on_missing(component)
        return {"$ref": f"#/components/schemas/{_component_name('node')}"}


class SegmentSerializer(serializers.ModelSerializer):
    definition = RuleTreeField()
    name = serializers.CharField(
        max_length=200, validators=[UniqueValidator(queryset=Segment.objects.all(), message="is already taken")]
    )

    class Meta:
        model = Segment
        fields = [
            "id",
            "name",
            "description",
            "kind",
            "definition",
            "created_at",
            "updated_at",
            "last_rebuilt_at",
            "last_rebuild_duration_ms",
            "member_count",
        ]
        read_only_fields = [
            "id",
            "created_at",
            "updated_at",
            "last_rebuilt_at",
            "last_rebuild_duration_ms",
            "member_count",
        ]


class SegmentPreviewRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[Segment.Kind.RULES], default=Segment.Kind.RULES)
    definition = RuleTreeField()
    sample_size = serializers.IntegerField(min_value=0, max_value=100, default=20)


class SegmentSampleCustomerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    email = serializers.CharField()


class SegmentPreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sample = SegmentSampleCustomerSerializer(many=True)


class RuleErrorSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="JSON Pointer into the definition, e.g. /all/2/value.")
    message = serializers.CharField()


class RuleErrorsSerializer(serializers.Serializer):
    message = serializers.CharField()
    errors = RuleErrorSerializer(many=True)


class ExplainNodeSerializer(serializers.Serializer):
    node = serializers.JSONField(help_text="The condition, as in the definition.")
    path = serializers.CharField(help_text="Its JSON Pointer in the definition ('' for the root).")
    result = serializers.BooleanField(help_text="Whether this customer satisfies it.")
    actual = serializers.JSONField(required=False, help_text="Field leaves: the customer's value.")
    children = serializers.ListField(child=serializers.DictField(), help_text="Explained sub-conditions.")


class ExplainCustomerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()


class SegmentExplainSerializer(serializers.Serializer):
    customer = ExplainCustomerSerializer()
    member = serializers.BooleanField()
    erased = serializers.BooleanField(help_text="Erased (GDPR) customers are never members.")
    tree = ExplainNodeSerializer()


class SegmentRebuildSerializer(serializers.Serializer):
    segment_id = serializers.IntegerField()
    entered = serializers.IntegerField(help_text="Customers who entered (one 'entered' change row each).")
    exited = serializers.IntegerField(help_text="Customers who exited (one 'exited' change row each).")
    members = serializers.IntegerField(help_text="Members after the rebuild.")
    duration_ms = serializers.IntegerField()
    rebuilt_at = serializers.DateTimeField()


class SegmentRebuildQueuedSerializer(serializers.Serializer):
    segment_id = serializers.IntegerField()
    message = serializers.CharField()


class SegmentMemberSerializer(serializers.Serializer):
    customer_id = serializers.IntegerField()
    external_id = serializers.CharField()
    since = serializers.DateTimeField(help_text="When the rebuild that let the customer in ran.")


class SegmentChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Increasing within a segment: keep the last one as your checkpoint.")
    customer_id = serializers.IntegerField()
    external_id = serializers.CharField()
    change = serializers.ChoiceField(choices=SegmentChange.Change.choices)
    at = serializers.DateTimeField(help_text="When the rebuild that found the change ran.")
