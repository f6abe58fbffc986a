"""Product recommendations per customer: item-based collaborative filtering (cosine on the
customer x product purchase matrix), topped up by association-rule next-best-offer and then
by best sellers.

- `recommendations_fit()` reads the purchase touchpoints once, set-based (customer x sku
  with the number of distinct orders as the weight), fits mlcore.engine.recommend.ItemCF and
  stores it as a ModelVersion (task "recommendations") with its artifact in the database
  (mlcore.artifacts); the new version becomes the champion (a fit is a deterministic
  function of the purchases: the newest one is the best informed, so there is nothing to
  compare it against on held-out data).
- `recommendations_for(customer_ids, k)` answers a whole send batch with a fixed number of
  queries whatever its size: the champion's id, the customers' purchases, the champion
  rules' id and the products (one query each); the model, the rules and the best sellers
  (the model's item popularity) are cached per champion version, so no batch scans the
  purchase log. Per customer, a list of {sku, name, price, url, score, source}
  ("cf", "rules" or "popular"), never an item they already bought, only active products.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.db import connection, transaction
from scipy import sparse

from marketing.models import Product, Touchpoint
from mlcore import registry
from mlcore.artifacts import artifact_load, artifact_save
from mlcore.engine.recommend import ItemCF, rules_recommend
from mlcore.models import AssociationRule, ModelVersion

TASK = ModelVersion.Task.RECOMMENDATIONS
DEFAULT_K = 5
MAX_K = 50
DEFAULT_NEIGHBOURS = 50
# Candidates asked of each source beyond k: some may be inactive or unknown products.
_SLACK = 10

_FORMAT = b"MLRECS1\n"


@dataclass
class StoredModel:
    """A fitted ItemCF and the sku of each of its item columns."""

    model: ItemCF
    skus: list[str]

    def ranking(self) -> np.ndarray:
        """Item columns by popularity (distinct buyers) descending, then sku; bought ones only."""
        if not hasattr(self, "_ranking"):
            popularity = self.model.popularity
            order = np.lexsort((np.arange(len(popularity)), -popularity))
            self._ranking = order[popularity[order] > 0]
        return self._ranking

    def to_bytes(self) -> bytes:
        header = json.dumps({"skus": self.skus}, separators=(",", ":")).encode()
        return _FORMAT + struct.pack(">Q", len(header)) + header + self.model.to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> StoredModel:
        if not blob.startswith(_FORMAT):
            raise ValueError("not a recommendations artifact")
        offset = len(_FORMAT)
        (length,) = struct.unpack(">Q", blob[offset : offset + 8])
        header = json.loads(blob[offset + 8 : offset + 8 + length])
        return cls(model=ItemCF.from_bytes(blob[offset + 8 + length :]), skus=list(header["skus"]))


# --- reading purchases ---------------------------------------------------------------------------


def _purchase_sql(customer_ids: Sequence[int] | None) -> tuple[str, list]:
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    where, params = "kind = 'purchase' AND sku <> ''", []
    if customer_ids is not None:
        ids = [int(c) for c in customer_ids]
        if connection.vendor == "postgresql":
            where += " AND customer_id = ANY(%s)"
            params.append(ids)
        else:
            where += " AND customer_id IN (SELECT value FROM json_each(%s))"
            params.append(json.dumps(ids))
    # A purchase is one touchpoint per order line: distinct orders count how often the
    # customer bought the sku, whatever the quantity.
    return (
        f"SELECT customer_id, sku, COUNT(DISTINCT order_id) FROM {table} WHERE {where} "
        f"GROUP BY customer_id, sku ORDER BY customer_id, sku",
        params,
    )


def _purchases(customer_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(customer ids, skus (object), weights) of the purchase matrix's non-zero cells."""
    sql, params = _purchase_sql(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), np.zeros(0, dtype=np.float64)
    customers, skus, weights = zip(*rows, strict=True)
    return np.asarray(customers, dtype=np.int64), np.asarray(skus, dtype=object), np.asarray(weights, dtype=np.float64)


# --- fitting ------------------------------------------------------------------------------------


