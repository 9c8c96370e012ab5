"""A stand-in for Claude's Messages API, close enough for the real `anthropic` SDK.

A real HTTP server on loopback (Starlette under uvicorn, in a thread of its own). What it
does is chosen per request by markers anywhere in the request (page content, context or
image URL), so concurrent tests never interfere:

* `fake:status=429` / `500` / `529`: answer with that error, every time (the SDK retries);
* `fake:sleep=<seconds>`: answer only after that long (client timeouts);
* `fake:latency=<seconds>`: answer normally after that long;
* `fake:long`: an output longer than its kind allows, every time;
* `fake:long-once=<tag>`: too long the first time for `<tag>`, fine afterwards;
* `fake:badjson` / `fake:wrongtype`: schema output that is not JSON / of another `@type`.

In URLs, write the marker with dashes: `https://img.example/fake-status-500/cat.jpg`.

Rate-limit mode (`FakeAnthropic(max_concurrent=N)` or `fake.limit_concurrency(N)`): at
most N requests are answered at once; one more is refused at once with a 429 carrying
`retry-after`, `retry-after-ms` and the `anthropic-ratelimit-requests-*` headers, which
every answer then carries too (`remaining` = free places, `reset` = when one frees).
Only tests and benchmarks start it; the service never imports anything from `tests/`.
"""

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MARKER = re.compile(
    r"fake[:-](status|sleep|latency|long-once|long|badjson|wrongtype)(?:[=-]([\w.]+))?"
)

ERROR_TYPES = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}

