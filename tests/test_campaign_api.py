"""The delivery API: channels (settings checked, no secrets stored), push devices (upsert by
token), campaigns (create with only a name, validation naming fields, edits refused once
launched, launch/pause/resume/cancel with 409 for a wrong status, progress), creatives
(templates checked, preview, a test send received by a real SMTP sink), the outbox
(read-only, filtered), and segments that campaigns use (not deletable)."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message, Segment, SegmentMembership
from marketing.models import Touchpoint
from marketing.services import customer_erase
from tests.api_helpers import T0, ApiTestCase, make_customer
from tests.smtp_sink import SmtpSink

CAMPAIGN_DEFAULTS = {
    "description": "",
    "status": "draft",
    "trigger": "one_off",
    "audience": [],
    "exclusions": [],
    "send_at": None,
    "cron": "",
    "trigger_segment": None,
    "trigger_event_kind": "",
    "holdout_percent": "10.00",
    "persuadables_only": False,
    "min_uplift": 0.0,
    "frequency_cap": None,
    "frequency_cap_days": 7,
    "quiet_hours_start": None,
    "quiet_hours_end": None,
    "budget": None,
    "fixed_cost": "0.0000",
    "goal_event": "purchase",
    "attribution_window_days": 7,
    "channel_policy": {},
    "creative_policy": {},
    "launched_at": None,
    "finished_at": None,
}
ZERO_COUNTS = {
    "queued": 0,
    "sending": 0,
    "sent": 0,
    "delivered": 0,
    "failed": 0,
    "suppressed": 0,
    "held_out": 0,
    "unknown": 0,
    "cancelled": 0,
}


def error(field: str | None, message: str) -> dict:
    return {"row": None, "field": field, "message": message}


def make_segment(name: str, customers=()) -> Segment:
    segment = Segment.objects.create(name=name, definition={"field": "country", "op": "eq", "value": "DE"})
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, customer=customer, since=T0) for customer in customers]
    )
    return segment


class DeliveryApiTestCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.email = Channel.objects.create(name="mail", kind="email")

    def counts(self) -> tuple[int, ...]:
        return (
            Channel.objects.count(),
            Device.objects.count(),
            Campaign.objects.count(),
            Creative.objects.count(),
            Message.objects.count(),
        )


class ChannelApiTests(DeliveryApiTestCase):
    def test_it_needs_a_key(self) -> None:
        self.assertIn(APIClient().get("/api/v1/channels").status_code, (401, 403))
        self.assertIn(APIClient().post("/api/v1/channels", {"name": "x"}, format="json").status_code, (401, 403))

    def test_a_channel_is_created_with_defaults_and_listed(self) -> None:
        response = self.post_json(
            "/api/v1/channels",
            {
                "name": "sms",
                "kind": "sms",
                "backend": "http",
                "settings": {"url": "https://sms.example/send"},
                "cost_per_message": "0.0125",
                "rate_limit_per_second": 20,
            },
        )
        self.assertEqual(response.status_code, 201, response.json())
        body = response.json()
        channel = Channel.objects.get(name="sms")
        self.assertEqual(
            {key: value for key, value in body.items() if key not in ("created_at", "updated_at")},
            {
                "id": channel.pk,
                "name": "sms",
                "kind": "sms",
                "backend": "http",
                "settings": {"url": "https://sms.example/send"},
                "cost_per_message": "0.012500",
                "rate_limit_per_second": 20,
                "enabled": True,
            },
        )
        self.assertEqual(channel.cost_per_message, Decimal("0.0125"))
        minimal = self.post_json("/api/v1/channels/", {"name": "mail 2", "kind": "email"}).json()
        self.assertEqual(
            (minimal["backend"], minimal["settings"], minimal["cost_per_message"], minimal["rate_limit_per_second"]),
            ("default", {}, "0.000000", None),
        )
        listed = self.api.get("/api/v1/channels?kind=email").json()["results"]
        self.assertEqual([row["name"] for row in listed], ["mail", "mail 2"])

    def test_secrets_in_clear_are_refused_and_nothing_is_written(self) -> None:
        before = self.counts()
        response = self.post_json(
            "/api/v1/channels",
            {
                "name": "smtp",
                "kind": "email",
                "backend": "smtp",
                "settings": {"host": "smtp.example", "password": "hunter2", "auth": {"api_token": "x"}},
            },
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error(
                    "settings.password",
                    'secrets are not stored: put it in an environment variable and name that in "password_env"',
                ),
                error(
                    "settings.auth.api_token",
                    'secrets are not stored: put it in an environment variable and name that in "api_token_env"',
                ),
            ],
        )
        self.assertNotIn("hunter2", response.content.decode())
        response = self.post_json(
            "/api/v1/channels",
            {
                "name": "sms",
                "kind": "sms",
                "backend": "http",
                "settings": {"url": "https://sms.example", "headers": {"Authorization": "Bearer s3cr3t"}},
            },
        )
        self.assertEqual(
            response.json()["errors"],
            [
                error(
                    "settings.headers.Authorization",
                    'secrets are not stored: put it in an environment variable and name that in "Authorization_env"',
                )
            ],
        )
        self.assertEqual(self.counts(), before)

    def test_bad_values_are_400s_naming_each_field(self) -> None:
        before = self.counts()
        response = self.post_json(
            "/api/v1/channels",
            {"name": "mail", "kind": "fax", "cost_per_message": "0.0000001", "rate_limit_per_second": 0},
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error("name", "is already taken"),
                error("kind", '"fax" is not a valid choice.'),
                error("cost_per_message", "Ensure that there are no more than 6 decimal places."),
                error("rate_limit_per_second", "Ensure this value is greater than or equal to 1."),
            ],
        )
        response = self.post_json("/api/v1/channels", {"name": "neg", "kind": "email", "cost_per_message": "-1"})
        self.assertEqual(
            response.json()["errors"], [error("cost_per_message", "Ensure this value is greater than or equal to 0.")]
        )
        # the backend's own checks, on the field they concern
        response = self.post_json(
            "/api/v1/channels", {"name": "smtp", "kind": "email", "backend": "smtp", "settings": {"port": 0}}
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error("settings.host", "required for the smtp backend (the SMTP server's name)"),
                error("settings.port", "must be a whole number from 1 to 65535"),
            ],
        )
        response = self.post_json("/api/v1/channels", {"name": "push", "kind": "push", "settings": []})
        self.assertEqual(response.json()["errors"], [error("settings", "must be a JSON object")])
        response = self.post_json("/api/v1/channels", {"name": "push", "kind": "push"})
        self.assertEqual(response.json()["errors"], [error("backend", 'push channels use the "http" backend')])
        self.assertEqual(self.counts(), before)

    def test_the_kind_cannot_change_and_a_channel_with_messages_cannot_go(self) -> None:
        response = self.api.patch(f"/api/v1/channels/{self.email.pk}", {"kind": "sms"}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [error("kind", "cannot be changed (it is 'email')")])
        response = self.api.patch(
            f"/api/v1/channels/{self.email.pk}", {"enabled": False, "cost_per_message": "0.5"}, format="json"
        )
        self.assertEqual(response.status_code, 200, response.json())
        self.email.refresh_from_db()
        self.assertEqual(
            (self.email.kind, self.email.enabled, self.email.cost_per_message), ("email", False, Decimal("0.5"))
        )

        campaign = Campaign.objects.create(name="c")
        run = CampaignRun.objects.create(campaign=campaign, key="launch")
        Message.objects.create(campaign=campaign, run=run, customer=make_customer("ann"), channel=self.email)
        response = self.api.delete(f"/api/v1/channels/{self.email.pk}")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(),
            {
                "detail": f"Channel {self.email.pk} has sent messages and is kept for their history; set enabled to "
                "false instead."
            },
        )
        spare = Channel.objects.create(name="spare", kind="sms", backend="http")
        self.assertEqual(self.api.delete(f"/api/v1/channels/{spare.pk}/").status_code, 204)
        self.assertEqual(list(Channel.objects.values_list("name", flat=True)), ["mail"])
        self.assertEqual(self.api.get("/api/v1/channels/999999").status_code, 404)


class DeviceApiTests(DeliveryApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ann = make_customer("ann", push_opt_in=True)
        self.bob = make_customer("bob")

    def test_a_token_is_registered_once_and_moves_with_its_install(self) -> None:
        token = "fcm:" + "a" * 150
        response = self.post_json("/api/v1/devices", {"customer": "ann", "platform": "android", "token": token})
        self.assertEqual(response.status_code, 201, response.json())
        device = Device.objects.get()
        body = response.json()
        self.assertEqual(
            {key: value for key, value in body.items() if key not in ("created_at", "last_seen_at")},
            {
                "id": device.pk,
                "customer": self.ann.pk,
                "customer_external_id": "ann",
                "platform": "android",
                "token_preview": "fcm:aaaaaaaa…",
                "token_hash": hashlib.sha256(token.encode()).hexdigest(),
                "enabled": True,
            },
        )
        self.assertNotIn(token, response.content.decode())
        self.assertEqual((device.token, device.token_hash), (token, hashlib.sha256(token.encode()).hexdigest()))

        # the same token again, for bob by our numeric id: the device moves, nothing is added
        response = self.post_json(
            "/api/v1/devices", {"customer": str(self.bob.pk), "platform": "ios", "token": token, "enabled": False}
        )
        self.assertEqual(response.status_code, 200, response.json())
        moved = Device.objects.get()
        self.assertEqual(
            (moved.pk, moved.customer_id, moved.platform, moved.enabled), (device.pk, self.bob.pk, "ios", False)
        )

    def test_the_customer_must_exist_and_not_be_erased(self) -> None:
        response = self.post_json("/api/v1/devices", {"customer": "nobody", "platform": "ios", "token": "t"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [error("customer", "no customer with external id or id 'nobody'")])
        customer_erase(self.bob)
        response = self.post_json("/api/v1/devices", {"customer": str(self.bob.pk), "platform": "ios", "token": "t"})
        self.assertEqual(response.json()["errors"], [error("customer", f"customer {self.bob.pk} was erased (GDPR)")])
        response = self.post_json("/api/v1/devices", {"customer": "ann", "platform": "blackberry", "token": ""})
        self.assertEqual(
            response.json()["errors"],
            [error("platform", '"blackberry" is not a valid choice.'), error("token", "This field may not be blank.")],
        )
        self.assertFalse(Device.objects.exists())

    def test_devices_are_listed_by_customer_and_deleted(self) -> None:
        for customer, token in ((self.ann, "t1"), (self.bob, "t2"), (self.ann, "t3")):
            self.post_json("/api/v1/devices", {"customer": customer.external_id, "platform": "web", "token": token})
        ann_devices = list(Device.objects.filter(customer=self.ann).order_by("pk").values_list("pk", flat=True))
        listed = self.api.get("/api/v1/devices?customer=ann").json()["results"]
        self.assertEqual([row["id"] for row in listed], ann_devices)
        self.assertEqual(self.api.get(f"/api/v1/devices?customer={self.ann.pk}").json()["results"], listed)
        self.assertEqual(self.api.get("/api/v1/devices?customer=nobody").json()["results"], [])
        self.assertEqual(self.api.delete(f"/api/v1/devices/{ann_devices[0]}").status_code, 204)
        self.assertEqual(sorted(Device.objects.values_list("token", flat=True)), ["t2", "t3"])


class CampaignApiTestCase(DeliveryApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        # Three customers with email consent, one without: holdout 0 keeps the counts exact.
        self.customers = [
            make_customer(f"c{i}", email=f"c{i}@example.com", email_opt_in=True, first_name=f"C{i}") for i in range(3)
        ]
        self.no_consent = make_customer("quiet", email="quiet@example.com")
        self.segment = make_segment("everyone", [*self.customers, self.no_consent])

    def launchable(self, **fields) -> Campaign:
        response = self.post_json(
            "/api/v1/campaigns",
            {"name": "sale", "audience": [self.segment.pk], "holdout_percent": "0", **fields},
        )
        self.assertEqual(response.status_code, 201, response.json())
        campaign = Campaign.objects.get(pk=response.json()["id"])
        Creative.objects.create(campaign=campaign, channel_kind="email", subject="Hi {{ first_name }}", body="Sale")
        return campaign


class CampaignApiTests(CampaignApiTestCase):
    def test_a_campaign_needs_only_a_name(self) -> None:
        response = self.post_json("/api/v1/campaigns", {"name": "Spring sale (sent by the ESP)"})
        self.assertEqual(response.status_code, 201, response.json())
        campaign = Campaign.objects.get()
        body = response.json()
        self.assertEqual(
            {key: value for key, value in body.items() if key not in ("created_at", "updated_at")},
            {"id": campaign.pk, "name": "Spring sale (sent by the ESP)", "salt": campaign.salt, **CAMPAIGN_DEFAULTS},
        )
        detail = self.api.get(f"/api/v1/campaigns/{campaign.pk}").json()
        self.assertEqual(
            detail["progress"],
            {
                "campaign_id": campaign.pk,
                **ZERO_COUNTS,
                "total": 0,
                "campaign_status": "draft",
                "suppressed_reasons": {},
                "runs_total": 0,
                "runs": [],
            },
        )
        self.assertNotIn("progress", self.api.get("/api/v1/campaigns").json()["results"][0])

    def test_every_bad_field_is_named_and_nothing_is_written(self) -> None:
        before = self.counts()
        response = self.post_json(
            "/api/v1/campaigns",
            {
                "name": "",
                "holdout_percent": "100.5",
                "goal_event": "Bought It",
                "audience": [999999],
                "frequency_cap": 0,
                "attribution_window_days": 0,
                "channel_policy": {"type": "nope"},
                "creative_policy": [],
                "cron": "every day",
                "trigger": "sometimes",
            },
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error("name", "This field may not be blank."),
                error("trigger", '"sometimes" is not a valid choice.'),
                error("audience", 'Invalid pk "999999" - object does not exist.'),
                error("cron", "needs 5 fields (minute hour day-of-month month day-of-week), got 2"),
                error("holdout_percent", "Ensure this value is less than or equal to 100."),
                error("frequency_cap", "Ensure this value is greater than or equal to 1."),
                error("goal_event", "This value does not match the required pattern."),
                error("attribution_window_days", "Ensure this value is greater than or equal to 1."),
                error(
                    "channel_policy", 'unknown channel policy type "nope": one of fixed, propensity, thompson, weighted'
                ),
                error("creative_policy", "must be a JSON object"),
            ],
        )
        # rules across fields, checked by the service
        response = self.post_json(
            "/api/v1/campaigns",
            {"name": "q", "quiet_hours_start": "21:00", "audience": [self.segment.pk], "exclusions": [self.segment.pk]},
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error("quiet_hours_start", "quiet hours need both a start and an end"),
                error("exclusions", f"segment(s) {self.segment.pk} are also in the audience"),
            ],
        )
        self.assertEqual(self.counts(), before)

    def test_launch_pause_resume_cancel_and_the_409s(self) -> None:
        campaign = self.launchable()
        for action in ("pause", "resume"):
            response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/{action}")
            self.assertEqual(response.status_code, 409, action)
        self.assertEqual(Campaign.objects.get(pk=campaign.pk).status, "draft")

        response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        self.assertEqual(response.status_code, 200, response.json())
        run = CampaignRun.objects.get(campaign=campaign)
        body = response.json()
        self.assertEqual((body["campaign_id"], body["status"], body["run"]["id"]), (campaign.pk, "running", run.pk))
        self.assertEqual(body["run"]["key"], run.key)
        self.assertEqual(
            dict(Message.objects.filter(campaign=campaign).values_list("customer__external_id", "status")),
            {"c0": "queued", "c1": "queued", "c2": "queued", "quiet": "suppressed"},
        )
        response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        self.assertEqual(
            (response.status_code, response.json()),
            (409, {"detail": f"Campaign {campaign.pk} is running: only a draft can be launched."}),
        )
        self.assertEqual(Message.objects.filter(campaign=campaign).count(), 4)

        steps = [
            ("resume", 409, "running"),
            ("pause", 200, "paused"),
            ("pause", 409, "paused"),
            ("resume", 200, "running"),
            ("cancel", 200, "cancelled"),
            ("cancel", 409, "cancelled"),
            ("resume", 409, "cancelled"),
            ("launch", 409, "cancelled"),
        ]
        for action, code, status in steps:
            response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/{action}/")
            self.assertEqual(response.status_code, code, (action, response.json()))
            self.assertEqual(Campaign.objects.get(pk=campaign.pk).status, status, action)
            if code == 200:
                self.assertEqual(response.json(), {"campaign_id": campaign.pk, "status": status, "run": None})
            else:
                self.assertEqual(list(response.json()), ["detail"])
        self.assertEqual(
            dict(Message.objects.filter(campaign=campaign).values_list("customer__external_id", "status")),
            {"c0": "cancelled", "c1": "cancelled", "c2": "cancelled", "quiet": "suppressed"},
        )
        self.assertEqual(self.api.post("/api/v1/campaigns/999999/launch").status_code, 404)

    def test_a_one_off_with_a_future_send_at_is_scheduled(self) -> None:
        campaign = self.launchable(send_at="2999-01-01T09:00:00Z")
        response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        self.assertEqual(response.status_code, 200, response.json())
        self.assertEqual(response.json(), {"campaign_id": campaign.pk, "status": "scheduled", "run": None})
        self.assertFalse(CampaignRun.objects.exists())
        self.assertFalse(Message.objects.exists())
        # nothing ran yet: the audience may still change; a PUT of the whole definition works
        other = make_segment("others")
        body = self.api.get(f"/api/v1/campaigns/{campaign.pk}").json()
        writable = {key: body[key] for key in CAMPAIGN_DEFAULTS if key not in ("status", "launched_at", "finished_at")}
        response = self.api.put(
            f"/api/v1/campaigns/{campaign.pk}", {**writable, "name": "sale", "audience": [other.pk]}, format="json"
        )
        self.assertEqual(response.status_code, 200, response.json())
        self.assertEqual(list(Campaign.objects.get(pk=campaign.pk).audience.values_list("pk", flat=True)), [other.pk])

    def test_an_incomplete_definition_cannot_launch(self) -> None:
        campaign = Campaign.objects.create(name="empty")
        response = self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        self.assertEqual(response.status_code, 400)
        fields = [row["field"] for row in response.json()["errors"]]
        self.assertIn("audience", fields)
        self.assertEqual(Campaign.objects.get(pk=campaign.pk).status, "draft")
        self.assertFalse(CampaignRun.objects.exists())
        self.assertFalse(Message.objects.exists())

    def test_progress_counts_messages_by_status_per_run_and_suppressed_reasons(self) -> None:
        campaign = self.launchable()
        self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        launch = CampaignRun.objects.get(campaign=campaign)
        messages = {
            m.customer.external_id: m for m in Message.objects.filter(campaign=campaign).select_related("customer")
        }
        Message.objects.filter(pk=messages["c0"].pk).update(status="sent")
        Message.objects.filter(pk=messages["c1"].pk).update(status="unknown")
        second = CampaignRun.objects.create(campaign=campaign, key="extra")
        extra = make_customer("late", email="late@example.com")
        Message.objects.create(campaign=campaign, run=second, customer=extra, status="held_out")
        response = self.api.get(f"/api/v1/campaigns/{campaign.pk}/progress")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(
            {key: value for key, value in body.items() if key != "runs"},
            {
                "campaign_id": campaign.pk,
                **ZERO_COUNTS,
                "queued": 1,
                "sent": 1,
                "unknown": 1,
                "suppressed": 1,
                "held_out": 1,
                "total": 5,
                "campaign_status": "running",
                "suppressed_reasons": {"no_consent": 1},
                "runs_total": 2,
            },
        )
        # newest first; `counts` is what the launch recorded, `messages` what they are now
        self.assertEqual(
            [(run["id"], run["key"], run["messages"]) for run in body["runs"]],
            [
                (second.pk, "extra", {**ZERO_COUNTS, "held_out": 1}),
                (launch.pk, launch.key, {**ZERO_COUNTS, "queued": 1, "sent": 1, "unknown": 1, "suppressed": 1}),
            ],
        )
        self.assertEqual(body["runs"][1]["counts"], launch.counts)
        self.assertEqual(self.api.get(f"/api/v1/campaigns/{campaign.pk}").json()["progress"], body)

    def test_who_is_treated_cannot_change_once_launched(self) -> None:
        other = make_segment("others")
        campaign = self.launchable()
        self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        for change in ({"audience": [other.pk]}, {"holdout_percent": "20"}, {"trigger": "recurring"}):
            response = self.api.patch(f"/api/v1/campaigns/{campaign.pk}", change, format="json")
            self.assertEqual(response.status_code, 409, change)
            self.assertEqual(
                response.json(),
                {
                    "detail": f"Campaign {campaign.pk} is running: {next(iter(change))} cannot change (fixed once the "
                    "campaign has launched: it decides who is treated and who is held out). Create a new campaign "
                    "to change them."
                },
            )
        stored = Campaign.objects.get(pk=campaign.pk)
        self.assertEqual(
            (list(stored.audience.values_list("pk", flat=True)), stored.holdout_percent, stored.trigger),
            ([self.segment.pk], Decimal("0.00"), "one_off"),
        )
        # the same values again, and what may change while it runs
        response = self.api.patch(
            f"/api/v1/campaigns/{campaign.pk}",
            {"audience": [self.segment.pk], "holdout_percent": "0.00", "name": "sale!", "frequency_cap": 2},
            format="json",
        )
        self.assertEqual(response.status_code, 200, response.json())
        self.assertEqual((response.json()["name"], response.json()["frequency_cap"]), ("sale!", 2))

        self.api.post(f"/api/v1/campaigns/{campaign.pk}/cancel")
        response = self.api.patch(f"/api/v1/campaigns/{campaign.pk}", {"frequency_cap": 3}, format="json")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json()["detail"],
            f"Campaign {campaign.pk} is cancelled: frequency_cap cannot change (the campaign is cancelled: only name, "
            "description, goal_event, attribution_window_days, fixed_cost can change). Create a new campaign to change "
            "them.",
        )
        response = self.api.patch(
            f"/api/v1/campaigns/{campaign.pk}", {"goal_event": "signup", "fixed_cost": "120.50"}, format="json"
        )
        self.assertEqual(response.status_code, 200, response.json())
        self.assertEqual(Campaign.objects.get(pk=campaign.pk).frequency_cap, 2)

    def test_only_drafts_without_messages_are_deleted(self) -> None:
        draft = Campaign.objects.create(name="draft")
        Creative.objects.create(campaign=draft, channel_kind="email", body="x")
        self.assertEqual(self.api.delete(f"/api/v1/campaigns/{draft.pk}").status_code, 204)
        self.assertFalse(Creative.objects.exists())
        campaign = self.launchable()
        self.api.post(f"/api/v1/campaigns/{campaign.pk}/launch")
        response = self.api.delete(f"/api/v1/campaigns/{campaign.pk}")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(),
            {"detail": f"Campaign {campaign.pk} is running: only drafts can be deleted; cancel it instead."},
        )
        self.assertEqual(list(Campaign.objects.values_list("pk", flat=True)), [campaign.pk])

    def test_a_segment_a_campaign_uses_cannot_be_deleted(self) -> None:
        excluded, trigger, unused = make_segment("excluded"), make_segment("trigger"), make_segment("unused")
        a = Campaign.objects.create(name="a")
        a.audience.set([self.segment])
        a.exclusions.set([excluded])
        b = Campaign.objects.create(name="b", trigger="segment_entry", trigger_segment=trigger)
        b.audience.set([self.segment])
        for segment, users in (
            (self.segment, f"{a.pk} (a), {b.pk} (b)"),
            (excluded, f"{a.pk} (a)"),
            (trigger, f"{b.pk} (b)"),
        ):
            response = self.api.delete(f"/api/v1/segments/{segment.pk}")
            self.assertEqual(response.status_code, 409)
            self.assertEqual(
                response.json(),
                {"detail": f"Segment {segment.pk} is used by campaign(s) {users}; change those first."},
            )
        self.assertEqual(self.api.delete(f"/api/v1/segments/{unused.pk}").status_code, 204)
        self.assertEqual(
            set(
                Segment.objects.filter(pk__in=[self.segment.pk, excluded.pk, trigger.pk, unused.pk]).values_list(
                    "name", flat=True
                )
            ),
            {"everyone", "excluded", "trigger"},
        )


class CreativeApiTests(CampaignApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.campaign = Campaign.objects.create(name="sale")
        self.creative = Creative.objects.create(
            campaign=self.campaign,
            channel_kind="email",
            subject="{{ first_name|default:'Hello' }}, 20% off",
            body="Hi {{ first_name }} ({{ attributes.tier }})",
            html_body="<p>Hi {{ first_name }}</p>",
        )

    def test_templates_are_checked_per_field(self) -> None:
        before = self.counts()
        response = self.post_json(
            "/api/v1/creatives",
            {"campaign": self.campaign.pk, "channel_kind": "email", "subject": "{% if x %}", "body": "{{ a|nope }}"},
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error("subject", "Unclosed tag on line 1: 'if'. Looking for one of: elif, else, endif."),
                error("body", "Invalid filter: 'nope'"),
                error("name", f"campaign {self.campaign.pk} already has a email creative named 'A'"),
            ],
        )
        response = self.post_json(
            "/api/v1/creatives", {"campaign": self.campaign.pk, "channel_kind": "email", "body": "x"}
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [error("name", f"campaign {self.campaign.pk} already has a email creative named 'A'")],
        )
        self.assertEqual(self.counts(), before)
        response = self.post_json(
            "/api/v1/creatives",
            {"campaign": self.campaign.pk, "channel_kind": "sms", "name": "short", "body": "Hi {{ first_name }}"},
        )
        self.assertEqual(response.status_code, 201, response.json())
        created = Creative.objects.get(name="short")
        self.assertEqual(
            response.json(),
            {
                "id": created.pk,
                "campaign": self.campaign.pk,
                "channel_kind": "sms",
                "name": "short",
                "subject": "",
                "body": "Hi {{ first_name }}",
                "html_body": "",
                "weight": 1,
                "sku": "",
                "enabled": True,
            },
        )
        listed = self.api.get(f"/api/v1/creatives?campaign={self.campaign.pk}&channel_kind=sms").json()["results"]
        self.assertEqual([row["id"] for row in listed], [created.pk])
        response = self.api.patch(f"/api/v1/creatives/{created.pk}", {"campaign": 999999}, format="json")
        self.assertEqual(response.status_code, 400)

    def test_creatives_of_a_finished_campaign_or_with_messages_are_kept(self) -> None:
        run = CampaignRun.objects.create(campaign=self.campaign, key="launch")
        Message.objects.create(campaign=self.campaign, run=run, customer=self.customers[0], creative=self.creative)
        response = self.api.delete(f"/api/v1/creatives/{self.creative.pk}")
        self.assertEqual(response.status_code, 409)
        response = self.api.patch(f"/api/v1/creatives/{self.creative.pk}", {"channel_kind": "sms"}, format="json")
        self.assertEqual(response.status_code, 409)
        response = self.api.patch(f"/api/v1/creatives/{self.creative.pk}", {"body": "Fixed"}, format="json")
        self.assertEqual((response.status_code, Creative.objects.get(pk=self.creative.pk).body), (200, "Fixed"))
        Campaign.objects.filter(pk=self.campaign.pk).update(status="completed")
        response = self.api.patch(f"/api/v1/creatives/{self.creative.pk}", {"body": "Again"}, format="json")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(),
            {"detail": f"Campaign {self.campaign.pk} is completed: its creatives are part of its record."},
        )
        response = self.post_json(
            "/api/v1/creatives", {"campaign": self.campaign.pk, "channel_kind": "sms", "body": "x"}
        )
        self.assertEqual(response.status_code, 409)
        self.assertEqual(Creative.objects.get(pk=self.creative.pk).body, "Fixed")
        self.assertEqual(Creative.objects.count(), 1)

    def test_preview_for_a_customer_for_sample_fields_and_the_sample(self) -> None:
        ann = make_customer("ann", first_name="Ann", attributes={"tier": "gold"})
        url = f"/api/v1/creatives/{self.creative.pk}/preview"
        for reference in ("ann", str(ann.pk)):
            response = self.post_json(url, {"customer": reference})
            self.assertEqual(response.status_code, 200, response.json())
            self.assertEqual(
                response.json(),
                {
                    "creative_id": self.creative.pk,
                    "customer_id": ann.pk,
                    "subject": "Ann, 20% off",
                    "text": "Hi Ann (gold)",
                    "html": "<p>Hi Ann</p>",
                },
            )
        response = self.post_json(url, {"context": {"first_name": "<Ada>", "attributes": {"tier": "silver"}}})
        self.assertEqual(
            response.json(),
            {
                "creative_id": self.creative.pk,
                "customer_id": None,
                "subject": "<Ada>, 20% off",
                "text": "Hi <Ada> (silver)",
                "html": "<p>Hi &lt;Ada&gt;</p>",
            },
        )
        self.assertEqual(self.post_json(url, {}).json()["subject"], "Sam, 20% off")
        response = self.post_json(url, {"customer": "nobody"})
        self.assertEqual(
            (response.status_code, response.json()["errors"]),
            (400, [error("customer", "no customer with external id or id 'nobody'")]),
        )
        response = self.post_json(url, {"customer": "ann", "context": {}})
        self.assertEqual(response.json()["errors"], [error("context", "give either customer or context, not both")])
        self.assertEqual(self.post_json("/api/v1/creatives/999999/preview", {}).status_code, 404)
        self.assertFalse(Message.objects.exists())
        self.assertFalse(Touchpoint.objects.exists())


class CreativeTestSendTests(CampaignApiTestCase):
    """The "send a test to me" of a creative, through an SMTP channel to a real SMTP server (aiosmtpd)."""

    def setUp(self) -> None:
        super().setUp()
        self.sink = SmtpSink().start()
        self.addCleanup(self.sink.stop)
        self.smtp = Channel.objects.create(
            name="smtp",
            kind="email",
            backend="smtp",
            settings=self.sink.channel_settings(from_email="news@shop.example"),
        )
        self.campaign = Campaign.objects.create(name="sale", channel_policy={"type": "fixed", "channel": self.smtp.pk})
        self.creative = Creative.objects.create(
            campaign=self.campaign, channel_kind="email", subject="Hi {{ first_name }}", body="Sale on"
        )

    def test_the_sink_receives_exactly_the_test(self) -> None:
        response = self.post_json(f"/api/v1/creatives/{self.creative.pk}/test", {"to": "me@shop.example"})
        self.assertEqual(response.status_code, 200, response.json())
        body = response.json()
        self.assertEqual(
            {key: body[key] for key in ("creative_id", "to", "channel_id")},
            {"creative_id": self.creative.pk, "to": "me@shop.example", "channel_id": self.smtp.pk},
        )
        (received,) = self.sink.received
        self.assertEqual(received.recipients, ["me@shop.example"])
        self.assertEqual(received.mail_from, "news@shop.example")
        self.assertEqual(received.message["Subject"], "[Test] Hi Test")
        self.assertFalse(Message.objects.exists())
        self.assertFalse(Touchpoint.objects.exists())

    def test_a_bad_address_is_a_400_and_nothing_is_sent(self) -> None:
        response = self.post_json(f"/api/v1/creatives/{self.creative.pk}/test", {"to": "not an address"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"], [error("to", "'not an address' is not an email address")])
        response = self.post_json(f"/api/v1/creatives/{self.creative.pk}/test", {})
        self.assertEqual(response.json()["errors"], [error("to", "This field is required.")])
        self.assertEqual(self.sink.received, [])


class MessageApiTests(CampaignApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.sms = Channel.objects.create(name="sms", kind="sms", backend="http")
        self.a = Campaign.objects.create(name="a")
        self.b = Campaign.objects.create(name="b")
        self.a1 = CampaignRun.objects.create(campaign=self.a, key="launch")
        self.a2 = CampaignRun.objects.create(campaign=self.a, key="2026-11-02T09:00")
        self.b1 = CampaignRun.objects.create(campaign=self.b, key="launch")
        c0, c1, c2 = self.customers
        rows = [
            (self.a, self.a1, c0, self.email, "sent"),
            (self.a, self.a1, c1, self.email, "unknown"),
            (self.a, self.a1, c2, self.sms, "queued"),
            (self.a, self.a2, c0, self.sms, "failed"),
            (self.b, self.b1, c0, self.email, "held_out"),
        ]
        self.messages = [
            Message.objects.create(campaign=campaign, run=run, customer=customer, channel=channel, status=status)
            for campaign, run, customer, channel, status in rows
        ]

    def ids(self, query: str) -> list[int]:
        response = self.api.get(f"/api/v1/messages{query}")
        self.assertEqual(response.status_code, 200, response.json())
        return [row["id"] for row in response.json()["results"]]

    def test_filters(self) -> None:
        m = [message.pk for message in self.messages]
        self.assertEqual(self.ids(""), m)
        self.assertEqual(self.ids(f"?campaign={self.a.pk}"), m[:4])
        self.assertEqual(self.ids(f"?run={self.a2.pk}"), [m[3]])
        self.assertEqual(self.ids("?status=unknown"), [m[1]])
        self.assertEqual(self.ids("?customer=c0"), [m[0], m[3], m[4]])
        self.assertEqual(self.ids(f"?customer={self.customers[0].pk}"), [m[0], m[3], m[4]])
        self.assertEqual(self.ids("?customer=nobody"), [])
        self.assertEqual(self.ids(f"?channel={self.sms.pk}"), [m[2], m[3]])
        self.assertEqual(self.ids(f"?campaign={self.a.pk}&channel={self.email.pk}&status=sent"), [m[0]])

    def test_bad_filters_are_400s(self) -> None:
        response = self.api.get("/api/v1/messages?status=lost&campaign=abc")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"],
            [
                error("campaign", "Enter a number."),
                error("status", "Select a valid choice. lost is not one of the available choices."),
            ],
        )

    def test_a_message_reads_in_full_and_pages_by_id(self) -> None:
        message = self.messages[1]
        body = self.api.get(f"/api/v1/messages/{message.pk}").json()
        self.assertEqual(
            {
                key: body[key]
                for key in (
                    "id",
                    "campaign",
                    "run",
                    "customer",
                    "customer_external_id",
                    "channel",
                    "creative",
                    "status",
                    "attempts",
                )
            },
            {
                "id": message.pk,
                "campaign": self.a.pk,
                "run": self.a1.pk,
                "customer": self.customers[1].pk,
                "customer_external_id": "c1",
                "channel": self.email.pk,
                "creative": None,
                "status": "unknown",
                "attempts": 0,
            },
        )
        first = self.api.get("/api/v1/messages?page_size=2").json()
        self.assertEqual([row["id"] for row in first["results"]], [m.pk for m in self.messages[:2]])
        second = self.api.get(first["next"]).json()
        self.assertEqual([row["id"] for row in second["results"]], [m.pk for m in self.messages[2:4]])

    def test_the_outbox_is_read_only(self) -> None:
        message = self.messages[0]
        self.assertEqual(self.post_json("/api/v1/messages", {}).status_code, 405)
        self.assertEqual(self.api.patch(f"/api/v1/messages/{message.pk}", {"status": "queued"}).status_code, 405)
        self.assertEqual(self.api.delete(f"/api/v1/messages/{message.pk}").status_code, 405)
        self.assertEqual(Message.objects.get(pk=message.pk).status, "sent")
