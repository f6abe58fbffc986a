"""Creatives rendered for one customer: Django templates from the creative's strings over a
prepared plain-dict context (never model instances, so nothing queries per message), then,
for a real message, click tracking, an open pixel and RFC 8058 unsubscribe headers.

The sender's loop, per message (creatives and the campaign loaded once per batch, customer
rows fetched with `.values(*CUSTOMER_CONTEXT_FIELDS)` in one query per batch):

    context = customer_context(row, campaign=campaign, message_id=message.id)
    rendered = render_creative(creative, context)   # Rendered(subject, text, html, headers)

Templates compile once per distinct source text (an LRU keyed by the text itself, so an
edited creative recompiles and an unchanged one never does); links are rewritten in one
regex pass per part. Measured on one core: about 60 us for an email with a subject, a text
part and an HTML part with three links (tests/test_render.py keeps the output exact;
`python -m campaigns.delivery.render` prints the timing).

Which parts are tracked depends on the creative's channel kind: email gets click tracking
in the HTML (href of <a> and <area>) and in the text part (bare URLs), the pixel and the
List-Unsubscribe headers. SMS, push and webhook bodies are left as written: a signed
redirect link is ~100 characters, which would cost SMS segments, and push/webhook payloads
are not clicked through our redirect.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.template import Context, Engine, TemplateDoesNotExist, TemplateSyntaxError
from django.template.base import Template

from campaigns.delivery import links
from marketing.errors import DomainError

logger = logging.getLogger(__name__)

CUSTOMER_CONTEXT_FIELDS = (
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "locale",
    "timezone",
    "attributes",
)
CREATIVE_TEMPLATE_FIELDS = ("subject", "body", "html_body")

# A template engine of its own: no loaders (so {% include %} and {% extends %} cannot read
# files from the server), only the built-in tags and filters plus a few harmless libraries.
ENGINE = Engine(
    loaders=[],
    libraries={
        "i18n": "django.templatetags.i18n",
        "l10n": "django.templatetags.l10n",
        "tz": "django.templatetags.tz",
    },
    string_if_invalid="",
    autoescape=True,
)


_NO_FILES = "{% include %} and {% extends %} cannot be used in a creative: it is rendered from its own text only."


class CreativeTemplateError(DomainError):
    """A creative's subject, body or HTML body does not compile or render."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.detail = message


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)


# --- context --------------------------------------------------------------------------


def customer_context(
    customer: Mapping[str, Any],
    *,
    campaign: Any,
    message_id: int | None = None,
    recommendations: list[dict] | None = None,
) -> dict[str, Any]:
    """The plain-dict context a creative renders from.

    `customer`: a mapping with (some of) CUSTOMER_CONTEXT_FIELDS, e.g. a `.values()` row;
    missing fields render empty. `campaign`: a Campaign or a mapping with "id" and "name".
    `message_id`: the outbox row being sent; None for previews and test sends (then no
    tracking and the unsubscribe link goes to a page that says it was a test).

    The customer's fields are available both at the top level (`{{ first_name }}`) and
    under `customer` (`{{ customer.first_name }}`); `attributes` is the customer's JSON
    attributes (`{{ attributes.tier }}`).

    `recommendations`: the customer's product recommendations ([{"sku", "name", "price",
    "url", "score", "source"}, …], mlcore.recommendations). A sender fetches them for its
    whole batch at once with `batch_recommendations` and passes each customer's list here;
    a real message without them renders an empty list (`{% for r in recommendations %}`
    renders nothing). Without a message (previews, template checks, test sends) and
    without a list, the sample customers get SAMPLE_RECOMMENDATIONS (no query), so a
    marketer sees what the loop renders; a real customer's preview shows theirs only when
    the caller passes them (`batch_recommendations`).
    """
    if recommendations is None and message_id is None:
        recommendations = preview_recommendations(customer)
    fields = {name: customer.get(name) or "" for name in CUSTOMER_CONTEXT_FIELDS[:-1]}
    attributes = customer.get("attributes") or {}
    if isinstance(campaign, Mapping):
        campaign_info = {"id": campaign.get("id"), "name": campaign.get("name", "")}
    else:
        campaign_info = {"id": campaign.pk, "name": campaign.name}
    return {
        **fields,
        "customer": {**fields, "attributes": attributes},
        "attributes": attributes,
        "campaign": campaign_info,
        "recommendations": list(recommendations or ()),
        "unsubscribe_url": links.unsubscribe_url(message_id),
        "message_id": message_id,
    }


# --- recommendations ------------------------------------------------------------------

