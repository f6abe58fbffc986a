"""Creatives rendered for one customer: the prepared context, templates (escaping,
errors), click tracking, the open pixel and the RFC 8058 headers. The signed links are
checked against an independent computation of the token format (campaigns.delivery.links)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from django.test import SimpleTestCase, override_settings

from campaigns.delivery import links
from campaigns.delivery.render import (
    CreativeTemplateError,
    Rendered,
    creative_template_errors,
    customer_context,
    render_creative,
)
from campaigns.models import Campaign, Creative

BASE = "https://mk.example.com"
SECRET = "render-test-secret"
ANN = {
    "external_id": "crm-ann",
    "email": "ann@example.com",
    "phone": "+14155550123",
    "first_name": "Ann",
    "last_name": "Lee",
    "country": "DE",
    "locale": "de-DE",
    "timezone": "Europe/Berlin",
    "attributes": {"tier": "gold"},
}
SALE = {"id": 7, "name": "Autumn sale"}


def expected_sig(purpose: str, message_id: int, payload: str, secret: str = SECRET) -> str:
    key = hashlib.sha256(b"campaigns.delivery.links" + secret.encode()).digest()
    mac = hmac.new(key, f"{purpose}|{message_id}|{payload}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def tracked(url: str, message_id: int = 42) -> str:
    encoded = base64.urlsafe_b64encode(url.encode()).rstrip(b"=").decode()
    return f"{BASE}/t/c/{message_id}.{encoded}.{expected_sig('c', message_id, url)}"


def unsub(message_id: int = 42) -> str:
    return f"{BASE}/u/{message_id}.{expected_sig('u', message_id, '')}"


def pixel(message_id: int = 42) -> str:
    return (
        f'<img src="{BASE}/t/o/{message_id}.{expected_sig("o", message_id, "")}.gif" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0">'
    )


def creative(subject: str = "", body: str = "", html_body: str = "", channel_kind: str = "email") -> Creative:
    return Creative(channel_kind=channel_kind, subject=subject, body=body, html_body=html_body)


@override_settings(PUBLIC_BASE_URL=BASE, SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=[])
class ContextTests(SimpleTestCase):
    def test_it_prepares_plain_values_for_a_message(self):
        context = customer_context({**ANN, "id": 5, "unsubscribed_at": None}, campaign=SALE, message_id=42)
        fields = {k: v for k, v in ANN.items() if k != "attributes"}
        self.assertEqual(
            context,
            {
                **fields,
                "customer": {**fields, "attributes": {"tier": "gold"}},
                "attributes": {"tier": "gold"},
                "campaign": {"id": 7, "name": "Autumn sale"},
                "recommendations": [],
                "unsubscribe_url": unsub(),
                "message_id": 42,
            },
        )

    def test_missing_fields_are_empty_and_a_preview_links_to_the_test_page(self):
        context = customer_context({"first_name": None}, campaign=Campaign(pk=3, name="Spring"))
        self.assertEqual(context["first_name"], "")
        self.assertEqual(context["email"], "")
        self.assertEqual(context["attributes"], {})
        self.assertEqual(context["campaign"], {"id": 3, "name": "Spring"})
        self.assertEqual(context["unsubscribe_url"], f"{BASE}/u/preview")
        self.assertIsNone(context["message_id"])

    def test_recommendations_are_passed_through(self):
        items = [{"sku": "A-1", "name": "Boots"}]
        context = customer_context(ANN, campaign=SALE, recommendations=items)
        self.assertEqual(context["recommendations"], items)
        rendered = render_creative(
            creative(body="{% for r in recommendations %}{{ r.name }} ({{ r.sku }}){% endfor %}"), context
        )
        self.assertEqual(rendered.text, "Boots (A-1)")


@override_settings(PUBLIC_BASE_URL=BASE, SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=[], EMAIL_UNSUBSCRIBE_MAILTO="")
class TemplateTests(SimpleTestCase):
    def preview(self, **parts) -> Rendered:
        return render_creative(creative(**parts), customer_context(ANN, campaign=SALE))

    def test_subject_text_and_html_render_from_the_context(self):
        rendered = self.preview(
            subject="{{ first_name }}, {{ campaign.name }} for {{ attributes.tier }} members",
            body="Hi {{ customer.first_name }} {{ last_name }} ({{ country }}, {{ missing }}).",
            html_body="<p>Hi {{ first_name }}</p>",
        )
        self.assertEqual(
            rendered,
            Rendered(
                subject="Ann, Autumn sale for gold members",
                text="Hi Ann Lee (DE, ).",
                html="<p>Hi Ann</p>",
                headers={},
            ),
        )

    def test_html_is_escaped_and_text_and_subject_are_not(self):
        who = {**ANN, "first_name": "<b>Tom & Jerry's</b>"}
        rendered = render_creative(
            creative(subject="Hi {{ first_name }}", body="Hi {{ first_name }}", html_body="<p>{{ first_name }}</p>"),
            customer_context(who, campaign=SALE),
        )
        self.assertEqual(rendered.subject, "Hi <b>Tom & Jerry's</b>")
        self.assertEqual(rendered.text, "Hi <b>Tom & Jerry's</b>")
        self.assertEqual(rendered.html, "<p>&lt;b&gt;Tom &amp; Jerry&#x27;s&lt;/b&gt;</p>")

    def test_the_subject_is_one_line(self):
        who = {**ANN, "first_name": "Ann\r\nBcc: x@example.com"}
        rendered = render_creative(creative(subject="Hi\n {{ first_name }}  !"), customer_context(who, campaign=SALE))
        self.assertEqual(rendered.subject, "Hi Ann Bcc: x@example.com !")

    def test_an_edited_creative_renders_its_new_text(self):
        item = creative(body="Hello {{ first_name }}")
        context = customer_context(ANN, campaign=SALE)
        self.assertEqual(render_creative(item, context).text, "Hello Ann")
        item.body = "Goodbye {{ first_name }}"
        self.assertEqual(render_creative(item, context).text, "Goodbye Ann")

    def test_bad_syntax_is_an_error_naming_the_field(self):
        with self.assertRaises(CreativeTemplateError) as caught:
            self.preview(subject="fine", body="{% iff x %}")
        self.assertEqual(caught.exception.field, "body")
        self.assertEqual(
            caught.exception.message,
            "body: Invalid block tag on line 1: 'iff'. Did you forget to register or load this tag?",
        )

    def test_template_errors_are_listed_per_field(self):
        errors = creative_template_errors(
            creative(subject="{{ x|nofilter }}", body="{% for %}", html_body='{% include "base.html" %}')
        )
        self.assertEqual(
            errors,
            {
                "subject": "Invalid filter: 'nofilter'",
                "body": "'for' statements should have at least four words: for",
                "html_body": "{% include %} and {% extends %} cannot be used in a creative: "
                "it is rendered from its own text only.",
            },
        )

    def test_no_template_library_or_file_of_the_server_is_reachable(self):
        errors = creative_template_errors(
            creative(subject="ok", body="{% load humanize %}", html_body='{% extends "admin/base.html" %}')
        )
        self.assertEqual(
            errors,
            {
                "body": "'humanize' is not a registered tag library. Must be one of:\ni18n\nl10n\ntz",
                "html_body": "{% include %} and {% extends %} cannot be used in a creative: "
                "it is rendered from its own text only.",
            },
        )

    def test_a_valid_creative_has_no_errors(self):
        good = creative(subject="{{ first_name|default:'Hi' }}", body="{% if attributes.tier %}x{% endif %}")
        self.assertEqual(creative_template_errors(good), {})


@override_settings(PUBLIC_BASE_URL=BASE, SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=[], EMAIL_UNSUBSCRIBE_MAILTO="")
class TrackingTests(SimpleTestCase):
    def send(self, message_id: int = 42, channel_kind: str = "email", **parts) -> Rendered:
        return render_creative(
            creative(channel_kind=channel_kind, **parts), customer_context(ANN, campaign=SALE, message_id=message_id)
        )

    def test_links_in_the_text_part_are_tracked(self):
        rendered = self.send(
            body="Shop: https://shop.example.com/sale?c={{ external_id }}.\n"
            "(see https://shop.example.com/terms) or write to mailto:help@example.com, call tel:+4930123.\n"
            "Unsubscribe: {{ unsubscribe_url }}"
        )
        self.assertEqual(
            rendered.text,
            f"Shop: {tracked('https://shop.example.com/sale?c=crm-ann')}.\n"
            f"(see {tracked('https://shop.example.com/terms')}) or write to mailto:help@example.com, "
            f"call tel:+4930123.\nUnsubscribe: {unsub()}",
        )

    def test_links_in_the_html_are_tracked_and_the_pixel_is_added(self):
        rendered = self.send(
            html_body='<html><head><link href="https://cdn.example.com/a.css" rel="stylesheet"></head><body>'
            '<a href="https://shop.example.com/?a=1&amp;c={{ external_id }}" class="b">Shop</a> '
            "<A HREF='https://shop.example.com/new'>New</A> "
            "<a href=https://shop.example.com/x>X</a> "
            '<area shape="rect" href="http://shop.example.com/map"> '
            '<a href="mailto:help@example.com">Mail</a> <a href="tel:+4930123">Call</a> '
            '<a href="#top">Top</a> <a href="/relative">Rel</a> '
            '<a href="https://shop.example.com/legal" data-notrack>Legal</a> '
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a> <a href="https://mk.example.com/about">About</a>'
            "</body></html>"
        )
        self.assertEqual(
            rendered.html,
            '<html><head><link href="https://cdn.example.com/a.css" rel="stylesheet"></head><body>'
            f'<a href="{tracked("https://shop.example.com/?a=1&c=crm-ann")}" class="b">Shop</a> '
            f'<A HREF="{tracked("https://shop.example.com/new")}">New</A> '
            f'<a href="{tracked("https://shop.example.com/x")}">X</a> '
            f'<area shape="rect" href="{tracked("http://shop.example.com/map")}"> '
            '<a href="mailto:help@example.com">Mail</a> <a href="tel:+4930123">Call</a> '
            '<a href="#top">Top</a> <a href="/relative">Rel</a> '
            '<a href="https://shop.example.com/legal" data-notrack>Legal</a> '
            f'<a href="{unsub()}">Unsubscribe</a> <a href="https://mk.example.com/about">About</a>'
            f"{pixel()}</body></html>",
        )

    def test_the_pixel_goes_at_the_end_of_html_without_a_body_tag(self):
        self.assertEqual(self.send(html_body="<p>Hi</p>").html, f"<p>Hi</p>{pixel()}")

    def test_a_message_without_html_has_no_pixel(self):
        rendered = self.send(subject="Hi", body="Hi")
        self.assertEqual((rendered.subject, rendered.text, rendered.html), ("Hi", "Hi", ""))

    def test_it_adds_the_one_click_unsubscribe_headers(self):
        self.assertEqual(
            self.send(body="Hi").headers,
            {"List-Unsubscribe": f"<{unsub()}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        )

    @override_settings(EMAIL_UNSUBSCRIBE_MAILTO="unsubscribe@example.com")
    def test_it_adds_a_mailto_only_when_configured(self):
        self.assertEqual(
            self.send(body="Hi").headers["List-Unsubscribe"],
            f"<{unsub()}>, <mailto:unsubscribe@example.com?subject=unsubscribe%2042>",
        )

    def test_a_preview_is_not_tracked(self):
        rendered = render_creative(
            creative(body="https://shop.example.com/x", html_body='<a href="https://shop.example.com/x">x</a>'),
            customer_context(ANN, campaign=SALE),
        )
        self.assertEqual(
            rendered,
            Rendered(subject="", text="https://shop.example.com/x", html='<a href="https://shop.example.com/x">x</a>'),
        )

    def test_sms_push_and_webhook_bodies_are_left_as_written(self):
        for kind in ("sms", "push", "webhook"):
            with self.subTest(kind):
                rendered = self.send(
                    channel_kind=kind, subject="T", body="Go https://shop.example.com/x {{ first_name }}"
                )
                self.assertEqual(rendered, Rendered(subject="T", text="Go https://shop.example.com/x Ann", html=""))


@override_settings(PUBLIC_BASE_URL=BASE, SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=[])
class TokenTests(SimpleTestCase):
    def token(self, url: str) -> str:
        return url.rsplit("/", 1)[1]

    def test_tokens_verify_and_carry_the_message_and_url(self):
        self.assertEqual(
            links.verify_click_token(self.token(tracked("https://x.example/a?b=1"))), (42, "https://x.example/a?b=1")
        )
        self.assertEqual(links.verify_message_token(links.UNSUBSCRIBE, self.token(unsub(9))), 9)
        self.assertEqual(links.verify_message_token(links.OPEN, f"9.{expected_sig('o', 9, '')}"), 9)

    def test_a_token_is_bound_to_its_message_url_and_purpose(self):
        message_id, encoded, sig = self.token(tracked("https://x.example/a")).split(".")
        other = base64.urlsafe_b64encode(b"https://evil.example/").rstrip(b"=").decode()
        self.assertIsNone(links.verify_click_token(f"{message_id}.{other}.{sig}"))
        self.assertIsNone(links.verify_click_token(f"43.{encoded}.{sig}"))
        self.assertIsNone(links.verify_click_token(f"42.{encoded}.{sig[:-1]}A"))
        self.assertIsNone(links.verify_click_token(f"42.{encoded}"))
        self.assertIsNone(links.verify_message_token(links.OPEN, self.token(unsub(42))))
        self.assertIsNone(links.verify_message_token(links.UNSUBSCRIBE, f"42.{expected_sig('o', 42, '')}"))
        for bad in ("", ".", "x.y", "-1.abc", "4_2.abc", "42.abc.def", "٤٢.abc", "9" * 30 + ".abc"):
            self.assertIsNone(links.verify_message_token(links.UNSUBSCRIBE, bad), bad)
            self.assertIsNone(links.verify_click_token(bad), bad)

    def test_only_web_urls_redirect_even_when_signed(self):
        self.assertIsNone(links.verify_click_token(self.token(links.click_url(42, "javascript:alert(1)"))))

    def test_links_of_a_rotated_secret_still_verify(self):
        token = self.token(unsub(42))
        with override_settings(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=[SECRET]):
            self.assertEqual(links.verify_message_token(links.UNSUBSCRIBE, token), 42)
        with override_settings(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=[]):
            self.assertIsNone(links.verify_message_token(links.UNSUBSCRIBE, token))
