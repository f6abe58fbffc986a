"""Segment and clustering API serializers. A segment's definition is checked by the service
(every problem with a JSON Pointer), so here `definition` is only "a JSON object"; its
OpenAPI schema is each kind's shape (the rule tree, a cluster, an affinity)."""

from __future__ import annotations

import copy
from decimal import Decimal

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from campaigns.delivery.control import campaign_progress
from campaigns.delivery.definitions import CAMPAIGN_FIELDS
from campaigns.delivery.policies import policy_errors
from campaigns.delivery.triggers import cron_errors
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message, Segment, SegmentChange
from campaigns.segments.clusterings import clustering_segments
from campaigns.segments.ml import AFFINITY_SCHEMA
from campaigns.segments.rules import rule_tree_json_schema
from marketing.models import SLUG_RE
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


# --- delivery: channels, devices, campaigns, creatives, messages --------------------------

SLUG_HELP = "A touchpoint kind: a built-in one (purchase, signup, click, …) or any custom slug."


class ChannelSerializer(serializers.ModelSerializer):
    name = serializers.CharField(
        max_length=100, validators=[UniqueValidator(queryset=Channel.objects.all(), message="is already taken")]
    )
    backend = serializers.CharField(
        max_length=32,
        required=False,
        help_text='email: "default" (the EMAIL_BACKEND setting), "smtp" or "anymail"; sms, push, webhook: "http".',
    )
    settings = serializers.JSONField(
        required=False,
        help_text=(
            "The backend's settings (from address, URL, auth, timeouts…), checked per backend. Secrets are never "
            'stored: a key ending in "password", "token" or "secret" is refused; name an environment variable in '
            '"<key>_env" instead (e.g. "auth_token_env": "SMS_API_TOKEN").'
        ),
    )
    cost_per_message = serializers.DecimalField(
        max_digits=12,
        decimal_places=6,
        min_value=Decimal("0"),
        required=False,
        help_text="In the reporting currency, up to 6 decimal places.",
    )
    rate_limit_per_second = serializers.IntegerField(
        min_value=1,
        max_value=1_000_000,
        required=False,
        allow_null=True,
        help_text="Messages per second across all workers; null: no limit.",
    )

    class Meta:
        model = Channel
        fields = [
            "id",
            "name",
            "kind",
            "backend",
            "settings",
            "cost_per_message",
            "rate_limit_per_second",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"kind": {"help_text": "Cannot change once the channel exists."}}


class DeviceSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True)
    token_preview = serializers.SerializerMethodField(help_text="The token's first 12 characters.")

    class Meta:
        model = Device
        fields = [
            "id",
            "customer",
            "customer_external_id",
            "platform",
            "token_preview",
            "token_hash",
            "enabled",
            "created_at",
            "last_seen_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "customer": {"help_text": "The customer's id."},
            "token_hash": {"help_text": "SHA-256 (hex) of the token: compute it to find a token's device."},
        }

    def get_token_preview(self, device: Device) -> str:
        return token_preview(device.token)


def token_preview(token: str) -> str:
    return token if len(token) <= TOKEN_PREVIEW else f"{token[:TOKEN_PREVIEW]}…"


TOKEN_PREVIEW = 12


class DeviceRegisterSerializer(serializers.Serializer):
    customer = serializers.CharField(max_length=255, help_text="The customer's external id, or our numeric id.")
    platform = serializers.ChoiceField(choices=Device.Platform.choices)
    token = serializers.CharField(max_length=4096, help_text="The push token (APNs, FCM or a web push endpoint).")
    enabled = serializers.BooleanField(default=True)


