"""Off-policy evaluation of creative policies on a campaign's logged sends
(mlcore.evaluation, POST /api/v1/policy-evaluations, the admin page).

Synthetic logs with known logging probabilities and a planted best creative: 1,000 email
sends logged by a weighted policy (A with probability 0.7, B with 0.3) whose true
conversion rates are A 10% and B 30% (exactly 70 of 700 and 90 of 300 converted), plus 100
sms sends of the only sms creative S (probability 1, 50% converted). The truth of each
target policy is computed by hand from the planted rates; every estimator must land on it
(with these exact counts, IPS, SNIPS, DM and DR are all exactly unbiased) and its 95%
interval must cover it. Error cases are 400s naming the field. Runs on PostgreSQL and
SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import F
from django.test import TestCase

from campaigns.models import Campaign, Channel, Creative
from marketing.models import Customer, Touchpoint
from mlcore.engine.bandits import argmax_probabilities
from mlcore.evaluation import logged_creative_probability, policy_evaluate
from tests.api_helpers import ApiTestCase

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
Z = 1.959963984540054


class LoggedSends:
    """The synthetic logs of the module docstring on `self.campaign`."""

    @classmethod
    def plant(cls) -> None:
        cls.email = Channel.objects.create(name="mail", kind="email")
        cls.sms = Channel.objects.create(name="text", kind="sms")
        cls.campaign = Campaign.objects.create(name="Logged", goal_event="purchase", attribution_window_days=7)
        cls.a, cls.b = (
            Creative.objects.create(campaign=cls.campaign, channel_kind="email", name=n, body=n) for n in "AB"
        )
        cls.s = Creative.objects.create(campaign=cls.campaign, channel_kind="sms", name="S", body="S")
        cls.n = 0
        cls.sends(cls.a, cls.email, 700, 70, 0.7)
        cls.sends(cls.b, cls.email, 300, 90, 0.3)
        cls.sends(cls.s, cls.sms, 100, 50, 1.0)

    @classmethod
    def sends(
        cls,
        creative: Creative,
        channel: Channel,
        count: int,
        converted: int,
        probability: float | None,
        *,
        at: datetime = NOW - 20 * DAY,
        policy: str = "fixed/weighted",
        features: dict | None = None,
        campaign: Campaign | None = None,
    ) -> None:
        customers = Customer.objects.bulk_create(
            Customer(external_id=f"c{cls.n + i}", email=f"c{cls.n + i}@example.com") for i in range(count)
        )
        rows = []
        for i, who in enumerate(customers):
            cls.n += 1
            properties = {
                "channel_id": channel.pk,
                "policy": policy,
                "features": features or {"channel": {}, "creative": {}},
            }
            if probability is not None:
                properties["probability"] = probability
            rows.append(
                Touchpoint(
                    customer=who,
                    kind="sent",
                    channel=channel.kind,
                    campaign_id=(campaign or cls.campaign).pk,
                    creative_id=creative.pk,
                    occurred_at=at,
                    event_id=f"sent-{cls.n}",
                    properties=properties,
                )
            )
            if i < converted:
                rows.append(
                    Touchpoint(
                        customer=who,
                        kind="purchase",
                        occurred_at=at + DAY,
                        event_id=f"buy-{cls.n}",
                        order_id=f"o-{cls.n}",
                        sku="X",
                        revenue=Decimal("10"),
                    )
                )
        Touchpoint.objects.bulk_create(rows)


def shift_to_now() -> None:
    """The API and the admin evaluate up to the real now: move the logs along."""
    Touchpoint.objects.update(occurred_at=F("occurred_at") + (datetime.now(UTC) - NOW))


def ips_terms(pairs: list[tuple[int, float]]) -> np.ndarray:
    """Per-row r * w terms from (count, value) pairs."""
    return np.concatenate([np.full(count, value, dtype=np.float64) for count, value in pairs])


class EvaluationTests(LoggedSends, TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.plant()

    def assertCovers(self, estimate: dict, truth: float) -> None:
        self.assertAlmostEqual(estimate["value"], truth, places=12)
        self.assertLess(estimate["ci_low"], truth)
        self.assertGreater(estimate["ci_high"], truth)

    def test_uniform_over_the_creatives_of_each_kind(self) -> None:
        result = policy_evaluate(self.campaign.pk, {"type": "uniform"}, days=30, now=NOW)
        # Email rows: 0.5 * 10% + 0.5 * 30% = 20%; sms rows: S always, 50%.
        truth = (1000 * 0.2 + 100 * 0.5) / 1100
        for key in ("ips", "snips", "dm", "dr"):
            self.assertCovers(result["estimates"][key], truth)
        # IPS's interval by hand: terms r * pi / mu.
        terms = ips_terms([(70, 0.5 / 0.7), (630, 0), (90, 0.5 / 0.3), (210, 0), (50, 1.0), (50, 0)])
        se = terms.std(ddof=1) / np.sqrt(len(terms))
        self.assertAlmostEqual(result["estimates"]["ips"]["ci_low"], truth - Z * se, places=9)
        self.assertAlmostEqual(result["estimates"]["ips"]["ci_high"], truth + Z * se, places=9)
        self.assertEqual((result["n"], result["pending"], result["reward_model"]), (1100, 0, "arm_mean"))
        observed = 210 / 1100
        self.assertAlmostEqual(result["logged"]["value"], observed, places=12)
        self.assertEqual(result["logged"]["n"], 1100)
        self.assertEqual(
            [(a["creative"], a["channel_kind"], a["sends"], a["conversions"]) for a in result["arms"]],
            [(self.a.pk, "email", 700, 70), (self.b.pk, "email", 300, 90), (self.s.pk, "sms", 100, 50)],
        )
        self.assertEqual(
            [round(a["target_share"], 9) for a in result["arms"]], [round(500 / 1100, 9)] * 2 + [round(100 / 1100, 9)]
        )
        self.assertEqual((result["goal_event"], result["window_days"], result["days"]), ("purchase", 7, 30))

    def test_the_planted_best_creative_and_greedy(self) -> None:
        fixed = policy_evaluate(self.campaign.pk, {"type": "fixed", "creative": self.b.pk}, now=NOW)
        self.assertEqual(fixed["n"], 1000)  # the email sends only: B cannot go by sms
        for key in ("ips", "snips", "dm", "dr"):
            self.assertCovers(fixed["estimates"][key], 0.3)
        self.assertGreater(fixed["estimates"]["ips"]["ci_low"], fixed["logged"]["value"])  # better than logged (16%)
        worse = policy_evaluate(self.campaign.pk, {"type": "fixed", "creative": self.a.pk}, now=NOW)
        self.assertCovers(worse["estimates"]["snips"], 0.1)
        greedy = policy_evaluate(self.campaign.pk, {"type": "greedy"}, now=NOW)
        self.assertCovers(greedy["estimates"]["dr"], (1000 * 0.3 + 100 * 0.5) / 1100)

    def test_the_current_thompson_posterior(self) -> None:
        result = policy_evaluate(self.campaign.pk, {"type": "thompson", "prior": [1, 1]}, now=NOW)
        table = argmax_probabilities(np.array([71.0, 91.0]), np.array([631.0, 211.0]), draws=10_000, seed=0)
        truth = (1000 * (table[0] * 0.1 + table[1] * 0.3) + 100 * 0.5) / 1100
        for key in ("ips", "snips", "dm", "dr"):
            self.assertCovers(result["estimates"][key], truth)

    def test_the_champion_propensity_model_as_the_reward_model(self) -> None:
        from mlcore.propensity import propensity_predict
        from mlcore.training import training_set
        from tests.test_bandit_policies import propensity_champion

        champion = propensity_champion(["<unknown>", "email", "sms"], [0, self.a.pk, self.b.pk, self.s.pk])
        result = policy_evaluate(self.campaign.pk, {"type": "fixed", "creative": self.b.pk}, now=NOW)
        self.assertEqual((result["reward_model"], result["n"]), ("propensity", 1000))
        # DM: the model's P(goal) for B on every email send, from the features at send time.
        rows = training_set(days=30, now=NOW, campaign_ids=[self.campaign.pk], include_held_out=False)
        email = rows.channel == rows.channels.index("email")
        predicted = propensity_predict(
            champion, rows.X[email], np.full(email.sum(), "email", dtype=object), np.full(email.sum(), self.b.pk)
        )
        self.assertAlmostEqual(result["estimates"]["dm"]["value"], float(predicted.mean()), places=6)
        # DR stays unbiased whatever the model (the propensities are exact): it covers the truth.
        self.assertLess(result["estimates"]["dr"]["ci_low"], 0.3)
        self.assertGreater(result["estimates"]["dr"]["ci_high"], 0.3)
        self.assertEqual(
            policy_evaluate(self.campaign.pk, {"type": "uniform"}, now=NOW, reward_model="arm_mean")["reward_model"],
            "arm_mean",
        )

    def test_sends_inside_their_window_are_pending_and_left_out(self) -> None:
        self.sends(self.a, self.email, 5, 5, 0.7, at=NOW - 3 * DAY)
        result = policy_evaluate(self.campaign.pk, {"type": "uniform"}, now=NOW)
        self.assertEqual((result["n"], result["pending"]), (1100, 5))

    def test_learning_policies_log_the_creatives_own_probability(self) -> None:
        # A random channel policy: the message's probability is channel x creative; the
        # creative's own is in its features.
        self.sends(
            self.a,
            self.email,
            10,
            1,
            0.35,
            policy="thompson/thompson",
            features={"channel": {"probability": 0.5}, "creative": {"probability": 0.7}},
        )
        result = policy_evaluate(self.campaign.pk, {"type": "uniform"}, now=NOW)
        self.assertEqual(result["n"], 1110)
        got = logged_creative_probability(
            np.array([0.35, 0.35, 0.6, 0.6, 0.6]),
            np.array(
                ["thompson/thompson", "weighted/weighted", "fixed/weighted", "weighted/weighted", "x"], dtype=object
            ),
            np.array([0.7, np.nan, np.nan, np.nan, np.nan]),
            np.array([0.5, 0.5, np.nan, np.nan, np.nan]),
        )
        np.testing.assert_allclose(got, [0.7, 0.7, 0.6, np.nan, np.nan])

    def test_errors_name_the_field(self) -> None:
        cases = [
            (
                {"campaign_id": 999999},
                "campaign",
                "campaign 999999 has no sends in the last 30 days whose outcome is known: nothing to evaluate on",
            ),
            ({"policy": {"type": "best"}}, "policy", '"type" must be one of uniform, fixed, thompson, greedy'),
            ({"policy": {"type": "fixed"}}, "policy", '"creative" must be a creative id'),
            ({"policy": {"type": "uniform", "x": 1}}, "policy", 'unknown key "x" for a uniform policy'),
            (
                {"policy": {"type": "fixed", "creative": 999999}},
                "policy.creative",
                "creative 999999 was not sent in the evaluated period: there is no logged data to evaluate it on",
            ),
            ({"days": 0}, "days", "must be a whole number from 1 to 365"),
            ({"reward_model": "magic"}, "reward_model", "must be one of auto, arm_mean, propensity"),
            (
                {"reward_model": "propensity"},
                "reward_model",
                "there is no champion propensity model: train one, or use arm_mean",
            ),
        ]
        for change, field, message in cases:
            args = {"campaign_id": self.campaign.pk, "policy": {"type": "uniform"}, "days": 30, "now": NOW, **change}
            with self.assertRaises(Exception) as caught:
                policy_evaluate(args.pop("campaign_id"), args.pop("policy"), **args)
            self.assertEqual([(e.field, e.message) for e in caught.exception.errors], [(field, message)], change)

    def test_only_open_windows_or_missing_probabilities_are_refused(self) -> None:
        fresh = Campaign.objects.create(name="Fresh", attribution_window_days=7)
        self.sends(self.a, self.email, 3, 0, 0.5, at=NOW - 2 * DAY, campaign=fresh)
        with self.assertRaises(Exception) as caught:
            policy_evaluate(fresh.pk, {"type": "uniform"}, now=NOW)
        self.assertEqual(
            caught.exception.errors[0].message,
            f"campaign {fresh.pk} has no sends in the last 30 days whose outcome is known "
            "(3 sends are still inside their 7-day window): nothing to evaluate on",
        )
        kept = self.campaign
        self.sends(self.b, self.email, 4, 0, None, policy="weighted/weighted")
        with self.assertRaises(Exception) as caught:
            policy_evaluate(kept.pk, {"type": "uniform"}, now=NOW)
        self.assertEqual(
            (caught.exception.errors[0].field, caught.exception.errors[0].message),
            (
                "campaign",
                "4 of 1104 sends have no logged probability for their creative (a creative policy that logs none, "
                "under a random channel policy): they cannot be reweighted",
            ),
        )


class EvaluationApiTests(LoggedSends, ApiTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.plant()

    def setUp(self) -> None:
        super().setUp()
        shift_to_now()

    def test_estimates_for_a_fixed_creative(self) -> None:
        response = self.post_json(
            "/api/v1/policy-evaluations",
            {"campaign": self.campaign.pk, "policy": {"type": "fixed", "creative": self.b.pk}},
        )
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(
            sorted(body),
            sorted(
                [
                    "campaign",
                    "days",
                    "since",
                    "until",
                    "goal_event",
                    "window_days",
                    "policy",
                    "n",
                    "pending",
                    "arms",
                    "logged",
                    "reward_model",
                    "estimates",
                ]
            ),
        )
        self.assertEqual(
            (body["campaign"], body["days"], body["n"], body["policy"]),
            (self.campaign.pk, 30, 1000, {"type": "fixed", "creative": self.b.pk}),
        )
        for key in ("ips", "snips", "dm", "dr"):
            self.assertAlmostEqual(body["estimates"][key]["value"], 0.3, places=9)
            self.assertLess(body["estimates"][key]["ci_low"], 0.3)
            self.assertGreater(body["estimates"][key]["ci_high"], 0.3)

    def test_bad_requests_are_400s_naming_the_field(self) -> None:
        cases = [
            ({"policy": {"type": "uniform"}}, "campaign", "This field is required."),
            (
                {"campaign": self.campaign.pk, "policy": {"type": "uniform"}, "days": 0},
                "days",
                "Ensure this value is greater than or equal to 1.",
            ),
            (
                {"campaign": self.campaign.pk, "policy": "uniform"},
                "policy",
                'must be a JSON object such as {"type": "uniform"}',
            ),
            (
                {"campaign": 999999, "policy": {"type": "uniform"}},
                "campaign",
                "campaign 999999 has no sends in the last 30 days whose outcome is known: nothing to evaluate on",
            ),
        ]
        for body, field, message in cases:
            response = self.post_json("/api/v1/policy-evaluations", body)
            self.assertEqual(response.status_code, 400, body)
            self.assertEqual(response.json()["errors"], [{"row": None, "field": field, "message": message}], body)


class EvaluationAdminTests(LoggedSends, TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.plant()

    def setUp(self) -> None:
        shift_to_now()
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)

    def test_the_page_shows_the_form_then_the_estimates(self) -> None:
        url = f"/admin/campaigns/campaign/{self.campaign.pk}/policy-evaluation/"
        page = self.client.get(url)
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, "Policy evaluation")
        self.assertNotContains(page, "estimate-ips")
        change = self.client.get(f"/admin/campaigns/campaign/{self.campaign.pk}/change/")
        self.assertContains(change, f'href="{url}"')
        page = self.client.get(
            url, {"evaluate": "1", "days": "30", "policy": "fixed", "creative": self.b.pk, "reward_model": "auto"}
        )
        self.assertEqual(page.status_code, 200)
        self.assertContains(
            page, '<tr class="estimate-ips"><th>IPS (inverse propensity scoring)</th><td class="number">0.3000</td>'
        )
        self.assertContains(page, "Estimates on 1000 sends")
        self.assertContains(page, '<svg class="policy-evaluation-chart"')
        self.assertContains(page, "<title>IPS (inverse propensity scoring): 0.3000 (", count=1)
        page = self.client.get(url, {"evaluate": "1", "days": "30", "policy": "fixed", "reward_model": "auto"})
        self.assertContains(page, "Choose the creative to evaluate.")
        other = Campaign.objects.create(name="Empty")
        page = self.client.get(
            f"/admin/campaigns/campaign/{other.pk}/policy-evaluation/",
            {"evaluate": "1", "days": "30", "policy": "uniform", "reward_model": "auto"},
        )
        self.assertContains(page, f"campaign: campaign {other.pk} has no sends in the last 30 days")
