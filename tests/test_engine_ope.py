"""Off-policy evaluation (mlcore.engine.ope): on synthetic logs from a known logging policy and
a known reward model, every estimator's confidence interval covers the exactly computed value
of the target policy (and covers it about 95% of the time over replications); the estimators
equal their closed forms on a hand example; bad inputs are refused with the field and row.
Arrays only: no database, no Django."""

from __future__ import annotations

import math
import unittest

import numpy as np

from mlcore.engine.ope import ESTIMATORS, OPEResult, direct_method, doubly_robust, evaluate_all, ips, snips

Z95 = 1.959963984540054

# Three customer contexts, three creatives. The truth is computable exactly:
# V(pi) = sum_x P(x) sum_a pi(a|x) R(x, a) = 0.5*0.10 + 0.3*0.08 + 0.2*(0.1*0.05 + 0.1*0.05 + 0.8*0.15) = 0.1
CONTEXT_SHARE = np.array([0.5, 0.3, 0.2])
REWARD_RATE = np.array([[0.02, 0.05, 0.10], [0.08, 0.03, 0.04], [0.05, 0.05, 0.15]])
LOGGING = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]])
TARGET = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]])
TRUE_VALUE = float(np.sum(CONTEXT_SHARE[:, None] * TARGET * REWARD_RATE))


def logged_data(n: int, seed: int) -> dict:
    """Sends logged by LOGGING: context, the action it drew with its probability, and the outcome."""
    rng = np.random.default_rng(seed)
    context = rng.choice(3, size=n, p=CONTEXT_SHARE)
    cdf = np.cumsum(LOGGING[context], axis=1)
    action = np.minimum((rng.random(n)[:, None] >= cdf).sum(axis=1), 2)
    reward = (rng.random(n) < REWARD_RATE[context, action]).astype(float)
    return {
        "rewards": reward,
        "actions": action,
        "logged_propensities": LOGGING[context, action],
        "target_probs": TARGET[context],
        "context": context,
    }


class SyntheticTruthTests(unittest.TestCase):
    def test_the_planted_truth_is_what_the_comment_says(self):
        self.assertAlmostEqual(TRUE_VALUE, 0.1, places=15)

    def test_every_estimator_covers_the_true_value_of_the_target_policy(self):
        data = logged_data(50_000, seed=11)
        context = data.pop("context")
        exact_model = REWARD_RATE[context]
        biased_model = np.clip(REWARD_RATE[context] + 0.03, 0, 1)
        results = [
            ips(**data),
            snips(**data),
            direct_method(**data, reward_predictions=exact_model),
            doubly_robust(**data, reward_predictions=exact_model),
            doubly_robust(**data, reward_predictions=biased_model),  # DR survives a wrong reward model
        ]
        for result in results:
            self.assertEqual(result.n, 50_000)
            self.assertLessEqual(result.ci_low, TRUE_VALUE, result)
            self.assertGreaterEqual(result.ci_high, TRUE_VALUE, result)
            self.assertLess(result.ci_high - result.ci_low, 0.02, result)
        # The direct method is only as good as its model: a biased one misses, and its interval
        # (sampling noise only) does not warn about it. That is why DR is the default.
        biased = direct_method(**data, reward_predictions=biased_model)
        self.assertGreater(biased.ci_low, TRUE_VALUE)
        # The target logs to the logging policy's action 2 in context 0 only 10% of the time:
        # the effective sample size is well below n.
        self.assertLess(results[0].ess, 0.5 * 50_000)
        self.assertEqual(results[2].ess, 50_000)

    def test_the_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time(self):
        covered = {name: 0 for name in ("ips", "snips", "direct_method", "doubly_robust")}
        replications = 300
        for seed in range(replications):
            data = logged_data(3000, seed=1000 + seed)
            context = data.pop("context")
            results = evaluate_all(**data, reward_predictions=np.clip(REWARD_RATE[context] - 0.02, 0, 1))
            results["direct_method"] = direct_method(**data, reward_predictions=REWARD_RATE[context])
            for name, result in results.items():
                covered[name] += result.ci_low <= TRUE_VALUE <= result.ci_high
        for name, count in covered.items():
            # 95% nominal; +-3 binomial standard errors over 300 replications is +-0.038.
            self.assertGreater(count / replications, 0.91, (name, count))
            self.assertLessEqual(count / replications, 0.99, (name, count))

    def test_when_the_target_is_the_logging_policy_ips_and_snips_are_the_mean_reward(self):
        data = logged_data(5000, seed=3)
        context = data.pop("context")
        data["target_probs"] = LOGGING[context]
        mean = data["rewards"].mean()
        self.assertAlmostEqual(ips(**data).value, mean, places=12)
        self.assertAlmostEqual(snips(**data).value, mean, places=12)
        self.assertAlmostEqual(ips(**data).ess, 5000, places=6)


