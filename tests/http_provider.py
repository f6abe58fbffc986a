"""A real HTTP provider for tests (SMS, push, webhook): a threaded http.server on a free port
of 127.0.0.1 that records every request, delivers JSON messages, deduplicates by an
idempotency key, answers a status endpoint, and misbehaves on request.

    with HttpProvider() as provider:
        provider.plan["+15550100001"] = [429, 500]        # two transient answers, then 200
        provider.plan["+15550100002"] = [400]             # a permanent one
        provider.plan["+15550100003"] = [("slow", 3.0)]   # delivered, answer only after 3 s
        ... POST provider.url("/sms") with {"to": "+1555…", …} ...
        provider.delivered   # every distinct message delivered (a replayed key is not one)

Who a request is for ("who", the key of `plan`): the payload's "to", else "external_id",
else its tokens joined with ",". A planned status is answered without delivering; ("slow",
s) delivers, then waits s seconds before answering (a client that times out has handed it
over). A delivered answer is 200 {"id": "prov-<n>", "status": "queued"}; a request whose
Idempotency-Key was delivered before gets the same answer again and delivers nothing.
GET /status/<key> answers {"status": "sent", "id": …} for a delivered key, else 404
(status_of[key] overrides the status).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):
        pass

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        provider = self.server.provider
        provider._record(self, None)
        if not self.path.startswith("/status/"):
            return self._answer(404, {"error": "not found"})
        key = self.path.removeprefix("/status/")
        with provider.lock:
            answer = provider.by_key.get(key) or provider.by_id.get(key)
            status = provider.status_of.get(key)
        if answer is None and status is None:
            return self._answer(404, {"error": "unknown message"})
        return self._answer(200, {"status": status or "sent", "id": answer["id"] if answer else ""})

    def do_POST(self):
        provider = self.server.provider
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        provider._record(self, body)
        key = self.headers.get(provider.idempotency_header, "")
        who = provider.who(body)
        with provider.lock:
            if key and key in provider.by_key:
                provider.replays.append(key)
                return self._answer(200, provider.by_key[key])
            actions = provider.plan.get(who)
            action = actions.pop(0) if actions else None
        if isinstance(action, int):
            headers = {"Retry-After": str(provider.retry_after)} if action == 429 and provider.retry_after else {}
            return self._answer(action, {"error": f"planned {action}"}, headers)
        with provider.lock:
            answer = {"id": f"prov-{len(provider.delivered) + 1}", "status": "queued"}
            provider.delivered.append({"id": answer["id"], "key": key, "who": who, "path": self.path, "body": body})
            if key:
                provider.by_key[key] = answer
            provider.by_id[answer["id"]] = answer
        if isinstance(action, tuple) and action[0] == "slow":
            time.sleep(action[1])
        return self._answer(200, answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    provider: HttpProvider

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that timed out on purpose (a "slow" plan) hung up before the answer
        super().handle_error(request, client_address)


class HttpProvider:
    def __init__(self, idempotency_header: str = "Idempotency-Key"):
        self.idempotency_header = idempotency_header
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.delivered: list[dict] = []
        self.replays: list[str] = []
        self.by_key: dict[str, dict] = {}
        self.by_id: dict[str, dict] = {}
        self.plan: dict[str, list] = {}
        self.status_of: dict[str, str] = {}
        self.retry_after = 0
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.provider = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HttpProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpProvider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str = "/send") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @staticmethod
    def who(body: Any) -> str:
        if not isinstance(body, dict):
            return ""
        if body.get("to"):
            return str(body["to"])
        if body.get("external_id"):
            return str(body["external_id"])
        tokens = body.get("tokens")
        return ",".join(map(str, tokens)) if isinstance(tokens, list) else ""

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self.lock:
            self.requests.append(
                Request(handler.command, handler.path, dict(handler.headers.items()), body, time.monotonic())
            )

    def posts(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]
