"""Channel backends: how one rendered message reaches a provider, and what the provider's
answer means for the outbox.

- Email goes through Django email backends, one connection per batch reused across its
  messages (with SMTP pipelining, RFC 2920, where the server offers it). Channel.backend
  "default" is settings.EMAIL_BACKEND; "smtp" builds an SMTP connection from
  Channel.settings (host, port, username, password_env, use_tls, use_ssl, timeout);
  "anymail" is django-anymail's backend for settings["esp"] (e.g. "mailgun");
  any dotted path is that backend class. For "anymail" and dotted paths every other
  setting is passed to the backend (a "<name>_env" key passes the environment variable it
  names as "<name>", so secrets stay out of the database). Every channel may set
  from_email and reply_to. Each email carries our Message-ID ("<m<id>.<campaign>@<from
  domain>>", so a bounce report names the message) and the List-Unsubscribe and RFC 8058
  List-Unsubscribe-Post headers from campaigns.delivery.render.
- SMS, push and webhook go to one configurable JSON-over-HTTP provider backend ("http"):
  a requests.Session per batch; settings url, method, headers, auth, payload (a JSON
  template), timeout_s, id_field, idempotency_header, status_url (see HttpSender). Push
  makes one provider call per message carrying the list of the customer's enabled device
  tokens (providers such as FCM/OneSignal take a list; a per-token fan-out would turn one
  message into several sends with separate outcomes, which the outbox cannot express).

A send ends in an Outcome: SENT, RETRY (transient: 4xx SMTP, connection refused or reset
before the message was handed over, HTTP 408/429/5xx, connect timeouts), FAILED
(permanent: 5xx SMTP, other HTTP 4xx, an invalid address), BOUNCE (SMTP 5xx on RCPT: the
address does not exist; the sender suppresses it) or AMBIGUOUS (the provider may have it:
the connection broke after the whole message was handed over, an HTTP read timeout after
the request went out). AMBIGUOUS is never retried blindly: with an HTTP status API or
idempotency key the sweeper reconciles it, else it becomes `unknown`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import smtplib
from dataclasses import dataclass, field
from email.utils import formatdate, parseaddr
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import requests
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email
from django.template import Context, TemplateSyntaxError
from django.template.base import Template
from django.utils.module_loading import import_string

from campaigns.delivery.render import ENGINE, customer_context, render_creative
from campaigns.models import Campaign, Channel, ChannelKind, Creative
from marketing.errors import BatchInvalid, Conflict, DomainError, RowError
from marketing.models import E164_RE

logger = logging.getLogger(__name__)

SENT, RETRY, FAILED, BOUNCE, AMBIGUOUS = "sent", "retry", "failed", "bounce", "ambiguous"


@dataclass
class Outcome:
    status: str
    provider_id: str = ""
    error: str = ""
    retry_after: float | None = None  # seconds the provider asked us to wait (Retry-After)


@dataclass
class Outgoing:
    """One message, rendered, ready for a backend."""

    message_id: int | None
    campaign_id: int | None
    creative_id: int | None
    recipient: str  # email address, E.164 number, external id (webhook); "" for push
    rendered: Any  # campaigns.delivery.render.Rendered
    context: dict
    tokens: list[str] = field(default_factory=list)  # push: the customer's enabled device tokens
    idempotency_key: str = ""


class SendFailed(DomainError):
    """A test send the provider did not accept."""

    status_code = 502


def idempotency_key(message_id: int) -> str:
    return f"msg-{message_id}"


# --- email ----------------------------------------------------------------------------------

EMAIL_MESSAGE_SETTINGS = ("from_email", "reply_to")
SMTP_SETTINGS = ("host", "port", "username", "password_env", "use_tls", "use_ssl", "timeout")


_LEADING_DOT = re.compile(rb"(?m)^\.")  # dot-stuffing (RFC 5321 4.5.2), as smtplib does


class _HandoverTracking:
    """smtplib.SMTP that knows whether the whole message has been written to the server.

    smtplib.SMTP.data() sends "DATA", reads the 354, sends the message with its final dot,
    then reads the reply. A connection lost before that second send is a failure to send
    (safe to retry); lost after it, the server may have accepted the message (in doubt)."""

    handed_over = False
    _data_sends: int | None = None

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        self.handed_over = False
        self.ehlo_or_helo_if_needed()
        if (
            self.has_extn("pipelining")
            and isinstance(msg, bytes)
            and not any(option.lower() == "smtputf8" for option in mail_options)
        ):
            return self._pipelined_sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)
        return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)

    def _pipelined_sendmail(self, from_addr, to_addrs, msg: bytes, mail_options, rcpt_options) -> dict:
        """smtplib.SMTP.sendmail with RFC 2920 pipelining: MAIL, RCPT and DATA in one write
        and their replies read after, rather than a round trip each (half the system calls
        and wake-ups per message on both ends). The same exceptions for the same replies;
        the message is handed over only after a 354 to DATA with a sender and a recipient
        accepted."""
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        options = [f"size={len(msg)}"] if self.has_extn("size") else []
        options += list(mail_options)
        lines = [f"MAIL FROM:{_envelope_address(from_addr)}{' ' + ' '.join(options) if options else ''}"]
        rcpt_extra = " " + " ".join(rcpt_options) if rcpt_options else ""
        lines += [f"RCPT TO:{_envelope_address(address)}{rcpt_extra}" for address in recipients]
        lines.append("DATA")
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("prohibited newline characters in an SMTP command")
        self.send("".join(f"{line}\r\n" for line in lines))

        mail_code, mail_reply = self.getreply()
        if mail_code == 421:
            self.close()
            raise smtplib.SMTPSenderRefused(mail_code, mail_reply, from_addr)
        refused = {}
        for address in recipients:
            code, reply = self.getreply()
            if code not in (250, 251):
                refused[address] = (code, reply)
            if code == 421:
                self.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        data_code, data_reply = self.getreply()
        if data_code == 421:
            self.close()
            raise smtplib.SMTPDataError(data_code, data_reply)
        nothing_to_send = mail_code != 250 or len(refused) == len(recipients)
        if data_code == 354 and nothing_to_send:
            # A server that answers DATA although it refused the envelope (RFC 2920 says
            # it must not): end an empty message rather than send this one.
            self.send(b".\r\n")
            self.getreply()
        if mail_code != 250:
            self._rset()
            raise smtplib.SMTPSenderRefused(mail_code, mail_reply, from_addr)
        if len(refused) == len(recipients):
            self._rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        if data_code != 354:
            self._rset()
            raise smtplib.SMTPDataError(data_code, data_reply)
        data = _LEADING_DOT.sub(b"..", msg)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        self.send(data + b".\r\n")
        self.handed_over = True  # the whole message is with the server: from here on, in doubt
        code, reply = self.getreply()
        if code != 250:
            if code == 421:
                self.close()
            else:
                self._rset()
            raise smtplib.SMTPDataError(code, reply)
        return refused

    # smtplib quotes every envelope address through email.utils.parseaddr, a full RFC 5322
    # parse that was a tenth of a sender's CPU per message: see _envelope_address.
    def mail(self, sender, options=()):
        if any(option.lower() == "smtputf8" for option in options):
            return super().mail(sender, options)
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("mail", f"FROM:{_envelope_address(sender)}{extra}")
        return self.getreply()

    def rcpt(self, recip, options=()):
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("rcpt", f"TO:{_envelope_address(recip)}{extra}")
        return self.getreply()

    def data(self, msg):
        self._data_sends = 0
        try:
            return super().data(msg)
        finally:
            self._data_sends = None

    def send(self, s):
        super().send(s)
        if self._data_sends is not None:
            self._data_sends += 1
            if self._data_sends == 2:
                self.handed_over = True


def _envelope_address(address: str) -> str:
    """smtplib.quoteaddr(address): "<address>" for a plain one without the parse, the
    (per channel constant) sender's from a cache."""
    if _PLAIN_ADDRESS.match(address):
        return f"<{address}>"
    return _quoted_address(address)


