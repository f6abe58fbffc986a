"""Tracking and compliance endpoints through Django's test client: the open pixel, signed
click redirects, the unsubscribe page and RFC 8058 one-click POST, provider webhooks
(signature, delivered/bounce/complaint effects) and inbound SMS STOP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import timedelta
from decimal import Decimal
from unittest import mock

from django.test import Client, TestCase, override_settings
from django.utils import timezone

from campaigns.delivery import links, timing
from campaigns.delivery.tracking import PIXEL_GIF, click_event_id
from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message
from marketing.models import Customer, Suppression, Touchpoint
from tests.api_helpers import T0, make_customer

BASE = "https://mk.example.com"
MAIL_SECRET = "mail-hook-secret"
SMS_SECRET = "sms-hook-secret"
TOUCHPOINT_COLUMNS = ("kind", "event_id", "customer_id", "channel", "campaign_id", "message_id", "creative_id")


def path_of(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE) :]


def signed(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@override_settings(PUBLIC_BASE_URL=BASE)
class TrackingTestCase(TestCase):
    """Ann and Bob each got a sent email of the autumn sale; Cy got an SMS; Dee a push."""

    def setUp(self):
        super().setUp()
        env = mock.patch.dict(os.environ, {"I4T_MAIL_SECRET": MAIL_SECRET, "I4T_SMS_SECRET": SMS_SECRET})
        env.start()
        self.addCleanup(env.stop)
        self.client = Client(enforce_csrf_checks=True)
        self.ann = make_customer("crm-ann", email="Ann@Example.com", phone="+14155550101", sms_opt_in=True)
        self.bob = make_customer("crm-bob", email="bob@example.com")
        self.cy = make_customer("crm-cy", phone="+14155550103", sms_opt_in=True)
        self.dee = make_customer("crm-dee", push_opt_in=True)
        self.mail = Channel.objects.create(
            name="mail", kind="email", settings={"webhook_secret_env": "I4T_MAIL_SECRET"}
        )
        self.sms = Channel.objects.create(name="texts", kind="sms", settings={"webhook_secret_env": "I4T_SMS_SECRET"})
        self.push = Channel.objects.create(name="app", kind="push", settings={"webhook_secret_env": "I4T_MAIL_SECRET"})
        self.campaign = Campaign.objects.create(name="Autumn sale", status=Campaign.Status.RUNNING)
        self.run = CampaignRun.objects.create(campaign=self.campaign, key="launch")
        self.creative = Creative.objects.create(campaign=self.campaign, channel_kind="email", body="Hi")
        self.sms_creative = Creative.objects.create(campaign=self.campaign, channel_kind="sms", body="Hi")
        self.push_creative = Creative.objects.create(campaign=self.campaign, channel_kind="push", body="Hi")
        self.to_ann = self.message(self.ann, recipient="Ann@Example.COM", provider_id="p-ann")
        self.to_bob = self.message(self.bob, recipient="bob@example.com", provider_id="p-bob")
        self.to_cy = self.message(
            self.cy, channel=self.sms, creative=self.sms_creative, recipient="+14155550103", provider_id="p-cy"
        )
        self.device = Device.objects.create(
            customer=self.dee, platform="ios", token="tok-dee", token_hash=hashlib.sha256(b"tok-dee").hexdigest()
        )
        self.to_dee = self.message(
            self.dee, channel=self.push, creative=self.push_creative, recipient="tok-dee", provider_id="p-dee"
        )

    def message(self, customer, **fields) -> Message:
        fields.setdefault("channel", self.mail)
        fields.setdefault("creative", self.creative)
        fields.setdefault("status", Message.Status.SENT)
        fields.setdefault("attempts", 1)
        fields.setdefault("sent_at", T0)
        fields.setdefault("cost", Decimal("0.001"))
        return Message.objects.create(campaign=self.campaign, run=self.run, customer=customer, **fields)

    def touchpoints(self, *columns: str) -> list[tuple]:
        return list(Touchpoint.objects.order_by("id").values_list(*(columns or TOUCHPOINT_COLUMNS)))

    def row(self, kind: str, event_id: str, message: Message, channel: str = "email") -> tuple:
        return (kind, event_id, message.customer_id, channel, self.campaign.pk, message.pk, message.creative_id)

    def statuses(self) -> dict[str, str]:
        return {m.customer.external_id: m.status for m in Message.objects.select_related("customer")}


class OpenPixelTests(TrackingTestCase):
    def get_pixel(self, message: Message, **extra):
        return self.client.get(path_of(links.open_pixel_url(message.pk)), **extra)

    def assert_pixel(self, response):
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "image/gif")
        self.assertEqual(response.content, PIXEL_GIF)
        self.assertEqual(len(response.content), 43)
        self.assertEqual(response["Cache-Control"], "no-store, no-cache, must-revalidate, max-age=0")

    def test_it_records_the_first_open_only(self):
        self.assert_pixel(self.get_pixel(self.to_ann))
        self.assert_pixel(self.get_pixel(self.to_ann))
        self.assertEqual(self.touchpoints(), [self.row("open", f"open:{self.to_ann.pk}", self.to_ann)])
        opened = Touchpoint.objects.get()
        self.assertEqual(opened.properties, {})
        self.assertLess(abs(opened.occurred_at - timezone.now()), timedelta(seconds=30))

    def test_a_bad_token_still_gets_the_gif_and_records_nothing(self):
        good = path_of(links.open_pixel_url(self.to_ann.pk))
        forged = good.replace(f"/t/o/{self.to_ann.pk}.", f"/t/o/{self.to_bob.pk}.")
        for path in (forged, "/t/o/garbage.gif", f"/t/o/{self.to_ann.pk}.gif", "/t/o/99999999999999999999.x.gif"):
            with self.subTest(path):
                self.assert_pixel(self.client.get(path))
        self.assertEqual(self.touchpoints(), [])

    def test_a_signed_pixel_of_a_missing_message_records_nothing(self):
        self.assert_pixel(self.client.get(path_of(links.open_pixel_url(987654))))
        self.assertEqual(self.touchpoints(), [])

    def test_a_head_request_records_nothing(self):
        response = self.client.head(path_of(links.open_pixel_url(self.to_ann.pk)))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.touchpoints(), [])


class ClickTests(TrackingTestCase):
    def test_it_records_the_click_and_redirects(self):
        url = "https://shop.example.com/sale?c=crm-ann&x=1"
        response = self.client.get(path_of(links.click_url(self.to_ann.pk, url)))
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response["Location"], url)
        self.assertEqual(self.touchpoints(), [self.row("click", click_event_id(self.to_ann.pk, url), self.to_ann)])
        self.assertEqual(Touchpoint.objects.get().properties, {"url": url})
        self.assertEqual(
            click_event_id(self.to_ann.pk, url),
            f"click:{self.to_ann.pk}:{hashlib.sha256(url.encode()).hexdigest()[:16]}",
        )

    def test_each_link_counts_once(self):
        first, second = "https://shop.example.com/a", "https://shop.example.com/b"
        for url in (first, second, first):
            self.assertEqual(self.client.get(path_of(links.click_url(self.to_ann.pk, url))).status_code, 302)
        self.assertEqual(
            self.touchpoints("event_id"),
            [(click_event_id(self.to_ann.pk, first),), (click_event_id(self.to_ann.pk, second),)],
        )

    def test_a_tampered_link_is_a_400_and_never_a_redirect(self):
        good = path_of(links.click_url(self.to_ann.pk, "https://shop.example.com/a"))
        message_id, encoded, sig = good.removeprefix("/t/c/").split(".")
        evil = links.click_url(self.to_ann.pk, "https://evil.example/").removeprefix(BASE + "/t/c/").split(".")[1]
        for path in (
            f"/t/c/{message_id}.{evil}.{sig}",  # another URL under the same signature
            f"/t/c/{self.to_bob.pk}.{encoded}.{sig}",  # another message
            f"/t/c/{message_id}.{encoded}",  # unsigned
            f"/t/c/{message_id}.{encoded}.AAAAAAAAAAAAAAAAAAAAAA",
            "/t/c/https:evil.example",
            f"/t/c/{message_id}.!!!.{sig}",
            path_of(links.click_url(self.to_ann.pk, "javascript:alert(1)")),  # signed, but not a web URL
        ):
            with self.subTest(path):
                response = self.client.get(path)
                self.assertEqual(response.status_code, 400)
                self.assertNotIn("Location", response)
                self.assertContains(response, "This link is not valid", status_code=400)
        self.assertEqual(self.touchpoints(), [])

    def test_a_head_request_redirects_without_recording(self):
        response = self.client.head(path_of(links.click_url(self.to_ann.pk, "https://shop.example.com/a")))
        self.assertEqual((response.status_code, response["Location"]), (302, "https://shop.example.com/a"))
        self.assertEqual(self.touchpoints(), [])


class UnsubscribeTests(TrackingTestCase):
    def path(self, message: Message) -> str:
        return path_of(links.unsubscribe_url(message.pk))

    def test_get_shows_the_confirmation_and_changes_nothing(self):
        response = self.client.get(self.path(self.to_ann))
        self.assertContains(response, "Unsubscribe?")
        self.assertContains(response, "<strong>A**@Example.com</strong>")
        self.assertContains(response, '<form method="post">')
        self.assertIsNone(Customer.objects.get(pk=self.ann.pk).unsubscribed_at)
        self.assertEqual(self.touchpoints(), [])

    def test_the_confirm_form_unsubscribes_once(self):
        response = self.client.post(self.path(self.to_ann))
        self.assertContains(response, "You are unsubscribed")
        unsubscribed_at = Customer.objects.get(pk=self.ann.pk).unsubscribed_at
        self.assertIsNotNone(unsubscribed_at)
        self.assertContains(self.client.post(self.path(self.to_ann)), "You are unsubscribed")
        self.assertEqual(Customer.objects.get(pk=self.ann.pk).unsubscribed_at, unsubscribed_at)
        self.assertEqual(self.touchpoints(), [self.row("unsubscribe", f"unsubscribe:{self.to_ann.pk}", self.to_ann)])
        self.assertEqual(Touchpoint.objects.get().properties, {"method": "page"})
        self.assertEqual(Touchpoint.objects.get().occurred_at, unsubscribed_at)
        self.assertIsNone(Customer.objects.get(pk=self.bob.pk).unsubscribed_at)
        self.assertContains(self.client.get(self.path(self.to_ann)), "You are already unsubscribed")

    def test_rfc_8058_one_click_post_unsubscribes_without_a_csrf_token(self):
        response = self.client.post(
            self.path(self.to_bob), "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"Unsubscribed.\n")
        self.assertIsNotNone(Customer.objects.get(pk=self.bob.pk).unsubscribed_at)
        self.assertEqual(self.touchpoints(), [self.row("unsubscribe", f"unsubscribe:{self.to_bob.pk}", self.to_bob)])
        self.assertEqual(Touchpoint.objects.get().properties, {"method": "one_click"})
        response = self.client.post(
            self.path(self.to_bob),
            {"List-Unsubscribe": "One-Click"},  # multipart, also allowed by RFC 8058
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(Touchpoint.objects.count(), 1)

    def test_an_already_unsubscribed_customer_stays_as_is(self):
        Customer.objects.filter(pk=self.ann.pk).update(unsubscribed_at=T0)
        self.assertContains(self.client.post(self.path(self.to_ann)), "You are unsubscribed")
        self.assertEqual(Customer.objects.get(pk=self.ann.pk).unsubscribed_at, T0)
        self.assertEqual(self.touchpoints(), [])

    def test_a_bad_token_changes_nothing(self):
        open_token = links.open_pixel_url(self.to_ann.pk).removeprefix(BASE + "/t/o/").removesuffix(".gif")
        for path in (f"/u/{self.to_ann.pk}", f"/u/{open_token}", "/u/x.y", path_of(links.unsubscribe_url(987654))):
            with self.subTest(path):
                self.assertContains(self.client.get(path), "This unsubscribe link is not valid", status_code=400)
                self.assertContains(self.client.post(path), "This unsubscribe link is not valid", status_code=400)
        self.assertEqual(Customer.objects.filter(unsubscribed_at__isnull=False).count(), 0)
        self.assertEqual(self.touchpoints(), [])

    def test_a_test_messages_link_says_so(self):
        self.assertContains(self.client.get("/u/preview"), "This was a test message")
        self.assertContains(self.client.post("/u/preview"), "This was a test message")
        self.assertEqual(Customer.objects.filter(unsubscribed_at__isnull=False).count(), 0)


class ProviderEventTests(TrackingTestCase):
    def post_events(self, events, channel=None, secret=MAIL_SECRET, signature=None):
        body = events if isinstance(events, bytes) else json.dumps(events).encode()
        headers = {} if signature == "" else {"X-Signature": signature or signed(body, secret)}
        channel_id = (channel or self.mail).pk if not isinstance(channel, int) else channel
        return self.client.post(f"/hooks/{channel_id}/events", body, content_type="application/json", headers=headers)

    def assert_nothing_written(self):
        self.assertEqual(self.touchpoints(), [])
        self.assertEqual(Suppression.objects.count(), 0)
        self.assertEqual(set(self.statuses().values()), {"sent"})

    def test_bad_or_missing_signatures_are_refused(self):
        events = [{"message_id": self.to_ann.pk, "event": "delivered"}]
        response = self.post_events(events, signature="")
        self.assertEqual(response.status_code, 401)
        self.assertIn("Missing X-Signature", response.json()["detail"])
        self.assertEqual(self.post_events(events, secret="wrong").status_code, 403)
        self.assertEqual(self.post_events(events, signature="sha1=" + "0" * 40).status_code, 403)
        self.assertEqual(self.post_events(events, signature="garbage").status_code, 403)
        # A signature of another channel's secret.
        self.assertEqual(self.post_events(events, secret=SMS_SECRET).status_code, 403)
        self.assert_nothing_written()

    def test_a_channel_without_a_secret_takes_no_webhooks(self):
        bare = Channel.objects.create(name="bare", kind="email")
        unset = Channel.objects.create(name="unset", kind="email", settings={"webhook_secret_env": "I4T_UNSET_VAR"})
        for channel in (bare, unset):
            response = self.post_events([], channel=channel, secret="")
            self.assertEqual(response.status_code, 403)
            self.assertIn("webhook_secret_env", response.json()["detail"])
        self.assertEqual(self.post_events([], channel=999999).status_code, 404)
        self.assertEqual(self.post_events([], channel=10**20).status_code, 404)
        self.assertEqual(self.client.get(f"/hooks/{self.mail.pk}/events").status_code, 405)

    def test_delivered_by_message_id_and_by_provider_id(self):
        unknown_message = self.message(make_customer("crm-eve"), status=Message.Status.UNKNOWN, provider_id="p-eve")
        response = self.post_events(
            [
                {"message_id": self.to_ann.pk, "event": "delivered", "occurred_at": "2026-11-01T10:05:00Z"},
                {"provider_id": "p-bob", "event": "delivered", "occurred_at": 1793527500},
                {"provider_id": "p-eve", "event": "delivered"},
                {"message_id": self.to_ann.pk, "event": "delivered"},  # a retry of the provider
            ]
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"received": 4, "applied": 4, "unknown": []})
        self.assertEqual(
            self.statuses(),
            {
                "crm-ann": "delivered",
                "crm-bob": "delivered",
                "crm-cy": "sent",
                "crm-dee": "sent",
                "crm-eve": "delivered",
            },
        )
        self.assertEqual(
            self.touchpoints(),
            [
                self.row("delivered", f"delivered:{self.to_ann.pk}", self.to_ann),
                self.row("delivered", f"delivered:{self.to_bob.pk}", self.to_bob),
                self.row("delivered", f"delivered:{unknown_message.pk}", unknown_message),
            ],
        )
        self.assertEqual(
            self.touchpoints("occurred_at")[:2], [(T0 + timedelta(minutes=5),), (T0 + timedelta(minutes=5),)]
        )
        self.assertEqual(Suppression.objects.count(), 0)

    def test_a_hard_bounce_suppresses_the_address_and_fails_the_message(self):
        response = self.post_events([{"provider_id": "p-ann", "event": "bounce", "bounce_type": "hard"}])
        self.assertEqual(response.json(), {"received": 1, "applied": 1, "unknown": []})
        self.assertEqual(self.statuses()["crm-ann"], "failed")
        self.assertEqual(Message.objects.get(pk=self.to_ann.pk).error, "hard_bounce")
        self.assertEqual(
            list(Suppression.objects.values_list("kind", "value", "reason")),
            [("email", "ann@example.com", "hard_bounce")],
        )
        self.assertEqual(
            self.touchpoints(), [self.row("bounce", f"bounce:{self.to_ann.pk}:{self.to_ann.attempts}", self.to_ann)]
        )
        self.assertEqual(Touchpoint.objects.get().properties, {"type": "hard", "provider_id": "p-ann"})
        self.assertEqual(self.statuses()["crm-bob"], "sent")

    def test_a_complaint_suppresses_but_keeps_the_delivered_status(self):
        Message.objects.filter(pk=self.to_bob.pk).update(status=Message.Status.DELIVERED)
        response = self.post_events([{"message_id": str(self.to_bob.pk), "event": "complaint"}])
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.statuses()["crm-bob"], "delivered")
        self.assertEqual(
            list(Suppression.objects.values_list("kind", "value", "reason")),
            [("email", "bob@example.com", "complaint")],
        )
        self.assertEqual(self.touchpoints(), [self.row("complaint", f"complaint:{self.to_bob.pk}", self.to_bob)])

    def test_a_soft_bounce_requeues_with_backoff(self):
        Message.objects.filter(pk=self.to_ann.pk).update(attempts=2, claimed_by="w1", lease_until=T0)
        before = timezone.now()
        self.post_events([{"message_id": self.to_ann.pk, "event": "bounce", "bounce_type": "soft"}])
        after = timezone.now()
        message = Message.objects.get(pk=self.to_ann.pk)
        self.assertEqual(
            (message.status, message.error, message.claimed_by, message.lease_until),
            ("queued", "soft_bounce", "", None),
        )
        # backoff_delay(2): uniform between BASE/2 and 2 * BASE seconds.
        self.assertGreaterEqual(message.not_before, before + timedelta(seconds=timing.BACKOFF_BASE_S / 2))
        self.assertLessEqual(message.not_before, after + timedelta(seconds=2 * timing.BACKOFF_BASE_S))
        self.assertEqual(Suppression.objects.count(), 0)
        self.assertEqual(self.touchpoints(), [self.row("bounce", f"bounce:{self.to_ann.pk}:2", self.to_ann)])
        self.assertEqual(Touchpoint.objects.get().properties, {"type": "soft"})

    def test_a_soft_bounce_reopens_a_completed_campaign_so_the_retry_is_sent(self):
        Campaign.objects.filter(pk=self.campaign.pk).update(status=Campaign.Status.COMPLETED, finished_at=T0)
        other = Campaign.objects.create(name="Done and untouched", status=Campaign.Status.COMPLETED, finished_at=T0)
        self.post_events([{"message_id": self.to_ann.pk, "event": "bounce", "bounce_type": "soft"}])
        self.assertEqual(
            list(
                Campaign.objects.filter(pk__in=[self.campaign.pk, other.pk])
                .order_by("pk")
                .values_list("status", "finished_at")
            ),
            [("running", None), ("completed", T0)],
        )
        self.assertEqual(Message.objects.get(pk=self.to_ann.pk).status, "queued")

    def test_a_soft_bounce_after_the_last_attempt_fails(self):
        Message.objects.filter(pk=self.to_ann.pk).update(attempts=timing.MAX_ATTEMPTS)
        self.post_events([{"message_id": self.to_ann.pk, "event": "bounce", "bounce_type": "soft"}])
        message = Message.objects.get(pk=self.to_ann.pk)
        self.assertEqual(
            (message.status, message.error), ("failed", f"soft_bounce: gave up after {timing.MAX_ATTEMPTS} attempts")
        )

    def test_events_of_a_message_not_sent_yet_leave_its_status(self):
        Message.objects.filter(pk=self.to_ann.pk).update(status=Message.Status.QUEUED)
        self.post_events(
            [
                {"message_id": self.to_ann.pk, "event": "delivered"},
                {"message_id": self.to_ann.pk, "event": "bounce", "bounce_type": "soft"},
            ]
        )
        self.assertEqual(self.statuses()["crm-ann"], "queued")
        self.assertEqual(Message.objects.get(pk=self.to_ann.pk).not_before, self.to_ann.not_before)

    def test_events_apply_in_order(self):
        self.post_events(
            [
                {"message_id": self.to_ann.pk, "event": "delivered"},
                {"message_id": self.to_ann.pk, "event": "bounce", "bounce_type": "hard"},
                {"message_id": self.to_bob.pk, "event": "bounce", "bounce_type": "hard"},
                {"message_id": self.to_bob.pk, "event": "delivered"},  # too late: failed stays failed
            ]
        )
        self.assertEqual(self.statuses()["crm-ann"], "failed")
        self.assertEqual(self.statuses()["crm-bob"], "failed")
        self.assertEqual(Suppression.objects.count(), 2)

    def test_unknown_messages_and_other_channels_messages_are_skipped(self):
        response = self.post_events(
            [
                {"message_id": 987654, "event": "delivered"},
                {"message_id": self.to_cy.pk, "event": "bounce", "bounce_type": "hard"},  # an SMS message
                {"provider_id": "p-nobody", "event": "complaint"},
                {"message_id": self.to_ann.pk, "event": "delivered"},
            ]
        )
        self.assertEqual(response.json(), {"received": 4, "applied": 1, "unknown": [0, 1, 2]})
        self.assertEqual(self.statuses()["crm-cy"], "sent")
        self.assertEqual(Suppression.objects.count(), 0)
        self.assertEqual(self.touchpoints("event_id"), [(f"delivered:{self.to_ann.pk}",)])

    def test_sms_bounces_suppress_the_number_and_push_bounces_disable_the_device(self):
        self.post_events(
            [{"provider_id": "p-cy", "event": "bounce", "bounce_type": "hard"}], channel=self.sms, secret=SMS_SECRET
        )
        self.post_events([{"provider_id": "p-dee", "event": "bounce", "bounce_type": "hard"}], channel=self.push)
        self.assertEqual(
            list(Suppression.objects.values_list("kind", "value", "reason")), [("phone", "+14155550103", "hard_bounce")]
        )
        self.assertFalse(Device.objects.get(pk=self.device.pk).enabled)
        self.assertEqual(
            self.statuses(), {"crm-ann": "sent", "crm-bob": "sent", "crm-cy": "failed", "crm-dee": "failed"}
        )
        self.assertEqual(
            self.touchpoints(),
            [
                self.row("bounce", f"bounce:{self.to_cy.pk}:{self.to_cy.attempts}", self.to_cy, channel="sms"),
                self.row("bounce", f"bounce:{self.to_dee.pk}:{self.to_dee.attempts}", self.to_dee, channel="push"),
            ],
        )

    def test_a_replayed_batch_changes_nothing_more(self):
        events = [
            {"message_id": self.to_ann.pk, "event": "bounce", "bounce_type": "hard"},
            {"message_id": self.to_bob.pk, "event": "complaint"},
        ]
        self.post_events(events)
        state = (self.touchpoints(), list(Suppression.objects.values_list("kind", "value", "reason")), self.statuses())
        self.assertEqual(self.post_events(events).status_code, 200)
        self.assertEqual(
            (self.touchpoints(), list(Suppression.objects.values_list("kind", "value", "reason")), self.statuses()),
            state,
        )
        self.assertEqual(len(state[0]), 2)

    def test_bad_rows_are_a_400_naming_them_and_nothing_is_written(self):
        response = self.post_events(
            [
                {"message_id": self.to_ann.pk, "event": "delivered"},  # fine, but the batch fails
                {"event": "delivered"},
                {"message_id": -3, "event": "delivered"},
                {"message_id": True, "event": "opened"},
                {"provider_id": "", "event": "bounce"},
                {"message_id": self.to_bob.pk, "event": "bounce", "bounce_type": "medium", "occurred_at": "yesterday"},
                {"message_id": self.to_bob.pk, "event": "delivered", "occurred_at": "2026-11-01T10:05:00"},
                "delivered",
            ]
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json(),
            {
                "message": "10 invalid row(s); nothing was written",
                "errors": [
                    {"row": 1, "field": "message_id", "message": "give message_id or provider_id"},
                    {"row": 2, "field": "message_id", "message": "must be a message id (a whole number >= 1)"},
                    {"row": 3, "field": "message_id", "message": "must be a message id (a whole number >= 1)"},
                    {"row": 3, "field": "event", "message": "must be one of delivered, bounce, complaint"},
                    {
                        "row": 4,
                        "field": "provider_id",
                        "message": "must be a non-empty string of at most 255 characters",
                    },
                    {"row": 4, "field": "bounce_type", "message": "a bounce needs bounce_type hard or soft"},
                    {"row": 5, "field": "bounce_type", "message": "a bounce needs bounce_type hard or soft"},
                    {
                        "row": 5,
                        "field": "occurred_at",
                        "message": "must be an ISO 8601 time with a UTC offset, or Unix seconds",
                    },
                    {
                        "row": 6,
                        "field": "occurred_at",
                        "message": "must be an ISO 8601 time with a UTC offset, or Unix seconds",
                    },
                    {"row": 7, "field": None, "message": "Each event must be a JSON object."},
                ],
            },
        )
        self.assert_nothing_written()

    def test_a_body_that_is_not_a_json_list_is_a_400(self):
        for body, detail in (
            (b"{not json", {"detail": "The body is not valid JSON."}),
            (b"\xff\xfe", {"detail": "The body is not valid JSON."}),
            (
                json.dumps({"event": "delivered"}).encode(),
                {
                    "message": "1 invalid row(s); nothing was written",
                    "errors": [{"row": None, "field": None, "message": "The body must be a JSON list of events."}],
                },
            ),
        ):
            with self.subTest(body):
                response = self.post_events(body)
                self.assertEqual((response.status_code, response.json()), (400, detail))
        with override_settings(BULK_MAX_ROWS=2):
            response = self.post_events([{"message_id": self.to_ann.pk, "event": "delivered"}] * 3)
            self.assertEqual(response.status_code, 400)
            self.assertEqual(response.json()["errors"][0]["message"], "3 events; at most 2 per request.")
        self.assert_nothing_written()


class InboundSmsTests(TrackingTestCase):
    def setUp(self):
        super().setUp()
        # Two customers share Cy's number (a family phone); Ann's is another.
        self.cy2 = make_customer("crm-cy2", phone="+14155550103", sms_opt_in=True)

    def post_inbound(self, body, channel=None, secret=SMS_SECRET):
        raw = json.dumps(body).encode()
        return self.client.post(
            f"/hooks/{(channel or self.sms).pk}/inbound",
            raw,
            content_type="application/json",
            headers={"X-Signature": signed(raw, secret)},
        )

    def consent(self) -> dict[str, tuple]:
        return {
            c.external_id: (c.sms_opt_in, c.sms_opt_in_source)
            for c in Customer.objects.filter(phone__startswith="+1415").order_by("external_id")
        }

    def test_stop_withdraws_sms_consent_of_everyone_with_the_number(self):
        response = self.post_inbound(
            {"from": "+14155550103", "text": "  Stop! ", "received_at": "2026-11-01T10:00:00Z"}
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"action": "unsubscribed", "customers": 2})
        self.assertEqual(
            self.consent(),
            {"crm-ann": (True, ""), "crm-cy": (False, "sms_stop"), "crm-cy2": (False, "sms_stop")},
        )
        self.assertEqual(
            list(Suppression.objects.values_list("kind", "value", "reason")), [("phone", "+14155550103", "unsubscribe")]
        )
        self.assertEqual(
            self.touchpoints(),
            [
                (
                    "unsubscribe",
                    f"unsubscribe:sms:{self.cy.pk}:20261101T100000.000000Z",
                    self.cy.pk,
                    "sms",
                    self.campaign.pk,
                    self.to_cy.pk,
                    self.sms_creative.pk,
                ),
                (
                    "unsubscribe",
                    f"unsubscribe:sms:{self.cy2.pk}:20261101T100000.000000Z",
                    self.cy2.pk,
                    "sms",
                    None,
                    None,
                    None,
                ),
            ],
        )
        self.assertEqual(Touchpoint.objects.first().properties, {"keyword": "Stop!"})
        # The provider retries the same message: nothing more.
        self.post_inbound({"from": "+14155550103", "text": "STOP", "received_at": "2026-11-01T10:00:00Z"})
        self.assertEqual(Touchpoint.objects.count(), 2)
        self.assertEqual(Suppression.objects.count(), 1)

    def test_every_stop_word_counts(self):
        for number, word in enumerate(("stop", "STOPALL", "unsubscribe", "Cancel", "end", "quit")):
            phone = f"+1999000000{number}"
            make_customer(f"crm-w{number}", phone=phone, sms_opt_in=True)
            self.assertEqual(self.post_inbound({"from": phone, "text": word}).json()["action"], "unsubscribed", word)
        self.assertEqual(Customer.objects.filter(phone__startswith="+1999", sms_opt_in=True).count(), 0)
        self.assertEqual(Suppression.objects.count(), 6)

    def test_other_texts_are_recorded_and_change_nothing(self):
        response = self.post_inbound(
            {"from": "+14155550103", "text": "stop sending me the blue ones", "received_at": 1793527200}
        )
        self.assertEqual(response.json(), {"action": "recorded", "customers": 2})
        self.assertEqual(self.consent(), {"crm-ann": (True, ""), "crm-cy": (True, ""), "crm-cy2": (True, "")})
        self.assertEqual(Suppression.objects.count(), 0)
        self.assertEqual(
            self.touchpoints("kind", "event_id", "customer_id", "message_id", "properties"),
            [
                (
                    "sms_inbound",
                    f"sms_inbound:{self.cy.pk}:20261101T100000.000000Z",
                    self.cy.pk,
                    self.to_cy.pk,
                    {"text": "stop sending me the blue ones"},
                ),
                (
                    "sms_inbound",
                    f"sms_inbound:{self.cy2.pk}:20261101T100000.000000Z",
                    self.cy2.pk,
                    None,
                    {"text": "stop sending me the blue ones"},
                ),
            ],
        )

    def test_stop_from_an_unknown_number_still_suppresses_it(self):
        response = self.post_inbound({"from": "+14155550199", "text": "STOP"})
        self.assertEqual(response.json(), {"action": "unsubscribed", "customers": 0})
        self.assertEqual(list(Suppression.objects.values_list("value", flat=True)), ["+14155550199"])
        self.assertEqual(self.touchpoints(), [])

    def test_bad_input_is_a_400_and_nothing_is_written(self):
        for body, errors in (
            (
                {"from": "0151 123", "text": "STOP"},
                [("from", "must be a phone number in E.164 form, e.g. +14155550123")],
            ),
            ({"from": "+14155550103"}, [("text", "must be a string")]),
            (
                {"from": "+14155550103", "text": "STOP", "received_at": "noon"},
                [("received_at", "must be an ISO 8601 time with a UTC offset, or Unix seconds")],
            ),
            (["STOP"], [(None, 'The body must be a JSON object {"from": "+E164", "text": "…"}.')]),
        ):
            with self.subTest(body):
                response = self.post_inbound(body)
                self.assertEqual(response.status_code, 400)
                self.assertEqual([(e["field"], e["message"]) for e in response.json()["errors"]], errors)
        self.assertEqual(self.post_inbound({"from": "+14155550103", "text": "STOP"}, secret="wrong").status_code, 403)
        response = self.post_inbound({"from": "+14155550103", "text": "STOP"}, channel=self.mail, secret=MAIL_SECRET)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"detail": "Inbound messages are accepted on SMS channels only."})
        self.assertEqual(self.consent(), {"crm-ann": (True, ""), "crm-cy": (True, ""), "crm-cy2": (True, "")})
        self.assertEqual(Suppression.objects.count(), 0)
        self.assertEqual(self.touchpoints(), [])