# Customers that previews, template checks and test sends render for (no database row).
SAMPLE_EXTERNAL_IDS = frozenset({"sample-1", "test"})
RECOMMENDATIONS_PER_MESSAGE = 5
SAMPLE_RECOMMENDATIONS = (
    {"sku": "SAMPLE-1", "name": "Sample product one", "price": "19.99", "url": "", "score": 0.9, "source": "sample"},
    {"sku": "SAMPLE-2", "name": "Sample product two", "price": "9.50", "url": "", "score": 0.7, "source": "sample"},
    {"sku": "SAMPLE-3", "name": "Sample product three", "price": "4.25", "url": "", "score": 0.5, "source": "sample"},
)


def creative_uses_recommendations(creative: Any) -> bool:
    """Whether any of the creative's templates mentions `recommendations` (a cheap text
    test: a false positive only costs the batch's lookup)."""
    return any("recommendations" in (getattr(creative, name, "") or "") for name in CREATIVE_TEMPLATE_FIELDS)


def batch_recommendations(
    creatives: Iterable[Any], customer_ids: Iterable[int], k: int | None = None
) -> dict[int, list[dict]]:
    """{customer id: recommendations} for a send batch, in a fixed number of queries
    whatever its size; {} without a query when none of the batch's creatives uses them.
    Pass each customer's list to `customer_context(recommendations=...)`."""
    if not any(creative_uses_recommendations(creative) for creative in creatives):
        return {}
    from mlcore.recommendations import recommendations_for

    try:
        return recommendations_for(list(customer_ids), k or RECOMMENDATIONS_PER_MESSAGE)
    except Exception:  # e.g. a corrupt model artifact: the batch still sends, without them
        logger.exception("recommendations for a send batch failed: rendering without them")
        return {}


def preview_recommendations(customer: Mapping[str, Any]) -> list[dict]:
    """What a preview or test send renders as recommendations without a list: fixed
    samples for the sample customers (no query), else none (see `customer_context`)."""
    if customer.get("external_id") in SAMPLE_EXTERNAL_IDS:
        return [dict(item) for item in SAMPLE_RECOMMENDATIONS]
    return []


# --- templates ------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _compile(source: str) -> Template:
    return Template(source, engine=ENGINE)


def _template(field_name: str, source: str) -> Template:
    try:
        return _compile(source)
    except TemplateSyntaxError as error:
        raise CreativeTemplateError(field_name, str(error)) from None


def _render(field_name: str, source: str, context: dict, *, autoescape: bool) -> str:
    if not source:
        return ""
    template = _template(field_name, source)
    try:
        return template.render(Context(context, autoescape=autoescape))
    except TemplateDoesNotExist:
        raise CreativeTemplateError(field_name, _NO_FILES) from None
    except Exception as error:  # any template-time failure is the creative's, named by field
        raise CreativeTemplateError(field_name, f"{type(error).__name__}: {error}") from None


# Whom a preview, a template check or a test send renders for when no customer is named.
SAMPLE_CUSTOMER = {
    "external_id": "sample-1",
    "email": "sample@example.com",
    "phone": "+14155550100",
    "first_name": "Sam",
    "last_name": "Sample",
    "country": "US",
    "locale": "en-US",
    "timezone": "America/New_York",
    "attributes": {},
}


def creative_template_errors(creative: Any) -> dict[str, str]:
    """{field: message} for each of the creative's templates that does not compile, or
    fails to render for a sample customer; empty when all are fine. For validation on save
    (API and admin)."""
    errors: dict[str, str] = {}
    context = customer_context(SAMPLE_CUSTOMER, campaign={"id": 0, "name": "sample"})
    for name in CREATIVE_TEMPLATE_FIELDS:
        source = getattr(creative, name, "") or ""
        try:
            _render(name, source, context, autoescape=name == "html_body")
        except CreativeTemplateError as error:
            errors[name] = error.detail
    return errors


# --- tracking -------------------------------------------------------------------------

