"""Propensity training runs (mlcore.propensity) on a planted data set built as touchpoints:
the model learns it, the champion rule promotes only a better challenger, rollback goes
back to the replaced version, and every customer gets exactly the champion's score."""

from __future__ import annotations

import numpy as np
from django.test import TestCase
from django.utils import timezone

from marketing.errors import Conflict
from marketing.models import Customer
from mlcore import registry
from mlcore.artifacts import artifact_load
from mlcore.models import CustomerScore, ModelArtifact, ModelVersion
from mlcore.propensity import (
    TrainingFailed,
    propensity_arm_scores,
    propensity_customer_scores,
    propensity_predict,
    propensity_train,
)
from mlcore.scores import model_promote, model_rollback
from mlcore.training import FEATURE_NAMES, decision_features
from tests.learning_helpers import FAST, NOW, OneThread, plant

# A model that has not learned: a tiny learning rate for one epoch stays at its random start.
UNTRAINED = {**FAST, "lr": 1e-7, "max_epochs": 1}


class PropensityTrainingTests(OneThread, TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.ids = plant(300)
        cls.erased = Customer.objects.create(external_id="gone", erased_at=NOW)

    def champion_scores(self) -> dict[int, float]:
        return dict(CustomerScore.objects.values_list("customer_id", "score"))

    def test_it_learns_the_planted_signal_and_stores_everything(self) -> None:
        version = propensity_train(now=NOW, **{**FAST, "baselines": True})
        version.refresh_from_db()
        self.assertEqual(version.status, ModelVersion.Status.SUCCEEDED)
        self.assertTrue(version.is_champion)
        self.assertEqual(version.device, "cpu")
        self.assertGreater(version.metrics["auc"], 0.75)
        self.assertEqual(version.metrics["rows"], 300)
        self.assertEqual(version.metrics["n_valid"], 60)
        self.assertEqual(set(version.metrics["baselines"]), {"logistic_regression", "hist_gradient_boosting"})
        self.assertGreater(version.metrics["baselines"]["logistic_regression"]["auc"], 0.7)
        self.assertEqual(
            version.metrics["champion_comparison"], {"champion_id": None, "promote": True, "reason": "no champion yet"}
        )
        self.assertIsNone(version.metrics["replaced_version_id"])
        self.assertEqual(version.params["channels"], ["<unknown>", "email", "sms"])
        self.assertEqual(version.params["creatives"], [0, 11, 21])
        self.assertAlmostEqual(sum(arm["weight"] for arm in version.params["score_arms"]), 1.0)
        curve = version.result["curve"]
        self.assertEqual([point["epoch"] for point in curve], list(range(1, len(curve) + 1)))
        self.assertLessEqual({"epoch", "train_loss", "valid_loss", "valid_auc"}, set(curve[0]))
        # The artifact is in the database, named by its hash.
        stored = ModelArtifact.objects.get(version=version)
        self.assertEqual(version.artifact, f"db:sha256:{stored.sha256}")
        self.assertEqual(len(artifact_load(version)), stored.size)

    def test_every_customer_gets_exactly_the_champion_score(self) -> None:
        version = propensity_train(now=NOW, **FAST)
        scores = self.champion_scores()
        self.assertEqual(sorted(scores), sorted(self.ids))  # the erased customer is not scored
        self.assertEqual(set(CustomerScore.objects.values_list("model_version_id", flat=True)), {version.pk})
        expected = propensity_customer_scores(version, decision_features(self.ids, at=NOW))
        np.testing.assert_allclose([scores[i] for i in self.ids], expected, rtol=1e-6)
        # Engaged customers score higher: the planted signal, per customer.
        opens = decision_features(self.ids, at=NOW)[:, 3]
        self.assertGreater(expected[opens == 4].mean(), expected[opens == 0].mean() + 0.3)

    def test_a_better_challenger_is_promoted_and_a_worse_one_is_not(self) -> None:
        weak = propensity_train(now=NOW, **UNTRAINED)
        self.assertTrue(weak.is_champion)
        strong = propensity_train(now=NOW, **FAST)
        strong.refresh_from_db()
        weak.refresh_from_db()
        comparison = strong.metrics["champion_comparison"]
        self.assertTrue(strong.is_champion)
        self.assertFalse(weak.is_champion)
        self.assertEqual(comparison["champion_id"], weak.pk)
        self.assertTrue(comparison["promote"])
        self.assertGreater(comparison["challenger_auc"], comparison["champion_auc"])
        self.assertEqual(strong.metrics["replaced_version_id"], weak.pk)
        self.assertEqual(set(CustomerScore.objects.values_list("model_version_id", flat=True)), {strong.pk})

        before = self.champion_scores()
        loser = propensity_train(now=NOW, **UNTRAINED)
        loser.refresh_from_db()
        self.assertEqual(loser.status, ModelVersion.Status.SUCCEEDED)
        self.assertFalse(loser.is_champion)
        self.assertEqual(registry.champion_id("propensity"), strong.pk)
        self.assertFalse(loser.metrics["champion_comparison"]["promote"])
        self.assertEqual(loser.metrics["champion_comparison"]["champion_id"], strong.pk)
        self.assertEqual(
            loser.metrics["champion_comparison"]["reason"],
            "validation AUC not higher than the champion's (a tie keeps the champion)",
        )
        self.assertNotIn("replaced_version_id", loser.metrics)
        self.assertEqual(self.champion_scores(), before)  # nothing rescored

        # A tie keeps the champion: the same settings and seed train the same model.
        twin = propensity_train(now=NOW, **FAST)
        twin.refresh_from_db()
        self.assertFalse(twin.is_champion)
        self.assertEqual(
            twin.metrics["champion_comparison"]["challenger_auc"], twin.metrics["champion_comparison"]["champion_auc"]
        )

    def test_rollback_goes_back_to_the_replaced_version_and_rescores(self) -> None:
        weak = propensity_train(now=NOW, **UNTRAINED)
        strong = propensity_train(now=NOW, **FAST)
        target = model_rollback("propensity", now=NOW)
        self.assertEqual(target.pk, weak.pk)
        self.assertEqual(registry.champion_id("propensity"), weak.pk)
        self.assertEqual(ModelVersion.objects.filter(is_champion=True).count(), 1)
        scores = self.champion_scores()
        self.assertEqual(set(CustomerScore.objects.values_list("model_version_id", flat=True)), {weak.pk})
        expected = propensity_customer_scores(weak, decision_features(self.ids, at=NOW))
        np.testing.assert_allclose([scores[i] for i in self.ids], expected, rtol=1e-6)
        # weak replaced nothing: no further default rollback; but promote by hand works.
        with self.assertRaisesMessage(Conflict, "propensity has no earlier succeeded version to roll back to"):
            model_rollback("propensity", now=NOW)
        self.assertEqual(model_promote(strong.pk, now=NOW).pk, strong.pk)
        self.assertEqual(registry.champion_id("propensity"), strong.pk)
        with self.assertRaisesMessage(Conflict, f"Model version {strong.pk} is already the champion."):
            model_promote(strong.pk, now=NOW)
        self.assertEqual(model_rollback("propensity", to=weak.pk, now=NOW).pk, weak.pk)

    def test_a_champion_that_cannot_be_scored_is_replaced(self) -> None:
        broken = ModelVersion.objects.create(
            task="propensity",
            algorithm="mlp",
            status=ModelVersion.Status.SUCCEEDED,
            is_champion=True,
            params={"feature_names": list(FEATURE_NAMES)},
        )
        version = propensity_train(now=NOW, **FAST)
        self.assertTrue(version.is_champion)
        self.assertEqual(
            version.metrics["champion_comparison"],
            {
                "champion_id": broken.pk,
                "challenger_auc": version.metrics["auc"],
                "champion_auc": None,
                "promote": True,
                "reason": f"the champion cannot be scored: model version {broken.pk} has no stored artifact",
            },
        )

    def test_arm_scores_for_policies(self) -> None:
        self.assertIsNone(propensity_arm_scores(self.ids[:3], [("email", 11)], at=NOW))
        propensity_train(now=NOW, **FAST)
        scores = propensity_arm_scores(self.ids[:3], [("email", 11), ("sms", 21), ("push", 99)], at=NOW)
        self.assertEqual(scores.shape, (3, 3))
        self.assertTrue(((scores >= 0) & (scores <= 1)).all())
        version = registry.champion("propensity")
        X = decision_features(self.ids[:3], at=NOW)
        np.testing.assert_allclose(scores[:, 1], propensity_predict(version, X, ["sms"] * 3, [21] * 3), rtol=1e-6)

    def test_too_little_data_is_a_failed_version(self) -> None:
        with self.assertRaisesMessage(TrainingFailed, "sent rows; training needs at least 20"):
            propensity_train(now=timezone.now().replace(year=2020), **FAST)
        failed = ModelVersion.objects.get()
        self.assertEqual(failed.status, ModelVersion.Status.FAILED)
        self.assertIn("TrainingFailed", failed.error)
        self.assertFalse(failed.is_champion)
        self.assertEqual(CustomerScore.objects.count(), 0)
