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
    def __init__(self, *, latency: float = 0.0, port: int | None = None) -> None:
        self.latency = latency
        """Seconds every answer waits (the benchmark's 200 ms per call)."""
        self.port = port or _free_port()
        self.calls: list[dict[str, Any]] = []
        """Every request body received, in order."""
        self._once: Counter[str] = Counter()
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
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
        return JSONResponse(self._message(body, markers))

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
    args = parser.parse_args()
    fake = FakeAnthropic(latency=args.latency, port=args.port)
    fake.start()
    print(f"fake Anthropic API on {fake.url}", flush=True)
    try:
        fake._thread.join()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
