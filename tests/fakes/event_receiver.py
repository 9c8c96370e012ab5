"""A stand-in for RankFrame's backend receiving our outbound events: a loopback HTTP server
that verifies every delivery with the `standardwebhooks` library (the receiver's side of
the protocol), records what it got, and can be told to fail the first N attempts or to
answer 503 / hang for good."""

import json
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fakes.loopback import serving_fake

SECRET = "whsec_" + "cmFua2ZyYW1lLWV2ZW50cy10ZXN0LXNlY3JldC0wMQ=="
Mode = Literal["ok", "fail", "hang", "redirect"]


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    body: dict[str, Any]
    answered: int


@dataclass
class FakeReceiver:
    secret: str = SECRET
    url: str = ""
    mode: Mode = "ok"
    fail_first: int = 0
    """Answer 500 to this many verified attempts before accepting."""
    hang_seconds: float = 30.0
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    """Why deliveries that did not verify were refused."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.mode = "ok"
            self.fail_first = 0
            self.received.clear()
            self.rejected.clear()

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def of_account(self, account_id: object) -> list[Received]:
        """What arrived for the account, in the order the events were recorded (a
        dispatcher sends a round's events at once, so they may arrive in any order)."""
        with self.lock:
            found = [r for r in self.received if r.body["data"]["account_id"] == str(account_id)]
        return sorted(found, key=lambda r: r.body["timestamp"])


def _handler(fake: FakeReceiver) -> type[BaseHTTPRequestHandler]:
    verifier = Webhook(fake.secret)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = verifier.verify(raw, headers)
            except WebhookVerificationError as exc:
                with fake.lock:
                    fake.rejected.append(str(exc))
                self._answer(400)
                return
            with fake.lock:
                mode = fake.mode
                if mode == "ok" and fake.fail_first > 0:
                    fake.fail_first -= 1
                    status = 500
                elif mode == "ok":
                    status = 204
                elif mode == "redirect":
                    status = 307
                else:
                    status = 503
                fake.received.append(
                    Received(headers["webhook-id"], headers["webhook-timestamp"], body, status)
                )
            if mode == "hang":
                time.sleep(fake.hang_seconds)
            self._answer(status)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            if status == 307:
                self.send_header("location", fake.url + "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

    return Handler


def running_receiver() -> AbstractContextManager[FakeReceiver]:
    return serving_fake(FakeReceiver(), _handler, "/rankframe/events")


def event_types(received: list[Received]) -> list[str]:
    return [r.body["type"] for r in received]


def dumps(value: Any) -> str:
    return json.dumps(value)
