"""Email sending over SMTP pipelining (RFC 2920), which Postfix and most relays offer: the
sender writes MAIL, RCPT and DATA at once and reads their replies after. Every email case
of tests/test_send.py (EmailSendTests: exactly-once delivery with its headers and `sent`
touchpoint, suppressions, 4xx retried with backoff, 5xx failed once, a RCPT 550 a hard
bounce, a connection lost after DATA left `unknown`, a refused connection retried, pause
and resume, quiet hours…) runs again here against the aiosmtpd sink advertising
PIPELINING, so the pipelined path answers every server reply exactly as the one-command-
at-a-time path does.
"""

from __future__ import annotations

from aiosmtpd.controller import Controller

import tests.test_send as base
from campaigns.delivery.backends import open_sender
from campaigns.delivery.send import send_due
from campaigns.models import Message
from tests.smtp_sink import SmtpSink, _Handler


class _PipeliningHandler(_Handler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname  # what aiosmtpd does itself when there is no EHLO hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class PipeliningSink(SmtpSink):
    """The test sink, advertising PIPELINING (aiosmtpd reads pipelined commands in order)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.controller = Controller(_PipeliningHandler(self), hostname="127.0.0.1", port=self.port)


class PipelinedEmailSendTests(base.EmailSendTests):
    @classmethod
    def setUpClass(cls):
        super(base.SinkMixin, cls).setUpClass()
        cls.sink = PipeliningSink().start()
        cls.addClassCleanup(cls.sink.stop)

    def test_the_sender_pipelines_when_the_server_offers_it(self):
        base.queue(self.campaign, self.run, self.channel, self.creative, [base.make_customer(1)])
        sender = open_sender(self.channel)
        self.addCleanup(sender.close)
        sender.backend.open()
        sender.backend.connection.ehlo()
        self.assertTrue(sender.backend.connection.has_extn("pipelining"))
        self.assertEqual(send_due(now=base.T0), {"claimed": 1, "sent": 1})
        self.assertEqual(self.sink.recipients(), ["c1@example.com"])
        self.assertEqual(list(Message.objects.values_list("status", flat=True)), ["sent"])

    def test_a_message_with_a_leading_dot_line_arrives_as_written(self):
        creative = base.make_creative(self.campaign, name="dots", body="line one\n.\n..two\nend")
        base.queue(self.campaign, self.run, self.channel, creative, [base.make_customer(2)])
        self.assertEqual(send_due(now=base.T0), {"claimed": 1, "sent": 1})
        [received] = self.sink.received
        self.assertEqual(received.message.get_content().splitlines()[:4], ["line one", ".", "..two", "end"])