class CampaignSerializer(serializers.ModelSerializer):
    audience = serializers.PrimaryKeyRelatedField(
        many=True,
        required=False,
        queryset=Segment.objects.all(),
        help_text="Segment ids: members of any are in the audience.",
    )
    exclusions = serializers.PrimaryKeyRelatedField(
        many=True,
        required=False,
        queryset=Segment.objects.all(),
        help_text="Segment ids: members of any are left out.",
    )
    trigger_segment = serializers.PrimaryKeyRelatedField(
        required=False,
        allow_null=True,
        queryset=Segment.objects.all(),
        help_text="segment_entry campaigns: customers entering this segment.",
    )
    trigger_event_kind = serializers.RegexField(
        SLUG_RE, required=False, allow_blank=True, help_text="event campaigns: " + SLUG_HELP
    )
    cron = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        help_text='recurring campaigns: "minute hour day month weekday" in UTC, e.g. "0 9 * * 1".',
    )
    holdout_percent = serializers.DecimalField(
        max_digits=5,
        decimal_places=2,
        min_value=Decimal("0"),
        max_value=Decimal("100"),
        required=False,
        help_text="Share of the audience held out (never sent, measured as control); default 10.",
    )
    persuadables_only = serializers.BooleanField(
        required=False,
        help_text="Only persuadables: reach only customers whose predicted uplift (the uplift champion's score) is "
        "above min_uplift; the holdout is drawn among them. Launching needs an uplift champion.",
    )
    min_uplift = serializers.FloatField(
        min_value=-1,
        max_value=1,
        required=False,
        help_text="With persuadables_only: the predicted incremental P(goal) must be above this; default 0.",
    )
    frequency_cap = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="At most this many messages per customer across all campaigns within frequency_cap_days.",
    )
    frequency_cap_days = serializers.IntegerField(min_value=1, max_value=365, required=False)
    budget = serializers.DecimalField(
        max_digits=14, decimal_places=4, min_value=Decimal("0"), required=False, allow_null=True
    )
    fixed_cost = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0"), required=False)
    goal_event = serializers.RegexField(SLUG_RE, required=False, help_text="The outcome measured. " + SLUG_HELP)
    attribution_window_days = serializers.IntegerField(
        min_value=1, max_value=365, required=False, help_text="Goal events within this many days of the exposure count."
    )
    channel_policy = serializers.JSONField(
        required=False,
        help_text='How each customer\'s channel is picked, e.g. {"type": "fixed", "channel": 1}; {}: the default.',
    )
    creative_policy = serializers.JSONField(
        required=False, help_text='How each customer\'s creative is picked, e.g. {"type": "weighted"}; {}: the default.'
    )

    class Meta:
        model = Campaign
        read_only_fields = ["id", "status", "salt", "created_at", "updated_at", "launched_at", "finished_at"]
        # What the write services take (definitions.CAMPAIGN_FIELDS), then what the system sets.
        fields = [*CAMPAIGN_FIELDS, *read_only_fields]
        extra_kwargs = {
            "status": {
                "help_text": "draft → scheduled → running → paused / completed / cancelled; changed by the "
                "launch, pause, resume and cancel actions."
            },
            "salt": {
                "help_text": "Keeps the holdout stable: held out iff sha256(salt|campaign|customer) mod 10000 < "
                "holdout_percent * 100."
            },
            "send_at": {"help_text": "One-off: when to send; null: at launch."},
            "quiet_hours_start": {"help_text": "No sends from this local time of the customer's (e.g. 21:00)…"},
            "quiet_hours_end": {"help_text": "…until this one (e.g. 08:00); messages wait, never dropped."},
        }

    def validate_cron(self, value: str) -> str:
        if value:
            _raise_messages(cron_errors(value))
        return value

    def validate_channel_policy(self, value):
        return _policy(value, "channel")

    def validate_creative_policy(self, value):
        return _policy(value, "creative")


def _raise_messages(errors) -> None:
    messages = [getattr(error, "message", error) for error in errors]
    if messages:
        raise serializers.ValidationError([str(message) for message in messages])


def _policy(value, kind: str):
    if not isinstance(value, dict):
        raise serializers.ValidationError("must be a JSON object")
    if value:
        _raise_messages(policy_errors(value, kind))
    return value


class CampaignRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = CampaignRun
        fields = ["id", "key", "status", "counts", "started_at", "finished_at"]
        read_only_fields = fields
        extra_kwargs = {
            "key": {"help_text": '"launch" for a one-off; a cron firing time; "changes:<from>-<to>" for a trigger.'},
            "counts": {"help_text": "What the run's launch found: audience, dropped by reason, held out, queued."},
        }


class MessageCountsSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    sending = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    suppressed = serializers.IntegerField()
    held_out = serializers.IntegerField()
    unknown = serializers.IntegerField(help_text="In doubt after a worker died mid-send: never re-sent.")
    cancelled = serializers.IntegerField()


class RunProgressSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    status = serializers.ChoiceField(choices=CampaignRun.Status.choices)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    counts = serializers.JSONField(
        help_text='What its launch recorded, e.g. {"audience": 1000, "eligible": 959, "held_out": 98, '
        '"queued": 861, "suppressed": {"no_consent": 41}}.'
    )
    messages = MessageCountsSerializer(help_text="Its messages by status now.")


