"""Channel and creative policies (campaigns.delivery.policies) on arrays: deterministic
draws, weighted picks renormalised over each customer's eligible channels with exact
probabilities, fixed picks, defaults, validation messages and the registry."""

from __future__ import annotations

from decimal import Decimal
from unittest import TestCase

import numpy as np

from campaigns.delivery import policies
from campaigns.delivery.policies import (
    ChannelOption,
    ChannelPolicy,
    CreativeOption,
    FixedChannelPolicy,
    FixedCreativePolicy,
    GroupedFeatures,
    Picks,
    PolicyContext,
    WeightedChannelPolicy,
    WeightedCreativePolicy,
    features_grouped,
    policies_for,
    policy_errors,
    register_policy,
    uniform_draws,
)

EMAIL = ChannelOption(id=1, kind="email", name="mail", cost=Decimal("0.01"), enabled=True)
SMS = ChannelOption(id=2, kind="sms", name="text", cost=Decimal("0.05"), enabled=True)
PUSH_OFF = ChannelOption(id=3, kind="push", name="app", cost=Decimal("0"), enabled=False)
MAIL_A = CreativeOption(id=10, channel_kind="email", name="A", weight=1, enabled=True)
MAIL_B = CreativeOption(id=11, channel_kind="email", name="B", weight=3, enabled=True)
MAIL_OFF = CreativeOption(id=12, channel_kind="email", name="C", weight=5, enabled=False)
TEXT = CreativeOption(id=20, channel_kind="sms", name="S", weight=1, enabled=True)


def context(run_key: str = "launch", channels=(EMAIL, SMS, PUSH_OFF), creatives=(MAIL_A, MAIL_B, MAIL_OFF, TEXT)):
    return PolicyContext(
        campaign_id=7, run_key=run_key, salt="abc123", channels=tuple(channels), creatives=tuple(creatives)
    )


IDS = np.arange(1, 20_001, dtype=np.int64)


class DrawTests(TestCase):
    def test_draws_depend_only_on_the_seed_and_the_customer(self) -> None:
        draws = uniform_draws(IDS, 42)
        self.assertTrue(((draws >= 0) & (draws < 1)).all())
        np.testing.assert_array_equal(uniform_draws(IDS, 42), draws)
        # A customer's draw is the same whoever else is drawn.
        np.testing.assert_array_equal(uniform_draws(IDS[::7], 42), draws[::7])
        self.assertLess(np.mean(uniform_draws(IDS, 43) == draws), 0.001)
        # Uniform: each tenth holds about 2,000 of 20,000 (sd 42).
        counts = np.bincount((draws * 10).astype(int), minlength=10)
        self.assertLess(np.abs(counts - 2000).max(), 200)
        self.assertLess(abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]), 0.05)

    def test_the_seed_comes_from_the_salt_campaign_run_and_stream(self) -> None:
        ctx = context()
        self.assertEqual(ctx.seed("channel"), context().seed("channel"))
        self.assertNotEqual(ctx.seed("channel"), ctx.seed("creative"))
        self.assertNotEqual(ctx.seed("channel"), context(run_key="2026-11-20T12:00:00+00:00").seed("channel"))
        np.testing.assert_array_equal(ctx.uniform(IDS[:5], "channel"), uniform_draws(IDS[:5], ctx.seed("channel")))


