"""The pure bandit engine (mlcore.engine.bandits): Thompson sampling's logged probability is the
true probability of the pick (checked against closed forms and against pick frequencies), it
concentrates on the best arm with delayed rewards, eligibility is respected, and epsilon-greedy
and softmax log exact probabilities. Arrays only: no database, no Django."""

from __future__ import annotations

import math
import unittest

import numpy as np
from scipy import integrate, stats
from scipy.special import betaln

from mlcore.engine.bandits import (
    argmax_probabilities,
    beta_posterior,
    clear_argmax_cache,
    epsilon_greedy,
    pick_from_probabilities,
    softmax_pick,
    thompson_pick,
)


def p_second_beats_first(a1: int, b1: int, a2: int, b2: int) -> float:
    """Closed form of P(X2 > X1), X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer a2
    (Evan Miller, "Formulas for Bayesian A/B testing")."""
    total = 0.0
    for i in range(a2):
        total += math.exp(betaln(a1 + i, b1 + b2) - math.log(b2 + i) - betaln(1 + i, b2) - betaln(a1, b1))
    return total


def p_argmax_by_integral(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """P(arm i is the largest) = integral of f_i(x) * prod_{j != i} F_j(x) dx, numerically."""
    k = len(alpha)
    out = np.empty(k)
    for i in range(k):

        def integrand(x: float, i: int = i) -> float:
            value = stats.beta.pdf(x, alpha[i], beta[i])
            for j in range(k):
                if j != i:
                    value *= stats.beta.cdf(x, alpha[j], beta[j])
            return value

        out[i] = integrate.quad(integrand, 0, 1, limit=200, points=[alpha[i] / (alpha[i] + beta[i])])[0]
    return out


def grid(n: int) -> np.ndarray:
    """n evenly spread uniforms (i + 0.5) / n: pick counts then equal n * p up to rounding."""
    return (np.arange(n) + 0.5) / n


class ArgmaxProbabilityTests(unittest.TestCase):
    def setUp(self):
        clear_argmax_cache()

    def test_two_arms_match_the_closed_form(self):
        draws = 200_000
        for (a1, b1), (a2, b2) in [((3, 7), (5, 6)), ((20, 180), (28, 172)), ((1, 1), (2, 1))]:
            exact = p_second_beats_first(a1, b1, a2, b2)
            estimate = argmax_probabilities(np.array([a1, a2], float), np.array([b1, b2], float), draws=draws)
            standard_error = math.sqrt(exact * (1 - exact) / draws)
            self.assertAlmostEqual(estimate.sum(), 1.0, places=12)
            self.assertLess(abs(estimate[1] - exact), 4 * standard_error, (a1, b1, a2, b2, exact, estimate))

    def test_three_arms_match_the_numeric_integral(self):
        alpha, beta = np.array([12.0, 15.0, 9.0]), np.array([88.0, 85.0, 60.0])
        exact = p_argmax_by_integral(alpha, beta)
        self.assertAlmostEqual(exact.sum(), 1.0, places=6)
        estimate = argmax_probabilities(alpha, beta, draws=100_000)
        standard_error = np.sqrt(exact * (1 - exact) / 100_000)
        np.testing.assert_array_less(np.abs(estimate - exact), 4 * standard_error + 1e-12)

    def test_ineligible_arms_get_zero_and_the_rest_renormalise_to_the_subset_argmax(self):
        alpha, beta = np.array([12.0, 15.0, 9.0]), np.array([88.0, 85.0, 60.0])
        masked = argmax_probabilities(alpha, beta, draws=100_000, eligible=np.array([True, False, True]))
        exact = p_second_beats_first(12, 88, 9, 60)  # arm 2 vs arm 0 alone
        self.assertEqual(masked[1], 0.0)
        self.assertAlmostEqual(masked.sum(), 1.0, places=12)
        self.assertLess(abs(masked[2] - exact), 4 * math.sqrt(exact * (1 - exact) / 100_000))
        only = argmax_probabilities(alpha, beta, eligible=np.array([False, True, False]))
        np.testing.assert_array_equal(only, [0.0, 1.0, 0.0])

    def test_group_rows_are_estimated_separately_and_deterministically(self):
        alpha = np.array([[10.0, 10.0], [30.0, 3.0]])
        beta = np.array([[10.0, 10.0], [3.0, 30.0]])
        table = argmax_probabilities(alpha, beta, draws=20_000, seed=7)
        self.assertEqual(table.shape, (2, 2))
        self.assertLess(abs(table[0, 0] - 0.5), 4 * math.sqrt(0.25 / 20_000))
        self.assertGreater(table[1, 0], 0.999)
        clear_argmax_cache()
        np.testing.assert_array_equal(argmax_probabilities(alpha, beta, draws=20_000, seed=7), table)

    def test_bad_posteriors_are_refused_with_the_reason(self):
        with self.assertRaisesRegex(ValueError, r"alpha must be positive"):
            argmax_probabilities(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
        with self.assertRaisesRegex(ValueError, r"same shape"):
            argmax_probabilities(np.array([1.0, 2.0]), np.array([1.0]))
        with self.assertRaisesRegex(ValueError, r"no eligible arm"):
            argmax_probabilities(np.array([1.0, 2.0]), np.array([1.0, 1.0]), eligible=np.array([False, False]))


class ThompsonPickTests(unittest.TestCase):
    def setUp(self):
        clear_argmax_cache()

    def test_logged_probability_is_the_argmax_probability_and_frequencies_match_it(self):
        alpha, beta = np.array([30.0, 36.0, 40.0, 25.0]), np.array([970.0, 964.0, 960.0, 975.0])
        n = 200_000
        uniforms = np.random.default_rng(1).random(n)
        choice, probability = thompson_pick(alpha, beta, uniforms)
        table = argmax_probabilities(alpha, beta)
        np.testing.assert_array_equal(probability, table[choice])
        frequency = np.bincount(choice, minlength=4) / n
        standard_error = np.sqrt(table * (1 - table) / n)
        np.testing.assert_array_less(np.abs(frequency - table), 4 * standard_error + 1e-12)
        # The logged value is one of the k argmax probabilities, not a per-customer sampled rate.
        self.assertEqual(set(np.unique(probability)), set(table[np.unique(choice)]))

    def test_a_customers_pick_depends_only_on_their_own_uniform(self):
        alpha, beta = np.array([3.0, 4.0, 5.0]), np.array([7.0, 6.0, 5.0])
        uniforms = np.random.default_rng(2).random(1000)
        choice, probability = thompson_pick(alpha, beta, uniforms)
        for i in (0, 17, 999):
            one_choice, one_probability = thompson_pick(alpha, beta, uniforms[i : i + 1])
            self.assertEqual((one_choice[0], one_probability[0]), (choice[i], probability[i]))
        again = thompson_pick(alpha, beta, uniforms[::-1])
        np.testing.assert_array_equal(again[0], choice[::-1])

    def test_per_customer_eligibility_is_respected_and_logged_over_the_eligible_arms(self):
        alpha, beta = np.array([20.0, 30.0, 25.0]), np.array([80.0, 70.0, 75.0])
        rng = np.random.default_rng(3)
        n = 120_000
        patterns = np.array([[True, True, True], [True, False, True], [False, True, False]])
        pattern = rng.integers(0, 3, size=n)
        eligible = patterns[pattern]
        choice, probability = thompson_pick(alpha, beta, rng.random(n), eligible=eligible)
        self.assertTrue(eligible[np.arange(n), choice].all())
        for index, mask in enumerate(patterns):
            table = argmax_probabilities(alpha, beta, eligible=mask)
            rows = pattern == index
            np.testing.assert_array_equal(probability[rows], table[choice[rows]])
            frequency = np.bincount(choice[rows], minlength=3) / rows.sum()
            standard_error = np.sqrt(table * (1 - table) / rows.sum())
            np.testing.assert_array_less(np.abs(frequency - table), 4 * standard_error + 1e-12)
        np.testing.assert_array_equal(probability[pattern == 2], 1.0)

    def test_groups_pick_from_their_own_posterior(self):
        alpha = np.array([[50.0, 5.0], [8.0, 10.0]])
        beta = np.array([[50.0, 95.0], [12.0, 10.0]])
        group = np.array([0, 1, 0, 1, 1])
        eligible = np.array([[True, True], [True, True], [True, False], [True, True], [True, False]])
        uniforms = np.array([0.5, 0.5, 0.99, 0.01, 0.7])
        choice, probability = thompson_pick(alpha, beta, uniforms, group=group, eligible=eligible)
        np.testing.assert_array_equal(choice, [0, 1, 0, 0, 0])
        table = argmax_probabilities(alpha, beta)
        self.assertTrue(0.01 < table[1, 0] < 0.5)  # group 1: arm 0 is the underdog, not hopeless
        self.assertEqual(probability[0], table[0, 0])
        self.assertEqual(probability[1], table[1, 1])
        self.assertEqual(probability[2], 1.0)  # arm 1 ineligible: arm 0 for sure
        self.assertEqual(probability[3], table[1, 0])  # u = 0.01 < P(arm 0) under group 1
        self.assertEqual(probability[4], 1.0)

    def test_concentrates_on_the_best_arm_with_delayed_rewards(self):
        rates = np.array([0.03, 0.05, 0.08, 0.04])
        rng = np.random.default_rng(4)
        successes, trials = np.zeros(4), np.zeros(4)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        best_share = []
        for _round in range(40):
            alpha, beta = beta_posterior(successes, trials)
            choice, probability = thompson_pick(alpha, beta, rng.random(2000), draws=4000, seed=_round)
            self.assertTrue(np.all((probability > 0) & (probability <= 1)))
            best_share.append(float(np.mean(choice == 2)))
            converted = rng.random(2000) < rates[choice]
            pending.append((np.bincount(choice, minlength=4), np.bincount(choice[converted], minlength=4)))
            if len(pending) > 3:  # outcomes arrive three rounds after the send
                sent, won = pending.pop(0)
                trials += sent
                successes += won
        self.assertLess(best_share[0], 0.5)
        self.assertGreater(np.mean(best_share[-5:]), 0.9)
        self.assertEqual(int(np.argmax(successes / trials)), 2)

    def test_a_zero_probability_arm_is_never_picked_even_at_the_top_of_the_unit_interval(self):
        top = np.array([np.nextafter(1.0, 0.0), 0.0, 0.5])
        choice, probability = pick_from_probabilities(np.array([0.5, 0.5, 0.0]), top)
        np.testing.assert_array_equal(choice, [1, 0, 1])
        np.testing.assert_array_equal(probability, [0.5, 0.5, 0.5])

    def test_bad_inputs_name_what_is_wrong(self):
        alpha, beta = np.array([1.0, 1.0]), np.array([1.0, 1.0])
        with self.assertRaisesRegex(ValueError, r"uniforms\[1\] = 1.0"):
            thompson_pick(alpha, beta, np.array([0.2, 1.0]))
        with self.assertRaisesRegex(ValueError, r"customer 1 has no eligible arm"):
            thompson_pick(alpha, beta, np.array([0.2, 0.3]), eligible=np.array([[True, False], [False, False]]))
        with self.assertRaisesRegex(ValueError, r"pass group"):
            thompson_pick(np.ones((2, 2)), np.ones((2, 2)), np.array([0.5]))
        with self.assertRaisesRegex(ValueError, r"group\[0\] = 2"):
            thompson_pick(np.ones((2, 2)), np.ones((2, 2)), np.array([0.5]), group=np.array([2]))
        with self.assertRaisesRegex(ValueError, r"eligible must have shape"):
            thompson_pick(alpha, beta, np.array([0.5]), eligible=np.array([[True, True, True]]))
        empty = thompson_pick(alpha, beta, np.array([]))
        self.assertEqual((empty[0].shape, empty[1].shape), ((0,), (0,)))


class BetaPosteriorTests(unittest.TestCase):
    def test_adds_successes_and_failures_to_the_prior(self):
        alpha, beta = beta_posterior(np.array([3, 0]), np.array([10, 4]), prior=(2.0, 5.0))
        np.testing.assert_array_equal(alpha, [5.0, 2.0])
        np.testing.assert_array_equal(beta, [12.0, 9.0])

    def test_more_successes_than_trials_is_an_error(self):
        with self.assertRaisesRegex(ValueError, r"successes must lie in \[0, trials\]: at \(1,\) successes=5"):
            beta_posterior(np.array([1, 5]), np.array([2, 4]))
        with self.assertRaisesRegex(ValueError, r"prior"):
            beta_posterior(np.array([1]), np.array([2]), prior=(0, 1))


class EpsilonGreedyTests(unittest.TestCase):
    def test_probabilities_are_exact_and_pick_counts_follow_them(self):
        n = 1000
        scores = np.array([[1.0, 3.0, 2.0]])
        choice, probability = epsilon_greedy(np.repeat(scores, n, axis=0), 0.3, grid(n))
        # explore 0.3 / 3 = 0.1 per arm; the greedy arm 1 gets 0.7 more
        np.testing.assert_array_equal(np.bincount(choice, minlength=3), [100, 800, 100])
        expected = np.array([0.1, 0.8, 0.1])
        np.testing.assert_allclose(probability, expected[choice], rtol=0, atol=1e-15)

    def test_a_tie_shares_the_greedy_mass_and_ineligible_arms_are_skipped(self):
        n = 1000
        scores = np.repeat(np.array([[5.0, 5.0, 1.0, 9.0]]), n, axis=0)
        eligible = np.repeat(np.array([[True, True, True, False]]), n, axis=0)
        choice, probability = epsilon_greedy(scores, 0.3, grid(n), eligible=eligible)
        # arm 3 (the best score) is ineligible; arms 0 and 1 tie: 0.1 + 0.35 each
        np.testing.assert_array_equal(np.bincount(choice, minlength=4), [450, 450, 100, 0])
        np.testing.assert_allclose(probability, np.array([0.45, 0.45, 0.1, 0.0])[choice], atol=1e-15)

    def test_each_customer_gets_its_own_scores_and_mask(self):
        scores = np.array([[0.2, 0.9], [0.7, 0.1], [0.4, 0.8]])
        eligible = np.array([[True, True], [True, True], [True, False]])
        choice, probability = epsilon_greedy(scores, 0.2, np.array([0.5, 0.05, 0.5]), eligible=eligible)
        np.testing.assert_array_equal(choice, [1, 0, 0])
        np.testing.assert_allclose(probability, [0.9, 0.9, 1.0], atol=1e-15)
        choice, probability = epsilon_greedy(scores, 0.2, np.array([0.05, 0.15, 0.5]))
        np.testing.assert_array_equal(choice, [0, 1, 1])  # both explore: u / eps * 2 -> arm 0, arm 1
        np.testing.assert_allclose(probability, [0.1, 0.1, 0.9], atol=1e-15)

    def test_epsilon_out_of_range_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"epsilon must lie in \[0, 1\]"):
            epsilon_greedy(np.ones((1, 2)), 1.5, np.array([0.1]))
        with self.assertRaisesRegex(ValueError, r"scores\[0, 1\] = nan is not finite"):
            epsilon_greedy(np.array([[1.0, np.nan]]), 0.1, np.array([0.1]))


class SoftmaxTests(unittest.TestCase):
    def test_probabilities_are_the_softmax_over_eligible_arms(self):
        n = 10_000
        scores = np.repeat(np.array([[1.0, 2.0, 0.0, 50.0]]), n, axis=0)
        eligible = np.repeat(np.array([[True, True, True, False]]), n, axis=0)
        choice, probability = softmax_pick(scores, 0.5, grid(n), eligible=eligible)
        weights = np.exp(np.array([1.0, 2.0, 0.0]) / 0.5)
        expected = np.append(weights / weights.sum(), 0.0)
        np.testing.assert_allclose(probability, expected[choice], rtol=1e-12)
        counts = np.bincount(choice, minlength=4)
        np.testing.assert_array_less(np.abs(counts - n * expected), 1.0 + 1e-9)
        self.assertEqual(counts[3], 0)

    def test_temperature_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, r"temperature must be positive"):
            softmax_pick(np.ones((1, 2)), 0.0, np.array([0.1]))


if __name__ == "__main__":
    unittest.main()
