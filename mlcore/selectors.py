"""Reads of the mlcore layer for the API and the admin: model versions, the rules of a
version, and what a clustering's champion run found."""

from __future__ import annotations

from django.db.models import QuerySet

from marketing.errors import DomainError, NotFound
from mlcore import registry
from mlcore.models import AssociationRule, Clustering, ModelVersion, clustering_scope, items_hold


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.order_by("-id")


def clustering_list() -> QuerySet[Clustering]:
    return Clustering.objects.order_by("id")


def clustering_champion(clustering_id: int) -> ModelVersion | None:
    """The clustering's champion version (with its profiles in `result`), None before its
    first successful run."""
    return registry.champion(ModelVersion.Task.CLUSTERS, clustering_scope(clustering_id))


def clustering_champions(clustering_ids: list[int]) -> dict[int, ModelVersion]:
    """The champion of each clustering that has one, in one query; `result` (the profiles,
    the largest column) is left unloaded."""
    scopes = {clustering_scope(pk): pk for pk in clustering_ids}
    versions = ModelVersion.objects.filter(
        task=ModelVersion.Task.CLUSTERS, scope__in=list(scopes), is_champion=True
    ).defer("result")
    return {scopes[version.scope]: version for version in versions}


def cluster_profile(clustering_id: int, cluster: int | None) -> tuple[ModelVersion, dict] | None:
    """(champion version, profile) of one cluster of a clustering; None when the clustering
    never ran or its champion has no such cluster (a retired segment's cluster is None)."""
    if cluster is None:
        return None
    version = clustering_champion(clustering_id)
    if version is None:
        return None
    for profile in version.result.get("profiles", []):
        if profile["cluster"] == cluster:
            return version, profile
    return None


class WrongTask(DomainError):
    """A model version of another task where one of a given task is needed."""


def rules_version(version_id: int | None = None) -> ModelVersion | None:
    """The rules version to read: `version_id` (NotFound when there is none, WrongTask when
    it is not a rules version) or, by default, the champion (None before the first run)."""
    if version_id is None:
        return registry.champion(ModelVersion.Task.RULES)
    version = ModelVersion.objects.filter(pk=version_id).defer("result").first()
    if version is None:
        raise NotFound(f"Model version {version_id} does not exist.")
    if version.task != ModelVersion.Task.RULES:
        raise WrongTask(f"Model version {version_id} is a {version.task} version, not a rules version.")
    return version


def association_rules_all() -> QuerySet[AssociationRule]:
    return AssociationRule.objects.order_by("id")


def association_rules(version: ModelVersion | None) -> QuerySet[AssociationRule]:
    """The rules of a version, best rank first (none without a version)."""
    if version is None:
        return AssociationRule.objects.none()
    return AssociationRule.objects.filter(model_version=version).order_by("rank")


def rules_with_items(rules: QuerySet[AssociationRule], skus: list[str], side: str = "either") -> QuerySet:
    """Rules holding every sku of `skus` among their antecedents, their consequents, or
    either side (each sku on its own side), through the delimited columns (items_hold)."""
    for sku in skus:
        if side == "antecedents":
            rules = rules.filter(items_hold("antecedent_items", sku))
        elif side == "consequents":
            rules = rules.filter(items_hold("consequent_items", sku))
        else:
            rules = rules.filter(items_hold("antecedent_items", sku) | items_hold("consequent_items", sku))
    return rules