# href of <a> and <area> only (a <link href> stylesheet must load directly), in double,
# single or no quotes. Group 1 is everything before the value.
_HREF = re.compile(
    r"""(<(?:a|area)\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""",
    re.IGNORECASE,
)
_BARE_URL = re.compile(r"""https?://[^\s<>"']+""", re.IGNORECASE)
_TRAILING = ".,;:!?"
_NOTRACK = re.compile(r"\sdata-notrack\b", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _trackable(url: str, base: str) -> bool:
    # Ours already (tracking, unsubscribe, anything on this installation) or not a web
    # link (mailto:, tel:, #anchors, relative paths, an empty template variable): left as is.
    return url[:8].lower().startswith(("http://", "https://")) and not url.startswith(base + "/") and url != base


def _rewrite_html(html: str, message_id: int, base: str) -> str:
    def replace(match: re.Match) -> str:
        prefix, double, single, bare = match.groups()
        raw = double if double is not None else single if single is not None else bare
        url = html_lib.unescape(raw).strip()
        if not _trackable(url, base):
            return match.group(0)
        tag_end = html.find(">", match.end())
        if _NOTRACK.search(prefix) or _NOTRACK.search(html, match.end(), tag_end if tag_end >= 0 else len(html)):
            return match.group(0)
        # Our link has only URL-safe characters: no escaping needed in any quoting.
        return f'{prefix}"{links.click_url(message_id, url, base)}"'

    return _HREF.sub(replace, html)


def _rewrite_text(text: str, message_id: int, base: str) -> str:
    def replace(match: re.Match) -> str:
        url = match.group(0)
        tail = ""
        while (url and url[-1] in _TRAILING) or (url.endswith(")") and url.count("(") < url.count(")")):
            url, tail = url[:-1], url[-1] + tail
        if not _trackable(url, base):
            return match.group(0)
        return links.click_url(message_id, url, base) + tail

    return _BARE_URL.sub(replace, text)


def _append_pixel(html: str, message_id: int, base: str) -> str:
    pixel = (
        f'<img src="{links.open_pixel_url(message_id, base)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0">'
    )
    ends = list(_BODY_END.finditer(html))
    if ends:
        at = ends[-1].start()
        return html[:at] + pixel + html[at:]
    return html + pixel


def unsubscribe_headers(message_id: int, base: str | None = None) -> dict[str, str]:
    """RFC 2369 List-Unsubscribe with our HTTPS link (plus a mailto: when
    settings.EMAIL_UNSUBSCRIBE_MAILTO is set) and RFC 8058 one-click."""
    targets = [f"<{links.unsubscribe_url(message_id, base)}>"]
    mailto = getattr(settings, "EMAIL_UNSUBSCRIBE_MAILTO", "")
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe%20{message_id}>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


# --- rendering ------------------------------------------------------------------------


def render_creative(creative: Any, context: dict[str, Any]) -> Rendered:
    """The creative rendered for the context from `customer_context`. Subject and text
    without autoescaping, HTML with; the subject on one line (a header cannot hold a line
    break). With a message id in the context and an email creative: tracked links, the
    open pixel and the unsubscribe headers. Raises CreativeTemplateError naming the field
    when a template does not compile or render."""
    subject = _render("subject", creative.subject, context, autoescape=False)
    if subject:
        subject = " ".join(subject.split())
    text = _render("body", creative.body, context, autoescape=False)
    html = _render("html_body", creative.html_body, context, autoescape=True)
    message_id = context.get("message_id")
    if message_id is None or creative.channel_kind != "email":
        return Rendered(subject=subject, text=text, html=html, headers={})
    base = links.base_url()
    text = _rewrite_text(text, message_id, base)
    if html:
        html = _append_pixel(_rewrite_html(html, message_id, base), message_id, base)
    return Rendered(subject=subject, text=text, html=html, headers=unsubscribe_headers(message_id, base))


def _benchmark(n: int = 20_000) -> None:  # pragma: no cover - a measurement, run by hand
    import time
    from types import SimpleNamespace

    creative = SimpleNamespace(
        channel_kind="email",
        subject="{{ first_name|default:'Hello' }}, 20% off for {{ attributes.tier }} members",
        body="Hi {{ first_name }},\n\nShop now: https://shop.example.com/sale?c={{ external_id }}\n"
        "Terms: https://shop.example.com/terms.\nUnsubscribe: {{ unsubscribe_url }}\n",
        html_body='<html><body><p>Hi {{ first_name }},</p><p><a href="https://shop.example.com/sale?c='
        '{{ external_id }}&amp;u=1">Shop now</a> or <a href="https://shop.example.com/new">see what is new</a>.'
        "</p>{% for r in recommendations %}<p>{{ r.name }}</p>{% endfor %}"
        '<p><a href="mailto:help@example.com">Help</a> · <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        "</body></html>",
    )
    row = dict(SAMPLE_CUSTOMER, attributes={"tier": "gold"})
    campaign = {"id": 1, "name": "Sale"}
    started = time.perf_counter()
    for message_id in range(n):
        render_creative(creative, customer_context(row, campaign=campaign, message_id=message_id))
    elapsed = time.perf_counter() - started
    print(f"render_creative: {elapsed / n * 1e6:.1f} us per message ({n / elapsed:,.0f} messages/s on one core)")


if __name__ == "__main__":  # pragma: no cover
    import django

    django.setup()
    _benchmark()
