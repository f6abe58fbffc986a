"""Segment and clustering API serializers. A segment's definition is checked by the service
(every problem with a JSON Pointer), so here `definition` is only "a JSON object"; its
OpenAPI schema is each kind's shape (the rule tree, a cluster, an affinity)."""

from __future__ import annotations

import copy

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from campaigns.models import Segment, SegmentChange
from campaigns.segments.clusterings import clustering_segments
from campaigns.segments.ml import AFFINITY_SCHEMA
from campaigns.segments.rules import rule_tree_json_schema
from mlcore import selectors
from mlcore.features import DEFAULT_FEATURES, FEATURES, feature_errors
from mlcore.models import Clustering

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


CLUSTER_DEFINITION_SCHEMA = {
    "type": "object",
    "description": (
        "The customers the clustering's champion run put in this cluster (0 is the largest, -1 DBSCAN noise); "
        "cluster null selects nobody (a retired cluster). Cluster segments are made and kept in step by the "
        "clustering's runs (POST /api/v1/clusterings/{id}/run)."
    ),
    "properties": {
        "clustering": {"type": "integer"},
        "cluster": {"type": "integer", "minimum": -1, "nullable": True},
    },
    "required": ["clustering", "cluster"],
    "additionalProperties": False,
}
DEFINITION_DESCRIPTION = (
    "Its shape depends on `kind`: `rules`, a rule tree (SegmentRuleNode); `cluster`, "
    '`{"clustering": id, "cluster": n}` (SegmentClusterDefinition); `affinity`, '
    '`{"sku": "…", "min_confidence"?, "min_lift"?, "within_days"?}` (SegmentAffinityDefinition). '
    "An invalid definition is a 400 with a JSON Pointer to every problem."
)


class SegmentDefinitionField(serializers.JSONField):
    """A segment definition; documented in OpenAPI as one of the kinds' shapes."""


class SegmentDefinitionFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "campaigns.serializers.SegmentDefinitionField"

    def map_serializer_field(self, auto_schema, direction):
        rule_tree = RuleTreeFieldExtension(self.target).map_serializer_field(auto_schema, direction)
        shapes = [rule_tree]
        for name, schema in (("ClusterDefinition", CLUSTER_DEFINITION_SCHEMA), ("AffinityDefinition", AFFINITY_SCHEMA)):
            component = ResolvedComponent(
                name=f"Segment{name}",
                type=ResolvedComponent.SCHEMA,
                object=f"segment-{name}",
                schema=copy.deepcopy(schema),
            )
            auto_schema.registry.register_on_missing(component)
            shapes.append(component.ref)
        return {"description": DEFINITION_DESCRIPTION, "oneOf": shapes}


class ClusterFeatureProfileSerializer(serializers.Serializer):
    feature = serializers.CharField(help_text='A feature, or "<feature>_missing": the share without a value.')
    mean = serializers.FloatField(allow_null=True, help_text="Over the cluster's members that have a value.")
    population_mean = serializers.FloatField(allow_null=True)
    ratio = serializers.FloatField(allow_null=True, help_text="mean / population_mean.")
    z_score = serializers.FloatField(allow_null=True)
    percentile = serializers.FloatField(
        allow_null=True, help_text="The members' mean percentile rank in the population; 0.5 is typical."
    )
    word = serializers.CharField(allow_null=True, help_text="Its word in the label when it is distinctive.")


class ClusterProfileSerializer(serializers.Serializer):
    cluster = serializers.IntegerField(help_text="0 is the largest; -1 is DBSCAN noise.")
    label = serializers.CharField()
    size = serializers.IntegerField()
    share = serializers.FloatField(help_text="Of all customers clustered.")
    features = ClusterFeatureProfileSerializer(many=True, help_text="Most distinctive first.")


class ClusteringProfileSerializer(ClusterProfileSerializer):
    segment_id = serializers.IntegerField(allow_null=True, help_text="The cluster's segment.")


class SegmentClusterProfileSerializer(ClusterProfileSerializer):
    clustering = serializers.IntegerField()
    model_version_id = serializers.IntegerField(help_text="The clustering's champion version.")
    trained_at = serializers.DateTimeField()


class SegmentSerializer(serializers.ModelSerializer):
    definition = SegmentDefinitionField()
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


class SegmentDetailSerializer(SegmentSerializer):
    cluster_profile = serializers.SerializerMethodField(
        help_text="A cluster segment's cluster as the clustering's champion run describes it; null otherwise."
    )

    class Meta(SegmentSerializer.Meta):
        fields = [*SegmentSerializer.Meta.fields, "cluster_profile"]

    @extend_schema_field(SegmentClusterProfileSerializer(allow_null=True))
    def get_cluster_profile(self, segment: Segment) -> dict | None:
        if segment.kind != Segment.Kind.CLUSTER or not isinstance(segment.definition, dict):
            return None
        found = selectors.cluster_profile(segment.definition.get("clustering"), segment.definition.get("cluster"))
        if found is None:
            return None
        version, profile = found
        body = {**profile, "clustering": segment.definition["clustering"], "model_version_id": version.pk}
        return SegmentClusterProfileSerializer({**body, "trained_at": version.trained_at}).data


