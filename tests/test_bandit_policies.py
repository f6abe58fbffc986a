"""Learning policies at launch (campaigns.delivery.bandit_policies) over real touchpoints:
per-arm rewards from the exposure -> outcome join with delayed rewards (exact counts), the
Thompson creative policy (the best creative gets the largest share; every logged
probability, on messages and held-out touchpoints, is the engine's P(argmax) for that
posterior; the picks are the inverse CDF of the customers' draws), the per-segment Thompson
channel policy with eligibility, and bad configurations refused through the campaign API
with a clear 400 and nothing written. Runs on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.test import TestCase

from campaigns.delivery.launch import run_launch
from campaigns.delivery.policies import PolicyContext, uniform_draws
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Message, Segment, SegmentMembership
from marketing.models import Customer, Touchpoint
from mlcore.engine.bandits import argmax_probabilities, pick_from_probabilities
from mlcore.rewards import ArmStats, arm_rewards
from tests.api_helpers import ApiTestCase

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
REACHABLE = {"email_opt_in": True, "sms_opt_in": True, "push_opt_in": True}
_events = iter(range(1, 10**9))


def customer(external_id: str, *, email: bool = True, phone: bool = False) -> Customer:
    n = next(_events)
    return Customer.objects.create(
        external_id=external_id,
        email=f"{external_id}@example.com" if email else "",
        phone=f"+1415{n:07d}" if phone else "",
        **REACHABLE,
    )


def segment(name: str, members) -> Segment:
    seg = Segment.objects.create(name=name, kind=Segment.Kind.STATIC)
    SegmentMembership.objects.bulk_create(SegmentMembership(segment=seg, customer=c, since=NOW) for c in members)
    return seg


def sent(who: Customer, campaign: Campaign, creative: Creative | None, channel: Channel, at: datetime, kind="sent"):
    Touchpoint.objects.create(
        customer=who,
        kind=kind,
        channel=channel.kind,
        campaign_id=campaign.pk,
        creative_id=creative.pk if creative else None,
        occurred_at=at,
        event_id=f"{kind}-{next(_events)}",
        properties={"channel_id": channel.pk, "policy": "fixed/weighted", "probability": 0.5},
    )


def purchase(who: Customer, at: datetime) -> None:
    n = next(_events)
    Touchpoint.objects.create(
        customer=who,
        kind="purchase",
        occurred_at=at,
        event_id=f"p-{n}",
        order_id=f"o-{n}",
        sku="S",
        revenue=Decimal("10"),
    )


def history(
    campaign: Campaign,
    creative: Creative | None,
    channel: Channel,
    *,
    sent_at: datetime,
    converted_at: list[datetime | None],
    prefix: str,
    segments: tuple[Segment, ...] = (),
) -> None:
    """One earlier send per outcome in `converted_at` (None: no purchase), each to a new customer."""
    for i, when in enumerate(converted_at):
        who = customer(f"{prefix}-{i}")
        for seg in segments:
            SegmentMembership.objects.create(segment=seg, customer=who, since=NOW)
        sent(who, campaign, creative, channel, sent_at)
        if when is not None:
            purchase(who, when)


class CreativeCase(TestCase):
    """An email channel and a campaign with three email creatives A, B, C and a history:
    A: 10 closed sends (2 converted in the window, 1 after it), 3 still open (1 converted,
    1 converts only after `NOW`); B: 20 closed sends, 12 converted; C: never sent."""

    def setUp(self) -> None:
        self.email = Channel.objects.create(name="mail", kind="email")
        self.campaign = Campaign.objects.create(
            name="Winter sale",
            holdout_percent=10,
            goal_event="purchase",
            attribution_window_days=7,
            creative_policy={"type": "thompson"},
        )
        self.a, self.b, self.c = (
            Creative.objects.create(campaign=self.campaign, channel_kind="email", name=name, body=name)
            for name in "ABC"
        )
        closed, open_ = NOW - 10 * DAY, NOW - 2 * DAY
        history(
            self.campaign,
            self.a,
            self.email,
            sent_at=closed,
            prefix="a-closed",
            converted_at=[NOW - 9 * DAY] * 2 + [NOW - 2 * DAY] + [None] * 7,
        )
        history(
            self.campaign,
            self.a,
            self.email,
            sent_at=open_,
            prefix="a-open",
            converted_at=[NOW - DAY, NOW + timedelta(hours=1), None],
        )
        history(
            self.campaign,
            self.b,
            self.email,
            sent_at=closed,
            prefix="b",
            converted_at=[NOW - 9 * DAY] * 12 + [None] * 8,
        )
        # Not trials: a held-out customer (saw no creative), another campaign's send, a send after NOW.
        other = Campaign.objects.create(name="Other")
        noise = customer("noise")
        sent(noise, self.campaign, self.a, self.email, closed, kind="held_out")
        sent(noise, other, self.a, self.email, closed)
        sent(noise, self.campaign, self.a, self.email, NOW + DAY)
        purchase(noise, NOW - 9 * DAY)


class RewardTests(CreativeCase):
    def test_successes_and_trials_per_creative_with_delayed_rewards(self) -> None:
        rewards = arm_rewards(self.campaign.pk, arm="creative", goal_kind="purchase", window_days=7, now=NOW)
        self.assertEqual(
            rewards.by_group,
            {None: {self.a.pk: ArmStats(successes=3, trials=11, exposures=13), self.b.pk: ArmStats(12, 20, 20)}},
        )
        successes, trials = rewards.matrices([self.a.pk, self.b.pk, self.c.pk])
        self.assertEqual((successes.tolist(), trials.tolist()), ([[3, 12, 0]], [[11, 20, 0]]))
        # A day later the conversion at NOW + 1h counts, and the open window of the third is still open.
        later = arm_rewards(self.campaign.pk, arm="creative", goal_kind="purchase", window_days=7, now=NOW + DAY)
        self.assertEqual(later.stats(self.a.pk), ArmStats(successes=4, trials=12, exposures=14))
        # Once every window closed, every send is a trial.
        closed = arm_rewards(self.campaign.pk, arm="creative", goal_kind="purchase", window_days=7, now=NOW + 8 * DAY)
        self.assertEqual(closed.stats(self.a.pk), ArmStats(successes=4, trials=14, exposures=14))
        # Another goal: no conversion at all.
        self.assertEqual(
            arm_rewards(self.campaign.pk, arm="creative", goal_kind="signup", window_days=7, now=NOW).stats(self.b.pk),
            ArmStats(successes=0, trials=20, exposures=20),
        )


class ThompsonCreativeTests(CreativeCase):
    def test_picks_follow_the_posterior_and_log_p_argmax(self) -> None:
        audience = [customer(f"new-{i}") for i in range(400)]
        self.campaign.audience.add(segment("audience", audience))
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["eligible"], 400)

        alpha, beta = np.array([4.0, 13.0, 1.0]), np.array([9.0, 9.0, 1.0])
        seed = PolicyContext(campaign_id=self.campaign.pk, run_key="launch", salt=self.campaign.salt).seed(
            "thompson-creative"
        )
        table = argmax_probabilities(alpha, beta, draws=10_000, seed=seed)
        arms = [self.a.pk, self.b.pk, self.c.pk]
        messages = list(Message.objects.filter(run=run).order_by("customer_id"))
        ids = np.array([m.customer_id for m in messages])
        uniforms = uniform_draws(
            ids, PolicyContext(campaign_id=self.campaign.pk, run_key="launch", salt=self.campaign.salt).seed("creative")
        )
        expected_columns, _ = pick_from_probabilities(table, uniforms)
        self.assertEqual([m.creative_id for m in messages], [arms[c] for c in expected_columns])
        for m in messages:
            column = arms.index(m.creative_id)
            self.assertEqual(m.policy, "fixed/thompson")
            self.assertEqual(m.probability, float(table[column]))
            self.assertEqual(
                m.features,
                {
                    "channel": {},
                    "creative": {
                        "policy": "thompson",
                        "arms": arms,
                        "alpha": [4.0, 13.0, 1.0],
                        "beta": [9.0, 9.0, 1.0],
                        "p_argmax": [round(float(p), 6) for p in table],
                        "probability": float(table[column]),
                    },
                },
            )
        shares = {creative: sum(1 for m in messages if m.creative_id == creative) for creative in arms}
        self.assertGreater(shares[self.b.pk], shares[self.c.pk])
        self.assertGreater(shares[self.c.pk], shares[self.a.pk])
        self.assertGreater(table[1], 0.5)
        # The held-out customers' touchpoints log the same probability as their messages.
        held = {m.pk: m for m in messages if m.status == "held_out"}
        self.assertEqual(len(held), run.counts["held_out"])
        self.assertGreater(len(held), 0)
        touchpoints = Touchpoint.objects.filter(kind="held_out", campaign_id=self.campaign.pk, message_id__isnull=False)
        self.assertEqual(touchpoints.count(), len(held))
        for t in touchpoints:
            self.assertEqual(t.properties["probability"], held[t.message_id].probability)
            self.assertEqual(t.creative_id, held[t.message_id].creative_id)
            self.assertEqual(t.properties["features"]["creative"]["alpha"], [4.0, 13.0, 1.0])

    def test_a_disabled_creative_is_not_an_arm(self) -> None:
        Creative.objects.filter(pk=self.b.pk).update(enabled=False)
        self.campaign.holdout_percent = 0
        self.campaign.save()
        self.campaign.audience.add(segment("audience", [customer(f"new-{i}") for i in range(50)]))
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        table = argmax_probabilities(
            np.array([4.0, 1.0]),
            np.array([9.0, 1.0]),
            draws=10_000,
            seed=PolicyContext(campaign_id=self.campaign.pk, run_key="launch", salt=self.campaign.salt).seed(
                "thompson-creative"
            ),
        )
        for m in Message.objects.filter(run=run):
            self.assertIn(m.creative_id, (self.a.pk, self.c.pk))
            self.assertEqual(m.probability, float(table[0 if m.creative_id == self.a.pk else 1]))
            self.assertEqual(m.features["creative"]["arms"], [self.a.pk, self.c.pk])


class ThompsonChannelTests(TestCase):
    """Email and sms; VIP customers convert on sms, everyone else on email."""

    def setUp(self) -> None:
        self.email = Channel.objects.create(name="mail", kind="email")
        self.sms = Channel.objects.create(name="text", kind="sms")
        self.campaign = Campaign.objects.create(name="Channels", holdout_percent=0, attribution_window_days=7)
        Creative.objects.create(campaign=self.campaign, channel_kind="email", name="M", body="m")
        Creative.objects.create(campaign=self.campaign, channel_kind="sms", name="T", body="t")
        self.vip = Segment.objects.create(name="VIP", kind=Segment.Kind.STATIC)
        self.gold = Segment.objects.create(name="Gold", kind=Segment.Kind.STATIC)
        sent_at, won = NOW - 10 * DAY, NOW - 9 * DAY
        history(
            self.campaign,
            None,
            self.sms,
            sent_at=sent_at,
            prefix="vs",
            converted_at=[won] * 8 + [None] * 2,
            segments=(self.vip,),
        )
        history(
            self.campaign,
            None,
            self.email,
            sent_at=sent_at,
            prefix="ve",
            converted_at=[won] + [None] * 9,
            segments=(self.vip,),
        )
        history(self.campaign, None, self.email, sent_at=sent_at, prefix="ne", converted_at=[won] * 16 + [None] * 4)
        history(self.campaign, None, self.sms, sent_at=sent_at, prefix="ns", converted_at=[won] * 2 + [None] * 18)
        self.campaign.channel_policy = {
            "type": "thompson",
            "channels": [self.email.pk, self.sms.pk],
            "per_segment": [self.vip.pk, self.gold.pk],
        }
        self.campaign.save()

    def test_per_segment_posteriors_and_eligibility(self) -> None:
        vip = [customer(f"vip-{i}", phone=True) for i in range(100)]
        vip_sms_only = [customer(f"vip-sms-{i}", email=False, phone=True) for i in range(20)]
        both_segments = [customer(f"vip-gold-{i}", phone=True) for i in range(10)]
        gold = [customer(f"gold-{i}", phone=True) for i in range(40)]
        others = [customer(f"other-{i}", phone=True) for i in range(100)]
        email_only = [customer(f"mail-{i}") for i in range(20)]
        for who in [*vip, *vip_sms_only, *both_segments]:
            SegmentMembership.objects.create(segment=self.vip, customer=who, since=NOW)
        for who in [*gold, *both_segments]:
            SegmentMembership.objects.create(segment=self.gold, customer=who, since=NOW)
        self.campaign.audience.add(
            segment("audience", [*vip, *vip_sms_only, *both_segments, *gold, *others, *email_only])
        )
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["queued"], 290)

        # Campaign-wide: email 17/30, sms 10/30; VIP: email 1/10, sms 8/10; Gold: no sends.
        posteriors = {
            None: ([18.0, 11.0], [14.0, 21.0]),
            self.vip.pk: ([2.0, 9.0], [10.0, 3.0]),
            self.gold.pk: ([1.0, 1.0], [1.0, 1.0]),
        }
        seed = PolicyContext(campaign_id=self.campaign.pk, run_key="launch", salt=self.campaign.salt).seed(
            "thompson-channel"
        )
        tables = {
            group: argmax_probabilities(np.array(a), np.array(b), draws=10_000, seed=seed)
            for group, (a, b) in posteriors.items()
        }
        arms = [self.email.pk, self.sms.pk]
        group_of = {c.pk: self.vip.pk for c in [*vip, *vip_sms_only, *both_segments]}
        group_of |= {c.pk: self.gold.pk for c in gold}
        on = {}
        for m in Message.objects.filter(run=run).select_related("customer"):
            group = group_of.get(m.customer_id)
            reachable = [
                channel.pk
                for channel, usable in ((self.email, bool(m.customer.email)), (self.sms, bool(m.customer.phone)))
                if usable
            ]
            expected = 1.0 if len(reachable) == 1 else float(tables[group][arms.index(m.channel_id)])
            self.assertIn(m.channel_id, reachable)
            self.assertEqual(m.probability, expected)  # the creative: the only one of its kind
            alpha, beta = posteriors[group]
            self.assertEqual(
                m.features,
                {
                    "channel": {
                        "policy": "thompson",
                        "segment": group,
                        "arms": arms,
                        "alpha": alpha,
                        "beta": beta,
                        "eligible_channels": reachable,
                        "probability": expected,
                    },
                    "creative": {},
                },
            )
            kind = m.customer.external_id.rsplit("-", 1)[0]
            on.setdefault(kind, {}).setdefault(m.channel_id, 0)
            on[kind][m.channel_id] += 1
        self.assertEqual(on["mail"], {self.email.pk: 20})
        self.assertEqual(on["vip-sms"], {self.sms.pk: 20})
        self.assertGreater(tables[self.vip.pk][1], 0.95)
        self.assertGreater(tables[None][0], 0.95)
        self.assertGreater(on["vip"][self.sms.pk], 90)
        self.assertGreater(on["other"][self.email.pk], 85)  # P(email) 0.96
        self.assertEqual(sum(on["vip-gold"].values()), 10)


class BadConfigApiTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.email = Channel.objects.create(name="mail", kind="email")
        who = Customer.objects.create(external_id="c0", email="c0@example.com", email_opt_in=True)
        self.segment = segment("everyone", [who])

    def error(self, field: str, message: str) -> dict:
        return {"row": None, "field": field, "message": message}

    def test_malformed_policies_are_400s_naming_the_field_and_nothing_is_written(self) -> None:
        cases = [
            (
                "creative_policy",
                {"type": "thompson", "prior": [0, 1], "draws": 5, "x": 1},
                [
                    'unknown key "x" (allowed: draws, prior, type)',
                    '"prior" must be two positive numbers [alpha, beta], e.g. [1, 1]',
                    '"draws" must be a whole number from 100 to 1000000',
                ],
            ),
            ("channel_policy", {"type": "thompson"}, ['"channels" is required: a list of channel ids']),
            (
                "channel_policy",
                {"type": "thompson", "channels": []},
                ['"channels" must be a non-empty list of channel ids'],
            ),
            ("channel_policy", {"type": "thompson", "channels": [1, 1]}, ['"channels" lists a channel twice']),
            (
                "channel_policy",
                {"type": "thompson", "channels": [1], "per_segment": ["x"]},
                ["\"per_segment\": 'x' is not a segment id"],
            ),
        ]
        for field, policy, messages in cases:
            response = self.post_json("/api/v1/campaigns", {"name": "sale", field: policy})
            self.assertEqual(response.status_code, 400, policy)
            self.assertEqual(response.json()["errors"], [self.error(field, m) for m in messages], policy)
        self.assertFalse(Campaign.objects.exists())

    def test_a_launch_against_missing_channels_or_segments_is_a_400(self) -> None:
        response = self.post_json(
            "/api/v1/campaigns",
            {
                "name": "sale",
                "audience": [self.segment.pk],
                "holdout_percent": "0",
                "channel_policy": {"type": "thompson", "channels": [self.email.pk, 999999], "per_segment": [888888]},
                "creative_policy": {"type": "thompson"},
            },
        )
        self.assertEqual(response.status_code, 201, response.json())
        campaign = Campaign.objects.get()
        response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                self.error("channel_policy", "channel 999999 does not exist"),
                self.error("channel_policy", "segment 888888 does not exist"),
            ],
        )
        # No creative for the channel's kind: named on the creative policy.
        campaign.channel_policy = {"type": "thompson", "channels": [self.email.pk]}
        campaign.save()
        response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"], [self.error("creative_policy", "no enabled email creative to choose from")]
        )
        self.assertEqual(Campaign.objects.get().status, "draft")
        self.assertFalse(CampaignRun.objects.exists())
        self.assertFalse(Message.objects.exists())


def propensity_champion(channels: list[str], creatives: list[int]):
    """A small model trained on random rows (what it learned does not matter here: the
    tests check that the policy scores with it, picks and logs exactly), as the champion."""
    from mlcore.artifacts import artifact_save
    from mlcore.engine.propensity import PropensityConfig, PropensityData, train_propensity
    from mlcore.models import ModelVersion
    from mlcore.training import FEATURE_NAMES

    rng = np.random.default_rng(0)
    n = 200
    X = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32) * 10
    channel = rng.integers(1, len(channels), n)
    creative = rng.integers(1, len(creatives), n)
    y = (rng.random(n) < 0.2 + 0.5 * (creative == 1)).astype(np.float32)
    config = PropensityConfig(hidden=(8,), max_epochs=2, batch_size=64, amp=False)
    trained = train_propensity(
        PropensityData(X, channel, creative, y, list(FEATURE_NAMES)), len(channels), len(creatives), config, "cpu"
    )
    version = ModelVersion.objects.create(
        task="propensity",
        algorithm="mlp",
        status="succeeded",
        is_champion=True,
        params={"channels": channels, "creatives": creatives, "feature_names": list(FEATURE_NAMES)},
    )
    artifact_save(version, trained.to_bytes())
    return version


class PropensityPolicyTests(TestCase):
    def setUp(self) -> None:
        self.email = Channel.objects.create(name="mail", kind="email")
        self.sms = Channel.objects.create(name="text", kind="sms")
        self.campaign = Campaign.objects.create(
            name="Scored", holdout_percent=0, creative_policy={"type": "propensity", "epsilon": 0.2}
        )
        self.a, self.b = (
            Creative.objects.create(campaign=self.campaign, channel_kind="email", name=n, body=n) for n in "AB"
        )
        self.customers = [customer(f"c-{i}", phone=i % 3 == 0) for i in range(60)]
        for i, who in enumerate(self.customers):
            for _ in range(i % 4):
                purchase(who, NOW - (i + 1) * DAY)
        self.campaign.audience.add(segment("audience", self.customers))

    def test_without_a_champion_the_launch_is_refused_naming_the_policy(self) -> None:
        from marketing.errors import BatchInvalid

        with self.assertRaises(BatchInvalid) as caught:
            run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(
            [(e.field, e.message) for e in caught.exception.errors],
            [
                (
                    "creative_policy",
                    "there is no champion propensity model yet: train one (model versions), or use another policy",
                )
            ],
        )
        self.assertFalse(CampaignRun.objects.exists())
        self.assertFalse(Message.objects.exists())

    def test_epsilon_greedy_on_the_champions_scores_with_exact_probabilities(self) -> None:
        from mlcore.propensity import propensity_arm_scores
        from mlcore.training import FEATURE_NAMES, decision_features

        version = propensity_champion(["<unknown>", "email"], [0, self.a.pk, self.b.pk])
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        messages = list(Message.objects.filter(run=run).order_by("customer_id"))
        self.assertEqual(len(messages), 60)
        ids = [m.customer_id for m in messages]
        scores = propensity_arm_scores(ids, [("email", self.a.pk), ("email", self.b.pk)], at=NOW)
        X = decision_features(ids, at=NOW)
        arms = [self.a.pk, self.b.pk]
        greedy = 0
        for m, row, x in zip(messages, scores, X, strict=True):
            logged = m.features["creative"]
            self.assertEqual(
                {k: logged[k] for k in ("policy", "model_version", "epsilon", "arms")},
                {"policy": "propensity", "model_version": version.pk, "epsilon": 0.2, "arms": arms},
            )
            np.testing.assert_allclose(logged["scores"], row, atol=1e-6)
            self.assertEqual(sorted(logged["decision"]), sorted(FEATURE_NAMES))
            np.testing.assert_allclose([logged["decision"][name] for name in FEATURE_NAMES], x, rtol=1e-6)
            best = arms[int(np.argmax(row))]
            expected = 0.2 / 2 + (0.8 if m.creative_id == best else 0.0)
            self.assertAlmostEqual(m.probability, expected, places=12)
            self.assertAlmostEqual(logged["probability"], expected, places=12)
            greedy += m.creative_id == best
        self.assertGreater(greedy, 45)  # 90% expected

    def test_the_channel_policy_picks_the_best_reachable_channel(self) -> None:
        Creative.objects.create(campaign=self.campaign, channel_kind="sms", name="S", body="s")
        self.campaign.channel_policy = {"type": "propensity", "channels": [self.email.pk, self.sms.pk], "epsilon": 0}
        self.campaign.creative_policy = {"type": "weighted"}
        self.campaign.save()
        propensity_champion(["<unknown>", "email", "sms"], [0, self.a.pk, self.b.pk])
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        for m in Message.objects.filter(run=run).select_related("customer"):
            logged = m.features["channel"]
            reachable = [self.email.pk, self.sms.pk] if m.customer.phone else [self.email.pk]
            self.assertEqual(logged["eligible_channels"], reachable)
            scores = dict(zip([self.email.pk, self.sms.pk], logged["scores"], strict=True))
            # The best reachable one (the logged scores are rounded to 6 places: a near tie may look equal).
            self.assertIn(m.channel_id, reachable)
            self.assertGreaterEqual(scores[m.channel_id], max(scores[c] for c in reachable) - 1e-6)
            self.assertEqual(logged["probability"], 1.0)


class LearningLoopTests(TestCase):
    """Launch -> send (the real sender, Django's test mail backend) -> conversions -> the next
    run: Thompson sampling learns from the outcomes of its own sends."""

    def test_the_next_run_concentrates_on_the_planted_best_creative(self) -> None:
        from campaigns.delivery.send import send_due

        email = Channel.objects.create(name="mail", kind="email")
        campaign = Campaign.objects.create(
            name="Loop",
            status=Campaign.Status.RUNNING,
            trigger=Campaign.Trigger.RECURRING,
            cron="0 9 * * 1",
            holdout_percent=0,
            attribution_window_days=7,
            creative_policy={"type": "thompson"},
        )
        creatives = [
            Creative.objects.create(campaign=campaign, channel_kind="email", name=n, subject=n, body=n) for n in "ABC"
        ]
        rates = {creatives[0].pk: 0.05, creatives[1].pk: 0.40, creatives[2].pk: 0.10}
        audience = [customer(f"loop-{i}") for i in range(300)]
        campaign.audience.add(segment("audience", audience))

        first = run_launch(campaign.pk, "week-1", now=NOW)
        counts = send_due(email.pk, limit=1000, now=NOW)
        self.assertEqual((counts["claimed"], counts["sent"]), (300, 300))
        sent = {t.message_id: t for t in Touchpoint.objects.filter(kind="sent", campaign_id=campaign.pk)}
        self.assertEqual(len(sent), 300)
        for m in Message.objects.filter(run=first):
            # The sent touchpoint carries what the policy logged on the message.
            self.assertEqual(sent[m.pk].properties["probability"], m.probability)
            self.assertEqual(sent[m.pk].properties["features"], m.features)
            self.assertEqual(sent[m.pk].creative_id, m.creative_id)
        # Outcomes: customer c converts after creative X when their own draw < X's rate.
        ids = np.array([t.customer_id for t in sent.values()])
        draws = dict(zip(ids.tolist(), uniform_draws(ids, 12345).tolist(), strict=True))
        won = {creative.pk: 0 for creative in creatives}
        tried = {creative.pk: 0 for creative in creatives}
        for t in sent.values():
            tried[t.creative_id] += 1
            if draws[t.customer_id] < rates[t.creative_id]:
                won[t.creative_id] += 1
                purchase(Customer.objects.get(pk=t.customer_id), NOW + DAY)

        second = run_launch(campaign.pk, "week-2", now=NOW + 8 * DAY)
        messages = list(Message.objects.filter(run=second))
        self.assertEqual(len(messages), 300)
        alphas = [1.0 + won[c.pk] for c in creatives]
        betas = [1.0 + tried[c.pk] - won[c.pk] for c in creatives]
        self.assertEqual(messages[0].features["creative"]["alpha"], alphas)
        self.assertEqual(messages[0].features["creative"]["beta"], betas)
        share = {c.pk: sum(1 for m in messages if m.creative_id == c.pk) / 300 for c in creatives}
        first_share = Message.objects.filter(run=first, creative_id=creatives[1].pk).count() / 300
        self.assertGreater(share[creatives[1].pk], 0.9)
        self.assertLess(first_share, 0.5)
