"""Launching campaign runs (campaigns.delivery.launch) and the campaign status machine
(campaigns.delivery.control): exact messages per customer with their drop reasons, the
holdout (share and exact membership against the Python hash), idempotence, held-out
touchpoints, logged policy probabilities, budget and frequency caps, a statement count that
does not grow with the audience, launch/pause/resume/cancel/progress/completion, and the
GDPR eraser. Runs on PostgreSQL and SQLite alike."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from campaigns.delivery.control import (
    campaign_cancel,
    campaign_definition_errors,
    campaign_launch,
    campaign_pause,
    campaign_progress,
    campaign_resume,
    campaigns_mark_completed,
)
from campaigns.delivery.holdout import holdout_bucket, is_held_out
from campaigns.delivery.launch import run_launch
from campaigns.models import (
    Campaign,
    CampaignRun,
    Channel,
    Creative,
    Device,
    Message,
    Segment,
    SegmentChange,
    SegmentMembership,
)
from marketing.errors import BatchInvalid, Conflict, NotFound
from marketing.models import Customer, Suppression, Touchpoint
from marketing.services import customer_erase

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
REACHABLE = {"email_opt_in": True, "sms_opt_in": True, "push_opt_in": True}


def customer(external_id: str, **fields) -> Customer:
    values = {"email": f"{external_id}@example.com", "phone": "", **REACHABLE, **fields}
    return Customer.objects.create(external_id=external_id, **values)


def segment(name: str, *members: Customer) -> Segment:
    seg = Segment.objects.create(name=name, kind=Segment.Kind.STATIC)
    SegmentMembership.objects.bulk_create(SegmentMembership(segment=seg, customer=c, since=NOW) for c in members)
    return seg


def device(owner: Customer, token: str, enabled: bool = True) -> Device:
    return Device.objects.create(
        customer=owner,
        platform=Device.Platform.ANDROID,
        token=token,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        enabled=enabled,
    )


def outbox(campaign: Campaign, run: CampaignRun | None = None) -> dict[str, tuple]:
    """{external id: (status, error, channel name or None, creative name or None)}."""
    rows = Message.objects.filter(campaign=campaign).select_related("customer", "channel", "creative")
    if run is not None:
        rows = rows.filter(run=run)
    return {
        m.customer.external_id: (
            m.status,
            m.error,
            m.channel.name if m.channel else None,
            m.creative.name if m.creative else None,
        )
        for m in rows
    }


class LaunchCase(TestCase):
    """An email channel (1 cent) and an sms channel (5 cents); a campaign on email with
    one creative, no holdout (tests that need one set it)."""

    def setUp(self) -> None:
        self.email = Channel.objects.create(name="mail", kind="email", cost_per_message=Decimal("0.01"))
        self.sms = Channel.objects.create(name="text", kind="sms", cost_per_message=Decimal("0.05"))
        self.campaign = Campaign.objects.create(name="Winter sale", holdout_percent=0)
        self.mail_a = Creative.objects.create(campaign=self.campaign, channel_kind="email", name="A", body="Hi")

    def audience(self, *members: Customer, name: str = "audience") -> Segment:
        seg = segment(name, *members)
        self.campaign.audience.add(seg)
        return seg


class LaunchDropReasonTests(LaunchCase):
    def test_each_drop_reason_gets_its_message_and_count(self) -> None:
        ok1, ok2 = customer("ok1"), customer("ok2")
        erased = customer("erased")
        customer_erase(erased)
        unsubscribed = customer("unsub", unsubscribed_at=NOW - timedelta(days=3))
        no_consent = customer("noconsent", email_opt_in=False)
        suppressed = customer("supp", email="Supp@Example.COM")
        Suppression.objects.create(kind="email", value="supp@example.com", reason="hard_bounce")
        no_address = customer("noaddr", email="")
        capped = customer("capped")
        other = Campaign.objects.create(name="Other")
        for days in (1, 2):
            Message.objects.create(
                campaign=other,
                run=CampaignRun.objects.create(campaign=other, key=f"day-{days}"),
                customer=capped,
                status="sent",
                sent_at=NOW - timedelta(days=days),
            )
        self.campaign.frequency_cap = 2
        self.campaign.save()
        # A Suppression of another kind with the same text does not suppress email.
        Suppression.objects.create(kind="phone", value="ok1@example.com")
        self.audience(ok1, ok2, erased, unsubscribed, no_consent, suppressed, no_address, capped)

        run = run_launch(self.campaign.pk, "launch", now=NOW)

        self.assertEqual(
            outbox(self.campaign),
            {
                "ok1": ("queued", "", "mail", "A"),
                "ok2": ("queued", "", "mail", "A"),
                f"erased:{erased.pk}": ("suppressed", "erased", None, None),
                "unsub": ("suppressed", "unsubscribed", None, None),
                "noconsent": ("suppressed", "no_consent", None, None),
                "supp": ("suppressed", "suppressed", None, None),
                "noaddr": ("suppressed", "no_address", None, None),
                "capped": ("suppressed", "frequency_cap", None, None),
            },
        )
        self.assertEqual(
            run.counts,
            {
                "audience": 8,
                "eligible": 2,
                "held_out": 0,
                "queued": 2,
                "suppressed": {
                    "erased": 1,
                    "unsubscribed": 1,
                    "no_consent": 1,
                    "suppressed": 1,
                    "no_address": 1,
                    "frequency_cap": 1,
                },
            },
        )
        self.assertEqual((run.key, run.status, run.started_at), ("launch", "running", NOW))
        queued = Message.objects.filter(campaign=self.campaign, status="queued")
        for message in queued:
            self.assertEqual((message.not_before, message.attempts, message.claimed_by), (NOW, 0, ""))
            self.assertEqual((message.policy, message.probability), ("fixed/weighted", 1.0))
            self.assertEqual(message.features, {"channel": {}, "creative": {}})
        for message in Message.objects.filter(campaign=self.campaign, status="suppressed"):
            self.assertEqual((message.policy, message.probability, message.features), ("", None, {}))
        self.assertFalse(Touchpoint.objects.filter(campaign_id=self.campaign.pk).exists())

    def test_the_first_reason_that_applies_is_the_one_recorded(self) -> None:
        both = customer("both", email_opt_in=False, unsubscribed_at=NOW)  # unsubscribed comes first
        gone = customer("gone", unsubscribed_at=NOW)
        customer_erase(gone)  # erased comes before unsubscribed
        self.audience(both, gone)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["suppressed"], {"erased": 1, "unsubscribed": 1})

    def test_with_several_channels_only_customers_no_channel_reaches_are_dropped(self) -> None:
        self.campaign.channel_policy = {"type": "weighted", "weights": {str(self.email.pk): 1, str(self.sms.pk): 1}}
        self.campaign.save()
        Creative.objects.create(campaign=self.campaign, channel_kind="sms", name="S", body="Hi")
        email_only = customer("email_only", sms_opt_in=False, phone="+14155550001")
        sms_only = customer("sms_only", email="", phone="+14155550002")
        # email: no consent; sms: consent but the number is suppressed -> furthest: suppressed
        blocked = customer("blocked", email_opt_in=False, phone="+14155550003")
        Suppression.objects.create(kind="phone", value="+14155550003")
        # email: consent but no address; sms: no consent -> furthest: no_address
        nowhere = customer("nowhere", email="", sms_opt_in=False, phone="+14155550004")
        self.audience(email_only, sms_only, blocked, nowhere)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(
            outbox(self.campaign),
            {
                "email_only": ("queued", "", "mail", "A"),
                "sms_only": ("queued", "", "text", "S"),
                "blocked": ("suppressed", "suppressed", None, None),
                "nowhere": ("suppressed", "no_address", None, None),
            },
        )
        self.assertEqual(run.counts["suppressed"], {"suppressed": 1, "no_address": 1})

    def test_push_needs_an_enabled_device_and_webhooks_need_no_consent(self) -> None:
        push = Channel.objects.create(name="app", kind="push")
        hook = Channel.objects.create(name="crm-hook", kind="webhook")
        Creative.objects.create(campaign=self.campaign, channel_kind="push", name="P", body="Hi")
        Creative.objects.create(campaign=self.campaign, channel_kind="webhook", name="W", body="{}")
        with_device, disabled_device, no_device = customer("dev"), customer("disabled"), customer("nodev")
        no_push_consent = customer("nopush", push_opt_in=False)
        device(with_device, "t1")
        device(disabled_device, "t2", enabled=False)
        device(no_push_consent, "t3")
        self.audience(with_device, disabled_device, no_device, no_push_consent)
        self.campaign.channel_policy = {"type": "fixed", "channel": push.pk}
        self.campaign.save()
        run_launch(self.campaign.pk, "push", now=NOW)
        self.assertEqual(
            outbox(self.campaign),
            {
                "dev": ("queued", "", "app", "P"),
                "disabled": ("suppressed", "no_address", None, None),
                "nodev": ("suppressed", "no_address", None, None),
                "nopush": ("suppressed", "no_consent", None, None),
            },
        )
        Customer.objects.filter(external_id__in=["dev", "nodev"]).update(
            email_opt_in=False, sms_opt_in=False, push_opt_in=False, email=""
        )
        self.campaign.channel_policy = {"type": "fixed", "channel": hook.pk}
        self.campaign.save()
        run = run_launch(self.campaign.pk, "hook", now=NOW)
        self.assertEqual({status for status, *_ in outbox(self.campaign, run).values()}, {"queued"})
        self.assertEqual(run.counts["queued"], 4)

    def test_exclusions_and_overlapping_audiences(self) -> None:
        ann, ben, cat, dan = customer("ann"), customer("ben"), customer("cat"), customer("dan")
        self.audience(ann, ben, cat, name="first")
        self.audience(ben, cat, dan, name="second")  # ben and cat in both: one message each
        self.campaign.exclusions.add(segment("vip", cat), segment("staff", dan))
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(
            outbox(self.campaign), {"ann": ("queued", "", "mail", "A"), "ben": ("queued", "", "mail", "A")}
        )
        self.assertEqual(run.counts["audience"], 2)

    def test_a_triggered_run_reaches_the_given_customers_minus_exclusions(self) -> None:
        ann, ben, cat = customer("ann"), customer("ben"), customer("cat")
        self.campaign.exclusions.add(segment("vip", cat))
        run = run_launch(self.campaign.pk, "changes:1-3", customer_ids=[ann.pk, ben.pk, cat.pk, ann.pk, 999_999])
        self.assertEqual(
            outbox(self.campaign), {"ann": ("queued", "", "mail", "A"), "ben": ("queued", "", "mail", "A")}
        )
        self.assertEqual(run.counts["audience"], 2)
        # With audience segments too, only their members.
        self.audience(ben)
        run = run_launch(self.campaign.pk, "changes:4-6", customer_ids=[ann.pk, ben.pk, cat.pk])
        self.assertEqual(outbox(self.campaign, run), {"ben": ("queued", "", "mail", "A")})

    def test_an_empty_audience_makes_a_completed_run_without_messages(self) -> None:
        self.audience()
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts, {"audience": 0, "eligible": 0, "held_out": 0, "queued": 0, "suppressed": {}})
        self.assertEqual((run.status, run.finished_at), ("completed", NOW))
        self.assertFalse(Message.objects.exists())
        # ... and launching it again does nothing, even with members now.
        SegmentMembership.objects.create(segment=self.campaign.audience.get(), customer=customer("late"), since=NOW)
        self.assertEqual(run_launch(self.campaign.pk, "launch", now=NOW).pk, run.pk)
        self.assertFalse(Message.objects.exists())

    def test_bad_campaigns_are_refused_with_the_field_and_nothing_is_written(self) -> None:
        with self.assertRaises(NotFound):
            run_launch(123456, "launch")
        with self.assertRaises(BatchInvalid) as caught:
            run_launch(self.campaign.pk, "launch")  # no audience
        self.assertEqual(
            [(e.field, e.message) for e in caught.exception.errors],
            [("audience", "choose at least one audience segment")],
        )
        self.audience(customer("ann"))
        self.campaign.channel_policy = {"type": "fixed", "channel": 999}
        self.campaign.save()
        with self.assertRaises(BatchInvalid) as caught:
            run_launch(self.campaign.pk, "launch")
        self.assertEqual(
            [(e.field, e.message) for e in caught.exception.errors], [("channel_policy", "channel 999 does not exist")]
        )
        self.assertFalse(CampaignRun.objects.exists())
        self.assertFalse(Message.objects.exists())
        Campaign.objects.filter(pk=self.campaign.pk).update(status="cancelled", channel_policy={})
        with self.assertRaises(Conflict) as caught:
            run_launch(self.campaign.pk, "launch")
        self.assertEqual(caught.exception.message, f"Campaign {self.campaign.pk} is cancelled: it makes no new runs.")


class LaunchIdempotenceTests(LaunchCase):
    def test_a_second_launch_with_the_same_key_creates_nothing(self) -> None:
        members = [customer(f"c{i}") for i in range(20)]
        self.audience(*members)
        self.campaign.holdout_percent = Decimal("50.00")
        self.campaign.save()
        first = run_launch(self.campaign.pk, "launch", now=NOW)
        messages = sorted(Message.objects.values_list("pk", "customer_id", "status", "channel_id", "creative_id"))
        touchpoints = sorted(Touchpoint.objects.values_list("pk", "event_id"))
        self.assertGreater(len(touchpoints), 0)
        # More members, a later time: still the same run and nothing new.
        SegmentMembership.objects.create(segment=self.campaign.audience.get(), customer=customer("late"), since=NOW)
        second = run_launch(self.campaign.pk, "launch", now=NOW + timedelta(hours=1))
        self.assertEqual((second.pk, second.counts), (first.pk, first.counts))
        self.assertEqual(
            sorted(Message.objects.values_list("pk", "customer_id", "status", "channel_id", "creative_id")), messages
        )
        self.assertEqual(sorted(Touchpoint.objects.values_list("pk", "event_id")), touchpoints)
        self.assertEqual(CampaignRun.objects.count(), 1)

    def test_another_run_key_is_another_run(self) -> None:
        self.audience(customer("ann"))
        first = run_launch(self.campaign.pk, "2026-11-20T12:00:00+00:00", now=NOW)
        second = run_launch(self.campaign.pk, "2026-11-21T12:00:00+00:00", now=NOW)
        self.assertNotEqual(first.pk, second.pk)
        self.assertEqual(Message.objects.filter(customer__external_id="ann").count(), 2)

    def test_the_statement_count_does_not_grow_with_the_audience(self) -> None:
        small = Campaign.objects.create(name="small", holdout_percent=50, frequency_cap=3, budget=100)
        large = Campaign.objects.create(name="large", holdout_percent=50, frequency_cap=3, budget=100)
        for camp, size in ((small, 5), (large, 300)):
            Creative.objects.create(campaign=camp, channel_kind="email", body="Hi")
            camp.audience.add(segment(f"seg-{camp.name}", *[customer(f"{camp.name}{i}") for i in range(size)]))
        counts = []
        for camp in (small, large):
            with CaptureQueriesContext(connection) as queries:
                run = run_launch(camp.pk, "launch", now=NOW)
            self.assertGreater(run.counts["held_out"], 0, camp.name)
            counts.append(len(queries))
        self.assertEqual(counts[0], counts[1])
        self.assertLessEqual(counts[1], 20)


class HoldoutTests(LaunchCase):
    def setUp(self) -> None:
        super().setUp()
        self.members = Customer.objects.bulk_create(
            Customer(external_id=f"h{i:05d}", email=f"h{i}@example.com", email_opt_in=True) for i in range(10_000)
        )
        self.members = list(Customer.objects.filter(external_id__startswith="h").order_by("pk"))
        self.audience(*self.members)
        self.campaign.holdout_percent = Decimal("10.00")
        self.campaign.save()

    def held(self, run: CampaignRun) -> set[int]:
        return set(Message.objects.filter(run=run, status="held_out").values_list("customer_id", flat=True))

    def test_the_holdout_is_the_share_and_exactly_the_python_hash(self) -> None:
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        expected = {
            c.pk for c in self.members if is_held_out(self.campaign.salt, self.campaign.pk, c.pk, Decimal("10"))
        }
        self.assertEqual(self.held(run), expected)
        # 10% of 10,000 with a binomial sd of 30: within 5 sd.
        self.assertLess(abs(len(expected) - 1000), 150)
        self.assertEqual(run.counts["held_out"], len(expected))
        self.assertEqual(run.counts["queued"], 10_000 - len(expected))
        # Every held-out customer is below the threshold bucket and no one else is.
        buckets = {c.pk: holdout_bucket(self.campaign.salt, self.campaign.pk, c.pk) for c in self.members}
        self.assertEqual({pk for pk, b in buckets.items() if b < 1000}, expected)

    def test_the_holdout_is_stable_across_runs_and_differs_between_campaigns(self) -> None:
        first = run_launch(self.campaign.pk, "2026-11-20T12:00:00+00:00", now=NOW)
        second = run_launch(self.campaign.pk, "2026-11-21T12:00:00+00:00", now=NOW)
        self.assertEqual(self.held(first), self.held(second))
        other = Campaign.objects.create(name="Other", holdout_percent=10)
        Creative.objects.create(campaign=other, channel_kind="email", body="Hi")
        other.audience.set(self.campaign.audience.all())
        third = run_launch(other.pk, "launch", now=NOW)
        self.assertNotEqual(self.held(third), self.held(first))
        self.assertLess(len(self.held(third) & self.held(first)), 200)  # about 1% of 10,000 expected


class HeldOutTouchpointTests(LaunchCase):
    def test_each_held_out_customer_gets_one_touchpoint_with_the_picks(self) -> None:
        self.campaign.holdout_percent = Decimal("50.00")
        self.campaign.save()
        members = [customer(f"c{i}") for i in range(30)]
        self.audience(*members)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        held = list(Message.objects.filter(run=run, status="held_out").order_by("pk"))
        self.assertEqual(len(held), run.counts["held_out"])
        self.assertGreater(len(held), 5)
        touchpoints = {t.message_id: t for t in Touchpoint.objects.all()}
        self.assertEqual(set(touchpoints), {m.pk for m in held})
        for message in held:
            t = touchpoints[message.pk]
            self.assertEqual(
                (t.customer_id, t.kind, t.channel, t.campaign_id, t.creative_id, t.occurred_at, t.event_id),
                (
                    message.customer_id,
                    "held_out",
                    "email",
                    self.campaign.pk,
                    self.mail_a.pk,
                    NOW,
                    f"held_out:{message.pk}",
                ),
            )
            self.assertEqual(
                t.properties,
                {
                    "run_id": run.pk,
                    "channel_id": self.email.pk,
                    "policy": "fixed/weighted",
                    "probability": 1.0,
                    "features": {"channel": {}, "creative": {}},
                },
            )
            self.assertEqual((t.revenue, t.order_id, t.sku), (None, "", ""))
            self.assertEqual((message.channel_id, message.creative_id), (self.email.pk, self.mail_a.pk))
        self.assertFalse(Touchpoint.objects.exclude(kind="held_out").exists())


class PolicyLoggingTests(LaunchCase):
    def test_weighted_picks_log_their_probability_and_features(self) -> None:
        self.campaign.channel_policy = {"type": "weighted", "weights": {str(self.email.pk): 3, str(self.sms.pk): 1}}
        self.campaign.save()
        mail_b = Creative.objects.create(campaign=self.campaign, channel_kind="email", name="B", body="Ho", weight=3)
        text = Creative.objects.create(campaign=self.campaign, channel_kind="sms", name="S", body="Hi")
        both = [customer(f"both{i}", phone=f"+1415555{i:04d}") for i in range(400)]
        email_only = [customer(f"mail{i}") for i in range(50)]
        self.audience(*both, *email_only)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["queued"], 450)
        expected_probability = {
            (self.email.pk, self.mail_a.pk): 0.75 * 0.25,
            (self.email.pk, mail_b.pk): 0.75 * 0.75,
            (self.sms.pk, text.pk): 0.25,
        }
        picks = {}
        for m in Message.objects.filter(run=run).select_related("customer"):
            group = "both" if m.customer.external_id.startswith("both") else "mail"
            picks.setdefault(group, []).append((m.channel_id, m.creative_id))
            self.assertEqual(m.policy, "weighted/weighted")
            if group == "both":
                self.assertAlmostEqual(m.probability, expected_probability[(m.channel_id, m.creative_id)])
                self.assertEqual(
                    m.features,
                    {"channel": {"eligible_channels": sorted([self.email.pk, self.sms.pk])}, "creative": {}},
                )
            else:
                self.assertEqual(m.channel_id, self.email.pk)
                self.assertAlmostEqual(m.probability, 1.0 * (0.25 if m.creative_id == self.mail_a.pk else 0.75))
                self.assertEqual(m.features, {"channel": {"eligible_channels": [self.email.pk]}, "creative": {}})
        on_sms = sum(1 for channel_id, _ in picks["both"] if channel_id == self.sms.pk)
        self.assertLess(abs(on_sms - 100), 45)  # 25% of 400, sd 8.7
        # The same run made again picks the same for everyone (deterministic per run key),
        # even with a smaller audience; another run key draws anew.
        before = set(Message.objects.filter(run=run).values_list("customer_id", "channel_id", "creative_id"))
        Touchpoint.objects.all().delete()
        Message.objects.filter(run=run).delete()
        CampaignRun.objects.filter(pk=run.pk).delete()
        SegmentMembership.objects.filter(customer__in=both[:200]).delete()
        rerun = run_launch(self.campaign.pk, "launch", now=NOW)
        after = set(Message.objects.filter(run=rerun).values_list("customer_id", "channel_id", "creative_id"))
        self.assertEqual(len(after), 250)
        self.assertLess(after, before)
        other = set(
            Message.objects.filter(run=run_launch(self.campaign.pk, "other", now=NOW)).values_list(
                "customer_id", "channel_id", "creative_id"
            )
        )
        self.assertNotEqual(other, after)


class BudgetAndCapTests(LaunchCase):
    def test_the_budget_buys_messages_in_customer_order_after_fixed_cost_and_spend(self) -> None:
        # 1.00 budget - 0.20 fixed cost - 0.30 spent (a sent message's cost) - 0.02 committed
        # (two queued messages at the channel's 1 cent) = 0.48: 48 messages of 60.
        self.campaign.budget, self.campaign.fixed_cost = Decimal("1.00"), Decimal("0.20")
        self.campaign.save()
        old = CampaignRun.objects.create(campaign=self.campaign, key="earlier")
        someone = customer("someone")
        Message.objects.create(
            campaign=self.campaign, run=old, customer=someone, status="sent", cost=Decimal("0.30"), channel=self.email
        )
        for i in range(2):
            Message.objects.create(
                campaign=self.campaign,
                run=CampaignRun.objects.create(campaign=self.campaign, key=f"q{i}"),
                customer=someone,
                status="queued",
                channel=self.email,
            )
        members = [customer(f"c{i:02d}") for i in range(60)]
        self.audience(*members)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["queued"], 48)
        self.assertEqual(run.counts["suppressed"], {"budget": 12})
        box = outbox(self.campaign, run)
        self.assertEqual([k for k, v in sorted(box.items()) if v[0] == "queued"], [f"c{i:02d}" for i in range(48)])
        self.assertEqual({v for k, v in box.items() if k >= "c48"}, {("suppressed", "budget", "mail", "A")})

    def test_held_out_customers_cost_nothing_and_are_cut_with_the_treated(self) -> None:
        self.campaign.budget, self.campaign.holdout_percent = Decimal("0.05"), Decimal("50")
        self.campaign.save()
        members = [customer(f"c{i:02d}") for i in range(40)]
        self.audience(*members)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["queued"], 5)
        # In customer order: held-out and queued customers until the first treated one the
        # budget cannot pay for, then only budget drops (held-out customers included).
        ordered = list(Message.objects.filter(run=run).order_by("customer_id").values_list("status", flat=True))
        cut = ordered.index("suppressed")
        self.assertEqual(set(ordered[cut:]), {"suppressed"})
        self.assertEqual(set(ordered[:cut]), {"queued", "held_out"})
        expected = [is_held_out(self.campaign.salt, self.campaign.pk, c.pk, 50) for c in members]
        self.assertFalse(expected[cut])  # the cut is at a treated customer
        self.assertEqual(ordered[:cut], ["held_out" if held else "queued" for held in expected[:cut]])
        self.assertEqual(run.counts["held_out"], ordered.count("held_out"))
        self.assertEqual(run.counts["suppressed"], {"budget": 40 - 5 - ordered.count("held_out")})

    def test_no_budget_left_drops_every_treated_customer(self) -> None:
        self.campaign.budget, self.campaign.fixed_cost = Decimal("1.00"), Decimal("1.00")
        self.campaign.save()
        self.audience(customer("ann"), customer("ben"))
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(run.counts["suppressed"], {"budget": 2})

    def test_the_frequency_cap_counts_recent_and_pending_messages_of_every_campaign(self) -> None:
        self.campaign.frequency_cap, self.campaign.frequency_cap_days = 1, 7
        self.campaign.save()
        recent, old, pending, failed, fresh = (customer(n) for n in ("recent", "old", "pending", "failed", "fresh"))
        other = Campaign.objects.create(name="Other")
        other_run = CampaignRun.objects.create(campaign=other, key="launch")

        def message(who, **fields):
            Message.objects.create(campaign=other, run=other_run, customer=who, **fields)

        message(recent, status="delivered", sent_at=NOW - timedelta(days=6, hours=23))
        message(old, status="sent", sent_at=NOW - timedelta(days=7, minutes=1))
        message(pending, status="queued")
        message(failed, status="failed")
        self.audience(recent, old, pending, failed, fresh)
        run = run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(
            {k: v[:2] for k, v in outbox(self.campaign).items()},
            {
                "recent": ("suppressed", "frequency_cap"),
                "old": ("queued", ""),
                "pending": ("suppressed", "frequency_cap"),
                "failed": ("queued", ""),
                "fresh": ("queued", ""),
            },
        )
        self.assertEqual(run.counts["suppressed"], {"frequency_cap": 2})


class SendAfterCommitTests(LaunchCase):
    def test_senders_are_woken_after_commit_only_when_something_was_queued(self) -> None:
        self.audience(customer("ann"))
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            run_launch(self.campaign.pk, "launch", now=NOW)
        self.assertEqual(len(callbacks), 1)
        Customer.objects.update(email_opt_in=False)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            run_launch(self.campaign.pk, "again", now=NOW)
        self.assertEqual(callbacks, [])


class CampaignControlTests(LaunchCase):
    def setUp(self) -> None:
        super().setUp()
        self.ann, self.ben = customer("ann"), customer("ben")
        self.audience(self.ann, self.ben)

    def status(self) -> str:
        self.campaign.refresh_from_db()
        return self.campaign.status

    def test_launching_a_one_off_makes_its_run_now(self) -> None:
        run = campaign_launch(self.campaign.pk, now=NOW)
        self.assertEqual((run.key, run.counts["queued"]), ("launch", 2))
        self.assertEqual((self.status(), self.campaign.launched_at), ("running", NOW))
        with self.assertRaises(Conflict) as caught:
            campaign_launch(self.campaign.pk, now=NOW)
        self.assertEqual(
            caught.exception.message, f"Campaign {self.campaign.pk} is running: only a draft can be launched."
        )
        self.assertEqual(Message.objects.count(), 2)

    def test_a_one_off_with_a_future_send_at_is_scheduled(self) -> None:
        self.campaign.send_at = NOW + timedelta(hours=2)
        self.campaign.save()
        self.assertIsNone(campaign_launch(self.campaign.pk, now=NOW))
        self.assertEqual((self.status(), self.campaign.launched_at), ("scheduled", None))
        self.assertFalse(CampaignRun.objects.exists())
        with self.assertRaises(Conflict) as caught:
            campaign_pause(self.campaign.pk)
        self.assertEqual(
            caught.exception.message,
            f"Campaign {self.campaign.pk} is scheduled: only a running campaign can be paused.",
        )
        campaign_cancel(self.campaign.pk)
        self.assertEqual(self.status(), "cancelled")

    def test_recurring_and_triggered_campaigns_start_running_without_a_run(self) -> None:
        self.campaign.trigger, self.campaign.cron = "recurring", "0 9 * * 1"
        self.campaign.save()
        self.assertIsNone(campaign_launch(self.campaign.pk, now=NOW))
        self.assertEqual((self.status(), self.campaign.launched_at), ("running", NOW))
        self.assertFalse(CampaignRun.objects.exists())

        Touchpoint.objects.create(customer=self.ann, kind="signup", occurred_at=NOW, event_id="s1")
        last = Touchpoint.objects.create(customer=self.ben, kind="visit", occurred_at=NOW, event_id="v1")
        on_event = Campaign.objects.create(name="On signup", trigger="event", trigger_event_kind="signup")
        Creative.objects.create(campaign=on_event, channel_kind="email", body="Welcome")
        campaign_launch(on_event.pk, now=NOW)
        on_event.refresh_from_db()
        self.assertEqual((on_event.status, on_event.trigger_checkpoint), ("running", last.pk))

        watched, other = segment("watched"), segment("other")
        SegmentChange.objects.create(segment=watched, customer=self.ann, change="entered", at=NOW)
        change = SegmentChange.objects.create(segment=watched, customer=self.ben, change="exited", at=NOW)
        SegmentChange.objects.create(segment=other, customer=self.ben, change="entered", at=NOW)
        on_entry = Campaign.objects.create(name="On entry", trigger="segment_entry", trigger_segment=watched)
        Creative.objects.create(campaign=on_entry, channel_kind="email", body="Hello")
        campaign_launch(on_entry.pk, now=NOW)
        on_entry.refresh_from_db()
        self.assertEqual((on_entry.status, on_entry.trigger_checkpoint), ("running", change.pk))

    def test_a_campaign_that_cannot_run_is_refused_with_every_problem_and_stays_a_draft(self) -> None:
        bare = Campaign.objects.create(name="Bare", holdout_percent=Decimal("120"))
        with self.assertRaises(BatchInvalid) as caught:
            campaign_launch(bare.pk, now=NOW)
        self.assertEqual(
            [(e.row, e.field, e.message) for e in caught.exception.errors],
            [
                (None, "audience", "choose at least one audience segment"),
                (None, "holdout_percent", "must be between 0 and 100"),
                (None, "creatives", "the campaign has no enabled creative"),
            ],
        )
        bare.refresh_from_db()
        self.assertEqual((bare.status, bare.launched_at), ("draft", None))
        self.assertFalse(CampaignRun.objects.exists())

    def test_definition_errors_name_the_field(self) -> None:
        def errors(campaign, for_launch=True):
            return [(e.field, e.message) for e in campaign_definition_errors(campaign, for_launch=for_launch)]

        self.assertEqual(errors(self.campaign), [])
        self.campaign.trigger, self.campaign.cron = "recurring", "61 * * * *"
        self.assertEqual(errors(self.campaign), [("cron", "minute: 61 is out of range 0-59")])
        self.campaign.cron = ""
        self.assertEqual(
            errors(self.campaign),
            [("cron", 'a recurring campaign needs a cron expression, e.g. "0 9 * * 1" (Mondays 09:00 UTC)')],
        )
        self.assertEqual(errors(self.campaign, for_launch=False), [])
        self.campaign.trigger = "event"
        self.assertEqual(
            errors(self.campaign),
            [("trigger_event_kind", "an event campaign needs the touchpoint kind that triggers it")],
        )
        self.campaign.trigger_event_kind = "sent"
        self.assertEqual(
            errors(self.campaign),
            [("trigger_event_kind", "sent touchpoints are written by campaigns themselves and cannot trigger one")],
        )
        self.campaign.trigger_event_kind = "Not A Slug"
        self.assertEqual(
            errors(self.campaign, for_launch=False),
            [("trigger_event_kind", "must be a touchpoint kind: a lower-case slug such as purchase")],
        )
        self.campaign.trigger, self.campaign.trigger_event_kind = "segment_entry", ""
        self.assertEqual(
            errors(self.campaign),
            [("trigger_segment", "a segment-entry campaign needs the segment whose entries trigger it")],
        )
        self.campaign.trigger = "one_off"
        self.campaign.channel_policy = {"type": "weighted", "weights": {"999": 1}}
        self.campaign.creative_policy = {"type": "fixed", "creative": 12345}
        self.assertEqual(
            errors(self.campaign),
            [
                ("channel_policy", "channel 999 does not exist"),
                ("creative_policy", "creative 12345 is not a creative of this campaign"),
            ],
        )
        self.campaign.channel_policy = {"type": "bandit"}
        self.assertEqual(
            errors(self.campaign, for_launch=False),
            [("channel_policy", 'unknown channel policy type "bandit": one of fixed, propensity, thompson, weighted')],
        )
        self.campaign.channel_policy, self.campaign.creative_policy = {}, {}
        self.campaign.quiet_hours_start = NOW.time()
        self.assertEqual(errors(self.campaign), [("quiet_hours_start", "quiet hours need both a start and an end")])

    def test_pause_and_resume(self) -> None:
        campaign_launch(self.campaign.pk, now=NOW)
        self.assertEqual(campaign_pause(self.campaign.pk).status, "paused")
        with self.assertRaises(Conflict) as caught:
            campaign_pause(self.campaign.pk)
        self.assertEqual(
            caught.exception.message, f"Campaign {self.campaign.pk} is paused: only a running campaign can be paused."
        )
        with self.assertRaises(Conflict) as caught:
            campaign_launch(self.campaign.pk)
        self.assertEqual(
            caught.exception.message,
            f"Campaign {self.campaign.pk} is paused: only a draft can be launched (resume it instead).",
        )
        # The messages wait as they are; resume wakes the senders after commit.
        self.assertEqual(set(Message.objects.values_list("status", flat=True)), {"queued"})
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            self.assertEqual(campaign_resume(self.campaign.pk).status, "running")
        self.assertEqual(len(callbacks), 1)
        with self.assertRaises(Conflict) as caught:
            campaign_resume(self.campaign.pk)
        self.assertEqual(
            caught.exception.message,
            f"Campaign {self.campaign.pk} is running: only a paused campaign can be resumed.",
        )
        self.assertEqual(Message.objects.count(), 2)

    def test_cancel_turns_queued_messages_into_cancelled_and_keeps_the_rest(self) -> None:
        carl = customer("carl")
        SegmentMembership.objects.create(segment=self.campaign.audience.get(), customer=carl, since=NOW)
        run = campaign_launch(self.campaign.pk, now=NOW)
        Message.objects.filter(customer=self.ann).update(status="sent", sent_at=NOW)
        Message.objects.filter(customer=carl).update(claimed_by="worker-1", lease_until=NOW + timedelta(minutes=1))
        campaign_cancel(self.campaign.pk)
        self.assertEqual(
            sorted(Message.objects.values_list("customer__external_id", "status", "claimed_by", "lease_until")),
            [("ann", "sent", "", None), ("ben", "cancelled", "", None), ("carl", "cancelled", "", None)],
        )
        run.refresh_from_db()
        self.assertEqual(run.status, "cancelled")
        self.assertEqual(self.status(), "cancelled")
        self.assertIsNotNone(self.campaign.finished_at)
        with self.assertRaises(Conflict) as caught:
            campaign_cancel(self.campaign.pk)
        self.assertEqual(
            caught.exception.message,
            f"Campaign {self.campaign.pk} is cancelled: only a scheduled, running or paused campaign can be cancelled.",
        )
        draft = Campaign.objects.create(name="Draft")
        with self.assertRaises(Conflict) as caught:
            campaign_cancel(draft.pk)
        self.assertEqual(
            caught.exception.message, f"Campaign {draft.pk} is a draft: it never launched (delete it instead)."
        )
        with self.assertRaises(NotFound):
            campaign_cancel(987654)

    def test_progress_counts_messages_by_status_and_run(self) -> None:
        Customer.objects.filter(pk=self.ben.pk).update(email_opt_in=False)
        run = campaign_launch(self.campaign.pk, now=NOW)
        progress = campaign_progress(self.campaign.pk)
        zeros = dict.fromkeys(Message.Status.values, 0)
        self.assertEqual(
            progress,
            {
                **zeros,
                "queued": 1,
                "suppressed": 1,
                "total": 2,
                "campaign_status": "running",
                "suppressed_reasons": {"no_consent": 1},
                "runs_total": 1,
                "runs": [
                    {
                        "id": run.pk,
                        "key": "launch",
                        "status": "running",
                        "started_at": NOW,
                        "finished_at": None,
                        "counts": run.counts,
                        "messages": {**zeros, "queued": 1, "suppressed": 1},
                    }
                ],
            },
        )

    def test_one_off_campaigns_complete_when_every_message_is_final(self) -> None:
        run = campaign_launch(self.campaign.pk, now=NOW)
        self.assertEqual(campaigns_mark_completed(now=NOW), 0)
        Message.objects.filter(customer=self.ann).update(status="sent")
        Message.objects.filter(customer=self.ben).update(status="sending")
        self.assertEqual(campaigns_mark_completed(now=NOW), 0)
        self.assertEqual(self.status(), "running")
        Message.objects.filter(customer=self.ben).update(status="unknown")
        later = NOW + timedelta(hours=1)
        self.assertEqual(campaigns_mark_completed(now=later), 1)
        self.assertEqual((self.status(), self.campaign.finished_at), ("completed", later))
        run.refresh_from_db()
        self.assertEqual((run.status, run.finished_at), ("completed", later))
        self.assertEqual(campaigns_mark_completed(now=later), 0)

    def test_recurring_campaigns_complete_their_runs_but_keep_running(self) -> None:
        self.campaign.trigger, self.campaign.cron = "recurring", "0 9 * * *"
        self.campaign.save()
        campaign_launch(self.campaign.pk, now=NOW)
        run = run_launch(self.campaign.pk, "2026-11-20T09:00:00+00:00", now=NOW)
        Message.objects.update(status="delivered")
        self.assertEqual(campaigns_mark_completed(now=NOW), 0)
        run.refresh_from_db()
        self.assertEqual((run.status, self.status()), ("completed", "running"))

    def test_a_paused_campaign_is_not_completed(self) -> None:
        campaign_launch(self.campaign.pk, now=NOW)
        campaign_pause(self.campaign.pk)
        Message.objects.update(status="sent")
        self.assertEqual(campaigns_mark_completed(now=NOW), 0)
        self.assertEqual(self.status(), "paused")


class EraseTests(LaunchCase):
    def test_erase_deletes_devices_and_scrubs_message_addresses(self) -> None:
        ann, ben = customer("ann"), customer("ben")
        device(ann, "tok-ann")
        device(ben, "tok-ben")
        run = CampaignRun.objects.create(campaign=self.campaign, key="launch")
        for who, status, error in ((ann, "failed", "550 ann@example.com unknown"), (ben, "sent", "")):
            Message.objects.create(
                campaign=self.campaign,
                run=run,
                customer=who,
                status=status,
                recipient=who.email,
                features={"channel": {"age": 41}},
                error=error,
            )
        other_run = CampaignRun.objects.create(campaign=self.campaign, key="again")
        Message.objects.create(
            campaign=self.campaign, run=other_run, customer=ann, status="suppressed", error="no_consent"
        )
        customer_erase(ann)
        self.assertEqual(list(Device.objects.values_list("customer_id", flat=True)), [ben.pk])
        self.assertEqual(
            sorted(Message.objects.values_list("customer_id", "status", "recipient", "features", "error")),
            sorted(
                [
                    (ann.pk, "failed", "", {}, ""),
                    (ann.pk, "suppressed", "", {}, "no_consent"),
                    (ben.pk, "sent", "ben@example.com", {"channel": {"age": 41}}, ""),
                ]
            ),
        )
