"""Recommendations (mlcore.engine.recommend): item-based collaborative filtering on a hand-built
customer x product matrix (exact cosine neighbours and scores, bought products excluded, -1
padding, popular filler, artifact round trip) and association-rule next-best-offer (ordering by
confidence, then lift, then product; empty antecedents; bad rules refused). No Django."""

from __future__ import annotations

import math
import unittest

import numpy as np
from scipy import sparse

from mlcore.engine.recommend import ItemCF, rules_recommend

# Five customers x five products (1 = bought):
#            p0 p1 p2 p3 p4
PURCHASES = np.array(
    [
        [1, 1, 0, 0, 0],  # c0
        [1, 1, 1, 0, 0],  # c1
        [0, 1, 1, 0, 0],  # c2
        [0, 0, 0, 1, 1],  # c3
        [1, 0, 0, 0, 1],  # c4
    ]
)
# Product columns: p0 {c0,c1,c4}, p1 {c0,c1,c2}, p2 {c1,c2}, p3 {c3}, p4 {c3,c4}, so
# cos(p0,p1) = 2/3, cos(p0,p2) = 1/sqrt(6), cos(p1,p2) = 2/sqrt(6), cos(p3,p4) = 1/sqrt(2),
# cos(p0,p4) = 1/sqrt(6); every other pair shares no customer.
C01, C02, C12, C34, C04 = 2 / 3, 1 / math.sqrt(6), 2 / math.sqrt(6), 1 / math.sqrt(2), 1 / math.sqrt(6)


def fitted(neighbours: int = 2) -> ItemCF:
    customers, items = np.nonzero(PURCHASES)
    return ItemCF.fit(customers, items, None, n_customers=5, n_items=5, neighbours=neighbours)


class ItemCFTests(unittest.TestCase):
    def test_similarity_keeps_each_products_top_neighbours_by_cosine(self):
        model = fitted(neighbours=2)
        expected = np.array(
            [
                # p0: p1 (2/3), then p2 and p4 tie at 1/sqrt(6): the lower index wins
                [0, C01, C02, 0, 0],
                [C01, 0, C12, 0, 0],
                [C02, C12, 0, 0, 0],
                [0, 0, 0, 0, C34],  # p3 has one neighbour
                [C04, 0, 0, C34, 0],
            ]
        )
        np.testing.assert_allclose(model.similarity.toarray(), expected, rtol=1e-12)
        self.assertEqual(model.similarity.nnz, 9)
        np.testing.assert_array_equal(model.popularity, [3, 3, 2, 1, 2])
        items, scores = model.neighbours_of(np.array([4, 3]), k=3)
        np.testing.assert_array_equal(items, [[3, 0, -1], [4, -1, -1]])
        np.testing.assert_allclose(scores, [[C34, C04, 0], [C34, 0, 0]], rtol=1e-12)

    def test_recommendations_exclude_bought_products_and_pad_with_minus_one(self):
        model = fitted(neighbours=2)
        items, scores = model.recommend(sparse.csr_matrix(PURCHASES), k=3)
        np.testing.assert_array_equal(
            items,
            [
                [2, -1, -1],  # c0 {p0,p1}: p2 from both (1/sqrt(6) + 2/sqrt(6))
                [-1, -1, -1],  # c1 bought p0-p2, whose neighbours are all p0-p2
                [0, -1, -1],  # c2 {p1,p2}: p0 from both
                [0, -1, -1],  # c3 {p3,p4}: p4's neighbour p0
                [3, 1, 2],  # c4 {p0,p4}: p3 (from p4), p1, p2 (from p0)
            ],
        )
        np.testing.assert_allclose(
            scores,
            [[C02 + C12, 0, 0], [0, 0, 0], [C01 + C02, 0, 0], [C04, 0, 0], [C34, C01, C02]],
            rtol=1e-12,
        )

    def test_seen_products_compete_when_not_excluded(self):
        model = fitted(neighbours=2)
        items, scores = model.recommend(sparse.csr_matrix(PURCHASES[:1]), k=4, exclude_seen=False)
        # c0: p2 = 1/sqrt(6) + 2/sqrt(6); p0 (from p1) and p1 (from p0) tie at 2/3: lower index first
        np.testing.assert_array_equal(items, [[2, 0, 1, -1]])
        np.testing.assert_allclose(scores, [[C02 + C12, C01, C01, 0]], rtol=1e-12)

    def test_purchase_weights_scale_the_votes(self):
        model = fitted(neighbours=2)
        # A new customer who bought p0 three times and p4 once (dense input works too).
        items, scores = model.recommend(np.array([[3, 0, 0, 0, 1]]), k=3)
        np.testing.assert_array_equal(items, [[1, 2, 3]])
        np.testing.assert_allclose(scores, [[3 * C01, 3 * C02, C34]], rtol=1e-12)

    def test_repeated_order_lines_add_up_in_fit(self):
        model = ItemCF.fit(
            np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 1.0, 2.0]), 2, 2, neighbours=5
        )
        # columns p0 = (2, 0), p1 = (1, 2): cosine 2 / (2 * sqrt(5))
        self.assertAlmostEqual(model.similarity[0, 1], 1 / math.sqrt(5), places=12)

    def test_popular_products_fill_short_lists_only_when_asked(self):
        model = fitted(neighbours=2)
        items, scores = model.recommend(sparse.csr_matrix(PURCHASES), k=3, fill_popular=True)
        # popularity order: p0, p1 (3 buyers, lower index first), p2, p4 (2), p3 (1)
        np.testing.assert_array_equal(items, [[2, 4, 3], [4, 3, -1], [0, 4, 3], [0, 1, 2], [3, 1, 2]])
        self.assertEqual(scores[0, 1], 0.0)
        items, _ = model.recommend(sparse.csr_matrix((1, 5)), k=2, fill_popular=True)
        np.testing.assert_array_equal(items, [[0, 1]])

    def test_the_artifact_round_trips(self):
        model = fitted(neighbours=2)
        blob = model.to_bytes()
        self.assertIsInstance(blob, bytes)
        loaded = ItemCF.from_bytes(blob)
        self.assertEqual((loaded.n_items, loaded.neighbours), (5, 2))
        self.assertEqual((loaded.similarity != model.similarity).nnz, 0)
        np.testing.assert_array_equal(loaded.popularity, model.popularity)
        for a, b in zip(loaded.recommend(PURCHASES, k=3), model.recommend(PURCHASES, k=3), strict=True):
            np.testing.assert_array_equal(a, b)
        with self.assertRaisesRegex(ValueError, "not an ItemCF artifact"):
            ItemCF.from_bytes(b"PK\x03\x04junk")

    def test_bad_inputs_are_refused_with_the_reason(self):
        with self.assertRaisesRegex(ValueError, r"item_idx\[1\] = 7 is outside 0..4"):
            ItemCF.fit(np.array([0, 1]), np.array([0, 7]), None, 2, 5)
        with self.assertRaisesRegex(ValueError, r"weight\[0\] = -1.0 must be finite and >= 0"):
            ItemCF.fit(np.array([0]), np.array([0]), np.array([-1.0]), 1, 5)
        with self.assertRaisesRegex(ValueError, r"neighbours must be >= 1"):
            ItemCF.fit(np.array([0]), np.array([0]), None, 1, 5, neighbours=0)
        with self.assertRaisesRegex(ValueError, r"customer_items has 4 item columns, the model has 5"):
            fitted().recommend(np.zeros((1, 4)))
        with self.assertRaisesRegex(ValueError, r"k must be >= 1"):
            fitted().recommend(PURCHASES, k=0)


