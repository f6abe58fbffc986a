"""Firing campaigns (campaigns.delivery.triggers): cron expressions, recurring campaigns
firing once per firing (only the latest after downtime), scheduled one-offs, segment-entry
campaigns reading the change log from their checkpoint, and event campaigns reading the
touchpoint log; plus the beat task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import TestCase as PlainTestCase
from unittest import mock

from django.test import TestCase
from django.utils import timezone

from campaigns.delivery import triggers
from campaigns.delivery.control import campaign_launch, campaign_pause, campaign_resume
from campaigns.delivery.triggers import campaigns_fire_due, cron_errors, cron_next, cron_previous
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Message, SegmentChange
from campaigns.tasks import campaigns_fire_due as campaigns_fire_due_task
from marketing.models import Touchpoint
from tests.test_launch import customer, segment

T = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)  # a Friday


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class CronTests(PlainTestCase):
    def test_previous_and_next_firings(self) -> None:
        cases = [
            # expression, at, latest firing at or before, first firing after
            ("*/15 9-17 * * mon-fri", "2026-11-20 12:07:30", "2026-11-20 12:00", "2026-11-20 12:15"),
            ("*/15 9-17 * * mon-fri", "2026-11-21 10:00", "2026-11-20 17:45", "2026-11-23 09:00"),
            ("*/15 9-17 * * mon-fri", "2026-11-20 12:15", "2026-11-20 12:15", "2026-11-20 12:30"),
            ("0 0 29 2 *", "2026-11-20 00:00", "2024-02-29 00:00", "2028-02-29 00:00"),
            # both day fields restricted: the 1st or a Monday
            ("0 12 1 * mon", "2026-11-20 10:00", "2026-11-16 12:00", "2026-11-23 12:00"),
            ("0 12 1 * mon", "2026-11-30 13:00", "2026-11-30 12:00", "2026-12-01 12:00"),
            # a step in a day field keeps it "unrestricted" for that rule, as in Vixie cron
            ("0 12 */1 * mon", "2026-11-20 10:00", "2026-11-16 12:00", "2026-11-23 12:00"),
            ("@daily", "2026-11-20 10:00", "2026-11-20 00:00", "2026-11-21 00:00"),
            ("@hourly", "2026-11-20 10:00", "2026-11-20 10:00", "2026-11-20 11:00"),
            ("0 9 * * 7", "2026-11-20 10:00", "2026-11-15 09:00", "2026-11-22 09:00"),  # 7 = Sunday
            ("30 8 * jan,jul sun", "2026-11-20 10:00", "2026-07-26 08:30", "2027-01-03 08:30"),
            ("5/20 * * * *", "2026-11-20 10:04", "2026-11-20 09:45", "2026-11-20 10:05"),
            ("1,2,58-59 23 31 12 *", "2027-01-01 00:00", "2026-12-31 23:59", "2027-12-31 23:01"),
        ]
        for expr, moment, previous, following in cases:
            self.assertEqual(cron_previous(expr, at(moment)), at(previous), (expr, moment))
            self.assertEqual(cron_next(expr, at(moment)), at(following), (expr, moment))
            self.assertEqual(cron_errors(expr), [], expr)

    def test_bad_expressions_say_what_is_wrong(self) -> None:
        cases = {
            "": ["is empty"],
            "* * * *": ["needs 5 fields (minute hour day-of-month month day-of-week), got 4"],
            "61 * * * *": ["minute: 61 is out of range 0-59"],
            "* 24 * * *": ["hour: 24 is out of range 0-23"],
            "* * 0 * *": ["day of month: 0 is out of range 1-31"],
            "* * * 13 *": ["month: 13 is out of range 1-12"],
            "* * * * 8": ["day of week: 8 is out of range 0-7"],
            "5-1 * * * *": ["minute: the range 5-1 runs backwards"],
            "*/0 * * * *": ["minute: a step must be at least 1"],
            "x * * * *": ["minute: 'x' is not a number"],
            "* * * foo *": ["month: 'foo' is not a number or a name"],
            "1,,2 * * * *": ["minute: '' is not a value, range (a-b), * or a step (/n)"],
            "@often": [
                "unknown macro @often: one of @annually, @daily, @hourly, @midnight, @monthly, @weekly, @yearly"
            ],
            "0 0 30 2 *": ["never fires (no such day, e.g. 30 February)"],
        }
        for expr, expected in cases.items():
            self.assertEqual(cron_errors(expr), expected, expr)


class FiringCase(TestCase):
    def setUp(self) -> None:
        self.email = Channel.objects.create(name="mail", kind="email")
        self.ann, self.ben = customer("ann"), customer("ben")

    def campaign(self, name: str, **fields) -> Campaign:
        campaign = Campaign.objects.create(name=name, holdout_percent=0, **fields)
        Creative.objects.create(campaign=campaign, channel_kind="email", body="Hi")
        return campaign

    def runs(self, campaign: Campaign) -> list[str]:
        return list(CampaignRun.objects.filter(campaign=campaign).order_by("pk").values_list("key", flat=True))

    def recipients(self, campaign: Campaign, key: str) -> list[str]:
        return sorted(
            Message.objects.filter(campaign=campaign, run__key=key).values_list("customer__external_id", flat=True)
        )


class RecurringTests(FiringCase):
    def setUp(self) -> None:
        super().setUp()
        self.hourly = self.campaign("Hourly", trigger="recurring", cron="0 * * * *")
        self.hourly.audience.add(segment("all", self.ann, self.ben))
        campaign_launch(self.hourly.pk, now=T)

    def test_it_fires_once_per_firing(self) -> None:
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=15)), 0)  # 10:00 was before the launch
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 11:00:20")), 1)
        self.assertEqual(self.runs(self.hourly), ["2026-11-20T11:00:00+00:00"])
        self.assertEqual(self.recipients(self.hourly, "2026-11-20T11:00:00+00:00"), ["ann", "ben"])
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 11:01")), 0)
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 11:59")), 0)
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 12:00")), 1)
        self.assertEqual(self.runs(self.hourly), ["2026-11-20T11:00:00+00:00", "2026-11-20T12:00:00+00:00"])
        self.assertEqual(Message.objects.count(), 4)

    def test_after_downtime_only_the_latest_missed_firing_runs(self) -> None:
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 14:10")), 1)
        self.assertEqual(self.runs(self.hourly), ["2026-11-20T14:00:00+00:00"])
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 14:20")), 0)

    def test_a_paused_campaign_does_not_fire(self) -> None:
        campaign_pause(self.hourly.pk)
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 11:00")), 0)
        campaign_resume(self.hourly.pk)
        self.assertEqual(campaigns_fire_due(now=at("2026-11-20 11:05")), 1)
        self.assertEqual(self.runs(self.hourly), ["2026-11-20T11:00:00+00:00"])


class ScheduledTests(FiringCase):
    def test_a_scheduled_one_off_launches_when_its_send_at_passes(self) -> None:
        one_off = self.campaign("Later", send_at=T + timedelta(hours=1))
        one_off.audience.add(segment("all", self.ann))
        campaign_launch(one_off.pk, now=T)
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=59)), 0)
        self.assertEqual(self.runs(one_off), [])
        self.assertEqual(campaigns_fire_due(now=T + timedelta(hours=1)), 1)
        one_off.refresh_from_db()
        self.assertEqual((one_off.status, one_off.launched_at), ("running", T + timedelta(hours=1)))
        self.assertEqual(self.runs(one_off), ["launch"])
        self.assertEqual(self.recipients(one_off, "launch"), ["ann"])
        self.assertEqual(campaigns_fire_due(now=T + timedelta(hours=2)), 0)

    def test_a_campaign_that_broke_while_scheduled_is_logged_and_others_still_fire(self) -> None:
        broken = self.campaign("Broken", send_at=T + timedelta(hours=1))
        fine = self.campaign("Fine", send_at=T + timedelta(hours=1))
        for campaign in (broken, fine):
            campaign.audience.add(segment(f"seg {campaign.name}", self.ann))
            campaign_launch(campaign.pk, now=T)
        Creative.objects.filter(campaign=broken).update(enabled=False)
        with self.assertLogs("campaigns.delivery.triggers", "WARNING") as logs:
            self.assertEqual(campaigns_fire_due(now=T + timedelta(hours=1)), 1)
        self.assertEqual(
            logs.output,
            [
                f"WARNING:campaigns.delivery.triggers:campaign {broken.pk} not fired (_fire_scheduled): "
                "creatives: the campaign has no enabled creative"
            ],
        )
        broken.refresh_from_db()
        self.assertEqual((broken.status, self.runs(broken)), ("scheduled", []))
        self.assertEqual(self.runs(fine), ["launch"])


class SegmentEntryTests(FiringCase):
    def setUp(self) -> None:
        super().setUp()
        self.carl, self.dan, self.erin = customer("carl"), customer("dan"), customer("erin")
        self.watched, self.other = segment("watched"), segment("other")
        self.change(self.ann, "entered")  # before the launch: never triggers
        self.welcome = self.campaign("Welcome", trigger="segment_entry", trigger_segment=self.watched)
        self.welcome.exclusions.add(segment("staff", self.dan))
        campaign_launch(self.welcome.pk, now=T)
        self.start = self.checkpoint()

    def change(self, who, change: str, seg=None) -> SegmentChange:
        return SegmentChange.objects.create(segment=seg or self.watched, customer=who, change=change, at=T)

    def checkpoint(self) -> int:
        self.welcome.refresh_from_db()
        return self.welcome.trigger_checkpoint

    def test_new_entries_fire_one_run_and_advance_the_checkpoint(self) -> None:
        first = self.change(self.ben, "entered")
        self.change(self.carl, "entered")
        self.change(self.erin, "entered", seg=self.other)  # another segment
        self.change(self.dan, "entered")  # excluded
        self.change(self.carl, "exited")
        last = self.change(self.erin, "entered")
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=1)), 1)
        key = f"changes:{first.pk}-{last.pk}"
        self.assertEqual(self.runs(self.welcome), [key])
        # dan is excluded; carl entered and exited before the firing: his entry still counts.
        self.assertEqual(
            dict(Message.objects.filter(run__key=key).values_list("customer__external_id", "status")),
            {"ben": "queued", "carl": "queued", "erin": "queued"},
        )
        self.assertEqual(self.checkpoint(), last.pk)
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=2)), 0)
        self.assertEqual(self.runs(self.welcome), [key])

    def test_entries_are_read_in_batches(self) -> None:
        changes = [self.change(who, "entered") for who in (self.ben, self.carl, self.erin)]
        with mock.patch.object(triggers, "BATCH", 2):
            self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=1)), 2)
        first, second = f"changes:{changes[0].pk}-{changes[1].pk}", f"changes:{changes[2].pk}-{changes[2].pk}"
        self.assertEqual(self.runs(self.welcome), [first, second])
        self.assertEqual(self.recipients(self.welcome, first), ["ben", "carl"])
        self.assertEqual(self.recipients(self.welcome, second), ["erin"])
        self.assertEqual(self.checkpoint(), changes[2].pk)

    def test_a_paused_campaign_keeps_its_entries_for_after_resume(self) -> None:
        campaign_pause(self.welcome.pk)
        entry = self.change(self.ben, "entered")
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=1)), 0)
        self.assertEqual(self.checkpoint(), self.start)
        self.assertEqual(self.runs(self.welcome), [])
        campaign_resume(self.welcome.pk)
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=2)), 1)
        self.assertEqual(self.runs(self.welcome), [f"changes:{entry.pk}-{entry.pk}"])


class EventTests(FiringCase):
    def setUp(self) -> None:
        super().setUp()
        self.touch(self.ann, "signup", T - timedelta(hours=1))  # before the launch
        self.on_signup = self.campaign("On signup", trigger="event", trigger_event_kind="signup")
        campaign_launch(self.on_signup.pk, now=T)
        self.launched_at = self.checkpoint()

    def touch(self, who, kind: str, received_at: datetime) -> Touchpoint:
        n = Touchpoint.objects.count()
        return Touchpoint.objects.create(
            customer=who, kind=kind, occurred_at=received_at, received_at=received_at, event_id=f"e{n}"
        )

    def checkpoint(self) -> int:
        self.on_signup.refresh_from_db()
        return self.on_signup.trigger_checkpoint

    def test_touchpoints_of_the_kind_fire_runs_from_the_checkpoint(self) -> None:
        self.assertEqual(self.launched_at, Touchpoint.objects.get().pk)
        first = self.touch(self.ben, "signup", T + timedelta(minutes=1))
        self.touch(self.ann, "visit", T + timedelta(minutes=1))
        last = self.touch(self.ann, "signup", T + timedelta(minutes=2))
        now = T + timedelta(minutes=5)
        self.assertEqual(campaigns_fire_due(now=now), 1)
        key = f"events:{first.pk}-{last.pk}"
        self.assertEqual(self.runs(self.on_signup), [key])
        self.assertEqual(self.recipients(self.on_signup, key), ["ann", "ben"])
        self.assertEqual(self.checkpoint(), last.pk)
        self.assertEqual(campaigns_fire_due(now=now), 0)

    def test_only_settled_touchpoints_are_read(self) -> None:
        now = T + timedelta(minutes=10)
        settled = self.touch(self.ben, "signup", now - timedelta(seconds=61))
        recent = self.touch(self.ann, "signup", now - timedelta(seconds=30))
        # A higher id received earlier (a slow transaction's neighbour): it waits too.
        later_id = self.touch(self.ben, "visit", now - timedelta(minutes=5))
        self.assertEqual(campaigns_fire_due(now=now), 1)
        self.assertEqual(self.runs(self.on_signup), [f"events:{settled.pk}-{settled.pk}"])
        self.assertEqual(self.checkpoint(), recent.pk - 1)
        self.assertEqual(campaigns_fire_due(now=now + timedelta(minutes=1)), 1)
        self.assertEqual(self.runs(self.on_signup)[-1], f"events:{recent.pk}-{recent.pk}")
        self.assertEqual(self.checkpoint(), later_id.pk)

    def test_the_checkpoint_passes_other_kinds_without_a_run(self) -> None:
        visits = [self.touch(self.ben, "visit", T + timedelta(minutes=i)) for i in range(3)]
        self.assertEqual(campaigns_fire_due(now=T + timedelta(minutes=10)), 0)
        self.assertEqual(self.runs(self.on_signup), [])
        self.assertEqual(self.checkpoint(), visits[-1].pk)

    def test_the_beat_task_fires_too(self) -> None:
        # The task fires at the real time: a touchpoint received two minutes ago has settled.
        self.touch(self.ben, "signup", timezone.now() - timedelta(minutes=2))
        self.assertEqual(campaigns_fire_due_task.apply().get(), 1)
        self.assertEqual(len(self.runs(self.on_signup)), 1)
