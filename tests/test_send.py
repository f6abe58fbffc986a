"""Sending, in process, against real servers: an aiosmtpd SMTP sink and a local HTTP
provider (tests/smtp_sink.py, tests/http_provider.py). The clock is fixed through
send_due(now=…) and sweep(now=…), so backoff and quiet hours are exact.

The outbox rows are written directly here (a launch's output: queued messages of a running
campaign), so each test sets exactly the state it needs; tests/test_send_worker.py runs the
same code in a real Celery worker.
"""

from __future__ import annotations

import email as email_parser
import email.policy as email_policy
import json
import os
import subprocess
import sys
import threading
import unittest
import unittest.mock
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import connection
from django.test import SimpleTestCase, TestCase, TransactionTestCase, override_settings

from campaigns.delivery import links, ratelimit, render, timing
from campaigns.delivery.backends import channel_settings_errors, send_test, wire_bytes
from campaigns.delivery.control import campaign_pause, campaign_resume
from campaigns.delivery.send import due_counts, send_due, send_enqueue
from campaigns.delivery.sweeper import reconcile_expired, sweep
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message
from marketing.errors import BatchInvalid, Conflict
from marketing.models import Customer, Suppression, Touchpoint
from tests.http_provider import HttpProvider
from tests.smtp_sink import SmtpSink, free_port

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def make_customer(n: int, **fields) -> Customer:
    values = {
        "external_id": f"c{n}",
        "email": f"c{n}@example.com",
        "email_opt_in": True,
        "first_name": f"Name{n}",
        **fields,
    }
    return Customer.objects.create(**values)


def make_campaign(**fields) -> tuple[Campaign, CampaignRun]:
    campaign = Campaign.objects.create(name=fields.pop("name", "Summer sale"), status=Campaign.Status.RUNNING, **fields)
    return campaign, CampaignRun.objects.create(campaign=campaign, key="launch")


def make_creative(campaign: Campaign, kind: str = "email", **fields) -> Creative:
    values = {"subject": "Hello {{ first_name }}", "body": "Hi {{ first_name }}, 20% off today.", **fields}
    return Creative.objects.create(campaign=campaign, channel_kind=kind, **values)


def email_channel(sink: SmtpSink, **fields) -> Channel:
    return Channel.objects.create(
        name=fields.pop("name", "mail"),
        kind="email",
        backend="smtp",
        settings=sink.channel_settings(from_email="News <news@example.com>"),
        cost_per_message=Decimal("0.0012"),
        **fields,
    )


def queue(campaign, run, channel, creative, customers, **fields) -> list[Message]:
    """Queued messages as a launch writes them (due a minute before T0)."""
    values = {
        "status": Message.Status.QUEUED,
        "not_before": T0 - timedelta(minutes=1),
        "policy": "fixed",
        "probability": 1.0,
        "features": {"tier": 1},
        **fields,
    }
    Message.objects.bulk_create(
        [
            Message(campaign=campaign, run=run, customer=c, channel=channel, creative=creative, **values)
            for c in customers
        ]
    )
    return list(Message.objects.filter(campaign=campaign, run=run).order_by("id"))


def statuses(campaign) -> dict[str, str]:
    return dict(Message.objects.filter(campaign=campaign).values_list("customer__external_id", "status"))


class SinkMixin:
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sink = SmtpSink().start()
        cls.addClassCleanup(cls.sink.stop)

    def setUp(self):
        super().setUp()
        sink = self.sink
        with sink.lock:
            sink.received.clear()
            for table in (sink.refuse, sink.defer, sink.rcpt_attempts, sink.data_attempts):
                table.clear()
            sink.reject_data.clear()
            sink.drop_after_data.clear()
        sink.on_message = None
        sink.delay = 0.0