class WeightedChannelTests(TestCase):
    def setUp(self) -> None:
        self.policy = WeightedChannelPolicy({"type": "weighted", "weights": {"1": 3, "2": 1, "3": 5}}, context())

    def test_it_offers_only_enabled_channels_with_weight(self) -> None:
        self.assertEqual(self.policy.channel_ids(), [1, 2])
        self.assertEqual(self.policy.context_errors(), [])
        self.assertEqual(self.policy.label, "weighted")

    def test_picks_are_renormalised_over_each_customers_eligible_channels(self) -> None:
        channel_ids = np.array([1, 2])
        eligible = np.ones((len(IDS), 2), dtype=bool)
        eligible[:5000, 1] = False  # the first 5,000 can only get email
        eligible[5000:6000, 0] = False  # the next 1,000 only sms
        picks = self.policy.pick(IDS, channel_ids, eligible)
        self.assertEqual(picks.choice.dtype, np.int64)
        np.testing.assert_array_equal(picks.choice[:5000], 1)
        np.testing.assert_array_equal(picks.probability[:5000], 1.0)
        np.testing.assert_array_equal(picks.choice[5000:6000], 2)
        np.testing.assert_array_equal(picks.probability[5000:6000], 1.0)
        both = picks.choice[6000:]
        expected = np.where(both == 1, 0.75, 0.25)
        np.testing.assert_allclose(picks.probability[6000:], expected)
        on_sms = np.count_nonzero(both == 2)
        self.assertLess(abs(on_sms - 3500), 250)  # 25% of 14,000, sd 51
        features = features_grouped(picks.features, len(IDS))
        by_customer = [features.values[i] for i in features.index]
        self.assertEqual(by_customer[0], {"eligible_channels": [1]})
        self.assertEqual(by_customer[5000], {"eligible_channels": [2]})
        self.assertEqual(by_customer[6000], {"eligible_channels": [1, 2]})
        self.assertEqual(len(features.values), 3)
        # Deterministic: the same customers pick the same; another run draws anew.
        again = self.policy.pick(IDS[6000:], channel_ids, eligible[6000:])
        np.testing.assert_array_equal(again.choice, both)
        other = WeightedChannelPolicy(self.policy.config, context(run_key="other")).pick(IDS, channel_ids, eligible)
        self.assertGreater(np.count_nonzero(other.choice[6000:] != both), 3000)

    def test_a_zero_weight_is_never_picked(self) -> None:
        policy = WeightedChannelPolicy({"type": "weighted", "weights": {"1": 1, "2": 0}}, context())
        self.assertEqual(policy.channel_ids(), [1])
        matrix = np.array([[1.0, 0.0, 2.0]] * 1000)
        columns = policies._weighted_choice(matrix, np.linspace(0, 1, 1000, endpoint=False))
        self.assertEqual(set(columns.tolist()), {0, 2})
        # A draw at the very top still lands on the last positive column.
        top = policies._weighted_choice(np.array([[1.0, 2.0, 0.0]]), np.array([np.nextafter(1.0, 0)]))
        self.assertEqual(top.tolist(), [1])

    def test_missing_and_disabled_channels_are_context_errors(self) -> None:
        missing = WeightedChannelPolicy({"type": "weighted", "weights": {"1": 1, "99": 1}}, context())
        self.assertEqual(missing.context_errors(), ["channel 99 does not exist"])
        disabled = WeightedChannelPolicy({"type": "weighted", "weights": {"3": 1}}, context())
        self.assertEqual(disabled.context_errors(), ["every channel with a weight above 0 is disabled"])


class FixedTests(TestCase):
    def test_fixed_channel_and_creative_pick_with_probability_one(self) -> None:
        channel = FixedChannelPolicy({"type": "fixed", "channel": 2}, context())
        self.assertEqual((channel.channel_ids(), channel.context_errors()), ([2], []))
        picks = channel.pick(IDS[:3], np.array([2]), np.ones((3, 1), dtype=bool))
        self.assertEqual(
            (picks.choice.tolist(), picks.probability.tolist(), picks.features), ([2, 2, 2], [1.0] * 3, {})
        )
        creative = FixedCreativePolicy({"type": "fixed", "creative": "20"}, context())
        picks = creative.pick(IDS[:2], np.array([2, 2]), np.array(["sms", "sms"], dtype=object))
        self.assertEqual((picks.choice.tolist(), picks.probability.tolist()), ([20, 20], [1.0, 1.0]))
        self.assertEqual(creative.channel_kind_errors(["sms"]), [])
        self.assertEqual(
            creative.channel_kind_errors(["sms", "email"]),
            ["creative 20 is for sms, but the channel policy can also pick email channels"],
        )

    def test_fixed_context_errors(self) -> None:
        self.assertEqual(
            FixedChannelPolicy({"type": "fixed", "channel": 3}, context()).context_errors(),
            ["channel 3 (app) is disabled"],
        )
        self.assertEqual(
            FixedChannelPolicy({"type": "fixed", "channel": 9}, context()).context_errors(),
            ["channel 9 does not exist"],
        )
        self.assertEqual(
            FixedCreativePolicy({"type": "fixed", "creative": 12}, context()).context_errors(),
            ["creative 12 (C) is disabled"],
        )


