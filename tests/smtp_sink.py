"""A real SMTP server for tests: aiosmtpd on a free port of 127.0.0.1, recording what it
accepts, and told per recipient how to misbehave.

    with SmtpSink() as sink:
        sink.refuse["gone@example.com"] = "550 5.1.1 User unknown"   # on RCPT
        sink.defer["busy@example.com"] = 1       # the first DATA answered 451, then accepted
        sink.drop_after_data.add("lost@example.com")  # stored, then the connection dropped
        sink.defer_share(0.3, addresses)          # 451 once for a deterministic 30% of them
        ... send to ("127.0.0.1", sink.port) ...
        sink.recipients()                        # every accepted recipient, in order

A message counts as received when its DATA is complete (before `delay`, so a client killed
while waiting for the answer has still handed it over: the sink shows what a real server
would have delivered).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.controller import Controller

# aiosmtpd logs every SMTP command at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes
    at: float  # time.monotonic() when DATA completed

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.sink.lock:
            refusal = self.sink.refuse.get(address.lower())
            self.sink.rcpt_attempts[address.lower()] = self.sink.rcpt_attempts.get(address.lower(), 0) + 1
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        recipients = [address.lower() for address in envelope.rcpt_tos]
        with self.sink.lock:
            for address in recipients:
                self.sink.data_attempts[address] = self.sink.data_attempts.get(address, 0) + 1
            deferred = [a for a in recipients if self.sink.defer.get(a, 0) >= self.sink.data_attempts[a]]
            if deferred:
                return "451 4.3.0 Temporary failure, try again later"
            rejected = [a for a in recipients if a in self.sink.reject_data]
            if rejected:
                return "554 5.6.0 Message content rejected"
            self.sink.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, 0.0))
            self.sink.received[-1].at = time.monotonic()
            drop = any(a in self.sink.drop_after_data for a in recipients)
        if self.sink.on_message is not None:
            # In a thread of its own: the hook may use the database, which Django refuses
            # to do from the server's event loop.
            await asyncio.get_running_loop().run_in_executor(None, self.sink.on_message, self.sink.received[-1])
        if drop:
            server.transport.abort()  # stored, but the client never hears so
            return "250 OK"
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        return "250 2.0.0 OK"


class SmtpSink:
    def __init__(self, *, delay: float = 0.0):
        self.delay = delay  # seconds between receiving a message and answering 250
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.refuse: dict[str, str] = {}  # address -> RCPT answer, e.g. "550 5.1.1 User unknown"
        self.defer: dict[str, int] = {}  # address -> how many DATA attempts get 451 first
        self.reject_data: set[str] = set()  # addresses whose DATA gets 554
        self.drop_after_data: set[str] = set()
        self.rcpt_attempts: dict[str, int] = {}
        # Called (in the server's thread) with each message received, e.g. to pause a
        # campaign in the middle of its sending.
        self.on_message: Callable[[Received], None] | None = None
        self.data_attempts: dict[str, int] = {}
        self.port = free_port()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def defer_share(self, share: float, addresses, times: int = 1) -> list[str]:
        """Answer 451 `times` times for a deterministic `share` of `addresses` (by hash);
        returns the chosen ones."""
        chosen = [
            a.lower()
            for a in addresses
            if int(hashlib.sha256(a.lower().encode()).hexdigest()[:8], 16) % 1000 < share * 1000
        ]
        for address in chosen:
            self.defer[address] = times
        return chosen

    def recipients(self) -> list[str]:
        with self.lock:
            return [address.lower() for received in self.received for address in received.recipients]

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def by_recipient(self) -> dict[str, Received]:
        with self.lock:
            return {address.lower(): r for r in self.received for address in r.recipients}

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return True
            time.sleep(0.02)
        return self.count() >= n

    def channel_settings(self, **extra) -> dict:
        """Channel.settings of an "smtp" channel that sends here."""
        return {"host": "127.0.0.1", "port": self.port, "timeout": 5, **extra}