class EmailSendTests(SinkMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.campaign, self.run = make_campaign()
        self.channel = email_channel(self.sink)
        self.creative = make_creative(self.campaign)

    def test_it_sends_each_queued_message_once_with_unsubscribe_headers_and_a_sent_touchpoint(self):
        customers = [make_customer(n) for n in range(3)]
        messages = queue(self.campaign, self.run, self.channel, self.creative, customers)

        counts = send_due(now=T0)

        self.assertEqual(counts, {"claimed": 3, "sent": 3})
        self.assertEqual(self.sink.recipients(), ["c0@example.com", "c1@example.com", "c2@example.com"])
        for message, customer in zip(messages, customers, strict=True):
            email = self.sink.by_recipient()[customer.email].message
            unsubscribe = render.unsubscribe_headers(message.id)
            self.assertEqual(email["Subject"], f"Hello {customer.first_name}")
            self.assertEqual(email["From"], "News <news@example.com>")
            self.assertEqual(email["Message-ID"], f"<m{message.id}.{self.campaign.id}@example.com>")
            self.assertEqual(email["List-Unsubscribe"], unsubscribe["List-Unsubscribe"])
            self.assertTrue(email["List-Unsubscribe"].startswith(f"<{settings.PUBLIC_BASE_URL}/u/{message.id}."))
            self.assertEqual(email["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
            self.assertEqual(email.get_content().strip(), f"Hi {customer.first_name}, 20% off today.")
        rows = Message.objects.filter(campaign=self.campaign).order_by("id")
        self.assertEqual(
            [(m.status, m.attempts, m.recipient, m.provider_id, m.sent_at, m.cost, m.lease_until) for m in rows],
            [
                ("sent", 1, c.email, f"<m{m.id}.{self.campaign.id}@example.com>", T0, Decimal("0.0012"), None)
                for m, c in zip(messages, customers, strict=True)
            ],
        )
        touchpoints = Touchpoint.objects.order_by("message_id")
        self.assertEqual(
            [
                (
                    t.kind,
                    t.customer_id,
                    t.channel,
                    t.campaign_id,
                    t.message_id,
                    t.creative_id,
                    t.occurred_at,
                    t.event_id,
                )
                for t in touchpoints
            ],
            [
                ("sent", c.id, "email", self.campaign.id, m.id, self.creative.id, T0, f"sent:{m.id}")
                for m, c in zip(messages, customers, strict=True)
            ],
        )
        self.assertEqual(
            touchpoints[0].properties,
            {"run_id": self.run.id, "channel_id": self.channel.id, "policy": "fixed", "probability": 1.0,
             "features": {"tier": 1}},
        )  # fmt: skip

    def test_sending_again_sends_nothing(self):
        queue(self.campaign, self.run, self.channel, self.creative, [make_customer(1)])
        send_due(now=T0)

        self.assertEqual(send_due(now=T0 + timedelta(hours=1)), {"claimed": 0})
        self.assertEqual(self.sink.recipients(), ["c1@example.com"])
        self.assertEqual(Touchpoint.objects.count(), 1)

    def test_customers_who_must_not_be_mailed_receive_nothing_and_are_suppressed_with_the_reason(self):
        ok = make_customer(0)
        withdrawn = make_customer(1, email_opt_in=False)
        unsubscribed = make_customer(2, unsubscribed_at=T0 - timedelta(hours=1))
        suppressed = make_customer(3, email="C3@Example.com")
        Suppression.objects.create(kind="email", value="c3@example.com", reason="complaint")
        erased = make_customer(4, erased_at=T0 - timedelta(hours=1))
        no_address = make_customer(5, email="")
        sms_only = make_customer(6)
        Suppression.objects.create(kind="phone", value="c6@example.com")  # another kind: no effect
        customers = [ok, withdrawn, unsubscribed, suppressed, erased, no_address, sms_only]
        queue(self.campaign, self.run, self.channel, self.creative, customers)

        counts = send_due(now=T0)

        self.assertEqual(counts, {"claimed": 7, "sent": 2, "suppressed": 5})
        self.assertEqual(sorted(self.sink.recipients()), ["c0@example.com", "c6@example.com"])
        self.assertEqual(
            dict(Message.objects.values_list("customer__external_id", "error")),
            {"c0": "", "c1": "no_consent", "c2": "unsubscribed", "c3": "suppressed", "c4": "erased",
             "c5": "no_address", "c6": ""},
        )  # fmt: skip
        self.assertEqual(
            statuses(self.campaign),
            {"c0": "sent", "c1": "suppressed", "c2": "suppressed", "c3": "suppressed", "c4": "suppressed",
             "c5": "suppressed", "c6": "sent"},
        )  # fmt: skip
        self.assertEqual(sorted(Touchpoint.objects.values_list("customer__external_id", "kind")), [
            ("c0", "sent"), ("c6", "sent")])  # fmt: skip

    def test_a_transient_4xx_is_retried_with_backoff_then_delivered(self):
        customers = [make_customer(n) for n in range(4)]
        queue(self.campaign, self.run, self.channel, self.creative, customers)
        self.sink.defer.update({"c1@example.com": 1, "c3@example.com": 1})

        first = send_due(now=T0)

        self.assertEqual(first, {"claimed": 4, "sent": 2, "retried": 2})
        retried = Message.objects.filter(status="queued").order_by("id")
        self.assertEqual([m.customer.external_id for m in retried], ["c1", "c3"])
        for message in retried:
            # Retry 1: full jitter between half the base and the base (15-30 s).
            self.assertGreaterEqual(message.not_before, T0 + timedelta(seconds=timing.BACKOFF_BASE_S / 2))
            self.assertLessEqual(message.not_before, T0 + timedelta(seconds=timing.BACKOFF_BASE_S))
            self.assertEqual((message.attempts, message.claimed_by, message.lease_until), (1, "", None))
            self.assertIn("SMTP 451 after DATA", message.error)
        self.assertEqual(send_due(now=T0 + timedelta(seconds=14)), {"claimed": 0})

        second = send_due(now=T0 + timedelta(seconds=31))

        self.assertEqual(second, {"claimed": 2, "sent": 2})
        self.assertEqual(sorted(self.sink.recipients()), [c.email for c in customers])
        self.assertEqual(self.sink.data_attempts, {"c0@example.com": 1, "c1@example.com": 2, "c2@example.com": 1,
                                                   "c3@example.com": 2})  # fmt: skip
        self.assertEqual(list(Message.objects.order_by("id").values_list("status", "attempts")),
                         [("sent", 1), ("sent", 2), ("sent", 1), ("sent", 2)])  # fmt: skip
        self.assertEqual(Touchpoint.objects.filter(kind="sent").count(), 4)

    def test_it_gives_up_after_the_maximum_number_of_attempts(self):
        queue(self.campaign, self.run, self.channel, self.creative, [make_customer(1)])
        self.sink.defer["c1@example.com"] = 100
        now = T0
        for _ in range(timing.MAX_ATTEMPTS):
            send_due(now=now)
            now += timedelta(seconds=timing.BACKOFF_CAP_S + 1)

        message = Message.objects.get()
        self.assertEqual((message.status, message.attempts), ("failed", timing.MAX_ATTEMPTS))
        self.assertTrue(message.error.startswith(f"gave up after {timing.MAX_ATTEMPTS} attempts: SMTP 451"))
        self.assertEqual(self.sink.data_attempts, {"c1@example.com": timing.MAX_ATTEMPTS})
        self.assertEqual(self.sink.recipients(), [])
        self.assertEqual(send_due(now=now), {"claimed": 0})

    def test_a_permanent_failure_fails_once_and_is_not_retried(self):
        queue(self.campaign, self.run, self.channel, self.creative, [make_customer(1), make_customer(2)])
        self.sink.reject_data.add("c1@example.com")

        counts = send_due(now=T0)

        self.assertEqual(counts, {"claimed": 2, "sent": 1, "failed": 1})
        failed = Message.objects.get(status="failed")
        self.assertEqual((failed.customer.external_id, failed.attempts), ("c1", 1))
        self.assertTrue(failed.error.startswith("SMTP 554 after DATA"), failed.error)
        self.assertEqual(send_due(now=T0 + timedelta(days=1)), {"claimed": 0})
        self.assertEqual(self.sink.data_attempts["c1@example.com"], 1)
        self.assertFalse(Suppression.objects.exists())

    def test_a_hard_bounce_suppresses_the_address_for_every_later_send(self):
        bouncing = make_customer(1, email="Gone@Example.com")
        queue(self.campaign, self.run, self.channel, self.creative, [bouncing, make_customer(2)])
        self.sink.refuse["gone@example.com"] = "550 5.1.1 User unknown"

        counts = send_due(now=T0)

        self.assertEqual(counts, {"claimed": 2, "sent": 1, "bounced": 1})
        message = Message.objects.get(customer=bouncing)
        self.assertEqual(message.status, "failed")
        self.assertEqual(message.error, "hard bounce: SMTP 550 on RCPT: 5.1.1 User unknown")
        self.assertEqual(
            list(Suppression.objects.values_list("kind", "value", "reason")),
            [("email", "gone@example.com", "hard_bounce")],
        )
        bounce = Touchpoint.objects.get(kind="bounce")
        self.assertEqual(
            (bounce.customer_id, bounce.message_id, bounce.campaign_id, bounce.event_id, bounce.properties),
            (bouncing.id, message.id, self.campaign.id, f"bounce:{message.id}",
             {"type": "hard", "error": "SMTP 550 on RCPT: 5.1.1 User unknown"}),
        )  # fmt: skip
        # Another campaign to the same customer: stopped at the gate, the server never asked.
        other, other_run = make_campaign(name="Autumn")
        queue(other, other_run, self.channel, make_creative(other), [bouncing])
        self.assertEqual(send_due(now=T0 + timedelta(hours=1)), {"claimed": 1, "suppressed": 1})
        self.assertEqual(Message.objects.get(campaign=other).error, "suppressed")
        self.assertEqual(self.sink.rcpt_attempts["gone@example.com"], 1)

    def test_a_connection_lost_after_data_leaves_the_message_unknown_and_the_batch_goes_on(self):
        customers = [make_customer(n) for n in range(3)]
        queue(self.campaign, self.run, self.channel, self.creative, customers)
        self.sink.drop_after_data.add("c1@example.com")

        counts = send_due(now=T0)

        self.assertEqual(counts, {"claimed": 3, "sent": 2, "unknown": 1})
        self.assertEqual(statuses(self.campaign), {"c0": "sent", "c1": "unknown", "c2": "sent"})
        unknown = Message.objects.get(status="unknown")
        self.assertTrue(unknown.error.startswith("in doubt, never re-sent: connection lost after the message was"))
        # The server did get it: in doubt is the truth, and it is never sent again.
        self.assertEqual(self.sink.recipients(), ["c0@example.com", "c1@example.com", "c2@example.com"])
        self.assertEqual(send_due(now=T0 + timedelta(days=1)), {"claimed": 0})
        self.assertFalse(Touchpoint.objects.filter(customer=customers[1]).exists())

    def test_an_invalid_address_fails_once_without_reaching_the_server(self):
        queue(self.campaign, self.run, self.channel, self.creative, [make_customer(1, email="x@")])

        self.assertEqual(send_due(now=T0), {"claimed": 1, "failed": 1})
        message = Message.objects.get()
        self.assertEqual((message.status, message.error, message.recipient), ("failed", "invalid address: 'x@'", "x@"))
        self.assertEqual(self.sink.rcpt_attempts, {})
        self.assertFalse(Suppression.objects.exists())

    def test_a_refused_connection_is_retried_later(self):
        self.channel.settings = {**self.channel.settings, "port": free_port()}
        self.channel.save()
        queue(self.campaign, self.run, self.channel, self.creative, [make_customer(1), make_customer(2)])

        counts = send_due(now=T0)

        self.assertEqual(counts, {"claimed": 2, "retried": 2})
        for message in Message.objects.all():
            self.assertEqual((message.status, message.attempts), ("queued", 1))
            self.assertIn("connection failed before the message was handed over", message.error)
            self.assertGreater(message.not_before, T0)

    def test_a_creative_that_does_not_render_fails_the_message_without_sending(self):
        creative = make_creative(self.campaign, name="B", body="{% if %}")
        queue(self.campaign, self.run, self.channel, creative, [make_customer(1)])

        self.assertEqual(send_due(now=T0), {"claimed": 1, "failed": 1})
        message = Message.objects.get()
        self.assertEqual((message.status, message.attempts), ("failed", 0))
        self.assertTrue(message.error.startswith("render: body:"), message.error)
        self.assertEqual(self.sink.rcpt_attempts, {})

    def test_pause_stops_claims_and_resume_sends_only_what_is_still_queued(self):
        customers = [make_customer(n) for n in range(6)]
        queue(self.campaign, self.run, self.channel, self.creative, customers)
        self.assertEqual(send_due(now=T0, limit=2), {"claimed": 2, "sent": 2})
        campaign_pause(self.campaign.id)

        self.assertEqual(send_due(now=T0), {"claimed": 0})
        # Meanwhile one is cancelled by hand and one went unknown: neither may go on resume.
        Message.objects.filter(customer=customers[2]).update(status="cancelled")
        Message.objects.filter(customer=customers[3]).update(status="unknown")
        campaign_resume(self.campaign.id)

        self.assertEqual(send_due(now=T0), {"claimed": 2, "sent": 2})
        self.assertEqual(self.sink.recipients(), ["c0@example.com", "c1@example.com", "c4@example.com",
                                                  "c5@example.com"])  # fmt: skip
        self.assertEqual(send_due(now=T0), {"claimed": 0})

    def test_quiet_hours_defer_to_the_local_morning_across_spring_forward(self):
        self.campaign.quiet_hours_start, self.campaign.quiet_hours_end = time(21), time(8)
        self.campaign.save()
        customer = make_customer(1, timezone="America/New_York")
        queue(self.campaign, self.run, self.channel, self.creative, [customer],
              not_before=datetime(2026, 3, 8, 6, 0, tzinfo=UTC))  # fmt: skip
        night = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 EST; at 02:00 the clocks jump to 03:00 EDT

        self.assertEqual(send_due(now=night), {"claimed": 1, "deferred": 1})

        message = Message.objects.get()
        # 08:00 EDT (UTC-4) is 12:00 UTC, not the 13:00 that 08:00 EST would be.
        self.assertEqual((message.status, message.not_before), ("queued", datetime(2026, 3, 8, 12, 0, tzinfo=UTC)))
        self.assertEqual((message.claimed_by, message.lease_until, message.attempts), ("", None, 0))
        self.assertEqual(send_due(now=datetime(2026, 3, 8, 11, 59, tzinfo=UTC)), {"claimed": 0})
        self.assertEqual(self.sink.recipients(), [])
        self.assertEqual(send_due(now=datetime(2026, 3, 8, 12, 0, tzinfo=UTC)), {"claimed": 1, "sent": 1})
        self.assertEqual(self.sink.recipients(), ["c1@example.com"])

    def test_quiet_hours_defer_to_the_local_morning_across_fall_back(self):
        self.campaign.quiet_hours_start, self.campaign.quiet_hours_end = time(21), time(8)
        self.campaign.save()
        customer = make_customer(1, timezone="America/New_York")
        queue(self.campaign, self.run, self.channel, self.creative, [customer],
              not_before=datetime(2026, 11, 1, 5, 0, tzinfo=UTC))  # fmt: skip
        night = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first of the two 01:30s

        self.assertEqual(send_due(now=night), {"claimed": 1, "deferred": 1})

        # 08:00 EST (UTC-5) is 13:00 UTC.
        self.assertEqual(Message.objects.get().not_before, datetime(2026, 11, 1, 13, 0, tzinfo=UTC))
        self.assertEqual(send_due(now=datetime(2026, 11, 1, 12, 59, tzinfo=UTC)), {"claimed": 0})
        self.assertEqual(send_due(now=datetime(2026, 11, 1, 13, 0, tzinfo=UTC)), {"claimed": 1, "sent": 1})

    @override_settings(REPORTING_TIMEZONE="Europe/Berlin")
    def test_quiet_hours_of_a_customer_without_a_timezone_follow_the_reporting_timezone(self):
        self.campaign.quiet_hours_start, self.campaign.quiet_hours_end = time(21), time(8)
        self.campaign.save()
        queue(self.campaign, self.run, self.channel, self.creative,
              [make_customer(1, timezone=""), make_customer(2, timezone="Asia/Tokyo")])  # fmt: skip

        counts = send_due(now=T0)  # 14:00 in Berlin (sent), 21:00 in Tokyo (quiet)

        self.assertEqual(counts, {"claimed": 2, "sent": 1, "deferred": 1})
        self.assertEqual(statuses(self.campaign), {"c1": "sent", "c2": "queued"})
        # 08:00 JST is 23:00 UTC.
        self.assertEqual(Message.objects.get(status="queued").not_before, datetime(2026, 6, 1, 23, 0, tzinfo=UTC))

    def test_only_due_messages_of_running_campaigns_and_enabled_channels_are_claimed(self):
        later = queue(self.campaign, self.run, self.channel, self.creative, [make_customer(1)],
                      not_before=T0 + timedelta(minutes=5))  # fmt: skip
        draft, draft_run = make_campaign(name="draft")
        Campaign.objects.filter(pk=draft.pk).update(status=Campaign.Status.DRAFT)
        queue(draft, draft_run, self.channel, make_creative(draft), [make_customer(2)])
        off = email_channel(self.sink, name="off", enabled=False)
        other, other_run = make_campaign(name="other")
        queue(other, other_run, off, make_creative(other), [make_customer(3)])
        claimed = make_customer(4)
        held = queue(*make_campaign(name="claimed"), self.channel, None, [claimed],
                     claimed_by="another-worker", lease_until=T0 + timedelta(seconds=30))  # fmt: skip

        self.assertEqual(send_due(now=T0), {"claimed": 0})
        self.assertEqual(due_counts(now=T0), {})
        self.assertEqual(due_counts(now=T0 + timedelta(minutes=5)), {self.channel.id: 2})
        self.assertEqual(sorted(Message.objects.filter(status="queued").values_list("id", flat=True)),
                         sorted(Message.objects.values_list("id", flat=True)))  # fmt: skip
        self.assertEqual((later[0].status, held[0].claimed_by), ("queued", "another-worker"))

    def test_an_expired_claim_is_taken_over(self):
        customer = make_customer(1)
        queue(self.campaign, self.run, self.channel, self.creative, [customer],
              claimed_by="dead-worker", lease_until=T0 - timedelta(seconds=1))  # fmt: skip

        self.assertEqual(send_due(now=T0, worker="w2"), {"claimed": 1, "sent": 1})
        self.assertTrue(Message.objects.get().claimed_by.startswith("w2/"))

    def test_send_test_mails_the_rendered_creative_without_a_message_or_touchpoint(self):
        result = send_test(self.creative, "me@example.com")

        self.assertEqual(self.sink.recipients(), ["me@example.com"])
        email = self.sink.by_recipient()["me@example.com"].message
        self.assertEqual(email["Subject"], "[Test] Hello Test")
        self.assertEqual(email.get_content().strip(), "Hi Test, 20% off today.")
        self.assertEqual(result, {"creative_id": self.creative.id, "to": "me@example.com",
                                  "channel_id": self.channel.id, "provider_id": email["Message-ID"]})  # fmt: skip
        self.assertFalse(Message.objects.exists())
        self.assertFalse(Touchpoint.objects.exists())

    def test_send_test_refuses_a_bad_address_and_a_kind_without_a_channel(self):
        with self.assertRaises(BatchInvalid) as bad:
            send_test(self.creative, "not an address")
        self.assertEqual([(e.field, e.message) for e in bad.exception.errors],
                         [("to", "'not an address' is not an email address")])  # fmt: skip
        with self.assertRaisesMessage(Conflict, "There is no enabled sms channel to send the test through."):
            send_test(make_creative(self.campaign, kind="sms"), "+14155550100")
        self.assertEqual(self.sink.recipients(), [])

    def test_an_html_creative_goes_as_a_tracked_alternative_and_a_non_ascii_subject_is_encoded(self):
        creative = make_creative(
            self.campaign,
            name="html",
            subject="Grüße, {{ first_name }}",
            body="Hi {{ first_name }}: https://shop.example.com/sale",
            html_body='<p>Hi {{ first_name }}: <a href="https://shop.example.com/sale">sale</a></p>',
        )
        [message] = queue(self.campaign, self.run, self.channel, creative, [make_customer(1)])

        self.assertEqual(send_due(now=T0), {"claimed": 1, "sent": 1})

        email = self.sink.by_recipient()["c1@example.com"].message
        self.assertEqual(email["Subject"], "Grüße, Name1")
        self.assertEqual(email.get_content_type(), "multipart/alternative")
        text, html = email.iter_parts()
        click = links.click_url(message.id, "https://shop.example.com/sale")
        self.assertEqual(text.get_content().strip(), f"Hi Name1: {click}")
        self.assertIn(f'<a href="{click}">sale</a>', html.get_content())
        self.assertIn(links.open_pixel_url(message.id), html.get_content())


class WireFormatTests(SimpleTestCase):
    def email(self, **overrides) -> EmailMultiAlternatives:
        values = {
            "subject": "20% off, Ada",
            "body": "Hi Ada,\n\nÜber uns: https://shop.example.com\n.a line starting with a dot\n",
            "from_email": "News <news@example.com>",
            "to": ["ada@example.com"],
            "reply_to": ["help@example.com"],
            "headers": {"Message-ID": "<m1.2@example.com>", "List-Unsubscribe": "<https://x.example.com/u/1.s>"},
        }
        email = EmailMultiAlternatives(**{**values, **overrides})
        email.attach_alternative("<p>Hi Ada, <b>Über</b> uns</p>", "text/html")
        return email

    def parsed(self, data: bytes):
        message = email_parser.message_from_bytes(data, policy=email_policy.default)
        headers = {k: str(v) for k, v in message.items() if k not in ("Content-Type", "Date")}
        parts = [(p.get_content_type(), p.get_content(), p["Content-Transfer-Encoding"]) for p in message.iter_parts()]
        return message.get_content_type(), headers, parts, message["Date"] is not None

    def test_the_direct_wire_form_reads_exactly_as_djangos(self):
        email = self.email()

        self.assertEqual(self.parsed(wire_bytes(email)), self.parsed(email.message().as_bytes(linesep="\r\n")))
        self.assertNotIn(b"\n", wire_bytes(email).replace(b"\r\n", b""))

    def test_a_text_only_message_too(self):
        email = EmailMultiAlternatives("Hi", "Plain text", "n@example.com", ["a@example.com"],
                                       headers={"Message-ID": "<m1@example.com>"})  # fmt: skip

        self.assertEqual(self.parsed(wire_bytes(email)), self.parsed(email.message().as_bytes(linesep="\r\n")))

    def test_anything_unusual_is_left_to_django(self):
        self.assertIsNone(wire_bytes(self.email(subject="Grüße")))
        self.assertIsNone(wire_bytes(self.email(subject="two\nlines")))
        self.assertIsNone(wire_bytes(self.email(body="x" * 999)))
        self.assertIsNone(wire_bytes(self.email(cc=["c@example.com"])))
        self.assertIsNone(wire_bytes(self.email(headers={})))  # no Message-ID of ours
        with_file = self.email()
        with_file.attach("a.txt", "data", "text/plain")
        self.assertIsNone(wire_bytes(with_file))


class HttpSendTests(TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.provider = HttpProvider().start()
        cls.addClassCleanup(cls.provider.stop)

    def setUp(self):
        super().setUp()
        p = self.provider
        with p.lock:
            for table in (p.requests, p.delivered, p.replays):
                table.clear()
            for mapping in (p.by_key, p.by_id, p.plan, p.status_of):
                mapping.clear()
            p.retry_after = 0
        self.campaign, self.run = make_campaign()
        self.sms = self.http_channel("sms", "/sms", status_url=self.provider.url("/status/{idempotency_key}"))
        self.creative = make_creative(self.campaign, kind="sms", subject="", body="Hi {{ first_name }}: SALE20")

    def http_channel(self, kind: str, path: str, **options) -> Channel:
        return Channel.objects.create(
            name=f"{kind} {path}",
            kind=kind,
            backend="http",
            cost_per_message=Decimal("0.0075"),
            settings={
                "url": self.provider.url(path),
                "idempotency_header": "Idempotency-Key",
                "timeout_s": [5, 5],
                "headers": {"X-Account": "acme"},
                **options,
            },
        )

    def sms_customer(self, n: int, **fields) -> Customer:
        return make_customer(n, **{"phone": f"+1555010{n:04d}", "sms_opt_in": True, "email_opt_in": False, **fields})

    def test_an_sms_goes_to_the_e164_number_with_our_idempotency_key(self):
        customers = [self.sms_customer(1), self.sms_customer(2)]
        messages = queue(self.campaign, self.run, self.sms, self.creative, customers)

        self.assertEqual(send_due(now=T0), {"claimed": 2, "sent": 2})

        posts = self.provider.posts()
        self.assertEqual(
            [(r.path, r.body, r.headers["Idempotency-Key"], r.headers["X-Account"]) for r in posts],
            [("/sms", {"to": c.phone, "text": f"Hi {c.first_name}: SALE20", "reference": f"msg-{m.id}"},
              f"msg-{m.id}", "acme") for m, c in zip(messages, customers, strict=True)],
        )  # fmt: skip
        self.assertEqual(
            list(Message.objects.order_by("id").values_list("status", "recipient", "provider_id", "cost")),
            [("sent", "+15550100001", "prov-1", Decimal("0.0075")), ("sent", "+15550100002", "prov-2",
                                                                      Decimal("0.0075"))],
        )  # fmt: skip
        self.assertEqual(list(Touchpoint.objects.order_by("id").values_list("kind", "channel", "message_id")),
                         [("sent", "sms", messages[0].id), ("sent", "sms", messages[1].id)])  # fmt: skip

    def test_sms_consent_and_phone_suppression_hold_at_send_time(self):
        queue(self.campaign, self.run, self.sms, self.creative,
              [self.sms_customer(1), self.sms_customer(2, sms_opt_in=False), self.sms_customer(3)])  # fmt: skip
        Suppression.objects.create(kind="phone", value="+15550100003", reason="complaint")

        self.assertEqual(send_due(now=T0), {"claimed": 3, "sent": 1, "suppressed": 2})
        self.assertEqual([d["who"] for d in self.provider.delivered], ["+15550100001"])
        self.assertEqual(dict(Message.objects.values_list("customer__external_id", "error")),
                         {"c1": "", "c2": "no_consent", "c3": "suppressed"})  # fmt: skip

    def test_429_and_500_are_retried_with_backoff_and_400_fails_once(self):
        customers = [self.sms_customer(n) for n in (1, 2, 3)]
        queue(self.campaign, self.run, self.sms, self.creative, customers)
        self.provider.plan.update({"+15550100001": [429], "+15550100002": [500], "+15550100003": [400]})
        self.provider.retry_after = 600

        self.assertEqual(send_due(now=T0), {"claimed": 3, "retried": 2, "failed": 1})

        rows = {m.customer.external_id: m for m in Message.objects.all()}
        self.assertEqual(rows["c1"].not_before, T0 + timedelta(seconds=600))  # Retry-After beats the backoff
        self.assertLessEqual(rows["c2"].not_before, T0 + timedelta(seconds=timing.BACKOFF_BASE_S))
        self.assertEqual([rows[c].status for c in ("c1", "c2", "c3")], ["queued", "queued", "failed"])
        self.assertTrue(rows["c3"].error.startswith("HTTP 400:"), rows["c3"].error)
        self.assertTrue(rows["c1"].error.startswith("attempt 1: HTTP 429:"), rows["c1"].error)

        self.assertEqual(send_due(now=T0 + timedelta(seconds=601)), {"claimed": 2, "sent": 2})
        self.assertEqual(sorted(d["who"] for d in self.provider.delivered), ["+15550100001", "+15550100002"])
        self.assertEqual(send_due(now=T0 + timedelta(days=1)), {"claimed": 0})

    def test_a_read_timeout_stays_in_doubt_until_the_status_api_settles_it_as_sent(self):
        customer = self.sms_customer(1)
        [message] = queue(self.campaign, self.run, self.sms, self.creative, [customer])
        self.sms.settings["timeout_s"] = [2, 0.3]
        self.sms.save()
        self.provider.plan["+15550100001"] = [("slow", 1.0)]

        self.assertEqual(send_due(now=T0), {"claimed": 1, "in_doubt": 1})
        message.refresh_from_db()
        self.assertEqual((message.status, message.lease_until), ("sending", T0))
        self.assertTrue(message.error.startswith("in doubt: no answer in time after the request was sent"))

        self.assertEqual(reconcile_expired(now=T0 + timedelta(seconds=1)), {"sent": 1})

        message.refresh_from_db()
        self.assertEqual((message.status, message.provider_id, message.error), ("sent", "prov-1", ""))
        self.assertEqual(Touchpoint.objects.get().event_id, f"sent:{message.id}")
        self.assertEqual(len(self.provider.delivered), 1)
        self.assertEqual(send_due(now=T0 + timedelta(days=1)), {"claimed": 0})

    def test_a_message_in_doubt_that_the_provider_never_got_goes_back_to_the_queue(self):
        [message] = queue(self.campaign, self.run, self.sms, self.creative, [self.sms_customer(1)],
                          status="sending", attempts=1, lease_until=T0 - timedelta(seconds=1))  # fmt: skip

        self.assertEqual(reconcile_expired(now=T0), {"requeued": 1})
        message.refresh_from_db()
        self.assertEqual((message.status, message.not_before, message.claimed_by), ("queued", T0, ""))

        self.assertEqual(send_due(now=T0), {"claimed": 1, "sent": 1})
        self.assertEqual([d["key"] for d in self.provider.delivered], [f"msg-{message.id}"])
        self.assertEqual(Message.objects.get().attempts, 2)

    def test_the_status_api_can_report_a_failure(self):
        [message] = queue(self.campaign, self.run, self.sms, self.creative, [self.sms_customer(1)],
                          status="sending", attempts=1, lease_until=T0 - timedelta(seconds=1))  # fmt: skip
        self.provider.status_of[f"msg-{message.id}"] = "failed"

        self.assertEqual(reconcile_expired(now=T0), {"failed": 1})
        self.assertEqual(Message.objects.get().status, "failed")

    def test_with_only_an_idempotency_key_a_message_in_doubt_is_sent_again_and_the_provider_deduplicates(self):
        channel = self.http_channel("sms", "/sms2")
        [message] = queue(self.campaign, self.run, channel, self.creative, [self.sms_customer(1)],
                          status="sending", attempts=1, lease_until=T0 - timedelta(seconds=1))  # fmt: skip
        # The provider got it before the worker died.
        self.provider.by_key[f"msg-{message.id}"] = {"id": "prov-77", "status": "queued"}

        self.assertEqual(reconcile_expired(now=T0), {"requeued": 1})
        self.assertEqual(send_due(now=T0), {"claimed": 1, "sent": 1})

        self.assertEqual(self.provider.delivered, [])
        self.assertEqual(self.provider.replays, [f"msg-{message.id}"])
        self.assertEqual(Message.objects.get().provider_id, "prov-77")

    def test_without_status_api_or_idempotency_key_a_message_in_doubt_becomes_unknown(self):
        plain = Channel.objects.create(name="plain", kind="sms", backend="http", settings={"url": self.provider.url()})
        [message] = queue(self.campaign, self.run, plain, self.creative, [self.sms_customer(1)],
                          status="sending", attempts=1, lease_until=T0 - timedelta(seconds=1))  # fmt: skip

        self.assertEqual(reconcile_expired(now=T0), {"unknown": 1})
        message.refresh_from_db()
        self.assertEqual(message.status, "unknown")
        self.assertIn("cannot tell whether it went out, so it is never re-sent", message.error)
        self.assertEqual(self.provider.requests, [])

    def test_push_sends_one_request_with_every_enabled_device_token(self):
        push = self.http_channel("push", "/push")
        creative = make_creative(self.campaign, kind="push", subject="Sale", body="20% off, {{ first_name }}")
        customer = make_customer(1, push_opt_in=True)
        devices = [
            Device.objects.create(customer=customer, platform="ios", token="tok-a", token_hash="a"),
            Device.objects.create(customer=customer, platform="android", token="tok-b", token_hash="b"),
        ]
        Device.objects.create(customer=customer, platform="web", token="tok-c", token_hash="c", enabled=False)
        no_device = make_customer(2, push_opt_in=True)
        queue(self.campaign, self.run, push, creative, [customer, no_device])

        self.assertEqual(send_due(now=T0), {"claimed": 2, "sent": 1, "suppressed": 1})

        [post] = self.provider.posts()
        self.assertEqual(post.body, {"tokens": ["tok-a", "tok-b"], "title": "Sale", "body": "20% off, Name1"})
        self.assertEqual(
            Message.objects.get(customer=customer).recipient, f"device:{devices[0].id},device:{devices[1].id}"
        )
        self.assertEqual(Message.objects.get(customer=no_device).error, "no_address")

    def test_a_webhook_carries_the_external_id_attributes_and_the_body_as_json(self):
        hook = self.http_channel(
            "webhook",
            "/hook",
            payload={"customer": "{{ external_id }}", "attrs": "{{ attributes }}", "data": "{{ data }}",
                     "note": "for {{ first_name|upper }}"},
            auth={"type": "bearer", "token_env": "I4S_TEST_TOKEN"},
        )  # fmt: skip
        creative = make_creative(self.campaign, kind="webhook", body='{"offer": "{{ attributes.tier }}-20"}')
        customer = make_customer(1, attributes={"tier": "gold", "points": 120})
        queue(self.campaign, self.run, hook, creative, [customer])

        with unittest.mock.patch.dict(os.environ, {"I4S_TEST_TOKEN": "s3cret"}):
            self.assertEqual(send_due(now=T0), {"claimed": 1, "sent": 1})

        [post] = self.provider.posts()
        self.assertEqual(post.body, {"customer": "c1", "attrs": {"tier": "gold", "points": 120},
                                     "data": {"offer": "gold-20"}, "note": "for NAME1"})  # fmt: skip
        self.assertEqual(post.headers["Authorization"], "Bearer s3cret")
        self.assertEqual(Message.objects.get().recipient, "c1")

    def test_a_refused_connection_is_retried(self):
        closed = Channel.objects.create(
            name="closed", kind="sms", backend="http", settings={"url": f"http://127.0.0.1:{free_port()}/sms"}
        )
        queue(self.campaign, self.run, closed, self.creative, [self.sms_customer(1)])

        self.assertEqual(send_due(now=T0), {"claimed": 1, "retried": 1})
        self.assertIn("could not connect", Message.objects.get().error)


class ChannelSettingsTests(TestCase):
    def test_valid_settings_have_no_errors(self):
        self.assertEqual(channel_settings_errors("email", "default", {"from_email": "News <n@example.com>"}), [])
        self.assertEqual(
            channel_settings_errors(
                "email", "smtp", {"host": "smtp.example.com", "port": 587, "use_tls": True, "password_env": "SMTP_PW"}
            ),
            [],
        )
        self.assertEqual(
            channel_settings_errors("email", "anymail", {"esp": "mailgun", "api_key_env": "MAILGUN_KEY"}), []
        )
        self.assertEqual(
            channel_settings_errors(
                "sms",
                "http",
                {
                    "url": "https://api.example.com/sms",
                    "auth": {"type": "basic", "username": "acme", "password_env": "SMS_PW"},
                    "payload": {"to": "{{ recipient }}", "body": "{{ text|truncatechars:160 }}"},
                    "timeout_s": [2, 10],
                    "idempotency_header": "Idempotency-Key",
                    "status_url": "https://api.example.com/sms/{idempotency_key}",
                },
            ),
            [],
        )

    def test_each_problem_is_named_with_its_field(self):
        self.assertEqual(
            channel_settings_errors("email", "smtp", {"port": 70000, "use_tls": True, "use_ssl": True, "x": 1}),
            [
                "settings.host: required for the smtp backend (the SMTP server's name)",
                "settings.port: must be a whole number from 1 to 65535",
                "settings.use_ssl: use_tls (STARTTLS) and use_ssl (implicit TLS) exclude each other",
                "settings.x: unknown setting for the smtp email backend",
            ],
        )
        self.assertEqual(
            channel_settings_errors(
                "sms",
                "http",
                {"url": "ftp://x", "method": "GET", "payload": {"to": "{% if %}"}, "timeout_s": 0,
                 "status_url": "https://x.example.com/status"},
            ),
            [
                "settings.url: 'ftp://x' is not an http(s) URL",
                "settings.method: must be one of POST, PUT, PATCH",
                "settings.payload.to: Unexpected end of expression in if tag.",
                "settings.timeout_s: must be a positive number of seconds or [connect, read]",
                "settings.status_url: must contain {idempotency_key} or {provider_id}",
            ],
        )  # fmt: skip
        self.assertEqual(channel_settings_errors("sms", "smtp", {}), ['backend: sms channels use the "http" backend'])
        self.assertEqual(
            channel_settings_errors("email", "anymail", {"esp": "nosuchesp"}),
            ["settings.esp: django-anymail has no backend 'nosuchesp'"],
        )
        self.assertEqual(
            channel_settings_errors("push", "http", {"url": "https://x.example.com", "auth": {"type": "bearer"}}),
            ["settings.auth.token_env: must name an environment variable (letters, digits, _), which holds the secret"],
        )


@unittest.skipIf(not settings.REDIS_URL, "no test Redis: the enqueue test needs a broker")
class EnqueueTests(TestCase):
    def setUp(self):
        from marketing.celery import app, queue_name

        self.queue = queue_name("send")
        with app.connection_for_write() as conn:
            conn.default_channel.queue_declare(queue=self.queue)
            conn.default_channel.queue_purge(self.queue)
        self.addCleanup(self.purge)

    def purge(self):
        from marketing.celery import app

        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(self.queue)

    def waiting(self) -> list:
        from marketing.celery import app

        with app.connection_for_write() as conn:
            client = conn.default_channel.client
            return [json.loads(raw)["headers"]["argsrepr"] for raw in client.lrange(self.queue, 0, -1)]

    @override_settings(SEND_BATCH_SIZE=2, SEND_MAX_TASKS_PER_CHANNEL=2)
    def test_it_enqueues_a_task_per_batch_of_due_messages_capped_per_channel_and_minus_those_waiting(self):
        campaign, run = make_campaign()
        a = Channel.objects.create(name="a", kind="email")
        b = Channel.objects.create(name="b", kind="email")
        now = datetime.now(UTC)
        queue(campaign, run, a, None, [make_customer(n) for n in range(3)], not_before=now)
        queue(campaign, CampaignRun.objects.create(campaign=campaign, key="2"), b, None,
              [make_customer(n) for n in range(3, 10)], not_before=now)  # fmt: skip

        self.assertEqual(send_enqueue(), 4)  # a: ceil(3/2) = 2; b: ceil(7/2) = 4, capped at 2
        self.assertEqual(sorted(self.waiting()), sorted([f"({a.id},)", f"({b.id},)"] * 2))
        self.assertEqual(send_enqueue(), 0)  # four already wait for the four wanted
        self.assertEqual(send_enqueue([a.id]), 0)

    def test_a_sweep_settles_expired_leases_completes_finished_campaigns_and_enqueues_due_work(self):
        now = datetime.now(UTC)
        mail = Channel.objects.create(name="mail", kind="email")
        done, done_run = make_campaign(name="done")
        [in_doubt] = queue(done, done_run, mail, None, [make_customer(1)], status="sending",
                           lease_until=now - timedelta(seconds=1))  # fmt: skip
        going, going_run = make_campaign(name="going")
        queue(going, going_run, mail, None, [make_customer(n) for n in range(2, 5)], not_before=now)

        self.assertEqual(sweep(), {"reconciled": {"unknown": 1}, "completed": 1, "enqueued": 1})

        in_doubt.refresh_from_db()
        self.assertEqual(in_doubt.status, "unknown")
        self.assertEqual(
            dict(Campaign.objects.values_list("name", "status")), {"done": "completed", "going": "running"}
        )
        self.assertEqual(self.waiting(), [f"({mail.id},)"])


class RateLimitTests(SinkMixin, TransactionTestCase):
    def test_two_concurrent_senders_share_the_channel_rate_and_never_claim_the_same_message(self):
        if connection.vendor != "postgresql":
            self.skipTest("two concurrent senders need PostgreSQL (SKIP LOCKED)")
        campaign, run = make_campaign()
        channel = email_channel(self.sink, rate_limit_per_second=10)
        ratelimit.reset(channel.id)
        customers = [make_customer(n) for n in range(30)]
        queue(campaign, run, channel, make_creative(campaign), customers)
        results: list[dict] = []

        def sender(name: str) -> None:
            try:
                results.append(send_due(now=T0, worker=name, limit=15))
            finally:
                connection.close()

        threads = [threading.Thread(target=sender, args=(f"w{i}",)) for i in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        self.assertEqual(sorted(results, key=str), [{"claimed": 15, "sent": 15}] * 2)
        self.assertEqual(sorted(self.sink.recipients()), sorted(c.email for c in customers))
        times = sorted(r.at for r in self.sink.received)
        # 10/s with a burst of 1: the 30 slots span 2.9 s and no second holds more than 11 of
        # them (unlimited, the 30 would take about 0.1 s). The sink sees them with some jitter
        # (the first message also opens the connection): a quarter second and one message.
        self.assertGreaterEqual(times[-1] - times[0], 2.9 - 0.25)
        for i, start in enumerate(times):
            self.assertLessEqual(sum(1 for t in times[i:] if t < start + 1.0), 12)
        claimers = {m.claimed_by.split("/")[0] for m in Message.objects.all()}
        self.assertEqual(claimers, {"w1", "w2"})

    def test_a_pause_in_the_middle_of_a_batch_stops_it_at_the_next_message(self):
        campaign, run = make_campaign()
        channel = email_channel(self.sink)
        customers = [make_customer(n) for n in range(6)]
        queue(campaign, run, channel, make_creative(campaign), customers)

        def pause_after_two(received) -> None:
            if len(self.sink.received) == 2:
                Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
                connection.close()

        self.sink.on_message = pause_after_two

        self.assertEqual(send_due(now=T0), {"claimed": 6, "sent": 2, "released": 4})
        self.assertEqual(self.sink.recipients(), ["c0@example.com", "c1@example.com"])
        queued = Message.objects.filter(status="queued")
        self.assertEqual(sorted(queued.values_list("customer__external_id", flat=True)), ["c2", "c3", "c4", "c5"])
        self.assertEqual(set(queued.values_list("claimed_by", "lease_until", "attempts")), {("", None, 0)})


class SqlitePathTests(TestCase):
    """The embedded mode (SQLite, one worker process, no Redis): the same sending code, run
    by a test process of its own on SQLite."""

    def test_the_send_tests_pass_on_sqlite(self):
        if connection.vendor == "sqlite":
            self.skipTest("this run is on SQLite already")
        env = {
            **os.environ,
            "TEST_DATABASE_URL": "sqlite",
            "TEST_REDIS_URL": "none",
            "CELERY_QUEUE_PREFIX": "i4s-sqlite-",
        }
        labels = [f"tests.test_send.{name}" for name in ("EmailSendTests", "HttpSendTests", "RateLimitTests")]
        result = subprocess.run(
            [sys.executable, "manage.py", "test", *labels, "--noinput"],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output[-4000:])
        self.assertIn("Test services: database SQLite", output)
        self.assertRegex(output, r"\n\d+ passed, 0 failed, 1 skipped\n")