class WeightedCreativeTests(TestCase):
    def test_creatives_are_weighted_by_their_weight_within_the_channel_kind(self) -> None:
        policy = WeightedCreativePolicy({"type": "weighted"}, context())
        kinds = np.where(IDS % 2 == 0, "email", "sms").astype(object)
        channel_ids = np.where(IDS % 2 == 0, 1, 2)
        picks = policy.pick(IDS, channel_ids, kinds)
        on_email = picks.choice[kinds == "email"]
        self.assertEqual(set(on_email.tolist()), {10, 11})  # never the disabled creative 12
        np.testing.assert_array_equal(picks.choice[kinds == "sms"], 20)
        np.testing.assert_allclose(
            picks.probability, np.select([picks.choice == 10, picks.choice == 11], [0.25, 0.75], 1.0)
        )
        self.assertLess(abs(np.count_nonzero(on_email == 11) - 7500), 300)  # 75% of 10,000, sd 43
        self.assertEqual(picks.features, {})

    def test_explicit_weights_override_the_creatives_own(self) -> None:
        policy = WeightedCreativePolicy({"type": "weighted", "weights": {"10": 1, "11": 1}}, context())
        picks = policy.pick(IDS, np.ones(len(IDS), dtype=np.int64), np.full(len(IDS), "email", dtype=object))
        np.testing.assert_allclose(picks.probability, 0.5)
        self.assertEqual(
            policy.channel_kind_errors(["email", "sms"]), ["no enabled sms creative with a weight above 0"]
        )
        bad = WeightedCreativePolicy({"type": "weighted", "weights": {"10": 1, "77": 1}}, context())
        self.assertEqual(bad.context_errors(), ["creative 77 is not a creative of this campaign"])


class PolicyErrorsTests(TestCase):
    def test_well_formed_policies_have_no_errors(self) -> None:
        for value, kind in (
            ({}, "channel"),
            (None, "creative"),
            ({"type": "fixed", "channel": 1}, "channel"),
            ({"type": "weighted", "weights": {"1": 2.5, "2": 0}}, "channel"),
            ({"type": "weighted"}, "creative"),
            ({"type": "fixed", "creative": "4"}, "creative"),
        ):
            self.assertEqual(policy_errors(value, kind), [], value)

    def test_each_problem_gets_a_clear_message(self) -> None:
        cases = [
            (
                ["not", "an", "object"],
                "channel",
                ['must be a JSON object such as {"type": "fixed", …}, or {} for the default'],
            ),
            ({"channel": 1}, "channel", ['"type" is required: one of fixed, propensity, thompson, weighted']),
            (
                {"type": "bandit"},
                "creative",
                ['unknown creative policy type "bandit": one of fixed, propensity, thompson, weighted'],
            ),
            ({"type": "fixed"}, "channel", ['"channel" must be a channel id']),
            ({"type": "fixed", "channel": True}, "channel", ['"channel" must be a channel id']),
            ({"type": "fixed", "creative": 0}, "creative", ['"creative" must be a creative id']),
            ({"type": "fixed", "channel": 1, "extra": 1}, "channel", ['unknown key "extra" (allowed: channel, type)']),
            ({"type": "weighted"}, "channel", ['"weights" is required: {"<channel id>": weight, …}']),
            (
                {"type": "weighted", "weights": {}},
                "channel",
                ['"weights" must be a non-empty object {"<channel id>": weight, …}'],
            ),
            (
                {"type": "weighted", "weights": {"x": 1, "2": -1, "3": "a"}},
                "channel",
                [
                    '"weights": "x" is not a channel id',
                    '"weights": the weight of channel 2 must be a number >= 0',
                    '"weights": the weight of channel 3 must be a number >= 0',
                ],
            ),
            ({"type": "weighted", "weights": {"1": 0}}, "channel", ['"weights": at least one weight must be above 0']),
            (
                {"type": "weighted", "weights": {"1": float("nan")}},
                "creative",
                ['"weights": the weight of creative 1 must be a number >= 0'],
            ),
        ]
        for value, kind, expected in cases:
            self.assertEqual(policy_errors(value, kind), expected, value)
        with self.assertRaises(ValueError):
            policy_errors({}, "segment")