@lru_cache(maxsize=256)
def _quoted_address(address: str) -> str:
    return smtplib.quoteaddr(address)


class TrackedSMTP(_HandoverTracking, smtplib.SMTP):
    pass


class TrackedSMTPSSL(_HandoverTracking, smtplib.SMTP_SSL):
    pass


# An address that Django's sanitize_address (a full RFC 5322 parse, ~100 us) would return
# unchanged: ASCII, no display name, no quoting.
_PLAIN_ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class SMTPBackend(DjangoSMTPBackend):
    """Django's SMTP backend on a connection that tracks the hand-over (see above), with
    the parse of plain addresses and of the (per channel constant) sender skipped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sanitized: dict[tuple[str, str], str] = {}

    @property
    def connection_class(self):
        return TrackedSMTPSSL if self.use_ssl else TrackedSMTP

    def _address(self, address: str, encoding: str) -> str:
        if _PLAIN_ADDRESS.match(address):
            return address
        key = (address, encoding)
        if key not in self._sanitized:
            self._sanitized[key] = sanitize_address(address, encoding)
        return self._sanitized[key]

    def _send(self, email_message):
        # Django's _send, with _address for sanitize_address.
        if not email_message.recipients():
            return False
        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        from_email = self._address(email_message.from_email, encoding)
        recipients = [self._address(address, encoding) for address in email_message.recipients()]
        data = wire_bytes(email_message) or email_message.message().as_bytes(linesep="\r\n")
        try:
            self.connection.sendmail(from_email, recipients, data)
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True


_LINE_LIMIT = 998  # RFC 5322, without the CRLF


def _wire_part(text: str, subtype: str) -> list[bytes] | None:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    encoded = [line.encode() for line in lines]
    if any(len(line) > _LINE_LIMIT for line in encoded):
        return None  # Django's quoted-printable path
    transfer = "7bit" if text.isascii() else "8bit"
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: {transfer}'
    )
    return [head.encode(), b"", *encoded]


def wire_bytes(email: EmailMultiAlternatives) -> bytes | None:
    """The message as Django would send it, written directly for the common case (ASCII
    headers without line breaks, a text body and at most an HTML alternative, no
    attachments, no Cc): the email package's generic MIME tree and header folding cost
    about four times as much. None for anything else (Django's own path then)."""
    alternatives = getattr(email, "alternatives", [])
    if email.attachments or email.cc or email.content_subtype != "plain" or len(alternatives) > 1:
        return None
    if alternatives and alternatives[0][1] != "text/html":
        return None
    extra = dict(email.extra_headers)
    headers = [("Subject", email.subject), ("From", extra.pop("From", email.from_email))]
    headers.append(("To", ", ".join(email.to)))
    if email.reply_to:
        headers.append(("Reply-To", ", ".join(email.reply_to)))
    names = {name.lower() for name in extra}
    if "date" not in names:
        headers.append(("Date", formatdate(localtime=settings.EMAIL_USE_LOCALTIME)))
    if "message-id" not in names:
        return None
    headers += [(name, value) for name, value in extra.items() if name.lower() not in {"to", "cc", "reply-to"}]
    for name, value in headers:
        value = str(value)
        if not value.isascii() or "\n" in value or "\r" in value or len(name) + len(value) + 2 > _LINE_LIMIT:
            return None
    text = _wire_part(email.body, "plain")
    if text is None:
        return None
    head = [f"{name}: {value}".encode() for name, value in headers]
    if not alternatives:
        return b"\r\n".join([text[0], *head, *text[1:]])
    html = _wire_part(str(alternatives[0][0]), "html")
    if html is None:
        return None
    boundary = f"==={secrets.token_hex(12)}=="
    mark = f"--{boundary}".encode()
    lines = [f'Content-Type: multipart/alternative; boundary="{boundary}"'.encode(), b"MIME-Version: 1.0", *head]
    lines += [b"", mark, *text, mark, *html, mark + b"--", b""]
    return b"\r\n".join(lines)


class _Email(EmailMultiAlternatives):
    def message(self, *args, **kwargs):
        message = super().message(*args, **kwargs)
        # A random boundary now, rather than the email package's, which compiles a regular
        # expression per message to check its own random boundary against the text.
        if message.is_multipart() and message.get_boundary() is None:
            message.set_boundary(f"==={secrets.token_hex(12)}==")
        return message


DJANGO_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
TRACKED_SMTP_BACKEND = f"{__name__}.SMTPBackend"


def _env_kwargs(options: dict) -> dict:
    """Backend keyword arguments: "<name>_env" keys become "<name>" with the value of the
    environment variable they name."""
    kwargs = {}
    for key, value in options.items():
        if key.endswith("_env"):
            kwargs[key.removesuffix("_env")] = os.environ.get(str(value), "")
        else:
            kwargs[key] = value
    return kwargs


def email_connection(channel: Channel):
    """A Django email backend instance for the channel (not yet opened)."""
    options = channel.settings or {}
    backend = channel.backend or "default"
    if backend == "default":
        path = settings.EMAIL_BACKEND
        return get_connection(TRACKED_SMTP_BACKEND if path == DJANGO_SMTP_BACKEND else path, fail_silently=False)
    if backend == "smtp":
        password_env = options.get("password_env") or ""
        return get_connection(
            TRACKED_SMTP_BACKEND,
            fail_silently=False,
            host=options["host"],
            port=int(options.get("port") or 25),
            username=options.get("username") or "",
            password=os.environ.get(password_env, "") if password_env else "",
            use_tls=bool(options.get("use_tls", False)),
            use_ssl=bool(options.get("use_ssl", False)),
            timeout=float(options.get("timeout") or settings.EMAIL_TIMEOUT),
        )
    extra = {k: v for k, v in options.items() if k not in EMAIL_MESSAGE_SETTINGS and k != "esp"}
    path = f"anymail.backends.{options['esp']}.EmailBackend" if backend == "anymail" else backend
    return get_connection(path, fail_silently=False, **_env_kwargs(extra))


def _is_disconnect(exc: BaseException) -> bool:
    """A lost or refused connection (smtplib's exceptions are OSErrors too: not those)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _code_outcome(code: int | None, what: str) -> Outcome:
    if code is not None and 500 <= code < 600:
        return Outcome(FAILED, error=what)
    return Outcome(RETRY, error=what)


def _smtp_text(text: Any) -> str:
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def email_outcome(exc: BaseException, handed_over: bool) -> Outcome:
    """What an exception from a Django email backend means for the message."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()), (None, b""))
        what = f"SMTP {code} on RCPT: {_smtp_text(text)}"
        if code is not None and 500 <= code < 600:
            return Outcome(BOUNCE, error=what)
        return Outcome(RETRY, error=what)
    if isinstance(exc, smtplib.SMTPAuthenticationError | smtplib.SMTPConnectError):
        # The channel's configuration or the server, not this message: retry with backoff.
        return Outcome(RETRY, error=f"SMTP {exc.smtp_code}: {_smtp_text(exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        step = "on MAIL FROM" if isinstance(exc, smtplib.SMTPSenderRefused) else "after DATA"
        return _code_outcome(exc.smtp_code, f"SMTP {exc.smtp_code} {step}: {_smtp_text(exc.smtp_error)}")
    if _is_disconnect(exc):
        if handed_over:
            return Outcome(AMBIGUOUS, error=f"connection lost after the message was handed over: {exc}")
        return Outcome(RETRY, error=f"connection failed before the message was handed over: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        return Outcome(RETRY, error=f"SMTP: {exc}")
    try:
        from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
    except ImportError:  # pragma: no cover - anymail is in requirements.txt
        AnymailAPIError = AnymailRecipientsRefused = ()
    if AnymailRecipientsRefused and isinstance(exc, AnymailRecipientsRefused):
        return Outcome(FAILED, error=f"the ESP refused the recipient: {exc}")
    if AnymailAPIError and isinstance(exc, AnymailAPIError):
        cause = exc.__cause__
        if isinstance(cause, requests.RequestException):
            return http_exception_outcome(cause)
        status = getattr(exc, "status_code", None)
        if status is not None:
            return http_status_outcome(status, str(exc), None)
        return Outcome(AMBIGUOUS, error=f"ESP error: {exc}")
    if isinstance(exc, ValueError):  # an address or header Django refuses to encode
        return Outcome(FAILED, error=f"invalid message: {exc}")
    # Anything else from a backend we do not know: it may have been sent.
    return Outcome(AMBIGUOUS, error=f"{type(exc).__name__}: {exc}")


def _message_id_domain(from_email: str) -> str:
    address = parseaddr(from_email)[1]
    return address.rpartition("@")[2] or "localhost"


class EmailSender:
    """Email over one Django email backend connection, opened on the first message."""

    reconcilable = False

    def __init__(self, channel: Channel):
        self.channel = channel
        options = channel.settings or {}
        self.from_email = options.get("from_email") or settings.DEFAULT_FROM_EMAIL
        reply_to = options.get("reply_to") or []
        self.reply_to = [reply_to] if isinstance(reply_to, str) else list(reply_to)
        self.domain = _message_id_domain(self.from_email)
        self.backend = email_connection(channel)

    def message_id_header(self, out: Outgoing) -> str:
        if out.message_id is None:
            return f"<test-{secrets.token_hex(8)}@{self.domain}>"
        return f"<m{out.message_id}.{out.campaign_id}@{self.domain}>"

    def build(self, out: Outgoing) -> EmailMultiAlternatives:
        rendered = out.rendered
        headers = {**rendered.headers, "Message-ID": self.message_id_header(out)}
        email = _Email(
            subject=rendered.subject,
            body=rendered.text,
            from_email=self.from_email,
            to=[out.recipient],
            reply_to=self.reply_to,
            headers=headers,
            connection=self.backend,
        )
        if rendered.html:
            email.attach_alternative(rendered.html, "text/html")
        return email

    def send(self, out: Outgoing) -> Outcome:
        if not _PLAIN_ADDRESS.match(out.recipient):
            try:
                validate_email(out.recipient)
            except ValidationError:
                return Outcome(FAILED, error=f"invalid address: {out.recipient!r}")
        try:
            email = self.build(out)
        except ValueError as exc:
            return Outcome(FAILED, error=f"invalid message: {exc}")
        for attempt in (1, 2):
            try:
                self.backend.open()
            except Exception as exc:  # classified below
                self._drop()
                return email_outcome(exc, handed_over=False)
            connection = getattr(self.backend, "connection", None)
            try:
                self.backend.send_messages([email])
            except Exception as exc:  # classified below
                handed_over = bool(getattr(connection, "handed_over", False))
                if _is_disconnect(exc):
                    self._drop()
                    # A reused connection the server closed while idle: reconnect once.
                    if not handed_over and attempt == 1:
                        continue
                return email_outcome(exc, handed_over)
            status = getattr(email, "anymail_status", None)
            if status is not None:
                return Outcome(SENT, provider_id=status.message_id or email.extra_headers["Message-ID"])
            return Outcome(SENT, provider_id=email.extra_headers["Message-ID"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        try:
            self.backend.close()
        except Exception:  # a broken connection may fail to close; it is gone either way
            if hasattr(self.backend, "connection"):
                self.backend.connection = None

    def close(self) -> None:
        self._drop()


# --- HTTP (SMS, push, webhook) ------------------------------------------------------------

# The default payload per channel kind when Channel.settings has none. A string that is
# exactly one variable ("{{ tokens }}") is replaced by that value itself (a list, an object,
# a number), any other string is a Django template rendered to text.
DEFAULT_PAYLOADS = {
    ChannelKind.SMS: {"to": "{{ recipient }}", "text": "{{ text }}", "reference": "{{ idempotency_key }}"},
    ChannelKind.PUSH: {"tokens": "{{ tokens }}", "title": "{{ subject }}", "body": "{{ text }}"},
    ChannelKind.WEBHOOK: {
        "external_id": "{{ external_id }}",
        "attributes": "{{ attributes }}",
        "campaign_id": "{{ campaign_id }}",
        "message_id": "{{ message_id }}",
        "subject": "{{ subject }}",
        "body": "{{ data }}",
    },
}
HTTP_SETTINGS = (
    "url",
    "method",
    "headers",
    "auth",
    "payload",
    "timeout_s",
    "id_field",
    "idempotency_header",
    "status_url",
)
HTTP_METHODS = ("POST", "PUT", "PATCH")
DEFAULT_TIMEOUT_S = (5.0, 20.0)  # connect, read
_SINGLE_VARIABLE = re.compile(r"^\s*\{\{\s*([A-Za-z_][\w.]*)\s*\}\}\s*$")


@lru_cache(maxsize=1024)
def _payload_template(source: str) -> Template:
    return Template(source, engine=ENGINE)


def _lookup(context: dict, path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render_payload(template: Any, context: dict) -> Any:
    """The JSON payload: `template` with every string rendered from `context`."""
    if isinstance(template, dict):
        return {key: render_payload(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render_payload(value, context) for value in template]
    if isinstance(template, str):
        single = _SINGLE_VARIABLE.match(template)
        if single:
            value = _lookup(context, single.group(1))
            return "" if value is None else value
        return _payload_template(template).render(Context(context, autoescape=False))
    return template


def _timeouts(value: Any) -> tuple[float, float]:
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, int | float):
        return float(value), float(value)
    return float(value[0]), float(value[1])


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def http_status_outcome(status: int, body: str, retry_after: float | None) -> Outcome:
    what = f"HTTP {status}: {body[:300]}"
    if status in (408, 429) or status >= 500:
        return Outcome(RETRY, error=what, retry_after=retry_after)
    return Outcome(FAILED, error=what)


def http_exception_outcome(exc: requests.RequestException) -> Outcome:
    """Whether the request can have reached the provider."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return Outcome(RETRY, error=f"could not connect: {exc}")
    if isinstance(exc, requests.ReadTimeout):
        return Outcome(AMBIGUOUS, error=f"no answer in time after the request was sent: {exc}")
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):  # incl. refused, DNS
            return Outcome(RETRY, error=f"could not connect: {exc}")
        return Outcome(AMBIGUOUS, error=f"connection lost after the request was sent: {exc}")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return Outcome(RETRY, error=f"the channel's URL is not usable: {exc}")
    return Outcome(AMBIGUOUS, error=f"{type(exc).__name__}: {exc}")


@dataclass
class ProviderStatus:
    """What a status API said about a message sent with our idempotency key."""

    status: str  # "sent", "delivered", "failed", "unknown", "absent" (the provider never got it)
    provider_id: str = ""


class HttpSender:
    """JSON over HTTP. Channel.settings:

    url, method ("POST"), headers ({name: value}), auth ({"type": "bearer", "token_env":
    VAR} or {"type": "basic", "username": …, "password_env": VAR}), payload (a JSON
    template; default per kind in DEFAULT_PAYLOADS; context: recipient, subject, text, html,
    tokens, devices, data (a webhook body parsed as JSON when it is JSON), message_id,
    campaign_id, creative_id, idempotency_key, and the customer context: external_id,
    attributes, first_name, …), timeout_s (seconds, or [connect, read]), id_field (where the
    provider's message id is in its JSON answer, dotted: "messages.0.id"),
    idempotency_header (sent with "msg-<message id>"), status_url ("…/{provider_id}" or
    "…?key={idempotency_key}", answering {"status": "sent"|"delivered"|"failed"|"unknown"},
    404 when it never got the message).

    Reconcilable (the sweeper can settle a message in doubt) when status_url can look a
    message up by idempotency key, or when the provider deduplicates by an idempotency
    header (sending again with the same key cannot send twice)."""

    def __init__(self, channel: Channel):
        options = channel.settings or {}
        self.channel = channel
        self.url = options.get("url", "")
        self.method = (options.get("method") or "POST").upper()
        self.payload = options.get("payload") or DEFAULT_PAYLOADS.get(channel.kind, {"text": "{{ text }}"})
        self.timeout = _timeouts(options.get("timeout_s"))
        self.id_field = options.get("id_field") or "id"
        self.idempotency_header = options.get("idempotency_header") or ""
        self.status_url = options.get("status_url") or ""
        self.session = requests.Session()
        self.session.headers.update({str(k): str(v) for k, v in (options.get("headers") or {}).items()})
        auth = options.get("auth") or {}
        if auth.get("type") == "bearer":
            self.session.headers["Authorization"] = f"Bearer {os.environ.get(auth.get('token_env', ''), '')}"
        elif auth.get("type") == "basic":
            self.session.auth = (auth.get("username", ""), os.environ.get(auth.get("password_env", ""), ""))

    @property
    def status_by_key(self) -> bool:
        return "{idempotency_key}" in self.status_url

    @property
    def reconcilable(self) -> bool:
        return self.status_by_key or bool(self.idempotency_header)

    def payload_context(self, out: Outgoing) -> dict:
        rendered = out.rendered
        data: Any = rendered.text
        if self.channel.kind == ChannelKind.WEBHOOK:
            with contextlib.suppress(ValueError):
                data = json.loads(rendered.text)
        return {
            **out.context,
            "recipient": out.recipient,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "tokens": list(out.tokens),
            "data": data,
            "message_id": out.message_id,
            "campaign_id": out.campaign_id,
            "creative_id": out.creative_id,
            "idempotency_key": out.idempotency_key,
        }

    def _provider_id(self, response: requests.Response) -> str:
        try:
            value = _lookup(response.json(), self.id_field)
        except ValueError:
            return ""
        return "" if value is None or isinstance(value, dict | list) else str(value)

    def send(self, out: Outgoing) -> Outcome:
        if self.channel.kind == ChannelKind.PUSH and not out.tokens:
            return Outcome(FAILED, error="the customer has no enabled device")
        try:
            payload = render_payload(self.payload, self.payload_context(out))
        except Exception as exc:  # a template that fails for this message
            return Outcome(FAILED, error=f"payload template: {type(exc).__name__}: {exc}")
        headers = {self.idempotency_header: out.idempotency_key} if self.idempotency_header else {}
        try:
            response = self.session.request(self.method, self.url, json=payload, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            return http_exception_outcome(exc)
        if 200 <= response.status_code < 300:
            return Outcome(SENT, provider_id=self._provider_id(response))
        return http_status_outcome(response.status_code, response.text, _retry_after(response))

    def status(self, message_id: int, provider_id: str = "") -> ProviderStatus | None:
        """Ask the status API about a message; None when it cannot tell now (no API, an
        error, a timeout: ask again at the next sweep)."""
        if not self.status_url or (not provider_id and not self.status_by_key):
            return None
        url = self.status_url.replace("{idempotency_key}", idempotency_key(message_id)).replace(
            "{provider_id}", provider_id
        )
        try:
            response = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            logger.warning("status API of channel %s: %s", self.channel.pk, exc)
            return None
        if response.status_code == 404:
            return ProviderStatus("absent")
        if response.status_code != 200:
            return None
        try:
            answer = response.json()
        except ValueError:
            return None
        status = str(answer.get("status", "unknown")) if isinstance(answer, dict) else "unknown"
        if status not in ("sent", "delivered", "failed", "unknown"):
            status = "unknown"
        return ProviderStatus(status, self._provider_id(response))

    def close(self) -> None:
        self.session.close()


def open_sender(channel: Channel) -> EmailSender | HttpSender:
    if channel.kind == ChannelKind.EMAIL:
        return EmailSender(channel)
    return HttpSender(channel)


# --- validation of Channel.settings -------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _address_error(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be an email address"
    try:
        validate_email(parseaddr(value)[1] or value)
    except ValidationError:
        return f"{value!r} is not an email address"
    return None


def _env_error(value: Any) -> str | None:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        return "must name an environment variable (letters, digits, _), which holds the secret"
    return None


def _http_url_error(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "required: the provider's http(s) URL"
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"{value!r} is not an http(s) URL"
    return None


def _template_errors(value: Any, path: str) -> list[str]:
    if isinstance(value, dict):
        return [error for key, item in value.items() for error in _template_errors(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [error for i, item in enumerate(value) for error in _template_errors(item, f"{path}.{i}")]
    if isinstance(value, str) and not _SINGLE_VARIABLE.match(value):
        try:
            _payload_template(value)
        except TemplateSyntaxError as exc:
            return [f"{path}: {exc}"]
    return []


def _email_settings_errors(backend: str, options: dict) -> list[str]:
    errors = []
    allowed = set(EMAIL_MESSAGE_SETTINGS)
    if "from_email" in options and (error := _address_error(options["from_email"])):
        errors.append(f"settings.from_email: {error}")
    if "reply_to" in options:
        reply_to = options["reply_to"]
        for address in [reply_to] if isinstance(reply_to, str) else reply_to if isinstance(reply_to, list) else [None]:
            if error := _address_error(address):
                errors.append(f"settings.reply_to: {error}")
    if backend == "smtp":
        allowed |= set(SMTP_SETTINGS)
        host = options.get("host")
        if not isinstance(host, str) or not host.strip():
            errors.append("settings.host: required for the smtp backend (the SMTP server's name)")
        port = options.get("port", 25)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            errors.append("settings.port: must be a whole number from 1 to 65535")
        if "username" in options and not isinstance(options["username"], str):
            errors.append("settings.username: must be text")
        if "password_env" in options and (error := _env_error(options["password_env"])):
            errors.append(f"settings.password_env: {error}")
        for flag in ("use_tls", "use_ssl"):
            if flag in options and not isinstance(options[flag], bool):
                errors.append(f"settings.{flag}: must be true or false")
        if options.get("use_tls") is True and options.get("use_ssl") is True:
            errors.append("settings.use_ssl: use_tls (STARTTLS) and use_ssl (implicit TLS) exclude each other")
        timeout = options.get("timeout", 1)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            errors.append("settings.timeout: must be a positive number of seconds")
        elif timeout >= settings.SEND_LEASE_SECONDS:
            errors.append(f"settings.timeout: must be below SEND_LEASE_SECONDS ({settings.SEND_LEASE_SECONDS})")
    elif backend == "anymail":
        esp = options.get("esp")
        if not isinstance(esp, str) or not re.match(r"^[a-z_][a-z0-9_]*$", esp):
            errors.append('settings.esp: required for the anymail backend, e.g. "mailgun", "sendgrid", "postmark"')
        else:
            try:
                import_string(f"anymail.backends.{esp}.EmailBackend")
            except ImportError:
                errors.append(f"settings.esp: django-anymail has no backend {esp!r}")
        allowed = None  # every other key is passed to the ESP backend
    elif backend != "default":
        try:
            import_string(backend)
        except ImportError:
            return [
                f'backend: {backend!r} is not an email backend: use "default", "smtp", "anymail" or the dotted '
                "path of a Django email backend class"
            ]
        allowed = None
    if allowed is not None:
        errors += [
            f"settings.{key}: unknown setting for the {backend} email backend" for key in options.keys() - allowed
        ]
    for key, value in options.items():
        if key.endswith("_env") and key != "password_env" and (error := _env_error(value)):
            errors.append(f"settings.{key}: {error}")
    return errors


def _http_settings_errors(kind: str, options: dict) -> list[str]:
    errors = [f"settings.{key}: unknown setting for the http backend" for key in options.keys() - set(HTTP_SETTINGS)]
    if error := _http_url_error(options.get("url")):
        errors.append(f"settings.url: {error}")
    method = options.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        errors.append(f"settings.method: must be one of {', '.join(HTTP_METHODS)}")
    headers = options.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        errors.append("settings.headers: must be an object of header names to text values")
    auth = options.get("auth")
    if auth is not None:
        if not isinstance(auth, dict) or auth.get("type") not in ("bearer", "basic"):
            errors.append('settings.auth.type: must be "bearer" or "basic"')
        elif auth["type"] == "bearer":
            if error := _env_error(auth.get("token_env")):
                errors.append(f"settings.auth.token_env: {error}")
        else:
            if not isinstance(auth.get("username"), str) or not auth.get("username"):
                errors.append("settings.auth.username: required for basic auth")
            if error := _env_error(auth.get("password_env")):
                errors.append(f"settings.auth.password_env: {error}")
    if "payload" in options:
        if not isinstance(options["payload"], dict):
            errors.append("settings.payload: must be a JSON object (its string values are templates)")
        else:
            errors += _template_errors(options["payload"], "settings.payload")
    if "timeout_s" in options:
        value = options["timeout_s"]
        numbers = value if isinstance(value, list) else [value]
        if (
            len(numbers) not in (1, 2)
            or not all(isinstance(n, int | float) and not isinstance(n, bool) and n > 0 for n in numbers)
            or (isinstance(value, list) and len(value) != 2)
        ):
            errors.append("settings.timeout_s: must be a positive number of seconds or [connect, read]")
        elif sum(numbers if len(numbers) == 2 else numbers * 2) >= settings.SEND_LEASE_SECONDS:
            errors.append(
                f"settings.timeout_s: connect + read must stay below SEND_LEASE_SECONDS ({settings.SEND_LEASE_SECONDS})"
            )
    for key in ("id_field", "idempotency_header"):
        if key in options and (not isinstance(options[key], str) or not options[key].strip()):
            errors.append(f"settings.{key}: must be non-empty text")
    if "status_url" in options:
        status_url = options["status_url"]
        if error := _http_url_error(status_url):
            errors.append(f"settings.status_url: {error}")
        elif "{idempotency_key}" not in status_url and "{provider_id}" not in status_url:
            errors.append("settings.status_url: must contain {idempotency_key} or {provider_id}")
    if kind == ChannelKind.EMAIL:
        errors.insert(0, 'backend: email channels use "default", "smtp", "anymail" or an email backend path')
    return errors


def channel_settings_errors(kind: str, backend: str, settings: Any) -> list[str]:
    """Every problem of a channel's backend and settings, each "<field>: <why>" (the field
    as "backend" or "settings.<key>"); empty when the channel can send."""
    if kind not in ChannelKind.values:
        return [f"kind: must be one of {', '.join(ChannelKind.values)}"]
    if not isinstance(settings, dict):
        return ["settings: must be a JSON object"]
    if kind == ChannelKind.EMAIL:
        if backend == "http":
            return ['backend: email channels use "default", "smtp", "anymail" or an email backend path, not "http"']
        return _email_settings_errors(backend or "default", settings)
    if backend != "http":
        return [f'backend: {kind} channels use the "http" backend']
    return _http_settings_errors(kind, settings)


# --- "send a test to me" ----------------------------------------------------------------------


def _test_channel(creative: Creative) -> Channel:
    campaign: Campaign = creative.campaign
    policy = campaign.channel_policy or {}
    candidates = Channel.objects.filter(kind=creative.channel_kind, enabled=True).order_by("id")
    preferred = policy.get("channel") if isinstance(policy, dict) else None
    if preferred is not None:
        channel = candidates.filter(pk=preferred).first()
        if channel is not None:
            return channel
    channel = candidates.first()
    if channel is None:
        raise Conflict(f"There is no enabled {creative.channel_kind} channel to send the test through.")
    return channel


def _test_recipient(kind: str, to: str) -> str:
    to = (to or "").strip()
    if kind == ChannelKind.EMAIL:
        try:
            validate_email(to)
        except ValidationError:
            raise BatchInvalid([RowError(row=None, field="to", message=f"{to!r} is not an email address")]) from None
    elif kind == ChannelKind.SMS and not re.match(E164_RE, to):
        raise BatchInvalid(
            [RowError(row=None, field="to", message=f"{to!r} is not an E.164 number, e.g. +14155550123")]
        )
    elif kind == ChannelKind.PUSH and not to:
        raise BatchInvalid([RowError(row=None, field="to", message="a device token is required")])
    return to


def send_test(creative: Creative, to: str) -> dict:
    """Send the creative, rendered for a sample customer at `to`, through the first enabled
    channel of its kind (the campaign's fixed channel when it names one). No Message row,
    no touchpoint, no tracking. Returns {"creative_id", "to", "channel_id", "provider_id"};
    raises BatchInvalid for a bad `to`, Conflict without a channel, SendFailed (502) when
    the provider does not take it."""
    to = _test_recipient(creative.channel_kind, to)
    channel = _test_channel(creative)
    customer = {
        "external_id": "test",
        "first_name": "Test",
        "email": to if creative.channel_kind == ChannelKind.EMAIL else "",
        "phone": to if creative.channel_kind == ChannelKind.SMS else "",
        "attributes": {},
    }
    context = customer_context(customer, campaign=creative.campaign, message_id=None)
    rendered = render_creative(creative, context)
    if rendered.subject and creative.channel_kind == ChannelKind.EMAIL:
        rendered = dataclasses.replace(rendered, subject=f"[Test] {rendered.subject}")
    out = Outgoing(
        message_id=None,
        campaign_id=creative.campaign_id,
        creative_id=creative.pk,
        recipient=to if creative.channel_kind != ChannelKind.WEBHOOK else "test",
        rendered=rendered,
        context=context,
        tokens=[to] if creative.channel_kind == ChannelKind.PUSH else [],
        idempotency_key=f"test-{secrets.token_hex(8)}",
    )
    sender = open_sender(channel)
    try:
        outcome = sender.send(out)
    finally:
        sender.close()
    if outcome.status != SENT:
        raise SendFailed(f"The {channel.name} channel did not send the test: {outcome.error}")
    return {"creative_id": creative.pk, "to": to, "channel_id": channel.pk, "provider_id": outcome.provider_id}