class CampaignProgressSerializer(MessageCountsSerializer):
    """All messages of the campaign by status (zeros included), and per run."""

    campaign_id = serializers.IntegerField()
    total = serializers.IntegerField()
    campaign_status = serializers.ChoiceField(choices=Campaign.Status.choices)
    suppressed_reasons = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Suppressed messages by reason: no_consent, unsubscribed, suppressed, no_address, frequency_cap, "
        "budget, erased.",
    )
    runs_total = serializers.IntegerField()
    runs = RunProgressSerializer(many=True, help_text="The latest 100 runs, newest first.")


def campaign_progress_body(campaign_id: int) -> dict:
    return {"campaign_id": campaign_id, **campaign_progress(campaign_id)}


class CampaignDetailSerializer(CampaignSerializer):
    progress = serializers.SerializerMethodField(help_text="Its messages by status, per run, and suppressed reasons.")

    class Meta(CampaignSerializer.Meta):
        fields = [*CampaignSerializer.Meta.fields, "progress"]

    @extend_schema_field(CampaignProgressSerializer)
    def get_progress(self, campaign: Campaign) -> dict:
        return CampaignProgressSerializer(campaign_progress_body(campaign.pk)).data


class CampaignActionSerializer(serializers.Serializer):
    campaign_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices, help_text="The campaign's new status.")
    run = CampaignRunSerializer(allow_null=True, help_text="launch: the run it started (one-offs); otherwise null.")


class CreativeSerializer(serializers.ModelSerializer):
    campaign = serializers.PrimaryKeyRelatedField(queryset=Campaign.objects.all(), help_text="Cannot change.")
    weight = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)

    class Meta:
        model = Creative
        fields = ["id", "campaign", "channel_kind", "name", "subject", "body", "html_body", "weight", "sku", "enabled"]
        read_only_fields = ["id"]
        validators = []  # the service checks the variant name, with the templates, in one answer
        extra_kwargs = {
            "subject": {"help_text": "Email subject or push title: a Django template (e.g. Hi {{ first_name }})."},
            "body": {"help_text": "A Django template: the email text part, SMS text, push body or webhook JSON."},
            "html_body": {"help_text": "Email HTML part (optional); a Django template."},
        }


class CreativePreviewRequestSerializer(serializers.Serializer):
    customer = serializers.CharField(
        required=False, help_text="Render for this customer (external id, or our numeric id)."
    )
    context = serializers.DictField(
        required=False,
        help_text='Render with these customer fields instead (e.g. {"first_name": "Ada"}); neither: a sample customer.',
    )

    def validate(self, attrs: dict) -> dict:
        if "customer" in attrs and "context" in attrs:
            raise serializers.ValidationError({"context": ["give either customer or context, not both"]})
        return attrs


class RenderedSerializer(serializers.Serializer):
    creative_id = serializers.IntegerField()
    customer_id = serializers.IntegerField(allow_null=True, help_text="The customer rendered for; null: sample.")
    subject = serializers.CharField(allow_blank=True)
    text = serializers.CharField(allow_blank=True)
    html = serializers.CharField(allow_blank=True)


class CreativeTestRequestSerializer(serializers.Serializer):
    to = serializers.CharField(
        max_length=4096,
        help_text="Email creatives: an address; sms: an E.164 number; push: a device token; webhook: ignored "
        "(the channel's URL).",
    )


class CreativeTestResultSerializer(serializers.Serializer):
    creative_id = serializers.IntegerField()
    to = serializers.CharField()
    channel_id = serializers.IntegerField(allow_null=True, help_text="The channel it went through.")
    provider_id = serializers.CharField(allow_blank=True, help_text="The provider's message id, where it gives one.")


class MessageSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "campaign",
            "run",
            "customer",
            "customer_external_id",
            "channel",
            "creative",
            "status",
            "error",
            "not_before",
            "attempts",
            "recipient",
            "provider_id",
            "cost",
            "policy",
            "probability",
            "features",
            "created_at",
            "updated_at",
            "sent_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "error": {
                "help_text": "failed: the provider's answer; suppressed: the reason (no_consent, unsubscribed, …)."
            },
            "recipient": {"help_text": "The address, number or device used at send time."},
        }