class PoliciesForTests(TestCase):
    def problems(self, channel_json, creative_json, ctx=None):
        built, problems = policies_for(channel_json, creative_json, ctx or context())
        return built, {field: messages for field, messages in problems.by_field.items() if messages}

    def test_the_default_is_the_single_enabled_channel_of_the_creatives_and_weighted_creatives(self) -> None:
        built, problems = self.problems({}, {}, context(creatives=(MAIL_A, MAIL_B)))
        self.assertEqual(problems, {})
        self.assertIsInstance(built.channel, FixedChannelPolicy)
        self.assertEqual((built.channel.channel_ids(), built.label), ([1], "fixed/weighted"))
        self.assertIsInstance(built.creative, WeightedCreativePolicy)

    def test_the_default_needs_exactly_one_channel(self) -> None:
        built, problems = self.problems({}, {})
        self.assertIsNone(built)
        self.assertEqual(
            problems,
            {
                "channel_policy": [
                    "several enabled channels can send this campaign's creatives (1 (mail), 2 (text)): "
                    "choose with a channel policy"
                ]
            },
        )
        _, problems = self.problems({}, {}, context(channels=(SMS,), creatives=(MAIL_A,)))
        self.assertEqual(problems, {"channel_policy": ["no enabled channel of kind email: add or enable one"]})
        _, problems = self.problems({}, {}, context(creatives=(MAIL_OFF,)))
        self.assertEqual(problems, {"creatives": ["the campaign has no enabled creative"]})

    def test_each_channel_kind_needs_a_creative(self) -> None:
        weights = {"type": "weighted", "weights": {"1": 1, "2": 1}}
        _, problems = self.problems(weights, {}, context(creatives=(MAIL_A,)))
        self.assertEqual(problems, {"creatives": ["no enabled sms creative with a weight above 0"]})
        _, problems = self.problems(weights, {"type": "fixed", "creative": 10})
        self.assertEqual(
            problems,
            {"creative_policy": ["creative 10 is for email, but the channel policy can also pick sms channels"]},
        )
        built, problems = self.problems(weights, {})
        self.assertEqual((problems, built.label), ({}, "weighted/weighted"))

    def test_malformed_json_is_reported_before_anything_else(self) -> None:
        built, problems = self.problems({"type": "fixed"}, {"type": "fixed"})
        self.assertIsNone(built)
        self.assertEqual(
            problems,
            {
                "channel_policy": ['"channel" must be a channel id'],
                "creative_policy": ['"creative" must be a creative id'],
            },
        )


class EverySecondChannel(ChannelPolicy):
    """A test policy: alternates channels by customer id parity, logging the parity."""

    def channel_ids(self) -> list[int]:
        return [1, 2]

    def pick(self, customer_ids, channel_ids, eligible) -> Picks:
        column = np.where(eligible[:, 1] & (customer_ids % 2 == 0), 1, 0)
        column = np.where(eligible[np.arange(len(column)), column], column, 1 - column)
        return Picks(
            choice=channel_ids[column],
            probability=np.ones(len(customer_ids)),
            features=GroupedFeatures(
                values=[{"even": False}, {"even": True}], index=(customer_ids % 2 == 0).astype(int)
            ),
        )


class RegistryTests(TestCase):
    def tearDown(self) -> None:
        policies._registry.pop(("channel", "every_second"), None)

    def test_a_registered_policy_is_validated_and_built_by_name(self) -> None:
        self.assertEqual(
            policy_errors({"type": "every_second"}, "channel"),
            ['unknown channel policy type "every_second": one of fixed, propensity, thompson, weighted'],
        )
        register_policy("every_second", EverySecondChannel)
        self.assertEqual(policy_errors({"type": "every_second"}, "channel"), [])
        self.assertEqual(
            policies.policy_names("channel"), ["every_second", "fixed", "propensity", "thompson", "weighted"]
        )
        self.assertEqual(policies.policy_names("creative"), ["fixed", "propensity", "thompson", "weighted"])
        built, problems = policies_for({"type": "every_second"}, {}, context())
        self.assertFalse(problems)
        self.assertEqual(built.label, "every_second/weighted")
        picks = built.channel.pick(IDS[:4], np.array([1, 2]), np.ones((4, 2), dtype=bool))
        self.assertEqual(picks.choice.tolist(), [1, 2, 1, 2])
        features = features_grouped(picks.features, 4)
        self.assertEqual([features.values[i] for i in features.index], [{"even": False}, {"even": True}] * 2)

    def test_only_channel_or_creative_policies_can_be_registered(self) -> None:
        class Nothing(policies.Policy):
            kind = "segment"

        with self.assertRaises(ValueError):
            register_policy("nothing", Nothing)

    def test_features_must_match_the_customers(self) -> None:
        with self.assertRaises(ValueError):
            features_grouped([{"a": 1}], 2)
        grouped = features_grouped([{"a": 1}, {"a": 2}], 2)
        self.assertEqual((grouped.values, grouped.index.tolist()), ([{"a": 1}, {"a": 2}], [0, 1]))