class SegmentPreviewRequestSerializer(serializers.Serializer):
    # All kinds (one enum with Segment.kind in the docs); the service refuses those not implemented yet.
    kind = serializers.ChoiceField(choices=Segment.Kind.choices, default=Segment.Kind.RULES)
    definition = SegmentDefinitionField()
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


# --- clusterings -----------------------------------------------------------------------


class ClusteringChampionSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The champion model version.")
    algorithm = serializers.CharField()
    trained_at = serializers.DateTimeField()
    k = serializers.IntegerField(help_text="Clusters found (DBSCAN noise not counted).")
    silhouette = serializers.FloatField(allow_null=True, help_text="On a sample; -1 to 1, higher is better.")
    customers = serializers.IntegerField()


class ClusteringSegmentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    cluster = serializers.IntegerField(allow_null=True, help_text="null: retired (no cluster of the champion).")
    member_count = serializers.IntegerField(allow_null=True)


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class FeatureListField(serializers.JSONField):
    """Any JSON in, so feature_errors can say what is wrong with it item by item (a
    ListField of CharField would quietly turn 3 into "3")."""


class ClusteringSerializer(serializers.ModelSerializer):
    name = serializers.CharField(
        max_length=100, validators=[UniqueValidator(queryset=Clustering.objects.all(), message="is already taken")]
    )
    features = FeatureListField(
        required=False,
        help_text=(
            f"Feature names: {', '.join(FEATURES)}, or attributes.<key> (a numeric customer attribute). "
            f"Empty: {', '.join(DEFAULT_FEATURES)}."
        ),
    )
    k = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=2,
        max_value=50,
        help_text="Number of clusters; null: chosen by silhouette (2-10). Not for DBSCAN.",
    )
    champion = serializers.SerializerMethodField(help_text="The latest successful run; null before the first.")
    segments = serializers.SerializerMethodField(help_text="Its cluster segments: live ones by cluster, then retired.")

    class Meta:
        model = Clustering
        fields = [
            "id",
            "name",
            "description",
            "features",
            "k",
            "method",
            "enabled",
            "created_at",
            "updated_at",
            "champion",
            "segments",
        ]
        read_only_fields = ["id", "created_at", "updated_at", "champion", "segments"]

    def validate_features(self, value):
        errors = feature_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate(self, attrs: dict) -> dict:
        method = attrs.get("method", getattr(self.instance, "method", Clustering.Method.AUTO))
        k = attrs.get("k", getattr(self.instance, "k", None))
        if method == Clustering.Method.DBSCAN and k is not None:
            raise serializers.ValidationError({"k": ["DBSCAN finds the number of clusters itself: leave k empty."]})
        return attrs

    @extend_schema_field(ClusteringChampionSerializer(allow_null=True))
    def get_champion(self, clustering: Clustering) -> dict | None:
        champions = self.context.get("champions")
        if champions is None:
            champions = selectors.clustering_champions([clustering.pk])
        version = champions.get(clustering.pk)
        if version is None:
            return None
        return ClusteringChampionSerializer(
            {
                "id": version.pk,
                "algorithm": version.algorithm,
                "trained_at": version.trained_at,
                "k": version.metrics.get("k"),
                "silhouette": version.metrics.get("silhouette"),
                "customers": version.metrics.get("customers"),
            }
        ).data

    @extend_schema_field(ClusteringSegmentSerializer(many=True))
    def get_segments(self, clustering: Clustering) -> list[dict]:
        segments = self.context.get("segments")
        if segments is None:
            segments = clustering_segments([clustering.pk])
        return ClusteringSegmentSerializer(segments.get(clustering.pk, []), many=True).data


class ClusteringRunQueuedSerializer(serializers.Serializer):
    clustering_id = serializers.IntegerField()
    task_id = serializers.CharField(help_text="The Celery task id of the run.")
    message = serializers.CharField()


class ClusteringRunSegmentSerializer(serializers.Serializer):
    segment_id = serializers.IntegerField()
    name = serializers.CharField()
    cluster = serializers.IntegerField(allow_null=True, help_text="null: retired by this run.")
    members = serializers.IntegerField()
    entered = serializers.IntegerField()
    exited = serializers.IntegerField()


class ClusteringRunSerializer(serializers.Serializer):
    clustering_id = serializers.IntegerField()
    model_version_id = serializers.IntegerField(help_text="The new champion.")
    k = serializers.IntegerField()
    customers = serializers.IntegerField()
    silhouette = serializers.FloatField(allow_null=True)
    features_s = serializers.FloatField(help_text="Seconds reading the features.")
    cluster_s = serializers.FloatField(help_text="Seconds clustering and profiling.")
    store_s = serializers.FloatField(help_text="Seconds storing assignments and syncing segments.")
    segments_s = serializers.FloatField(help_text="Seconds rebuilding the segments.")
    total_s = serializers.FloatField()
    segments = ClusteringRunSegmentSerializer(many=True, help_text="The segments it rebuilt.")


class ClusteringProfilesSerializer(serializers.Serializer):
    clustering_id = serializers.IntegerField()
    model_version_id = serializers.IntegerField(help_text="The champion the profiles come from.")
    trained_at = serializers.DateTimeField()
    profiles = ClusteringProfileSerializer(many=True, help_text="Largest cluster first (noise last).")
