"""The delivery admin: channels (settings checked, no secrets), devices (tokens truncated),
the campaign editor (creatives inline with their templates checked, launch/pause/resume/
cancel as buttons and actions, errors shown not raised, live progress, locked fields once
launched), creative preview and "send a test to me" to a real SMTP sink, and the outbox
(read-only, filters, `unknown` first, counts capped)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns.models import Campaign, CampaignRun, Channel, Creative, Device, Message, Segment, SegmentMembership
from marketing.models import Touchpoint
from tests.api_helpers import T0, make_customer
from tests.smtp_sink import SmtpSink

CAMPAIGNS = reverse("admin:campaigns_campaign_changelist")
CAMPAIGN_ADD = reverse("admin:campaigns_campaign_add")
MESSAGES = reverse("admin:campaigns_message_changelist")
CHANNEL_ADD = reverse("admin:campaigns_channel_add")
DEVICES = reverse("admin:campaigns_device_changelist")


def change_url(campaign: Campaign) -> str:
    return reverse("admin:campaigns_campaign_change", args=[campaign.pk])


def action_url(campaign: Campaign, name: str) -> str:
    return reverse("admin:campaigns_campaign_action", args=[campaign.pk, name])


# The fields of a new campaign's form: what the admin posts with defaults untouched.
CAMPAIGN_FORM = {
    "name": "sale",
    "description": "",
    "trigger": "one_off",
    "cron": "",
    "trigger_event_kind": "",
    "holdout_percent": "0",
    "frequency_cap_days": "7",
    "fixed_cost": "0",
    "goal_event": "purchase",
    "attribution_window_days": "7",
    "channel_policy": "{}",
    "creative_policy": "{}",
    "creatives-TOTAL_FORMS": "0",
    "creatives-INITIAL_FORMS": "0",
    "creatives-MIN_NUM_FORMS": "0",
    "creatives-MAX_NUM_FORMS": "1000",
}


class DeliveryAdminTestCase(TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.marketer = User.objects.create_superuser("marketer", "marketer@shop.example", "pw")
        self.client.force_login(self.marketer)
        self.email = Channel.objects.create(name="mail", kind="email")
        self.customers = [
            make_customer(f"c{i}", email=f"c{i}@example.com", email_opt_in=True, first_name=f"C{i}") for i in range(3)
        ]
        self.no_consent = make_customer("quiet", email="quiet@example.com")
        self.segment = Segment.objects.create(
            name="everyone", definition={"field": "country", "op": "eq", "value": "DE"}
        )
        SegmentMembership.objects.bulk_create(
            [SegmentMembership(segment=self.segment, customer=c, since=T0) for c in [*self.customers, self.no_consent]]
        )

    def messages_of(self, response) -> list[str]:
        return [str(m) for m in get_messages(response.wsgi_request)]

    def campaign(self, **fields) -> Campaign:
        fields.setdefault("holdout_percent", 0)
        campaign = Campaign.objects.create(name=fields.pop("name", "sale"), **fields)
        campaign.audience.set([self.segment])
        Creative.objects.create(campaign=campaign, channel_kind="email", subject="Hi {{ first_name }}", body="Sale")
        return campaign


class ChannelAdminTests(DeliveryAdminTestCase):
    def test_settings_are_checked_and_secrets_refused(self) -> None:
        response = self.client.post(
            CHANNEL_ADD,
            {
                "name": "smtp",
                "kind": "email",
                "backend": "smtp",
                "settings": '{"host": "smtp.example", "password": "hunter2"}',
                "cost_per_message": "0.001",
                "enabled": "on",
            },
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.context["adminform"].form.errors,
            {
                "settings": [
                    "settings.password: secrets are not stored: put it in an environment variable and name that in "
                    '"password_env"'
                ]
            },
        )
        response = self.client.post(
            CHANNEL_ADD,
            {
                "name": "smtp",
                "kind": "email",
                "backend": "smtp",
                "settings": '{"port": 99999}',
                "cost_per_message": "-1",
                "rate_limit_per_second": "0",
            },
        )
        self.assertEqual(
            response.context["adminform"].form.errors,
            {
                "settings": [
                    "settings.host: required for the smtp backend (the SMTP server's name)",
                    "settings.port: must be a whole number from 1 to 65535",
                ],
                "cost_per_message": ["Ensure this value is greater than or equal to 0."],
                "rate_limit_per_second": ["Ensure this value is at least 1, or leave it empty for no limit."],
            },
        )
        self.assertEqual(list(Channel.objects.values_list("name", flat=True)), ["mail"])
        response = self.client.post(
            CHANNEL_ADD,
            {
                "name": "smtp",
                "kind": "email",
                "backend": "smtp",
                "settings": '{"host": "smtp.example", "password_env": "SMTP_PASSWORD"}',
                "cost_per_message": "0.001",
            },
        )
        self.assertEqual(response.status_code, 302)
        self.assertEqual(
            Channel.objects.get(name="smtp").settings, {"host": "smtp.example", "password_env": "SMTP_PASSWORD"}
        )

    def test_the_kind_is_fixed_and_a_channel_with_messages_is_not_deleted(self) -> None:
        page = self.client.get(reverse("admin:campaigns_channel_change", args=[self.email.pk]))
        self.assertNotIn("kind", page.context["adminform"].form.fields)
        campaign = self.campaign()
        run = CampaignRun.objects.create(campaign=campaign, key="launch")
        Message.objects.create(campaign=campaign, run=run, customer=self.customers[0], channel=self.email)
        response = self.client.post(
            reverse("admin:campaigns_channel_delete", args=[self.email.pk]), {"post": "yes"}, follow=True
        )
        self.assertRedirects(response, reverse("admin:campaigns_channel_change", args=[self.email.pk]))
        self.assertEqual(
            self.messages_of(response),
            ["mail has sent messages and is kept for their history: untick enabled instead."],
        )
        self.assertTrue(Channel.objects.filter(pk=self.email.pk).exists())


class DeviceAdminTests(DeliveryAdminTestCase):
    def test_a_device_is_added_with_its_hash_and_shown_truncated(self) -> None:
        token = "apns-" + "f" * 60
        response = self.client.post(
            reverse("admin:campaigns_device_add"),
            {"customer": self.customers[0].pk, "platform": "ios", "token": token, "enabled": "on"},
        )
        self.assertEqual(response.status_code, 302)
        device = Device.objects.get()
        self.assertEqual((device.customer_id, device.token), (self.customers[0].pk, token))
        self.assertEqual(len(device.token_hash), 64)
        listing = self.client.get(DEVICES + "?q=c0")
        self.assertEqual([d.pk for d in listing.context["cl"].result_list], [device.pk])
        self.assertContains(listing, "apns-fffffff…")
        self.assertNotContains(listing, token)
        self.assertEqual(list(self.client.get(DEVICES + "?q=c1").context["cl"].result_list), [])
        page = self.client.get(reverse("admin:campaigns_device_change", args=[device.pk]))
        self.assertContains(page, "apns-fffffff…")
        self.assertNotContains(page, token)
        # the same token again is refused (it would move silently)
        response = self.client.post(
            reverse("admin:campaigns_device_add"),
            {"customer": self.customers[1].pk, "platform": "ios", "token": token},
        )
        self.assertEqual(
            response.context["adminform"].form.errors,
            {"token": ["This token is registered already (search for its customer)."]},
        )
        self.assertEqual(Device.objects.count(), 1)


class CampaignEditorTests(DeliveryAdminTestCase):
    def test_a_campaign_is_created_with_a_creative_inline(self) -> None:
        self.assertEqual(self.client.get(CAMPAIGN_ADD).status_code, 200)
        response = self.client.post(
            CAMPAIGN_ADD,
            {
                **CAMPAIGN_FORM,
                "audience": [self.segment.pk],
                "creatives-TOTAL_FORMS": "1",
                "creatives-0-channel_kind": "email",
                "creatives-0-name": "A",
                "creatives-0-weight": "1",
                "creatives-0-enabled": "on",
                "creatives-0-subject": "Hi {{ first_name }}",
                "creatives-0-body": "Sale",
            },
        )
        self.assertEqual(response.status_code, 302)
        campaign = Campaign.objects.get()
        self.assertEqual((campaign.status, list(campaign.audience.all())), ("draft", [self.segment]))
        self.assertEqual(list(campaign.creatives.values_list("subject", flat=True)), ["Hi {{ first_name }}"])

    def test_template_errors_show_on_the_creative_field_and_nothing_is_saved(self) -> None:
        response = self.client.post(
            CAMPAIGN_ADD,
            {
                **CAMPAIGN_FORM,
                "holdout_percent": "120",
                "cron": "whenever",
                "creatives-TOTAL_FORMS": "1",
                "creatives-0-channel_kind": "email",
                "creatives-0-name": "A",
                "creatives-0-weight": "1",
                "creatives-0-subject": "{% if %}",
                "creatives-0-body": "{{ x|nope }}",
            },
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.context["adminform"].form.errors,
            {
                "holdout_percent": ["Ensure this value is between 0 and 100."],
                "cron": ["needs 5 fields (minute hour day-of-month month day-of-week), got 1"],
            },
        )
        (formset,) = response.context["inline_admin_formsets"]
        self.assertEqual(
            formset.formset.errors,
            [{"subject": ["Unexpected end of expression in if tag."], "body": ["Invalid filter: 'nope'"]}],
        )
        self.assertFalse(Campaign.objects.exists())
        self.assertFalse(Creative.objects.exists())

    def test_a_creative_with_messages_keeps_its_kind_and_is_not_deleted(self) -> None:
        campaign = self.campaign()
        creative = campaign.creatives.get()
        run = CampaignRun.objects.create(campaign=campaign, key="launch")
        Message.objects.create(campaign=campaign, run=run, customer=self.customers[0], creative=creative)
        form = {
            **CAMPAIGN_FORM,
            "audience": [self.segment.pk],
            "holdout_percent": "0",
            "creatives-TOTAL_FORMS": "1",
            "creatives-INITIAL_FORMS": "1",
            "creatives-0-id": creative.pk,
            "creatives-0-campaign": campaign.pk,
            "creatives-0-channel_kind": "sms",
            "creatives-0-name": "A",
            "creatives-0-weight": "1",
            "creatives-0-enabled": "on",
            "creatives-0-subject": creative.subject,
            "creatives-0-body": creative.body,
        }
        response = self.client.post(change_url(campaign), form)
        self.assertEqual(response.status_code, 200)
        (formset,) = response.context["inline_admin_formsets"]
        self.assertEqual(
            formset.formset.errors,
            [{"channel_kind": ["This creative has messages: add a new creative for another channel."]}],
        )
        response = self.client.post(
            change_url(campaign), {**form, "creatives-0-channel_kind": "email", "creatives-0-DELETE": "on"}
        )
        self.assertEqual(response.status_code, 200)
        (formset,) = response.context["inline_admin_formsets"]
        self.assertEqual(
            formset.formset.errors,
            [{"__all__": ["This creative has messages and is kept for their history: untick enabled instead."]}],
        )
        self.assertEqual(Creative.objects.get(pk=creative.pk).channel_kind, "email")

    def test_launch_button_then_pause_resume_cancel(self) -> None:
        campaign = self.campaign()
        page = self.client.get(change_url(campaign))
        self.assertEqual([name for name, _, _ in page.context["campaign_buttons"]], ["launch"])
        self.assertContains(page, f'action="{action_url(campaign, "launch")}"')

        response = self.client.post(action_url(campaign, "launch"), follow=True)
        self.assertRedirects(response, change_url(campaign))
        run = CampaignRun.objects.get(campaign=campaign)
        self.assertEqual(
            self.messages_of(response),
            [
                f"sale launched: now running. Run {run.key}: 4 audience, 3 eligible, 0 held out, 3 queued, "
                "1 suppressed (no_consent 1)."
            ],
        )
        self.assertEqual(
            dict(Message.objects.filter(campaign=campaign).values_list("customer__external_id", "status")),
            {"c0": "queued", "c1": "queued", "c2": "queued", "quiet": "suppressed"},
        )
        page = self.client.get(change_url(campaign))
        self.assertEqual([name for name, _, _ in page.context["campaign_buttons"]], ["pause", "cancel"])
        # who is treated is fixed now: those fields are read-only
        form_fields = page.context["adminform"].form.fields
        for name in ("audience", "exclusions", "holdout_percent", "trigger", "send_at"):
            self.assertNotIn(name, form_fields)
        self.assertIn("frequency_cap", form_fields)

        # a wrong transition is a message, not an error page
        response = self.client.post(action_url(campaign, "resume"), follow=True)
        self.assertEqual(
            self.messages_of(response),
            [f"sale was not resumed: Campaign {campaign.pk} is running: only a paused campaign can be resumed."],
        )
        for name, status in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
            response = self.client.post(action_url(campaign, name), follow=True)
            past = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[name]
            self.assertEqual(self.messages_of(response), [f"sale {past}: now {status}."])
            self.assertEqual(Campaign.objects.get(pk=campaign.pk).status, status)
        self.assertEqual(
            sorted(Message.objects.filter(campaign=campaign).values_list("status", flat=True)),
            ["cancelled", "cancelled", "cancelled", "suppressed"],
        )
        self.assertEqual(self.client.get(change_url(campaign)).context["campaign_buttons"], [])
        # GET does nothing
        self.assertEqual(self.client.get(action_url(campaign, "launch")).status_code, 302)

    def test_an_incomplete_campaign_says_why_it_cannot_launch(self) -> None:
        campaign = Campaign.objects.create(name="empty")
        response = self.client.post(action_url(campaign, "launch"), follow=True)
        self.assertEqual(response.status_code, 200)
        (message,) = self.messages_of(response)
        self.assertTrue(message.startswith("empty was not launched: audience: "), message)
        self.assertEqual(Campaign.objects.get(pk=campaign.pk).status, "draft")
        self.assertFalse(CampaignRun.objects.exists())

    def test_list_actions_apply_to_each_selected_campaign(self) -> None:
        ready, empty = self.campaign(name="ready"), Campaign.objects.create(name="empty")
        response = self.client.post(
            CAMPAIGNS, {"action": "launch_selected", "_selected_action": [ready.pk, empty.pk]}, follow=True
        )
        messages = self.messages_of(response)
        self.assertEqual(len(messages), 2)
        self.assertTrue(messages[0].startswith("ready launched: now running."), messages)
        self.assertTrue(messages[1].startswith("empty was not launched: "), messages)
        self.assertEqual(dict(Campaign.objects.values_list("name", "status")), {"ready": "running", "empty": "draft"})
        self.client.post(CAMPAIGNS, {"action": "pause_selected", "_selected_action": [ready.pk]})
        self.assertEqual(Campaign.objects.get(pk=ready.pk).status, "paused")
        actions = dict(response.context["action_form"].fields["action"].choices)
        self.assertEqual(
            set(actions) - {""}, {"launch_selected", "pause_selected", "resume_selected", "cancel_selected"}
        )

    def test_the_progress_panel_counts_and_flags_unknown_messages(self) -> None:
        campaign = self.campaign()
        self.client.post(action_url(campaign, "launch"), follow=True)
        run = CampaignRun.objects.get(campaign=campaign)
        queued = list(Message.objects.filter(campaign=campaign, status="queued").order_by("pk"))
        Message.objects.filter(pk=queued[0].pk).update(status="sent")
        Message.objects.filter(pk=queued[1].pk).update(status="unknown")
        page = self.client.get(change_url(campaign))
        self.assertTrue(page.context["live"])
        fragment = self.client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk]))
        self.assertEqual(fragment.status_code, 200)
        html = fragment.content.decode()
        self.assertIn(html.strip(), page.content.decode())
        # queued, sending, sent, delivered, failed, suppressed, held out, unknown, cancelled, total
        self.assertInHTML(
            "<tr class='campaign-total'><th>all runs</th><td>1</td><td>0</td><td>1</td><td>0</td><td>0</td><td>1</td>"
            "<td>0</td><td>1</td><td>0</td><td>4</td></tr>",
            html,
        )
        self.assertIn(f">run {run.key}</a> (running, ", html)
        self.assertIn("<strong>1 message in doubt (unknown)</strong>", html)
        self.assertIn(f'href="{MESSAGES}?campaign={campaign.pk}&amp;status=unknown"', html)
        self.assertIn("Suppressed: no_consent 1.", html)

    def test_only_drafts_are_deleted(self) -> None:
        campaign = self.campaign()
        self.client.post(action_url(campaign, "launch"), follow=True)
        response = self.client.post(
            reverse("admin:campaigns_campaign_delete", args=[campaign.pk]), {"post": "yes"}, follow=True
        )
        self.assertRedirects(response, change_url(campaign))
        self.assertEqual(
            self.messages_of(response),
            ["sale is running: only drafts without messages can be deleted; cancel it instead."],
        )
        draft = self.campaign(name="draft")
        response = self.client.post(reverse("admin:campaigns_campaign_delete", args=[draft.pk]), {"post": "yes"})
        self.assertEqual(response.status_code, 302)
        self.assertEqual(list(Campaign.objects.values_list("name", flat=True)), ["sale"])

    def test_a_segment_a_campaign_uses_is_not_deleted(self) -> None:
        self.campaign()
        response = self.client.post(
            reverse("admin:campaigns_segment_delete", args=[self.segment.pk]), {"post": "yes"}, follow=True
        )
        self.assertEqual(response.status_code, 200)
        campaign = Campaign.objects.get()
        self.assertEqual(
            self.messages_of(response),
            [f"Segment {self.segment.pk} is used by campaign(s) {campaign.pk} (sale); change those first."],
        )
        self.assertTrue(Segment.objects.filter(pk=self.segment.pk).exists())


class CreativePreviewTests(DeliveryAdminTestCase):
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
        self.sale = self.campaign(channel_policy={"type": "fixed", "channel": self.smtp.pk})
        self.creative = self.sale.creatives.get()
        self.url = reverse("admin:campaigns_creative_preview", args=[self.creative.pk])

    def test_the_inline_links_to_the_preview_which_renders_for_a_customer_or_the_sample(self) -> None:
        self.assertContains(self.client.get(change_url(self.sale)), f'href="{self.url}"')
        page = self.client.get(self.url)
        self.assertEqual(page.context["preview"]["subject"], "Hi Sam")
        self.assertContains(page, '<td class="preview-subject">Hi Sam</td>', html=True)
        page = self.client.get(self.url + "?customer=c1")
        self.assertEqual(page.context["preview"]["subject"], "Hi C1")
        page = self.client.get(self.url + "?customer=nobody")
        self.assertEqual(
            page.context["error"], "No customer with external id or id 'nobody': showing the sample customer."
        )
        self.assertEqual(page.context["preview"]["subject"], "Hi Sam")
        self.assertEqual(page.context["test_to"], "marketer@shop.example")

    def test_send_a_test_to_me_reaches_the_sink(self) -> None:
        response = self.client.post(self.url, {"to": "marketer@shop.example"}, follow=True)
        self.assertRedirects(response, self.url)
        self.assertEqual(self.messages_of(response), ["Sent a test of A to marketer@shop.example."])
        self.assertEqual(self.sink.recipients(), ["marketer@shop.example"])
        self.assertEqual(self.sink.received[0].message["Subject"], "[Test] Hi Test")

        response = self.client.post(self.url, {"to": "nobody"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.messages_of(response), ["No test was sent: to: 'nobody' is not an email address"])
        self.assertEqual(self.sink.count(), 1)
        self.assertFalse(Message.objects.exists())
        self.assertFalse(Touchpoint.objects.exists())


class MessageAdminTests(DeliveryAdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.sms = Channel.objects.create(name="sms", kind="sms", backend="http")
        self.a, self.b = Campaign.objects.create(name="a"), Campaign.objects.create(name="b")
        self.a1 = CampaignRun.objects.create(campaign=self.a, key="launch")
        self.a2 = CampaignRun.objects.create(campaign=self.a, key="second")
        b1 = CampaignRun.objects.create(campaign=self.b, key="launch")
        c0, c1, c2 = self.customers
        rows = [
            (self.a, self.a1, c0, self.email, "sent"),
            (self.a, self.a1, c1, self.email, "unknown"),
            (self.a, self.a1, c2, self.sms, "queued"),
            (self.a, self.a2, c0, self.sms, "failed"),
            (self.b, b1, c0, self.email, "unknown"),
        ]
        self.m = [
            Message.objects.create(campaign=campaign, run=run, customer=customer, channel=channel, status=status).pk
            for campaign, run, customer, channel, status in rows
        ]

    def listed(self, query: str = "") -> list[int]:
        response = self.client.get(MESSAGES + query)
        self.assertEqual(response.status_code, 200)
        return [message.pk for message in response.context["cl"].result_list]

    def test_filters_and_search(self) -> None:
        m = self.m
        self.assertEqual(self.listed(), m[::-1])
        self.assertEqual(self.listed("?status=unknown"), [m[4], m[1]])
        self.assertEqual(self.listed(f"?campaign={self.a.pk}&status=unknown"), [m[1]])
        self.assertEqual(self.listed(f"?campaign={self.a.pk}&run={self.a2.pk}"), [m[3]])
        self.assertEqual(self.listed(f"?channel={self.sms.pk}"), [m[3], m[2]])
        self.assertEqual(self.listed("?q=c0"), [m[4], m[3], m[0]])
        self.assertEqual(self.listed("?q=c"), [])
        self.assertEqual(self.listed("?q=%00"), m[::-1])  # the admin drops a search with a NUL
        # a bad parameter is the admin's "?e=1" redirect, not an error page
        self.assertEqual(self.client.get(MESSAGES + "?campaign=x").status_code, 302)

    def test_unknown_is_marked_and_offered_first(self) -> None:
        response = self.client.get(MESSAGES + f"?campaign={self.a.pk}")
        self.assertContains(response, '<strong style="color:#ba2121">UNKNOWN</strong>', count=1, html=False)
        status_filter = next(f for f in response.context["cl"].filter_specs if f.parameter_name == "status")
        self.assertEqual(status_filter.lookup_choices[0], ("unknown", "Unknown (in doubt)"))
        runs = next(f for f in response.context["cl"].filter_specs if f.parameter_name == "run")
        self.assertEqual(runs.lookup_choices, [(str(self.a2.pk), "second"), (str(self.a1.pk), "launch")])
        no_campaign = self.client.get(MESSAGES)
        self.assertEqual(
            [f.parameter_name for f in no_campaign.context["cl"].filter_specs if f.has_output()],
            ["campaign", "status", "channel"],
        )

    def test_it_is_read_only_and_counts_are_capped(self) -> None:
        with CaptureQueriesContext(connection) as queries:
            self.client.get(MESSAGES)
        counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        self.assertEqual(len(counts), 1)
        self.assertIn("LIMIT 10001", counts[0])
        self.assertEqual(self.client.get(reverse("admin:campaigns_message_add")).status_code, 403)
        page = self.client.get(reverse("admin:campaigns_message_change", args=[self.m[0]]))
        self.assertEqual(page.status_code, 200)
        self.assertFalse(page.context["has_change_permission"])
        self.assertEqual(self.client.post(reverse("admin:campaigns_message_delete", args=[self.m[0]])).status_code, 403)
        self.assertEqual(Message.objects.count(), 5)