TEXTS = {
    "meta title": "Handmade Oak Dining Tables | Vermont Woodworks",
    "meta description": (
        "Solid oak dining tables built by hand in Vermont. Choose your size and finish, "
        "and get free delivery across New England."
    ),
    "alt text": "Image of a red barn in a snowy field at dawn",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _schema_document(schema_type: str) -> dict[str, Any]:
    document: dict[str, Any] = {"@context": "https://schema.org", "@type": schema_type}
    if schema_type == "Article":
        document["headline"] = "How we build our oak tables"
    elif schema_type == "FAQPage":
        document["mainEntity"] = [
            {
                "@type": "Question",
                "name": "How long does delivery take?",
                "acceptedAnswer": {"@type": "Answer", "text": "Two to three weeks."},
            }
        ]
    else:
        document["name"] = "Vermont Woodworks"
    return document


class FakeAnthropic:
    def __init__(
        self, *, latency: float = 0.0, port: int | None = None, max_concurrent: int | None = None
    ) -> None:
        self.latency = latency
        """Seconds every answer waits (the benchmark's 200 ms per call)."""
        self.port = port or _free_port()
        self.calls: list[dict[str, Any]] = []
        """Every request body received, in order."""
        self.call_times: list[float] = []
        """`time.monotonic()` when each of `calls` arrived."""
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.peak_in_flight = 0
        self.rejected = 0
        """Requests refused with 429 by the rate-limit mode."""
        self._once: Counter[str] = Counter()
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/fake/stats", self._stats, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeAnthropic":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake Anthropic server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def calls_mentioning(self, text: str) -> list[dict[str, Any]]:
        with self._lock:
            return [call for call in self.calls if text in json.dumps(call)]

    async def _messages(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.calls.append(body)
            self.call_times.append(time.monotonic())
        if self.max_concurrent is not None:
            return await self._rate_limited_messages(body)
        return await self._answer(body)

    async def _answer(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        raw = json.dumps(body)
        markers = {name: value for name, value in MARKER.findall(raw)}
        delay = self.latency + float(markers.get("latency") or 0)
        if "sleep" in markers:
            delay += float(markers["sleep"])
        if delay:
            await asyncio.sleep(delay)
        if "status" in markers:
            status = int(markers["status"])
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": "fake"},
                },
                status_code=status,
                # Fast SDK retries in tests; the service passes `retry-after` on to clients.
                headers={"retry-after-ms": "5", "retry-after": "7"},
            )
        return JSONResponse(self._message(body, markers), headers=headers)

    # --- rate-limit mode ---

    def limit_concurrency(self, max_concurrent: int | None) -> None:
        with self._lock:
            self.max_concurrent = max_concurrent
            self.rejected = 0
            self.peak_in_flight = 0

    async def _stats(self, _request: Request) -> JSONResponse:
        """What it saw, for benchmarks that run it in a process of its own."""
        with self._lock:
            return JSONResponse(
                {
                    "calls": len(self.calls),
                    "rejected": self.rejected,
                    "peak_in_flight": self.peak_in_flight,
                }
            )

    def calls_since(self, moment: float, text: str) -> int:
        """Requests mentioning `text` that arrived after `time.monotonic()` was `moment`."""
        with self._lock:
            pairs = list(zip(self.call_times, self.calls, strict=True))
        return sum(1 for at, call in pairs if at > moment and text in json.dumps(call))

    def _rate_limit_headers(self, remaining: int) -> dict[str, str]:
        reset = datetime.now(UTC) + timedelta(seconds=max(self.latency, 0.05))
        return {
            "anthropic-ratelimit-requests-limit": str(self.max_concurrent),
            "anthropic-ratelimit-requests-remaining": str(max(0, remaining)),
            "anthropic-ratelimit-requests-reset": reset.isoformat().replace("+00:00", "Z"),
        }

    async def _rate_limited_messages(self, body: dict[str, Any]) -> Any:
        limit = self.max_concurrent or 0
        with self._lock:
            admitted = self.in_flight < limit
            if admitted:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                remaining = limit - self.in_flight
            else:
                self.rejected += 1
                remaining = 0
        if not admitted:
            headers = self._rate_limit_headers(remaining)
            retry_ms = max(50, round(self.latency * 1000))
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "fake: too many at once"},
                },
                status_code=429,
                headers={
                    **headers,
                    "retry-after-ms": str(retry_ms),
                    "retry-after": str(max(1, -(-retry_ms // 1000))),
                },
            )
        try:
            answer = await self._answer(body)
        finally:
            with self._lock:
                self.in_flight -= 1
                remaining = limit - self.in_flight
        # The headers say how things stand as this answer leaves.
        answer.headers.update(self._rate_limit_headers(remaining))
        return answer

    def _too_long(self, markers: dict[str, str]) -> bool:
        if "long" in markers:
            return True
        tag = markers.get("long-once")
        if tag is None:
            return False
        with self._lock:
            self._once[tag] += 1
            return self._once[tag] == 1

    def _message(self, body: dict[str, Any], markers: dict[str, str]) -> dict[str, Any]:
        output_format = (body.get("output_config") or {}).get("format")
        if output_format is not None:
            schema_type = output_format["schema"]["properties"]["@type"]["enum"][0]
            if "badjson" in markers:
                text = '{"@context": "https://schema.org", "@type": '
            elif "wrongtype" in markers:
                text = json.dumps(_schema_document("Thing"))
            else:
                document = _schema_document(schema_type)
                if self._too_long(markers):
                    document["description"] = "x" * 30_000
                text = json.dumps(document)
        else:
            system = str(body.get("system", "")).lower()
            kind = next((k for k in TEXTS if k in system), "meta title")
            text = TEXTS[kind]
            if self._too_long(markers):
                text = (text + " ") * 8
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10 + len(json.dumps(body)) // 4, "output_tokens": 12},
        }


def main() -> None:
    """`python -m tests.fakes.anthropic_server --port 8765 --latency 0.2`: run it alone."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--max-concurrent", type=int, default=None)
    args = parser.parse_args()
    fake = FakeAnthropic(latency=args.latency, port=args.port, max_concurrent=args.max_concurrent)
    fake.start()
    print(f"fake Anthropic API on {fake.url}", flush=True)
    try:
        fake._thread.join()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
