"""Models of the mlcore layer (see ../shared/DESIGN.md): the registry of trained model
versions, and what clustering and association-rule runs produce for the layers above.

- ModelVersion: one training run of a task (clusters, rules, later propensity/uplift) in a
  scope (e.g. "clustering:3": the champion is per task and scope), with its parameters,
  metrics, result (cluster profiles), status and whether it is the champion.
- Clustering: a marketer's clustering configuration (features, k, method); each run is a
  ModelVersion of task "clusters" in scope "clustering:<id>".
- CustomerCluster: the cluster of each customer in one clustering version (derived data,
  kept for the champion only: cluster segments hold who was in each cluster before).
- AssociationRule: the rules of one rules version (antecedents → consequents with support,
  confidence, lift…), what affinity segments ("likely buyers of X") select from.
- ModelArtifact: the trained model's bytes of a version, stored in the database: every
  worker (a GPU worker on another host included) already reaches the database, so no
  shared filesystem or object store is needed (see mlcore.artifacts).
- CustomerScore: each customer's score (propensity or predicted uplift) of the champion
  propensity/uplift version (derived data, champion rows only, as CustomerCluster).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Now, StrIndex
from django.db.models.lookups import GreaterThan

from marketing.models import Customer


class ModelVersion(models.Model):
    class Task(models.TextChoices):
        CLUSTERS = "clusters", "Customer clusters"
        RULES = "rules", "Association rules"
        PROPENSITY = "propensity", "Conversion propensity"
        UPLIFT = "uplift", "Uplift"
        RECOMMENDATIONS = "recommendations", "Recommendations"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    task = models.CharField(max_length=16, choices=Task.choices)
    scope = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text='What it was trained for, e.g. "clustering:3"; one champion each.',
    )
    algorithm = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="E.g. the cluster profiles.")
    artifact = models.CharField(max_length=500, blank=True, default="", help_text="Where the trained model is stored.")
    device = models.CharField(max_length=32, blank=True, default="cpu")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(db_default=Now())
    trained_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    is_champion = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "scope"], condition=Q(is_champion=True), name="model_version_one_champion"
            ),
        ]
        indexes = [models.Index(fields=["task", "scope", "-id"], name="model_version_scope")]

    def __str__(self) -> str:
        scope = f" {self.scope}" if self.scope else ""
        return f"{self.task}{scope} v{self.pk} ({self.algorithm}, {self.status})"


class Clustering(models.Model):
    class Method(models.TextChoices):
        AUTO = "auto", "Automatic (K-means, MiniBatchKMeans above 50,000 customers)"
        KMEANS = "kmeans", "K-means"
        MINIBATCH = "minibatch", "MiniBatchKMeans"
        DBSCAN = "dbscan", "DBSCAN (up to 50,000 customers)"

    name = models.CharField(max_length=100, unique=True, help_text="Its cluster segments are named '<name>: <label>'.")
    description = models.TextField(blank=True, default="")
    features = models.JSONField(
        default=list,
        blank=True,
        help_text="Feature names (see mlcore.features.FEATURES) and attributes.<key>; empty: the defaults.",
    )
    k = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Number of clusters; empty: chosen by silhouette (2-10)."
    )
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.AUTO)
    enabled = models.BooleanField(default=True, help_text="Re-run by the nightly schedule.")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        return clustering_scope(self.pk)


def clustering_scope(clustering_id: int) -> str:
    return f"clustering:{clustering_id}"


class CustomerCluster(models.Model):
    """Derived data: written by every run; only the champion's rows are kept."""

    id = models.BigAutoField(primary_key=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+", db_index=False)
    # No database constraint (as SegmentMembership.customer): customers are never deleted,
    # and a run inserts a row per customer at once.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    cluster = models.SmallIntegerField(help_text="0 is the largest cluster; -1 is DBSCAN noise.")

    class Meta:
        constraints = [
            # (version, cluster, customer): a cluster segment's members are one index range.
            models.UniqueConstraint(fields=["model_version", "cluster", "customer"], name="customer_cluster_unique"),
        ]

    def __str__(self) -> str:
        return f"customer {self.customer_id} in cluster {self.cluster} of version {self.model_version_id}"


class AssociationRule(models.Model):
    id = models.BigAutoField(primary_key=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="association_rules")
    rank = models.PositiveIntegerField(help_text="1 is the highest lift (ties: confidence, then the items).")
    antecedents = models.JSONField(help_text="Sorted item (sku) list.")
    consequents = models.JSONField(help_text="Sorted item (sku) list.")
    # "|a|b|": the items with delimiters, so "holds item X" is a substring test (items_hold).
    antecedent_items = models.TextField()
    consequent_items = models.TextField()
    antecedent_support = models.FloatField()
    consequent_support = models.FloatField()
    support = models.FloatField()
    confidence = models.FloatField()
    lift = models.FloatField()
    leverage = models.FloatField()
    conviction = models.FloatField(null=True, blank=True, help_text="Empty when infinite (confidence 1).")

    class Meta:
        ordering = ["model_version", "rank"]
        constraints = [models.UniqueConstraint(fields=["model_version", "rank"], name="association_rule_rank")]

    def __str__(self) -> str:
        return f"{', '.join(self.antecedents)} → {', '.join(self.consequents)}"


def items_text(items) -> str:
    """The delimited form of a sorted item list stored in *_items (see AssociationRule)."""
    return "|" + "|".join(items) + "|"


def items_hold(column: str, sku: str) -> Q:
    """`column` (antecedent_items or consequent_items) holds `sku`: a case-sensitive
    substring test for "|sku|" (strpos/instr; SQLite's LIKE would ignore case)."""
    return Q(GreaterThan(StrIndex(column, Value(items_text([sku]))), 0))


class ModelArtifact(models.Model):
    """The serialized model of a version (mlcore.artifacts.artifact_save/artifact_load)."""

    version = models.OneToOneField(
        ModelVersion, on_delete=models.CASCADE, primary_key=True, related_name="stored_artifact"
    )
    data = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"artifact of version {self.version_id} ({self.size} bytes)"


class CustomerScore(models.Model):
    """Derived data: the champion's score per customer (written at promotion; only the
    champion's rows are kept, as CustomerCluster)."""

    id = models.BigAutoField(primary_key=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+", db_index=False)
    # No database constraint (as CustomerCluster.customer): customers are never deleted.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    score = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "customer"], name="customer_score_unique"),
        ]
        indexes = [models.Index(fields=["model_version", "score"], name="customer_score_value")]

    def __str__(self) -> str:
        return f"customer {self.customer_id}: {self.score:.4f} (version {self.model_version_id})"