def recommendations_fit(*, neighbours: int = DEFAULT_NEIGHBOURS) -> ModelVersion:
    """Fit item-based CF on every purchase and store it as the new champion (module
    docstring). A failed fit is recorded as a failed version (the champion stays) and raises."""
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
        raise ValueError("neighbours must be a whole number >= 1")
    version = ModelVersion.objects.create(
        task=TASK, scope="", algorithm="item_cf_cosine", params={"neighbours": neighbours}, device="cpu"
    )
    with registry.recorded_run(version) as elapsed_ms:
        customers, skus, weights = _purchases()
        if not len(skus):
            raise ValueError("there are no purchase touchpoints with a sku: nothing to learn recommendations from")
        sku_labels = sorted(set(skus.tolist()))
        customer_labels, customer_idx = np.unique(customers, return_inverse=True)
        item_idx = np.searchsorted(np.asarray(sku_labels, dtype=object), skus) if len(skus) else np.zeros(0, np.int64)
        model = ItemCF.fit(
            customer_idx.astype(np.int64),
            np.asarray(item_idx, dtype=np.int64),
            weights,
            len(customer_labels),
            len(sku_labels),
            neighbours=neighbours,
        )
        with transaction.atomic():
            artifact_save(version, StoredModel(model=model, skus=sku_labels).to_bytes())
            registry.promote(version)
            registry.finish(
                version,
                elapsed_ms(),
                metrics={"customers": len(customer_labels), "items": len(sku_labels), "interactions": len(skus)},
            )
    return version


# --- champion caches ----------------------------------------------------------------------------

_lock = threading.Lock()
_model_cache: dict[tuple[int, str], StoredModel] = {}
_rules_cache: dict[int, tuple] = {}


def clear_caches() -> None:
    """Forget the cached champion model and rules (tests; a new champion replaces them anyway)."""
    with _lock:
        _model_cache.clear()
        _rules_cache.clear()


def _champion_model() -> StoredModel | None:
    version = registry.champion(TASK)
    if version is None:
        return None
    with _lock:
        cached = _model_cache.get((version.pk, version.artifact))
    if cached is None:
        cached = StoredModel.from_bytes(artifact_load(version))
        with _lock:
            _model_cache.clear()  # one champion at a time
            _model_cache[(version.pk, version.artifact)] = cached
    return cached


def _champion_rules() -> tuple[list[list[str]], list[list[str]], np.ndarray, np.ndarray]:
    """(antecedents, consequents, confidence, lift) of the champion rules version."""
    version_id = registry.champion_id(ModelVersion.Task.RULES)
    if version_id is None:
        return [], [], np.zeros(0), np.zeros(0)
    with _lock:
        cached = _rules_cache.get(version_id)
    if cached is None:
        rows = list(
            AssociationRule.objects.filter(model_version_id=version_id)
            .order_by("rank")
            .values_list("antecedents", "consequents", "confidence", "lift")
        )
        cached = (
            [list(a) for a, _, _, _ in rows],
            [list(c) for _, c, _, _ in rows],
            np.asarray([row[2] for row in rows], dtype=np.float64),
            np.asarray([row[3] for row in rows], dtype=np.float64),
        )
        with _lock:
            _rules_cache.clear()
            _rules_cache[version_id] = cached
    return cached


def _matrix(rows: np.ndarray, skus: np.ndarray, weights: np.ndarray, n: int, labels: list[str]) -> sparse.csr_matrix:
    """(n, len(labels)) csr of the given cells; skus not in labels are left out."""
    lookup = {sku: index for index, sku in enumerate(labels)}
    columns = np.fromiter((lookup.get(sku, -1) for sku in skus.tolist()), dtype=np.int64, count=len(skus))
    keep = columns >= 0
    return sparse.csr_matrix((weights[keep], (rows[keep], columns[keep])), shape=(n, len(labels)))


# --- recommending -------------------------------------------------------------------------------


def _best_sellers(limit: int) -> list[tuple[str, float]]:
    """(sku, distinct buyers) of the most bought active products, best first."""
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    products = connection.ops.quote_name(Product._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.sku, COUNT(DISTINCT t.customer_id) AS buyers FROM {table} t "
            f"JOIN {products} p ON p.sku = t.sku AND p.active "
            f"WHERE t.kind = 'purchase' AND t.sku <> '' GROUP BY t.sku ORDER BY buyers DESC, t.sku LIMIT %s",
            [limit],
        )
        return [(sku, float(buyers)) for sku, buyers in cursor.fetchall()]


