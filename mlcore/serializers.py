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


# --- learning: training requests, promotion, customer scores ----------------------------------

PROPENSITY_ONLY = ("device", "max_epochs", "batch_size", "hidden", "lr", "patience")
UPLIFT_ONLY = ("method",)


class ModelVersionLearningSerializer(ModelVersionDetailSerializer):
    """A model version with its training curve (propensity: train/valid loss per epoch)."""

    curve = serializers.SerializerMethodField(help_text="Per epoch: epoch, train_loss, valid_loss, valid_auc…")

    class Meta(ModelVersionDetailSerializer.Meta):
        fields = [*ModelVersionDetailSerializer.Meta.fields, "curve"]
        read_only_fields = fields

    def get_curve(self, obj: ModelVersion) -> list[dict]:
        return list((obj.result or {}).get("curve") or [])


class TrainRequestSerializer(serializers.Serializer):
    """A training run's task and options; omitted options take the service defaults
    (mlcore.propensity.DEFAULTS, mlcore.uplift.DEFAULTS)."""

    # A string checked here: a second "task" enum would rename ModelVersion's in the docs.
    task = serializers.CharField(help_text='What to train: "propensity" or "uplift".')
    days = serializers.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="Sends of the last N days; default 90."
    )
    campaign_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_null=True,
        allow_empty=False,
        help_text="Only the sends of these campaigns; default all.",
    )
    valid_fraction = serializers.FloatField(
        min_value=0.05, max_value=0.5, required=False, help_text="Validation share; default 0.2 (uplift 0.3)."
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, help_text="Split and model seed.")
    baselines = serializers.BooleanField(required=False, help_text="Also fit the baselines on the same split.")
    device = serializers.ChoiceField(
        choices=["auto", "cpu", "cuda"], required=False, help_text="Propensity: where to train; default auto."
    )
    max_epochs = serializers.IntegerField(min_value=1, max_value=500, required=False, help_text="Propensity.")
    batch_size = serializers.IntegerField(min_value=1, max_value=1 << 22, required=False, help_text="Propensity.")
    hidden = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=4096),
        min_length=1,
        max_length=6,
        required=False,
        help_text="Propensity: hidden layer sizes; default [256, 128].",
    )
    lr = serializers.FloatField(min_value=1e-7, max_value=1.0, required=False, help_text="Propensity learning rate.")
    patience = serializers.IntegerField(min_value=1, max_value=50, required=False, help_text="Propensity.")
    method = serializers.ChoiceField(
        choices=["t_learner", "x_learner"], required=False, help_text="Uplift learner; default t_learner."
    )

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({key: ["unknown option"] for key in unknown})
        return super().to_internal_value(data)

    def validate_task(self, value: str) -> str:
        if value not in ("propensity", "uplift"):
            raise serializers.ValidationError('must be "propensity" or "uplift"')
        return value

    def validate(self, attrs: dict) -> dict:
        task = attrs["task"]
        wrong = UPLIFT_ONLY if task == "propensity" else PROPENSITY_ONLY
        errors = {key: [f"not an option of {task} training"] for key in wrong if key in attrs}
        if errors:
            raise serializers.ValidationError(errors)
        if attrs.get("device") == "auto":
            attrs["device"] = None
        return attrs


class TrainQueuedSerializer(serializers.Serializer):
    task_id = serializers.CharField(help_text="The Celery task id of the run (on the gpu queue).")
    task = serializers.CharField()
    options = serializers.DictField(help_text="The options given (the rest are the defaults).")
    message = serializers.CharField()


class RollbackRequestSerializer(serializers.Serializer):
    to = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="The version to make champion; default: the one the champion replaced.",
    )


class ScoreSerializer(serializers.Serializer):
    score = serializers.FloatField()
    model_version = serializers.IntegerField()
    trained_at = serializers.DateTimeField(allow_null=True)


class CustomerScoresSerializer(serializers.Serializer):
    customer_id = serializers.IntegerField()
    external_id = serializers.CharField()
    propensity = ScoreSerializer(
        allow_null=True, help_text="P(goal) after a typical send (champion propensity); null without one."
    )
    uplift = ScoreSerializer(
        allow_null=True, help_text="Predicted incremental P(goal) if sent (champion uplift); null without one."
    )
