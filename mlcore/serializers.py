"""Serializers of the mlcore API: model versions and association rules (read-only), and the
parameters of a rules run."""

from __future__ import annotations

from rest_framework import serializers

from mlcore.affinity import rules_param_errors, rules_params
from mlcore.models import AssociationRule, ModelVersion


class ModelVersionSerializer(serializers.ModelSerializer):
    # A plain string in the docs, as the health check's: a second "status" enum would rename
    # that one's component (drf-spectacular names enums by field name).
    status = serializers.CharField(help_text='"running", "succeeded" or "failed".')

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "task",
            "scope",
            "algorithm",
            "status",
            "is_champion",
            "params",
            "metrics",
            "error",
            "device",
            "started_at",
            "trained_at",
            "duration_ms",
        ]
        read_only_fields = fields


class ModelVersionDetailSerializer(ModelVersionSerializer):
    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "result", "artifact"]
        read_only_fields = fields


class AssociationRuleSerializer(serializers.ModelSerializer):
    antecedents = serializers.ListField(child=serializers.CharField(), help_text="Skus, sorted.")
    consequents = serializers.ListField(child=serializers.CharField(), help_text="Skus, sorted.")
    conviction = serializers.FloatField(allow_null=True, help_text="null when infinite (confidence 1).")

    class Meta:
        model = AssociationRule
        fields = [
            "id",
            "rank",
            "antecedents",
            "consequents",
            "support",
            "confidence",
            "lift",
            "leverage",
            "conviction",
            "antecedent_support",
            "consequent_support",
            "model_version",
        ]
        read_only_fields = fields


class RulesMineRequestSerializer(serializers.Serializer):
    """The body of a rules run; the ranges are mlcore.affinity.rules_params's. Omitted or
    null: settings.AFFINITY_RULES, else the defaults shown."""

    min_support = serializers.FloatField(
        required=False, allow_null=True, help_text="Share of baskets holding the itemset, in (0, 1]; default 0.01."
    )
    min_confidence = serializers.FloatField(required=False, allow_null=True, help_text="In (0, 1]; default 0.2.")
    min_lift = serializers.FloatField(required=False, allow_null=True, help_text=">= 0; default 1.0.")
    max_len = serializers.IntegerField(
        required=False, allow_null=True, help_text="Largest itemset (antecedents + consequents); default no limit."
    )
    days = serializers.IntegerField(
        required=False, allow_null=True, help_text="Only the baskets of the last N days; default all."
    )

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        # rules_params on the JSON values themselves: "0.1" or true is no number here,
        # though DRF's FloatField would take either.
        errors = rules_param_errors(data)
        if errors:
            raise serializers.ValidationError({key: [message] for key, message in errors.items()})
        return super().to_internal_value(data)

    def validate(self, attrs: dict) -> dict:
        """The parameters the run will use (defaults filled in)."""
        return rules_params(**attrs)


class RulesMineQueuedSerializer(serializers.Serializer):
    task_id = serializers.CharField(help_text="The Celery task id of the run.")
    params = serializers.DictField(help_text="The parameters the run will use.")
    message = serializers.CharField()
