"""Uplift: training runs on planted sent/held-out touchpoints (mlcore.uplift), the
`propensity`/`uplift` rule leaves on the champions' scores, and the campaign option
"only persuadables" in the launch selection (exact ids, the holdout drawn among them, a
clear error without an uplift champion)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
from django.test import TestCase

from campaigns.delivery.control import campaign_definition_errors
from campaigns.delivery.launch import run_launch
from campaigns.models import Campaign, Channel, Creative, Message, Segment, SegmentMembership
from campaigns.segments.rules import RuleInvalid, segment_customers, validate_definition
from marketing.errors import BatchInvalid, RowError
from marketing.models import Customer, Touchpoint
from mlcore import registry
from mlcore.models import CustomerScore, ModelVersion
from mlcore.propensity import TrainingFailed
from mlcore.training import decision_features
from mlcore.uplift import uplift_customer_scores, uplift_train
from tests.learning_helpers import NOW, OneThread, plant

LAUNCH_AT = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def champion_with_scores(task: str, scores: dict[Customer, float]) -> ModelVersion:
    """A succeeded champion of `task` with exactly these customer scores."""
    version = ModelVersion.objects.create(
        task=task, algorithm="hand", status=ModelVersion.Status.SUCCEEDED, is_champion=True
    )
    CustomerScore.objects.bulk_create(
        CustomerScore(model_version=version, customer=customer, score=score) for customer, score in scores.items()
    )
    return version


class UpliftTrainingTests(OneThread, TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.ids = plant(800, held_out_share=0.5, uplift=True, seed=3)

    def test_it_learns_who_is_persuaded_and_scores_everyone(self) -> None:
        version = uplift_train(now=NOW)
        version.refresh_from_db()
        self.assertEqual(version.status, ModelVersion.Status.SUCCEEDED)
        self.assertTrue(version.is_champion)
        self.assertEqual(version.algorithm, "t_learner")
        self.assertEqual(version.metrics["rows"], 800)
        self.assertEqual(version.metrics["valid_rows"], 240)
        self.assertEqual(version.metrics["n"], 240)
        self.assertGreater(version.metrics["qini"], 0.0)
        self.assertEqual(set(version.metrics["baselines"]), {"response_model", "random"})
        self.assertEqual(len(version.metrics["deciles"]), 10)
        self.assertEqual(version.params["feature_names"][3], "opens_180")
        # Every customer scored with exactly the champion's prediction.
        scores = dict(CustomerScore.objects.values_list("customer_id", "score"))
        self.assertEqual(sorted(scores), sorted(self.ids))
        X = decision_features(self.ids, at=NOW)
        expected = uplift_customer_scores(version, X)
        np.testing.assert_allclose([scores[i] for i in self.ids], expected, rtol=1e-9)
        # The planted effect: the engaged are persuaded, the unengaged are not.
        opens = X[:, 3]
        self.assertGreater(expected[opens == 4].mean(), expected[opens == 0].mean() + 0.2)

    def test_a_tie_keeps_the_champion(self) -> None:
        first = uplift_train(now=NOW)
        second = uplift_train(now=NOW)
        second.refresh_from_db()
        comparison = second.metrics["champion_comparison"]
        self.assertFalse(second.is_champion)
        self.assertEqual(registry.champion_id("uplift"), first.pk)
        self.assertEqual(comparison["champion_id"], first.pk)
        self.assertEqual(comparison["challenger_qini"], comparison["champion_qini"])
        self.assertFalse(comparison["promote"])

    def test_no_holdout_no_uplift_model(self) -> None:
        with self.assertRaisesMessage(TrainingFailed, "0 sends and no held-out customers in the last 90 days"):
            uplift_train(now=NOW, campaign_ids=[999])
        self.assertEqual(ModelVersion.objects.get().status, ModelVersion.Status.FAILED)

    def test_only_campaigns_with_a_holdout_are_learnt_from(self) -> None:
        # Campaign 2 sent (no holdout) to 200 customers who all bought: not a treated row of the uplift model.
        plant(200, prefix="x", seed=9)
        Touchpoint.objects.filter(kind="sent", customer__external_id__startswith="x").update(campaign_id=2)
        version = uplift_train(now=NOW)
        self.assertEqual(version.metrics["rows"], 800)
        self.assertEqual(version.metrics["n_treated"] + version.metrics["n_control"], 240)


class ScoreLeafTests(TestCase):
    def setUp(self) -> None:
        self.ann, self.ben, self.cat, self.dan = (
            Customer.objects.create(external_id=name) for name in ("ann", "ben", "cat", "dan")
        )

    def selected(self, tree) -> set[str]:
        return set(segment_customers(tree).values_list("external_id", flat=True))

    def test_leaves_select_on_the_champion_scores(self) -> None:
        self.assertEqual(self.selected({"uplift": {"gt": 0}}), set())  # no champion: nobody
        champion_with_scores("uplift", {self.ann: 0.2, self.ben: 0.0, self.cat: -0.1})
        champion_with_scores("propensity", {self.ann: 0.1, self.ben: 0.5, self.cat: 0.9, self.dan: 0.7})
        self.assertEqual(self.selected({"uplift": {"gt": 0}}), {"ann"})
        self.assertEqual(self.selected({"uplift": {"gte": 0}}), {"ann", "ben"})
        self.assertEqual(self.selected({"uplift": {"lte": 0}}), {"ben", "cat"})  # dan has no score
        self.assertEqual(self.selected({"propensity": {"gte": 0.5, "lt": 0.9}}), {"ben", "dan"})
        self.assertEqual(
            self.selected({"all": [{"propensity": {"gte": 0.1}}, {"not": {"uplift": {"gt": 0}}}]}),
            {"ben", "cat", "dan"},
        )

    def test_only_the_champion_counts(self) -> None:
        old = champion_with_scores("uplift", {self.ann: 0.5})
        ModelVersion.objects.filter(pk=old.pk).update(is_champion=False)
        champion_with_scores("uplift", {self.ben: 0.5})
        self.assertEqual(self.selected({"uplift": {"gt": 0}}), {"ben"})

    def test_bad_leaves_are_refused_with_their_path(self) -> None:
        self.assertEqual(
            [(e.path, e.message) for e in validate_definition({"uplift": {"above": 1}})],
            [("/uplift/above", "unknown comparison; expected one of: eq, gt, gte, lt, lte")],
        )
        self.assertEqual(
            [(e.path, e.message) for e in validate_definition({"propensity": {"gte": "0.3"}})],
            [("/propensity/gte", "must be a number")],
        )
        self.assertEqual(
            [(e.path, e.message) for e in validate_definition({"propensity": {"gte": 30}})],
            [("/propensity/gte", "a score is between -1 and 1 (a probability or a difference)")],
        )
        with self.assertRaises(RuleInvalid):
            segment_customers({"uplift": {}})


class PersuadablesLaunchTests(TestCase):
    def setUp(self) -> None:
        Channel.objects.create(name="mail", kind="email", cost_per_message=Decimal("0.01"))
        self.campaign = Campaign.objects.create(name="Winter sale", holdout_percent=0, persuadables_only=True)
        Creative.objects.create(campaign=self.campaign, channel_kind="email", name="A", body="Hi")
        self.people = {
            name: Customer.objects.create(external_id=name, email=f"{name}@example.com", email_opt_in=True)
            for name in ("p1", "p2", "p3", "zero", "neg", "unscored")
        }
        audience = Segment.objects.create(name="all", kind=Segment.Kind.STATIC)
        SegmentMembership.objects.bulk_create(
            SegmentMembership(segment=audience, customer=c, since=LAUNCH_AT) for c in self.people.values()
        )
        self.campaign.audience.add(audience)

    def scores(self) -> None:
        p = self.people
        champion_with_scores("uplift", {p["p1"]: 0.3, p["p2"]: 0.06, p["p3"]: 0.01, p["zero"]: 0.0, p["neg"]: -0.2})

    def outbox(self) -> dict[str, str]:
        return dict(Message.objects.filter(campaign=self.campaign).values_list("customer__external_id", "status"))

    def test_only_customers_with_positive_predicted_uplift_are_reached(self) -> None:
        self.scores()
        run = run_launch(self.campaign.pk, "launch", now=LAUNCH_AT)
        self.assertEqual(self.outbox(), {"p1": "queued", "p2": "queued", "p3": "queued"})
        self.assertEqual(run.counts, {"audience": 3, "eligible": 3, "held_out": 0, "queued": 3, "suppressed": {}})

    def test_min_uplift_raises_the_bar(self) -> None:
        self.scores()
        Campaign.objects.filter(pk=self.campaign.pk).update(min_uplift=0.05)
        run_launch(self.campaign.pk, "launch", now=LAUNCH_AT)
        self.assertEqual(self.outbox(), {"p1": "queued", "p2": "queued"})

    def test_the_holdout_is_drawn_among_the_persuadables(self) -> None:
        self.scores()
        Campaign.objects.filter(pk=self.campaign.pk).update(holdout_percent=100)
        run = run_launch(self.campaign.pk, "launch", now=LAUNCH_AT)
        self.assertEqual(self.outbox(), {"p1": "held_out", "p2": "held_out", "p3": "held_out"})
        self.assertEqual(run.counts["held_out"], 3)

    def test_without_the_option_everyone_is_reached(self) -> None:
        self.scores()
        Campaign.objects.filter(pk=self.campaign.pk).update(persuadables_only=False)
        run_launch(self.campaign.pk, "launch", now=LAUNCH_AT)
        self.assertEqual(len(self.outbox()), 6)

    def test_no_uplift_champion_is_a_clear_launch_error_and_nothing_is_written(self) -> None:
        expected = RowError(
            row=None,
            field="persuadables_only",
            message='no uplift model is champion yet: train one (POST /api/v1/model-versions/train with {"task": '
            '"uplift"}) or turn off "only persuadables"',
        )
        with self.assertRaises(BatchInvalid) as caught:
            run_launch(self.campaign.pk, "launch", now=LAUNCH_AT)
        self.assertEqual(caught.exception.errors, [expected])
        self.assertEqual(Message.objects.count(), 0)
        self.assertFalse(self.campaign.runs.exists())
        self.assertIn(expected, campaign_definition_errors(self.campaign))
        self.assertNotIn(expected, campaign_definition_errors(self.campaign, for_launch=False))

    def test_min_uplift_out_of_range_is_refused(self) -> None:
        self.campaign.min_uplift = 2
        self.assertIn(
            RowError(row=None, field="min_uplift", message="must be between -1 and 1 (a difference of probabilities)"),
            campaign_definition_errors(self.campaign, for_launch=False),
        )
