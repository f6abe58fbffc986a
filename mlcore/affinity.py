"""Association-rule runs (the Django glue of mlcore.engine.rules): order baskets from the
purchase touchpoints in the database, frequent itemsets and rules from the engine, and the
rules stored under a new ModelVersion (task "rules") that becomes the champion. Affinity
segments ("likely buyers of X", campaigns.segments.ml) select from the champion's rules.

A basket is one order: the skus of the purchase touchpoints sharing an order id (refunds
do not remove items: the customer chose them together)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from scipy import sparse

from marketing.bulk import insert_rows
from marketing.models import Touchpoint
from mlcore import registry
from mlcore.engine.rules import TooManyItemsets, association_rules, frequent_itemsets
from mlcore.models import AssociationRule, ModelVersion, items_text

DEFAULTS = {"min_support": 0.01, "min_confidence": 0.2, "min_lift": 1.0, "max_len": None, "days": None}
# Rules kept per run, best lift first: beyond this a lower min_support mostly adds noise.
MAX_RULES = 100_000
# Mining stops (the run fails with a clear error) past this many frequent itemsets or
# candidate rules: with few baskets one basket is "frequent", and so are its 2^n subsets.
MAX_ITEMSETS = 1_000_000
MAX_RULE_CANDIDATES = 5_000_000
# Versions whose rules are kept (the champion and the ones before it, for comparison).
KEEP_VERSIONS = 3
RULE_COLUMNS = (
    "model_version_id",
    "rank",
    "antecedents",
    "consequents",
    "antecedent_items",
    "consequent_items",
    "antecedent_support",
    "consequent_support",
    "support",
    "confidence",
    "lift",
    "leverage",
    "conviction",
)


def rules_params(**given) -> dict:
    """The run's parameters: those given (None = not given), else settings.AFFINITY_RULES,
    else DEFAULTS. Raises ValueError naming a bad one."""
    params = {**DEFAULTS, **getattr(settings, "AFFINITY_RULES", {})}
    params.update({key: value for key, value in given.items() if value is not None})
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}")
    for key in ("min_support", "min_confidence"):
        if not isinstance(params[key], int | float) or not 0 < params[key] <= 1:
            raise ValueError(f"{key} must be a number in (0, 1]")
    if not isinstance(params["min_lift"], int | float) or params["min_lift"] < 0:
        raise ValueError("min_lift must be a number >= 0")
    for key in ("max_len", "days"):
        if params[key] is not None and (not isinstance(params[key], int) or params[key] < 1):
            raise ValueError(f"{key} must be a whole number >= 1")
    return params


def rules_param_errors(given: dict[str, Any]) -> dict[str, str]:
    """What rules_params says about each given parameter on its own, by name (the API and
    the admin form name the field; rules_params stops at the first problem)."""
    errors = {}
    for key, value in given.items():
        if key not in DEFAULTS:
            errors[key] = "Unknown field."
        elif isinstance(value, bool):
            errors[key] = "must be a number, not true or false"
        elif value is not None:
            try:
                rules_params(**{key: value})
            except ValueError as exc:
                errors[key] = str(exc).removeprefix(f"{key} ")
    return errors


def basket_matrix(days: int | None = None, now: datetime | None = None) -> tuple[sparse.csr_matrix, list[str]]:
    """(baskets x skus bool matrix, the skus sorted) of the purchase touchpoints (of the last
    `days` days when given)."""
    purchases = Touchpoint.objects.filter(kind="purchase").exclude(sku="")
    if days:
        purchases = purchases.filter(occurred_at__gte=(now or timezone.now()) - timedelta(days=days))
    rows = list(purchases.order_by().values_list("order_id", "sku"))
    if not rows:
        return sparse.csr_matrix((0, 0), dtype=bool), []
    orders, skus = zip(*rows, strict=True)
    order_codes, _ = pd.factorize(pd.Series(orders, dtype=object))
    sku_codes, labels = pd.factorize(pd.Series(skus, dtype=object), sort=True)
    n_orders = int(order_codes.max()) + 1
    counts = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (order_codes, sku_codes)), shape=(n_orders, len(labels))
    )
    counts.sum_duplicates()
    matrix = sparse.csr_matrix((np.ones(counts.nnz, dtype=bool), counts.indices, counts.indptr), shape=counts.shape)
    return matrix, list(labels)


def rules_mine(*, now: datetime | None = None, **given) -> ModelVersion:
    """Mine association rules from the order baskets and store them as the new champion
    rules version. Parameters: min_support, min_confidence, min_lift, max_len, days (see
    DEFAULTS). A failed run is recorded as a failed version (the champion stays) and raises."""
    params = rules_params(**given)
    version = ModelVersion.objects.create(
        task=ModelVersion.Task.RULES, scope="", algorithm="eclat", params=params, device="cpu"
    )
    with registry.recorded_run(version) as elapsed_ms:
        matrix, labels = basket_matrix(params["days"], now)
        if matrix.shape[0] == 0:
            itemsets = pd.DataFrame({"support": [], "itemsets": []})
            rules = association_rules(itemsets, params["min_confidence"], params["min_lift"])
        else:
            try:
                itemsets = frequent_itemsets(
                    (matrix, labels), params["min_support"], params["max_len"], max_itemsets=MAX_ITEMSETS
                )
                rules = association_rules(
                    itemsets, params["min_confidence"], params["min_lift"], max_candidates=MAX_RULE_CANDIDATES
                )
            except TooManyItemsets as exc:
                raise ValueError(f"{exc}; raise min_support or set max_len") from None
        found = len(rules)
        rules = rules.head(MAX_RULES)
        with transaction.atomic():
            insert_rows(AssociationRule._meta.db_table, RULE_COLUMNS, _rule_rows(version.pk, rules))
            registry.promote(version)
            # Failed runs have no rules: they must not push older successful versions out.
            versions = ModelVersion.objects.filter(task=version.task, scope=version.scope)
            kept = versions.exclude(status=ModelVersion.Status.FAILED).order_by("-pk")[:KEEP_VERSIONS]
            AssociationRule.objects.filter(model_version__task=version.task).exclude(
                model_version__in=list(kept.values_list("pk", flat=True))
            ).delete()
            registry.finish(
                version,
                elapsed_ms(),
                metrics={
                    "baskets": int(matrix.shape[0]),
                    "items": len(labels),
                    "itemsets": len(itemsets),
                    "rules": found,
                    "rules_stored": len(rules),
                },
            )
    return version


def _rule_rows(version_id: int, rules: pd.DataFrame):
    """Rows in RULE_COLUMNS order; the item lists as JSON text (what COPY into jsonb and
    SQLite's JSON columns both take)."""
    numbers = [
        rules[name].tolist()
        for name in ("antecedent_support", "consequent_support", "support", "confidence", "lift", "leverage")
    ]
    convictions = [value if math.isfinite(value) else None for value in rules["conviction"].tolist()]
    for rank, (antecedents, consequents, *values, conviction) in enumerate(
        zip(rules["antecedents"], rules["consequents"], *numbers, convictions, strict=True), start=1
    ):
        a, c = sorted(map(str, antecedents)), sorted(map(str, consequents))
        yield (version_id, rank, json.dumps(a), json.dumps(c), items_text(a), items_text(c), *values, conviction)