class HandExampleTests(unittest.TestCase):
    """Four sends, two creatives; weights pi/mu = 0.8/0.5, 0.5/0.5, 1/0.25, 1/0.5 = 1.6, 1, 4, 2."""

    rewards = np.array([1.0, 0.0, 1.0, 0.0])
    actions = np.array([0, 1, 1, 0])
    propensities = np.array([0.5, 0.5, 0.25, 0.5])
    target = np.array([[0.8, 0.2], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
    predictions = np.array([[0.5, 0.2], [0.1, 0.3], [0.4, 0.6], [0.2, 0.2]])

    def args(self):
        return self.rewards, self.actions, self.propensities, self.target

    def test_ips_is_the_mean_of_reward_times_weight(self):
        result = ips(*self.args())
        terms = np.array([1.6, 0.0, 4.0, 0.0])
        self.assertAlmostEqual(result.value, 1.4, places=12)
        std_error = math.sqrt(((terms - 1.4) ** 2).sum() / 3) / 2  # sample sd / sqrt(n)
        self.assertAlmostEqual(result.std_error, std_error, places=12)
        self.assertAlmostEqual(result.ci_low, 1.4 - Z95 * std_error, places=12)
        self.assertAlmostEqual(result.ci_high, 1.4 + Z95 * std_error, places=12)
        self.assertEqual((result.n, result.max_weight, result.clipped, result.estimator), (4, 4.0, 0, "ips"))
        self.assertAlmostEqual(result.ess, 8.6**2 / (1.6**2 + 1 + 16 + 4), places=12)

    def test_snips_is_the_weighted_mean_with_the_delta_method_interval(self):
        result = snips(*self.args())
        weights = np.array([1.6, 1.0, 4.0, 2.0])
        value = 5.6 / 8.6
        self.assertAlmostEqual(result.value, value, places=12)
        std_error = math.sqrt((weights**2 * (self.rewards - value) ** 2).sum() * 4 / 3) / 8.6
        self.assertAlmostEqual(result.std_error, std_error, places=12)
        self.assertAlmostEqual(result.ci_high - result.value, Z95 * std_error, places=12)

    def test_direct_method_and_doubly_robust_closed_forms(self):
        dm = direct_method(*self.args(), self.predictions)
        # sum_a pi * r_hat per row: 0.44, 0.2, 0.6, 0.2
        self.assertAlmostEqual(dm.value, 0.36, places=12)
        dr = doubly_robust(*self.args(), self.predictions)
        # plus w * (r - r_hat(a)): 1.6*0.5, 1*(-0.3), 4*0.4, 2*(-0.2) -> rows 1.24, -0.1, 2.2, -0.2
        self.assertAlmostEqual(dr.value, 0.785, places=12)
        terms = np.array([1.24, -0.1, 2.2, -0.2])
        self.assertAlmostEqual(dr.std_error, terms.std(ddof=1) / 2, places=12)

    def test_clip_caps_the_weights_only_when_asked(self):
        clipped = ips(*self.args(), clip=2.0)
        self.assertAlmostEqual(clipped.value, (1.6 + 2.0) / 4, places=12)
        self.assertEqual((clipped.clipped, clipped.max_weight), (1, 2.0))
        self.assertAlmostEqual(snips(*self.args(), clip=2.0).value, 3.6 / 6.6, places=12)

    def test_every_estimator_takes_one_call_shape_and_results_serialise(self):
        results = evaluate_all(*self.args(), self.predictions)
        self.assertEqual(list(results), list(ESTIMATORS))
        for name, result in results.items():
            self.assertIsInstance(result, OPEResult)
            self.assertEqual(result.as_dict()["estimator"], name)
            self.assertEqual(result.as_dict()["confidence"], 0.95)
        self.assertEqual(list(evaluate_all(*self.args())), ["ips", "snips"])
        wider = ips(*self.args(), confidence=0.99)
        self.assertGreater(wider.ci_high, results["ips"].ci_high)


class BadInputTests(unittest.TestCase):
    def setUp(self):
        self.good = {
            "rewards": np.array([1.0, 0.0, 1.0]),
            "actions": np.array([0, 1, 1]),
            "logged_propensities": np.array([0.5, 0.5, 0.25]),
            "target_probs": np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 1.0]]),
        }

    def assert_refused(self, pattern: str, estimator=ips, **changes):
        with self.assertRaisesRegex(ValueError, pattern):
            estimator(**(self.good | changes))

    def test_shapes_probabilities_and_actions_are_checked_with_the_row(self):
        self.assert_refused(r"actions must be \(3,\)", actions=np.array([0, 1]))
        self.assert_refused(r"actions must be integers", actions=np.array([0.0, 1.0, 1.0]))
        self.assert_refused(r"actions\[2\] = 2 is not a column of target_probs \(0..1\)", actions=np.array([0, 1, 2]))
        self.assert_refused(
            r"logged_propensities\[1\] = 0.0 is not in \(0, 1\]", logged_propensities=np.array([0.5, 0, 0.2])
        )
        self.assert_refused(r"logged_propensities\[0\] = 1.5", logged_propensities=np.array([1.5, 0.5, 0.2]))
        self.assert_refused(r"target_probs row 1 sums to 0.9", target_probs=np.array([[0.5, 0.5], [0.5, 0.4], [0, 1]]))
        self.assert_refused(
            r"target_probs row 0 has a value outside", target_probs=np.array([[1.5, -0.5], [0.5, 0.5], [0, 1]])
        )
        self.assert_refused(r"target_probs must be \(3, k\)", target_probs=np.array([[0.5, 0.5]]))
        self.assert_refused(r"rewards\[1\] = nan is not finite", rewards=np.array([1.0, np.nan, 0.0]))
        self.assert_refused(r"rewards must be \(n,\)", rewards=np.ones((3, 1)))
        self.assert_refused(r"need at least 2 logged rows", **{key: value[:1] for key, value in self.good.items()})
        self.assert_refused(r"clip must be a positive number", clip=0)
        self.assert_refused(r"confidence must lie in \(0, 1\)", confidence=1.0)

    def test_model_based_estimators_need_matching_reward_predictions(self):
        self.assert_refused(r"reward_predictions \(n, k\) is required", estimator=doubly_robust)
        self.assert_refused(
            r"reward_predictions must be \(3, 2\)", estimator=direct_method, reward_predictions=np.zeros((3, 3))
        )
        self.assert_refused(
            r"reward_predictions row 2 is not finite",
            estimator=doubly_robust,
            reward_predictions=np.array([[0, 0], [0, 0], [0, np.inf]]),
        )

    def test_snips_refuses_a_target_with_no_support_in_the_logs(self):
        self.assert_refused(
            r"probability 0 to every logged action",
            estimator=snips,
            actions=np.array([0, 0, 0]),
            target_probs=np.array([[0.0, 1.0]] * 3),
        )


if __name__ == "__main__":
    unittest.main()
