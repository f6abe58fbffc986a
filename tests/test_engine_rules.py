"""The pure association-rule engine (mlcore.engine.rules): frequent itemsets identical to
mlxtend's fpgrowth on the real Online Retail baskets, rules with exact metrics on hand-built
baskets, likely buyers, and proof that it imports no Django. No database needed."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pandas as pd

from mlcore.engine.rules import (
    TooManyItemsets,
    association_rules,
    baskets_to_matrix,
    frequent_itemsets,
    likely_buyers,
    read_baskets,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BASKETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "online-retail-baskets.txt"
SHIPPED_BASKETS = REPO_ROOT / "marketing" / "demo_data" / "online-retail-baskets.txt.gz"

# Five shop baskets small enough to check by hand (n = 5):
#   bread 4/5, milk 3/5, butter 3/5, beer 1/5; {milk, bread} 3/5, {bread, butter} 3/5,
#   {milk, butter} 2/5, {milk, bread, butter} 2/5. Basket 4 lists butter twice: it counts once.
SHOP_BASKETS = [
    ["milk", "bread"],
    ["milk", "bread", "butter"],
    ["bread", "butter"],
    ["milk", "bread", "butter", "butter"],
    ["beer"],
]


def load_real_baskets() -> list[list[str]]:
    """The shared copy when this checkout sits beside it, else the gzipped copy shipped in the repo."""
    return read_baskets(SHARED_BASKETS if SHARED_BASKETS.exists() else SHIPPED_BASKETS)  # .gz read through gzip


def as_dict(itemsets: pd.DataFrame) -> dict[frozenset, float]:
    return dict(zip(itemsets["itemsets"], itemsets["support"], strict=True))


def rule_list(rules: pd.DataFrame) -> list[tuple[tuple, tuple]]:
    return [
        (tuple(sorted(a)), tuple(sorted(c))) for a, c in zip(rules["antecedents"], rules["consequents"], strict=True)
    ]


class OnlineRetailItemsetsTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from mlxtend.frequent_patterns import fpgrowth
        from mlxtend.preprocessing import TransactionEncoder

        cls.baskets = load_real_baskets()
        encoder = TransactionEncoder().fit(cls.baskets)
        one_hot = pd.DataFrame.sparse.from_spmatrix(
            encoder.transform(cls.baskets, sparse=True), columns=encoder.columns_
        )
        cls.one_hot = one_hot
        cls.mlxtend_itemsets = fpgrowth(one_hot, min_support=0.01, use_colnames=True)
        cls.itemsets = frequent_itemsets(cls.baskets, min_support=0.01)

    def test_the_file_holds_28816_baskets(self):
        self.assertEqual(len(self.baskets), 28816)

    def test_the_shipped_gzipped_copy_holds_the_same_baskets(self):
        with gzip.open(SHIPPED_BASKETS, "rt", encoding="utf-8") as lines:
            shipped = [line.rstrip("\n").split(",") for line in lines]
        self.assertEqual(shipped, self.baskets)

    def test_it_finds_exactly_721_frequent_itemsets_at_min_support_1_percent(self):
        self.assertEqual(len(self.itemsets), 721)
        self.assertEqual(len(self.mlxtend_itemsets), 721)

    def test_itemsets_and_supports_are_identical_to_mlxtend_fpgrowth(self):
        # Exact float equality: support is the same count / number of baskets in both.
        self.assertEqual(as_dict(self.itemsets), as_dict(self.mlxtend_itemsets))

    def test_sizes_of_the_721_itemsets(self):
        sizes = self.itemsets["itemsets"].map(len).value_counts().sort_index().to_dict()
        self.assertEqual(sizes, {1: 500, 2: 209, 3: 12})
        self.assertEqual(self.itemsets["itemsets"].iloc[0], frozenset({"85123A"}))  # the most bought item
        self.assertGreaterEqual(self.itemsets["support"].min(), 0.01)

    def test_matrix_and_one_hot_inputs_give_the_same_itemsets(self):
        matrix, labels = baskets_to_matrix(self.baskets)
        self.assertEqual(matrix.shape, (28816, len(labels)))
        self.assertEqual(labels, sorted(labels))
        from_matrix = frequent_itemsets((matrix, labels), min_support=0.01)
        from_one_hot = frequent_itemsets(self.one_hot, min_support=0.01)
        pd.testing.assert_frame_equal(from_matrix, self.itemsets)
        pd.testing.assert_frame_equal(from_one_hot, self.itemsets)

    def test_max_len_matches_mlxtend(self):
        from mlxtend.frequent_patterns import fpgrowth

        ours = frequent_itemsets(self.baskets, min_support=0.01, max_len=2)
        theirs = fpgrowth(self.one_hot, min_support=0.01, use_colnames=True, max_len=2)
        self.assertEqual(as_dict(ours), as_dict(theirs))
        self.assertEqual(ours["itemsets"].map(len).max(), 2)

    def test_rules_match_mlxtend_association_rules(self):
        from mlxtend.frequent_patterns import association_rules as mlxtend_rules

        ours = association_rules(self.itemsets, min_confidence=0.3, min_lift=1.0)
        theirs = mlxtend_rules(self.mlxtend_itemsets, num_itemsets=28816, metric="confidence", min_threshold=0.3)
        theirs = theirs[theirs["lift"] >= 1.0]
        self.assertEqual(len(ours), 318)
        by_rule = {
            (a, c): (s, conf, lift)
            for a, c, s, conf, lift in zip(
                theirs["antecedents"],
                theirs["consequents"],
                theirs["support"],
                theirs["confidence"],
                theirs["lift"],
                strict=True,
            )
        }
        self.assertEqual(set(zip(ours["antecedents"], ours["consequents"], strict=True)), set(by_rule))
        for row in ours.itertuples(index=False):
            support, confidence, lift = by_rule[(row.antecedents, row.consequents)]
            # mlxtend computes confidence as (s_AC * n) / (s_A * n): equal up to the last bits.
            self.assertEqual(row.support, support)
            self.assertAlmostEqual(row.confidence, confidence, places=12)
            self.assertAlmostEqual(row.lift, lift, places=12)

    def test_rule_order_is_deterministic_and_by_lift_then_confidence(self):
        first = association_rules(self.itemsets, min_confidence=0.3)
        second = association_rules(frequent_itemsets(self.baskets, min_support=0.01), min_confidence=0.3)
        pd.testing.assert_frame_equal(first, second)
        # Also from mlxtend's itemsets, which come in another row order.
        third = association_rules(self.mlxtend_itemsets, min_confidence=0.3)
        self.assertEqual(rule_list(first), rule_list(third))
        keys = list(zip(first["lift"].round(12), first["confidence"].round(12), strict=True))
        self.assertEqual(keys, sorted(keys, key=lambda k: (-k[0], -k[1])))


class ShopBasketsTests(unittest.TestCase):
    def setUp(self):
        self.itemsets = frequent_itemsets(SHOP_BASKETS, min_support=0.4)

    def test_it_deduplicates_items_within_a_basket(self):
        matrix, labels = baskets_to_matrix(SHOP_BASKETS)
        self.assertEqual(labels, ["beer", "bread", "butter", "milk"])
        self.assertEqual(matrix.dtype, bool)
        self.assertEqual(matrix.sum(axis=0).tolist(), [[1, 4, 3, 3]])
        self.assertEqual(matrix[3].toarray().tolist(), [[False, True, True, True]])

    def test_itemsets_with_exact_supports_in_a_stable_order(self):
        self.assertEqual(
            list(zip(self.itemsets["itemsets"], self.itemsets["support"], strict=True)),
            [
                (frozenset({"bread"}), 0.8),
                (frozenset({"butter"}), 0.6),
                (frozenset({"milk"}), 0.6),
                (frozenset({"bread", "butter"}), 0.6),
                (frozenset({"bread", "milk"}), 0.6),
                (frozenset({"butter", "milk"}), 0.4),
                (frozenset({"bread", "butter", "milk"}), 0.4),
            ],
        )

    def test_support_threshold_is_inclusive(self):
        # beer is in 1 of 5 baskets: in at 0.2, out just above.
        self.assertIn(frozenset({"beer"}), as_dict(frequent_itemsets(SHOP_BASKETS, min_support=0.2)))
        self.assertNotIn(frozenset({"beer"}), as_dict(frequent_itemsets(SHOP_BASKETS, min_support=0.21)))

    def test_rule_metrics_are_exact(self):
        rules = association_rules(self.itemsets, min_confidence=0.5)
        by_rule = {
            (a, c): row
            for a, c, row in zip(rules["antecedents"], rules["consequents"], rules.itertuples(), strict=True)
        }
        milk_to_bread = by_rule[(frozenset({"milk"}), frozenset({"bread"}))]
        self.assertAlmostEqual(milk_to_bread.support, 0.6)
        self.assertAlmostEqual(milk_to_bread.confidence, 1.0)
        self.assertAlmostEqual(milk_to_bread.lift, 1.25)  # 1.0 / 0.8
        self.assertAlmostEqual(milk_to_bread.leverage, 0.12)  # 0.6 - 0.6 * 0.8
        self.assertEqual(milk_to_bread.conviction, float("inf"))
        bread_to_milk = by_rule[(frozenset({"bread"}), frozenset({"milk"}))]
        self.assertAlmostEqual(bread_to_milk.confidence, 0.75)  # 0.6 / 0.8
        self.assertAlmostEqual(bread_to_milk.lift, 1.25)  # 0.75 / 0.6
        self.assertAlmostEqual(bread_to_milk.conviction, 1.6)  # (1 - 0.6) / (1 - 0.75)
        pair_to_milk = by_rule[(frozenset({"bread", "butter"}), frozenset({"milk"}))]
        self.assertAlmostEqual(pair_to_milk.support, 0.4)
        self.assertAlmostEqual(pair_to_milk.confidence, 2 / 3)  # 0.4 / 0.6
        self.assertAlmostEqual(pair_to_milk.lift, 10 / 9)  # (2/3) / 0.6

    def test_rules_are_ordered_by_lift_then_confidence_then_items(self):
        rules = association_rules(self.itemsets, min_confidence=0.5)
        self.assertEqual(
            rule_list(rules),
            [
                # lift 1.25, confidence 1
                (("butter",), ("bread",)),
                (("butter", "milk"), ("bread",)),
                (("milk",), ("bread",)),
                # lift 1.25, confidence 0.75, then 0.5
                (("bread",), ("butter",)),
                (("bread",), ("milk",)),
                (("bread",), ("butter", "milk")),
                # lift 10/9, confidence 2/3
                (("bread", "butter"), ("milk",)),
                (("bread", "milk"), ("butter",)),
                (("butter",), ("bread", "milk")),
                (("butter",), ("milk",)),
                (("milk",), ("bread", "butter")),
                (("milk",), ("butter",)),
            ],
        )

    def test_min_lift_and_min_confidence_filter_rules(self):
        self.assertEqual(len(association_rules(self.itemsets, min_confidence=0.5, min_lift=1.0)), 12)
        self.assertEqual(
            rule_list(association_rules(self.itemsets, min_confidence=0.6, min_lift=1.2)),
            [
                (("butter",), ("bread",)),
                (("butter", "milk"), ("bread",)),
                (("milk",), ("bread",)),
                (("bread",), ("butter",)),
                (("bread",), ("milk",)),
            ],
        )
        self.assertEqual(len(association_rules(self.itemsets, min_confidence=0.5, min_lift=1.3)), 0)

    def test_no_rules_gives_an_empty_frame_with_the_columns(self):
        rules = association_rules(frequent_itemsets(SHOP_BASKETS, min_support=0.7), min_confidence=0.1)
        self.assertEqual(len(rules), 0)
        self.assertIn("lift", rules.columns)
        self.assertEqual(likely_buyers({"c1": {"milk"}}, rules, "bread"), {})

    def test_mining_stops_past_max_itemsets_and_rules_past_max_candidates(self):
        # One 12-item basket at support 1: its 4,095 subsets are all frequent.
        basket = [[f"i{n:02d}" for n in range(12)]]
        self.assertEqual(len(frequent_itemsets(basket, 1.0, max_itemsets=4095)), 4095)
        with self.assertRaisesRegex(TooManyItemsets, r"^more than 4094 frequent itemsets at min_support 1.0$"):
            frequent_itemsets(basket, 1.0, max_itemsets=4094)
        with self.assertRaisesRegex(TooManyItemsets, r"^more than 70 frequent itemsets"):
            frequent_itemsets(basket, 1.0, max_itemsets=70)  # 12 items + 66 pairs: stops at the pairs
        # Splits of every itemset of 2+ items: sum over k of C(12, k)(2^k - 2) = 3^12 - 2^13 + 1.
        itemsets = frequent_itemsets(basket, 1.0)
        candidates = 3**12 - 2**13 + 1
        self.assertEqual(len(association_rules(itemsets, 0.5, max_candidates=candidates)), candidates)
        with self.assertRaisesRegex(TooManyItemsets, f"^{candidates} candidate rules, more than {candidates - 1}$"):
            association_rules(itemsets, 0.5, max_candidates=candidates - 1)

    def test_it_rejects_a_support_outside_0_to_1(self):
        for bad in (0, -0.1, 1.5):
            with self.assertRaises(ValueError):
                frequent_itemsets(SHOP_BASKETS, min_support=bad)


class LikelyBuyersTests(unittest.TestCase):
    RULES = pd.DataFrame(
        {
            "antecedents": [
                frozenset({"A"}),
                frozenset({"A", "B"}),
                frozenset({"C"}),
                frozenset({"E"}),
                frozenset({"X"}),
            ],
            "consequents": [
                frozenset({"X"}),
                frozenset({"X"}),
                frozenset({"X", "D"}),
                frozenset({"F"}),
                frozenset({"A"}),
            ],
            "confidence": [0.5, 0.8, 0.6, 0.9, 0.95],
        }
    )

    def test_it_scores_customers_by_their_best_matching_rule(self):
        customers = {
            "c1": {"A"},  # A -> X: 0.5
            "c2": {"A", "B"},  # A -> X 0.5 and A,B -> X 0.8: the best, 0.8
            "c3": {"A", "B", "X"},  # already bought X: left out
            "c4": {"C"},  # C -> X,D: 0.6
            "c5": {"E"},  # E -> F does not lead to X
            "c6": {"B"},  # B alone matches no rule
            "c7": {"A", "C"},  # 0.5 and 0.6: 0.6
            "c8": set(),
        }
        buyers = likely_buyers(customers, self.RULES, "X")
        self.assertEqual(buyers, {"c2": 0.8, "c4": 0.6, "c7": 0.6, "c1": 0.5})
        self.assertEqual(list(buyers), ["c2", "c4", "c7", "c1"])  # score descending, then customer

    def test_an_item_no_rule_leads_to_has_no_likely_buyers(self):
        self.assertEqual(likely_buyers({"c1": {"A", "B", "C"}}, self.RULES, "Z"), {})

    def test_it_works_on_mined_rules(self):
        rules = association_rules(frequent_itemsets(SHOP_BASKETS, min_support=0.4), min_confidence=0.5)
        customers = {101: {"milk"}, 102: {"butter", "milk"}, 103: {"milk", "bread"}, 104: {"beer"}, 105: {"butter"}}
        # milk -> bread, butter -> bread, {butter, milk} -> bread all have confidence 1.
        self.assertEqual(likely_buyers(customers, rules, "bread"), {101: 1.0, 102: 1.0, 105: 1.0})
        # 101-103 bought milk already; 105 matches butter -> milk and butter -> bread, milk (2/3).
        self.assertEqual(likely_buyers(customers, rules, "milk"), {105: 0.4 / 0.6})


class CommandLineTests(unittest.TestCase):
    def clean_env(self) -> dict[str, str]:
        # No DJANGO_SETTINGS_MODULE: the engine must not need it.
        return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)}

    def test_the_command_line_prints_counts_and_top_rules(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "baskets.txt"
            path.write_text("\n".join(",".join(basket) for basket in SHOP_BASKETS) + "\n", encoding="utf-8")
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mlcore.engine.rules",
                    str(path),
                    "--min-support",
                    "0.4",
                    "--min-confidence",
                    "0.6",
                    "--min-lift",
                    "1.2",
                    "--top",
                    "2",
                ],
                cwd=REPO_ROOT,
                env=self.clean_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertTrue(lines[0].startswith("baskets: 5  distinct items: 4"), lines[0])
        self.assertTrue(
            lines[1].startswith("frequent itemsets at min support 0.4: 7 (3 of size 1, 3 of size 2, 1 of size 3)"),
            lines[1],
        )
        self.assertTrue(lines[2].startswith("rules at min confidence 0.6, min lift 1.2: 5 in "), lines[2])
        self.assertEqual(
            lines[3:],
            [
                "  butter -> bread  support 0.6000  confidence 1.000  lift 1.25",
                "  butter, milk -> bread  support 0.4000  confidence 1.000  lift 1.25",
            ],
        )