def _popular(stored: StoredModel | None, limit: int) -> list[tuple[str, float]]:
    """The best sellers (sku, distinct buyers), best first: from the champion model's item
    popularity (computed at its fit: no scan of the purchases per send batch), or before
    the first fit from the purchases themselves. Inactive products are dropped later, so a
    few more than `limit` are returned."""
    if stored is None or not stored.skus:
        return _best_sellers(limit)
    ranking = stored.ranking()
    top = ranking[: limit + _SLACK]
    return [(stored.skus[i], float(stored.model.popularity[i])) for i in top.tolist()]


def _price(value) -> str | None:
    return None if value is None else str(Decimal(value).quantize(Decimal("0.01")))


def recommendations_for(customer_ids: Sequence[int], k: int = DEFAULT_K) -> dict[int, list[dict]]:
    """Up to k recommendations per customer id (every given id is a key; see the module
    docstring): CF first, then rules, then best sellers; each list has distinct skus."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be a whole number from 1 to {MAX_K}")
    ids = sorted({int(c) for c in customer_ids})
    result: dict[int, list[dict]] = {customer_id: [] for customer_id in ids}
    if not ids:
        return result
    row_of = {customer_id: row for row, customer_id in enumerate(ids)}
    customers, skus, weights = _purchases(ids)
    rows = np.fromiter((row_of[c] for c in customers.tolist()), dtype=np.int64, count=len(customers))
    seen: list[set[str]] = [set() for _ in ids]
    for row, sku in zip(rows.tolist(), skus.tolist(), strict=True):
        seen[row].add(sku)

    candidates: list[list[tuple[str, float, str]]] = [[] for _ in ids]
    wanted = k + _SLACK
    stored = _champion_model()
    if stored is not None and stored.skus:
        matrix = _matrix(rows, skus, weights, len(ids), stored.skus)
        items, scores = stored.model.recommend(matrix, k=min(wanted, len(stored.skus)), exclude_seen=True)
        for row in range(len(ids)):
            for item, score in zip(items[row].tolist(), scores[row].tolist(), strict=True):
                if item >= 0 and score > 0:
                    candidates[row].append((stored.skus[item], float(score), "cf"))

    antecedents, consequents, confidence, lift = _champion_rules()
    if antecedents:
        labels = sorted({sku for rule in antecedents + consequents for sku in rule})
        index = {sku: i for i, sku in enumerate(labels)}
        matrix = _matrix(rows, skus, weights, len(ids), labels)
        items, scores = rules_recommend(
            matrix,
            [[index[s] for s in rule] for rule in antecedents],
            [[index[s] for s in rule] for rule in consequents],
            confidence,
            lift,
            k=min(wanted, len(labels)),
            exclude_seen=True,
        )
        for row in range(len(ids)):
            for item, score in zip(items[row].tolist(), scores[row].tolist(), strict=True):
                if item >= 0:
                    candidates[row].append((labels[item], float(score), "rules"))

    most_seen = max((len(s) for s in seen), default=0)
    popular = _popular(stored, wanted + most_seen)
    known = {sku for row in candidates for sku, _, _ in row} | {sku for sku, _ in popular}
    products = {
        p["sku"]: p
        for p in Product.objects.filter(sku__in=known, active=True).values("sku", "name", "price", "attributes")
    }
    for row, customer_id in enumerate(ids):
        chosen: list[dict] = []
        taken = set(seen[row])
        for sku, score, source in [*candidates[row], *((sku, score, "popular") for sku, score in popular)]:
            if len(chosen) == k:
                break
            product = products.get(sku)
            if product is None or sku in taken:
                continue
            taken.add(sku)
            attributes = product["attributes"] if isinstance(product["attributes"], dict) else {}
            chosen.append(
                {
                    "sku": sku,
                    "name": product["name"],
                    "price": _price(product["price"]),
                    "url": str(attributes.get("url", "")),
                    "score": round(score, 6),
                    "source": source,
                }
            )
        result[customer_id] = chosen
    return result
