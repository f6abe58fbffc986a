"""Product recommendations: item-based collaborative filtering and association-rule
next-best-offer, for a batch of customers at once.

Pure numpy/scipy.sparse (no Django). Customers and products are dense indices (the glue maps
ids to indices); a customer's purchases are a row of a sparse customer x item matrix.

Item-based CF: the similarity of two products is the cosine of their columns in the customer
x item matrix (how much the same customers buy both). Only each product's `neighbours` most
similar products are kept, so the model stays sparse (n_items x neighbours) however many
customers there are. A customer's score for product j is sum over their products i of
weight(i) * sim(i, j) where j is among i's neighbours: every product they bought votes for
its nearest neighbours. Bought products are excluded by default, and fewer than k candidates
pad with -1 (score 0) rather than recommending something with no evidence, unless
`fill_popular=True` asks for the most bought products as filler.

Rules next-best-offer: association rules A -> C (item indices, from mlcore.engine.rules);
a customer who bought all of A is offered C's items, each scored by the best confidence among
the rules that fire for them (ties broken by lift, then item index), as in `likely_buyers`.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence

import numpy as np
from scipy import sparse

__all__ = ["ItemCF", "rules_recommend", "top_k_per_row"]

_MAGIC = b"ITEMCF\x00\x01"
_FORMAT = 1


def _customer_items(
    matrix: sparse.spmatrix | np.ndarray, n_items: int, name: str = "customer_items"
) -> sparse.csr_matrix:
    if not sparse.issparse(matrix):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be a 2-d (customers x {n_items}) matrix, got shape {matrix.shape}")
    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    if matrix.shape[1] != n_items:
        raise ValueError(f"{name} has {matrix.shape[1]} item columns, the model has {n_items}")
    if matrix.nnz and not np.all(np.isfinite(matrix.data)):
        raise ValueError(f"{name} holds non-finite values")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _check_k(k: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def top_k_per_row(matrix: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest stored entries of each row of a CSR matrix: (columns (m, k) int64 with -1
    padding, values (m, k) float64 with 0 padding). Ties break by the lower column, so the
    answer never depends on storage order. Vectorised: one lexsort over the stored entries,
    no loop over rows."""
    matrix = sparse.csr_matrix(matrix)
    m = matrix.shape[0]
    rows = np.repeat(np.arange(m), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    keep = rank < k
    picked = order[keep]
    items = np.full((m, k), -1, dtype=np.int64)
    scores = np.zeros((m, k), dtype=np.float64)
    items[rows[picked], rank[keep]] = matrix.indices[picked]
    scores[rows[picked], rank[keep]] = matrix.data[picked]
    return items, scores


def _keep_top_per_row(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """The same matrix with only each row's k largest entries (ties: lower column)."""
    matrix = sparse.csr_matrix(matrix)
    m = matrix.shape[0]
    rows = np.repeat(np.arange(m), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    keep = order[rank < k]
    return sparse.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)


class ItemCF:
    """Item-based collaborative filtering over a sparse customer x item matrix.

    `similarity` (n_items x n_items CSR): row i holds product i's top neighbours and their
    cosine similarity (no self-similarity). `popularity` (n_items,): how many customers
    bought each product (the optional cold-start filler)."""

    def __init__(self, similarity: sparse.csr_matrix, popularity: np.ndarray, neighbours: int) -> None:
        self.similarity = sparse.csr_matrix(similarity, dtype=np.float64)
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.neighbours = int(neighbours)
        self.n_items = self.similarity.shape[0]

    @classmethod
    def fit(
        cls,
        customer_idx: np.ndarray,
        item_idx: np.ndarray,
        weight: np.ndarray | None,
        n_customers: int,
        n_items: int,
        neighbours: int = 50,
    ) -> ItemCF:
        """Build the model from (customer, item, weight) triples (e.g. one per order line;
        repeated pairs add up). weight None means 1 per triple."""
        customer_idx = np.asarray(customer_idx)
        item_idx = np.asarray(item_idx)
        n_customers, n_items, neighbours = int(n_customers), int(n_items), int(neighbours)
        if n_customers < 0 or n_items < 1:
            raise ValueError(f"need n_customers >= 0 and n_items >= 1, got {n_customers} and {n_items}")
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}")
        if customer_idx.ndim != 1 or item_idx.shape != customer_idx.shape:
            raise ValueError(
                "customer_idx and item_idx must be 1-d of the same length, "
                f"got {customer_idx.shape} and {item_idx.shape}"
            )
        for name, values, size in (("customer_idx", customer_idx, n_customers), ("item_idx", item_idx, n_items)):
            if len(values) and not np.issubdtype(values.dtype, np.integer):
                raise ValueError(f"{name} must be integers, got dtype {values.dtype}")
            bad = (values < 0) | (values >= size)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{name}[{i}] = {values[i]} is outside 0..{size - 1}")
        if weight is None:
            weight = np.ones(len(customer_idx), dtype=np.float64)
        else:
            weight = np.asarray(weight, dtype=np.float64)
            if weight.shape != customer_idx.shape:
                raise ValueError(f"weight must have the shape of customer_idx {customer_idx.shape}, got {weight.shape}")
            bad = ~(np.isfinite(weight) & (weight >= 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"weight[{i}] = {weight[i]} must be finite and >= 0")
        matrix = sparse.csr_matrix(
            (weight, (customer_idx.astype(np.int64), item_idx.astype(np.int64))), shape=(n_customers, n_items)
        )
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        columns = matrix.tocsc()
        norms = np.sqrt(np.asarray(columns.multiply(columns).sum(axis=0)).ravel())
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        normalised = columns @ sparse.diags(inverse)
        similarity = (normalised.T @ normalised).tocsr()
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        similarity = _keep_top_per_row(similarity, neighbours)
        popularity = np.diff(columns.indptr).astype(np.float64)
        return cls(similarity, popularity, neighbours)

    def neighbours_of(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar products of each of `items`: (items (m, k), similarity (m, k)), -1 padded."""
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 1 or (len(items) and (items.min() < 0 or items.max() >= self.n_items)):
            raise ValueError(f"items must be a 1-d array of indices in 0..{self.n_items - 1}")
        return top_k_per_row(self.similarity[items], _check_k(k))

    def scores(self, customer_items: sparse.spmatrix | np.ndarray, exclude_seen: bool = True) -> sparse.csr_matrix:
        """(m, n_items) sparse scores, bought products removed when exclude_seen."""
        bought = _customer_items(customer_items, self.n_items)
        scores = (bought @ self.similarity).tocsr()
        if exclude_seen and bought.nnz:
            scores = scores - scores.multiply(bought != 0)
        scores = sparse.csr_matrix(scores)
        scores.data[scores.data <= 0] = 0.0  # nothing recommended without positive evidence
        scores.eliminate_zeros()
        return scores

    def recommend(
        self,
        customer_items: sparse.spmatrix | np.ndarray,
        k: int = 5,
        exclude_seen: bool = True,
        fill_popular: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k products per customer row: (items (m, k) int64, -1 padded; scores (m, k), 0 padded).

        fill_popular: pad a short list with the most bought products not already in it
        (and not bought, when exclude_seen), scored 0, instead of -1."""
        k = _check_k(k)
        bought = _customer_items(customer_items, self.n_items)
        items, scores = top_k_per_row(self.scores(bought, exclude_seen), k)
        if fill_popular:
            items = self._fill_popular(items, bought, k, exclude_seen)
        return items, scores

    def _fill_popular(self, items: np.ndarray, bought: sparse.csr_matrix, k: int, exclude_seen: bool) -> np.ndarray:
        short = np.flatnonzero((items == -1).any(axis=1))
        if not len(short):
            return items
        ranking = np.lexsort((np.arange(self.n_items), -self.popularity))
        ranking = ranking[self.popularity[ranking] > 0]
        for row in short:  # only customers with short lists; each scans a few popular products
            taken = set(items[row][items[row] >= 0].tolist())
            if exclude_seen:
                taken.update(bought.indices[bought.indptr[row] : bought.indptr[row + 1]].tolist())
            slot = int(np.sum(items[row] >= 0))
            for item in ranking:
                if slot >= k:
                    break
                if int(item) not in taken:
                    items[row, slot] = item
                    slot += 1
        return items

    def to_bytes(self) -> bytes:
        """Self-contained artifact: a header, JSON metadata, then scipy's save_npz of the similarity."""
        buffer = io.BytesIO()
        sparse.save_npz(buffer, self.similarity, compressed=True)
        meta = json.dumps(
            {
                "format": _FORMAT,
                "n_items": self.n_items,
                "neighbours": self.neighbours,
                "popularity": self.popularity.tolist(),
            }
        ).encode()
        return _MAGIC + struct.pack(">Q", len(meta)) + meta + buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ItemCF:
        if not blob.startswith(_MAGIC):
            raise ValueError("not an ItemCF artifact (bad header)")
        (length,) = struct.unpack(">Q", blob[len(_MAGIC) : len(_MAGIC) + 8])
        start = len(_MAGIC) + 8
        meta = json.loads(blob[start : start + length])
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unsupported ItemCF artifact format {meta.get('format')!r}")
        similarity = sparse.load_npz(io.BytesIO(blob[start + length :])).tocsr()
        return cls(similarity, np.asarray(meta["popularity"], dtype=np.float64), meta["neighbours"])


def rules_recommend(
    customer_items: sparse.spmatrix | np.ndarray,
    antecedents: Sequence[Sequence[int]],
    consequents: Sequence[Sequence[int]],
    confidence: Sequence[float] | np.ndarray,
    lift: Sequence[float] | np.ndarray,
    k: int = 5,
    exclude_seen: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Next-best-offer from association rules for a batch of customers.

    A rule fires for a customer who bought every item of its antecedent (an empty antecedent
    fires for everyone). Each consequent item of a fired rule is a candidate scored by the
    best confidence among the rules offering it; candidates rank by that confidence, then the
    best lift among those rules, then item index. Returns (items (m, k) int64 -1 padded,
    confidence (m, k) 0 padded)."""
    k = _check_k(k)
    if sparse.issparse(customer_items):
        n_items = customer_items.shape[1]
    else:
        customer_items = np.asarray(customer_items)
        if customer_items.ndim != 2:
            raise ValueError(f"customer_items must be 2-d (customers x items), got shape {customer_items.shape}")
        n_items = customer_items.shape[1]
    bought = _customer_items(customer_items, n_items)
    m = bought.shape[0]
    n_rules = len(antecedents)
    confidence = np.asarray(confidence, dtype=np.float64)
    lift = np.asarray(lift, dtype=np.float64)
    if len(consequents) != n_rules or confidence.shape != (n_rules,) or lift.shape != (n_rules,):
        raise ValueError(
            f"antecedents ({n_rules}), consequents ({len(consequents)}), confidence {confidence.shape} "
            f"and lift {lift.shape} must describe the same rules"
        )
    if n_rules and not (np.all(np.isfinite(confidence)) and np.all((confidence > 0) & (confidence <= 1))):
        raise ValueError("confidence must lie in (0, 1] for every rule")
    if n_rules and not np.all(np.isfinite(lift) & (lift > 0)):
        raise ValueError("lift must be positive and finite for every rule")
    empty_items = np.full((m, k), -1, dtype=np.int64), np.zeros((m, k), dtype=np.float64)
    if n_rules == 0 or m == 0:
        return empty_items

    def indicator(lists: Sequence[Sequence[int]], name: str) -> sparse.csr_matrix:
        lengths = np.fromiter((len(items) for items in lists), dtype=np.int64, count=n_rules)
        flat = np.fromiter((int(item) for items in lists for item in items), dtype=np.int64, count=int(lengths.sum()))
        bad = (flat < 0) | (flat >= n_items)
        if bad.any():
            raise ValueError(f"{name} name item {int(flat[bad][0])}, outside 0..{n_items - 1}")
        rows = np.repeat(np.arange(n_rules), lengths)
        matrix = sparse.csr_matrix((np.ones(len(flat)), (rows, flat)), shape=(n_rules, n_items))
        matrix.data[:] = 1.0  # an item listed twice in one rule counts once
        return matrix

    antecedent_matrix = indicator(antecedents, "antecedents")
    consequent_matrix = indicator(consequents, "consequents")
    sizes = np.diff(antecedent_matrix.indptr)
    if np.any(np.diff(consequent_matrix.indptr) == 0):
        raise ValueError(f"rule {int(np.flatnonzero(np.diff(consequent_matrix.indptr) == 0)[0])} has no consequent")

    has = bought.copy()
    has.data[:] = 1.0
    # matched[c, r] = how many of rule r's antecedent items customer c bought; fired when all.
    matched = (has @ antecedent_matrix.T).tocoo()
    full = matched.data == sizes[matched.col]
    fired_customers, fired_rules = matched.row[full], matched.col[full]
    always = np.flatnonzero(sizes == 0)
    if len(always):
        fired_customers = np.concatenate([fired_customers, np.repeat(np.arange(m), len(always))])
        fired_rules = np.concatenate([fired_rules, np.tile(always, m)])
    if not len(fired_rules):
        return empty_items
    # Expand each fired (customer, rule) to its consequent items.
    per_rule = np.diff(consequent_matrix.indptr)
    counts = per_rule[fired_rules]
    customer = np.repeat(fired_customers, counts)
    rule = np.repeat(fired_rules, counts)
    starts = np.repeat(consequent_matrix.indptr[fired_rules], counts)
    offsets = np.arange(len(rule)) - np.repeat(np.cumsum(counts) - counts, counts)
    item = consequent_matrix.indices[starts + offsets]
    if exclude_seen:
        seen = np.asarray(has[customer, item]).ravel() > 0
        customer, rule, item = customer[~seen], rule[~seen], item[~seen]
    if not len(item):
        return empty_items
    # Best (confidence, lift) per (customer, item): sort and keep the first of each pair.
    order = np.lexsort((-lift[rule], -confidence[rule], item, customer))
    customer, rule, item = customer[order], rule[order], item[order]
    first = np.ones(len(item), dtype=bool)
    first[1:] = (customer[1:] != customer[:-1]) | (item[1:] != item[:-1])
    customer, rule, item = customer[first], rule[first], item[first]
    # Rank per customer: confidence desc, lift desc, item asc.
    order = np.lexsort((item, -lift[rule], -confidence[rule], customer))
    customer, rule, item = customer[order], rule[order], item[order]
    starts_at = np.searchsorted(customer, np.arange(m))
    rank = np.arange(len(customer)) - starts_at[customer]
    keep = rank < k
    items, scores = empty_items
    items[customer[keep], rank[keep]] = item[keep]
    scores[customer[keep], rank[keep]] = confidence[rule[keep]]
    return items, scores
