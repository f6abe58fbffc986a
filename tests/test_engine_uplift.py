"""The uplift engine (mlcore.engine.uplift): T- and X-learners recover a planted heterogeneous
campaign effect, the Qini/AUUC/decile metrics on a hand-computed example, artifacts round trip.
Plain unittest, no Django (runs on the GPU box too)."""

from __future__ import annotations

import pickle
import unittest

import numpy as np

from mlcore.engine.uplift import UpliftModel, fit_uplift, synthetic_uplift_data, uplift_metrics

# Small, fixed base learners so the suite stays fast on a shared 2-core box; the defaults
# (BASE_PARAMS, early stopping) are for real data.
FAST = {"max_iter": 60, "max_depth": 2, "learning_rate": 0.2, "early_stopping": False}


class UpliftMetricsTests(unittest.TestCase):
    def test_metrics_on_a_hand_computed_example(self):
        # Ranked as given. Top k: treated/held-out counts (1,0) (1,1) (2,1) (2,2), treated
        # conversions 1,1,1,1, held-out conversions 0,0,0,1.
        m = uplift_metrics([0.3, 0.2, 0.1, 0.0], [1, 0, 1, 0], [1, 0, 0, 1], bins=2)
        # Qini curve 1, 1, 1 - 0*2/1 = 1, 1 - 1*2/2 = 0; random line ends at 0: area 3/4 per 4 rows.
        self.assertEqual(m["qini"], 0.1875)
        # Uplift curve 0 (no held-out yet), (1-0)*2, (1/2-0)*3, (1/2-1/2)*4 -> mean 3.5/4, per 4 rows.
        self.assertEqual(m["auuc"], 0.21875)
        self.assertEqual(m["auuc_random"], 0.0)
        self.assertEqual(
            m["deciles"],
            [
                {
                    "decile": 1,
                    "n": 2,
                    "n_treated": 1,
                    "n_control": 1,
                    "rate_treated": 1.0,
                    "rate_control": 0.0,
                    "observed_uplift": 1.0,
                    "predicted_uplift": 0.25,
                },
                {
                    "decile": 2,
                    "n": 2,
                    "n_treated": 1,
                    "n_control": 1,
                    "rate_treated": 0.0,
                    "rate_control": 1.0,
                    "observed_uplift": -1.0,
                    "predicted_uplift": 0.05,
                },
            ],
        )
        self.assertEqual(m["qini_points"], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
        self.assertEqual((m["overall_uplift"], m["n"], m["n_treated"], m["n_control"]), (0.0, 4, 2, 2))

    def test_an_arm_missing_from_a_decile_has_no_observed_uplift(self):
        m = uplift_metrics([0.9, 0.8, 0.1, 0.0], [1, 1, 0, 0], [1, 0, 0, 0], bins=2)
        self.assertEqual([d["observed_uplift"] for d in m["deciles"]], [None, None])
        self.assertEqual([d["rate_treated"] for d in m["deciles"]], [0.5, None])

    def test_mismatched_lengths_are_refused(self):
        with self.assertRaisesRegex(ValueError, "same non-zero length, got 2, 3, 2"):
            uplift_metrics([0.1, 0.2], [1, 0, 1], [0, 1])


class UpliftLearnerTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.X, cls.treated, cls.y, _ = synthetic_uplift_data(30_000, seed=0)
        cls.X_test, cls.t_test, cls.y_test, cls.truth = synthetic_uplift_data(20_000, seed=1)
        cls.perfect = uplift_metrics(cls.truth, cls.t_test, cls.y_test)

    def check_recovers_the_planted_effect(self, method: str, min_corr: float, min_qini_share: float) -> UpliftModel:
        model = fit_uplift(self.X, self.treated, self.y, method, params=FAST)
        u = model.predict(self.X_test)
        self.assertEqual((u.shape, u.dtype), ((20_000,), np.float64))
        self.assertGreater(np.corrcoef(u, self.truth)[0, 1], min_corr)
        m = uplift_metrics(u, self.t_test, self.y_test)
        # Ranking by the prediction earns most of what ranking by the true effect earns.
        self.assertGreater(m["qini"], min_qini_share * self.perfect["qini"])
        self.assertGreater(m["deciles"][0]["observed_uplift"], m["deciles"][-1]["observed_uplift"] + 0.06)
        self.assertGreater(m["auuc"], m["auuc_random"])
        self.assertEqual((model.n_treated + model.n_control, model.n_features), (30_000, 6))
        self.assertAlmostEqual(model.treated_share, float(self.treated.mean()), 12)
        return model

    def test_t_learner_recovers_the_planted_effect(self):
        model = self.check_recovers_the_planted_effect("t_learner", 0.7, 0.7)
        self.assertEqual(set(model.models), {"mu0", "mu1"})

    def test_x_learner_recovers_the_planted_effect(self):
        model = self.check_recovers_the_planted_effect("x_learner", 0.8, 0.8)
        self.assertEqual(set(model.models), {"mu0", "mu1", "tau0", "tau1"})
        treated_p, control_p = model.predict_arms(self.X_test[:5])
        self.assertTrue(((treated_p > 0) & (treated_p < 1) & (control_p > 0) & (control_p < 1)).all())

    def test_artifact_round_trip_predicts_identically(self):
        model = fit_uplift(self.X[:5000], self.treated[:5000], self.y[:5000], "x_learner", params=FAST)
        loaded = UpliftModel.from_bytes(model.to_bytes())
        np.testing.assert_array_equal(loaded.predict(self.X_test[:1000]), model.predict(self.X_test[:1000]))
        self.assertEqual((loaded.method, loaded.n_treated, loaded.n_features), ("x_learner", model.n_treated, 6))
        with self.assertRaisesRegex(ValueError, "not an uplift artifact"):
            UpliftModel.from_bytes(pickle.dumps({"format": "other"}))

    def test_bad_input_is_refused(self):
        with self.assertRaisesRegex(ValueError, "method must be one of t_learner, x_learner"):
            fit_uplift(self.X, self.treated, self.y, "s_learner")
        no_control_conversions = np.where(self.treated == 1, self.y, 0.0)
        with self.assertRaisesRegex(ValueError, "held-out rows need both converted and not converted"):
            fit_uplift(self.X, self.treated, no_control_conversions)
        with self.assertRaisesRegex(ValueError, "X has 30000 rows, treated 10"):
            fit_uplift(self.X, self.treated[:10], self.y)
        model = fit_uplift(self.X[:3000], self.treated[:3000], self.y[:3000], params=FAST)
        with self.assertRaisesRegex(ValueError, "X has 2 features, the model was fitted on 6"):
            model.predict(np.zeros((1, 2)))


if __name__ == "__main__":
    unittest.main()