class RulesRecommendTests(unittest.TestCase):
    # rules: {p0} -> {p2} (conf 0.5, lift 1.2); {p0, p1} -> {p3} (0.6, 2.0); {p1} -> {p3, p4} (0.6, 3.0);
    # {} -> {p4} (0.2, 1.0): fires for everyone; {p4} -> {p2} (0.9, 1.1)
    antecedents = [[0], [0, 1], [1], [], [4]]
    consequents = [[2], [3], [3, 4], [4], [2]]
    confidence = [0.5, 0.6, 0.6, 0.2, 0.9]
    lift = [1.2, 2.0, 3.0, 1.0, 1.1]

    def recommend(self, customer_items, k=5, exclude_seen=True):
        return rules_recommend(
            sparse.csr_matrix(customer_items),
            self.antecedents,
            self.consequents,
            self.confidence,
            self.lift,
            k=k,
            exclude_seen=exclude_seen,
        )

    def test_next_best_offer_orders_by_confidence_then_lift_then_product(self):
        items, scores = self.recommend(PURCHASES, k=3)
        np.testing.assert_array_equal(
            items,
            [
                # c0 {p0,p1}: p3 and p4 at 0.6, both with best lift 3.0 (rule 2), so p3 first by
                # index; then p2 at 0.5
                [3, 4, 2],
                [3, 4, -1],  # c1 {p0,p1,p2}: p2 bought
                [3, 4, -1],  # c2 {p1,p2}
                [2, -1, -1],  # c3 {p3,p4}: {p4} -> p2 at 0.9; p4 bought
                [2, -1, -1],  # c4 {p0,p4}: p2 at max(0.5, 0.9)
            ],
        )
        np.testing.assert_allclose(scores, [[0.6, 0.6, 0.5], [0.6, 0.6, 0], [0.6, 0.6, 0], [0.9, 0, 0], [0.9, 0, 0]])

    def test_lift_breaks_confidence_ties(self):
        items, scores = rules_recommend(
            sparse.csr_matrix(np.array([[1, 0, 0, 0]])),
            [[0], [0]],
            [[3], [2]],
            [0.4, 0.4],
            [1.5, 2.5],
            k=2,
        )
        np.testing.assert_array_equal(items, [[2, 3]])
        np.testing.assert_allclose(scores, [[0.4, 0.4]])

    def test_bought_products_are_offered_when_not_excluded_and_empty_antecedents_fire_for_everyone(self):
        items, scores = self.recommend(np.zeros((1, 5)), k=3)
        np.testing.assert_array_equal(items, [[4, -1, -1]])
        np.testing.assert_allclose(scores, [[0.2, 0, 0]])
        items, _ = self.recommend(PURCHASES[3:4], k=3, exclude_seen=False)
        np.testing.assert_array_equal(items, [[2, 4, -1]])

    def test_no_rules_means_no_offers(self):
        items, scores = rules_recommend(sparse.csr_matrix(PURCHASES), [], [], [], [], k=2)
        np.testing.assert_array_equal(items, np.full((5, 2), -1))
        np.testing.assert_array_equal(scores, np.zeros((5, 2)))

    def test_bad_rules_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"must describe the same rules"):
            rules_recommend(PURCHASES, [[0]], [[1], [2]], [0.5], [1.0])
        with self.assertRaisesRegex(ValueError, r"consequents name item 9, outside 0..4"):
            rules_recommend(PURCHASES, [[0]], [[9]], [0.5], [1.0])
        with self.assertRaisesRegex(ValueError, r"rule 0 has no consequent"):
            rules_recommend(PURCHASES, [[0]], [[]], [0.5], [1.0])
        with self.assertRaisesRegex(ValueError, r"confidence must lie in \(0, 1\]"):
            rules_recommend(PURCHASES, [[0]], [[1]], [1.5], [1.0])


if __name__ == "__main__":
    unittest.main()
