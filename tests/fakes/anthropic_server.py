"""A stand-in for Claude's Messages API, close enough for the real `anthropic` SDK.

A real HTTP server on loopback (Starlette under uvicorn, in a thread of its own). What it
does is chosen per request by markers anywhere in the request (page content, context or
image URL), so concurrent tests never interfere:

* `fake:status=429` / `500` / `529`: answer with that error, every time (the SDK retries);
* `fake:sleep=<seconds>`: answer only after that long (client timeouts);
* `fake:latency=<seconds>`: answer normally after that long;
* `fake:long`: an output longer than its kind allows, every time;
* `fake:long-once=<tag>`: too long the first time for `<tag>`, fine afterwards;
* `fake:badjson` / `fake:wrongtype`: schema output that is not JSON / of another `@type`;
* `fake:novariant`: an image URL with `scale-down-to` cannot be fetched (400), the
  original can;
* `fake:expire`: in a message batch, the request expires;
* `fake:batchdelay=<seconds>` in any request of a message batch: it ends after that long
  (else after `batch_processing_seconds`);
* `fake-size-<W>x<H>` in an image URL: the image's size in pixels (else `register_image`,
  else 1000 x 1000).

In URLs, write the marker with dashes: `https://img.example/fake-status-500/cat.jpg`.

Rate-limit mode (`FakeAnthropic(max_concurrent=N)` or `fake.limit_concurrency(N)`): at
most N requests are answered at once; one more is refused at once with a 429 carrying
`retry-after`, `retry-after-ms` and the `anthropic-ratelimit-requests-*` headers, which
every answer then carries too (`remaining` = free places, `reset` = when one frees).

Tokens are counted the way Anthropic documents them (see "Token counting" below): text by
length (the newer tokenizer of Haiku 5.5 counts 30% more), images by width x height / 750
after the variant's downscale and the API's own. Haiku 5.5 thinks unless told not to, and
its thinking tokens are output tokens. The Message Batches API (create, retrieve, results
as JSONL, cancel) runs the same requests after `batch_processing_seconds`.
Only tests and benchmarks start it; the service never imports anything from `tests/`.
"""

import asyncio
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MARKER = re.compile(
    r"fake[:-](status|sleep|latency|long-once|long|badjson|wrongtype|novariant|expire|batchdelay)"
    r"(?:[=-]([\w.]+))?"
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
        self.image_sizes: dict[str, tuple[int, int]] = {}
        """Registered image sizes (width, height), by URL without its query."""
        self.usage: list[dict[str, Any]] = []
        """Per answered request: model, input and output tokens, image URLs, `batch` or not."""
        self.batch_processing_seconds = 0.5
        self.batches: dict[str, dict[str, Any]] = {}
        """Message batches received, by id: `requests`, `created_at`, `cancel_initiated_at`."""
        app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/fake/stats", self._stats, methods=["GET"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/v1/messages/batches", self._create_batch, methods=["POST"]),
                Route("/v1/messages/batches/{batch_id}", self._retrieve_batch, methods=["GET"]),
                Route(
                    "/v1/messages/batches/{batch_id}/results",
                    self._batch_results,
                    methods=["GET"],
                ),
                Route(
                    "/v1/messages/batches/{batch_id}/cancel", self._cancel_batch, methods=["POST"]
                ),
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
        arrived = time.monotonic()
        body = await request.json()
        with self._lock:
            self.calls.append(body)
            self.call_times.append(arrived)
        if self.max_concurrent is not None:
            return await self._rate_limited_messages(body, arrived)
        return await self._answer(body, arrived)

    async def _answer(
        self, body: dict[str, Any], arrived: float, headers: dict[str, str] | None = None
    ) -> Any:
        """The answer leaves `latency` (plus any marker's delay) after the request arrived:
        the stand-in's own work counts inside it, as a model's does in its latency."""
        raw = json.dumps(body)
        markers = {name: value for name, value in MARKER.findall(raw)}
        delay = self.latency + float(markers.get("latency") or 0)
        if "sleep" in markers:
            delay += float(markers["sleep"])
        answer, message = self._respond(body, markers, headers)
        wait = arrived + delay - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if message is not None:
            self._record_usage(body, message, batch=False)
        return answer

    def _respond(
        self, body: dict[str, Any], markers: dict[str, str], headers: dict[str, str] | None
    ) -> tuple[JSONResponse, dict[str, Any] | None]:
        """The response to send, and the message in it (None for an error)."""
        refused = self._refusal(body)
        if refused is not None:
            return _error(400, "invalid_request_error", refused), None
        if "status" in markers:
            status = int(markers["status"])
            error = JSONResponse(
                {
                    "type": "error",
                    "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": "fake"},
                },
                status_code=status,
                # Fast SDK retries in tests; the service passes `retry-after` on to clients.
                headers={"retry-after-ms": "5", "retry-after": "7"},
            )
            return error, None
        message = self._message(body, markers)
        return JSONResponse(message, headers=headers), message

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

    async def _rate_limited_messages(self, body: dict[str, Any], arrived: float) -> Any:
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
            answer = await self._answer(body, arrived)
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
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        thinking = thinking_tokens(body)
        if thinking:
            content.insert(0, {"type": "thinking", "thinking": "…", "signature": "fake"})
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens(body),
                "output_tokens": text_tokens(body["model"], text) + thinking,
            },
        }

    # --- token counting ---

    def register_image(self, url: str, width: int, height: int) -> None:
        """Tell the stand-in the size of the image at `url` (its query is ignored)."""
        self.image_sizes[_without_query(url)] = (width, height)

    def image_size(self, url: str) -> tuple[int, int]:
        """The pixels the model sees: the original's size, after `scale-down-to` (long side,
        never upscaled) and the API's own downscale."""
        found = SIZE_MARKER.search(url)
        if found:
            width, height = int(found.group(1)), int(found.group(2))
        else:
            width, height = self.image_sizes.get(_without_query(url), DEFAULT_IMAGE_SIZE)
        query = dict(parse_qsl(urlsplit(url).query))
        if query.get("scale-down-to", "").isdigit():
            width, height = _fit_long_side(width, height, int(query["scale-down-to"]))
        return api_downscale(width, height)

    def input_tokens(self, body: dict[str, Any]) -> int:
        """Input tokens of a request: system prompt, text blocks, the output format's JSON
        schema (sent to the model as instructions), and images."""
        model = body["model"]
        texts = [_system_text(body.get("system"))]
        images = 0
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            for block in content or []:
                if block.get("type") == "text":
                    texts.append(block["text"])
                elif block.get("type") == "image":
                    width, height = self.image_size(block["source"].get("url", ""))
                    images += image_tokens(width, height)
        output_format = (body.get("output_config") or {}).get("format")
        if output_format is not None:
            texts.append(json.dumps(output_format["schema"]))
        return MESSAGE_OVERHEAD_TOKENS + text_tokens(model, "\n".join(texts)) + images

    def _record_usage(self, body: dict[str, Any], message: dict[str, Any], *, batch: bool) -> None:
        images = [
            block["source"].get("url")
            for m in body.get("messages", [])
            for block in (m.get("content") if isinstance(m.get("content"), list) else [])
            if block.get("type") == "image"
        ]
        with self._lock:
            self.usage.append(
                {
                    "model": body["model"],
                    "input_tokens": message["usage"]["input_tokens"],
                    "output_tokens": message["usage"]["output_tokens"],
                    "images": images,
                    "batch": batch,
                    "text": json.dumps(body),
                }
            )

    def usage_mentioning(self, text: str) -> list[dict[str, Any]]:
        with self._lock:
            return [u for u in self.usage if text in u["text"]]

    def _refusal(self, body: dict[str, Any]) -> str | None:
        """What the real API answers 400 to, per model (Haiku 5.5's migration guide)."""
        model = body.get("model", "")
        if any(url and "fake-novariant" in url and "scale-down-to" in url for url in _urls(body)):
            return "Unable to download the image from the URL provided."
        if model.startswith(ADAPTIVE_MODELS):
            thinking = body.get("thinking") or {}
            if thinking.get("type") == "enabled":
                return "thinking.type 'enabled' is not supported on this model; use 'adaptive'"
            for sampling in ("temperature", "top_p", "top_k"):
                if sampling in body:
                    return f"{sampling} is not supported on this model"
        elif (body.get("output_config") or {}).get("effort") is not None:
            return "effort is not supported on this model"
        return None

    async def _count_tokens(self, request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"input_tokens": self.input_tokens(body)})

    # --- the Message Batches API ---

    async def _create_batch(self, request: Request) -> JSONResponse:
        body = await request.json()
        requests = body["requests"]
        custom_ids = [r["custom_id"] for r in requests]
        if len(set(custom_ids)) != len(custom_ids):
            return _error(400, "invalid_request_error", "custom_id values must be unique")
        batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
        now = time.time()
        delays = [float(v) for name, v in MARKER.findall(json.dumps(body)) if name == "batchdelay"]
        with self._lock:
            self.batches[batch_id] = {
                "id": batch_id,
                "requests": requests,
                "created_at": now,
                "ends_at": now + max(delays, default=self.batch_processing_seconds),
                "cancel_initiated_at": None,
                "results": None,
            }
        return JSONResponse(self._batch_json(batch_id, str(request.base_url)))

    async def _retrieve_batch(self, request: Request) -> JSONResponse:
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.batches:
            return _error(404, "not_found_error", "no such batch")
        return JSONResponse(self._batch_json(batch_id, str(request.base_url)))

    async def _cancel_batch(self, request: Request) -> JSONResponse:
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.batches:
            return _error(404, "not_found_error", "no such batch")
        with self._lock:
            batch = self.batches[batch_id]
            if batch["results"] is None and time.time() < batch["ends_at"]:
                batch["cancel_initiated_at"] = time.time()
        return JSONResponse(self._batch_json(batch_id, str(request.base_url)))

    async def _batch_results(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.batches:
            return _error(404, "not_found_error", "no such batch")
        results = self._ended_results(batch_id)
        if results is None:
            return _error(400, "invalid_request_error", "the batch is still processing")
        lines = "".join(json.dumps(line) + "\n" for line in results)
        return Response(lines, media_type="application/binary")

    def _ended_results(self, batch_id: str) -> list[dict[str, Any]] | None:
        """The batch's results once it ended (computed once), else None."""
        with self._lock:
            batch = self.batches[batch_id]
            if batch["results"] is not None:
                return list(batch["results"])
            canceled = batch["cancel_initiated_at"] is not None
            if not canceled and time.time() < batch["ends_at"]:
                return None
        results = [self._batch_result(r, canceled=canceled) for r in batch["requests"]]
        with self._lock:
            if batch["results"] is None:
                batch["results"] = results
                batch["ended_at"] = time.time()
            return list(batch["results"])

    def _batch_result(self, item: dict[str, Any], *, canceled: bool) -> dict[str, Any]:
        params = item["params"]
        markers = {name: value for name, value in MARKER.findall(json.dumps(params))}
        custom_id = item["custom_id"]
        if canceled:
            return {"custom_id": custom_id, "result": {"type": "canceled"}}
        if "expire" in markers:
            return {"custom_id": custom_id, "result": {"type": "expired"}}
        refused = self._refusal(params)
        if refused is not None or "status" in markers:
            status = 400 if refused is not None else int(markers["status"])
            error_type = (
                "invalid_request_error" if refused else ERROR_TYPES.get(status, "api_error")
            )
            return {
                "custom_id": custom_id,
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": error_type, "message": refused or "fake"},
                    },
                },
            }
        message = self._message(params, markers)
        self._record_usage(params, message, batch=True)
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}

    def _batch_json(self, batch_id: str, base_url: str) -> dict[str, Any]:
        results = self._ended_results(batch_id)
        with self._lock:
            batch = self.batches[batch_id]
            total = len(batch["requests"])
            counts = {
                "processing": total,
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            }
            status = "in_progress"
            if results is not None:
                status = "ended"
                counts["processing"] = 0
                for line in results:
                    counts[line["result"]["type"]] += 1
            elif batch["cancel_initiated_at"] is not None:
                status = "canceling"

            def stamp(seconds: float | None) -> str | None:
                if seconds is None:
                    return None
                return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")

            return {
                "id": batch_id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": counts,
                "created_at": stamp(batch["created_at"]),
                "expires_at": stamp(batch["created_at"] + 86_400),
                "ended_at": stamp(batch.get("ended_at")),
                "cancel_initiated_at": stamp(batch["cancel_initiated_at"]),
                "archived_at": None,
                "results_url": (
                    f"{base_url.rstrip('/')}/v1/messages/batches/{batch_id}/results"
                    if results is not None
                    else None
                ),
            }

    def batch_requests_mentioning(self, text: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                r for b in self.batches.values() for r in b["requests"] if text in json.dumps(r)
            ]


# --- Token counting, as Anthropic documents it ---

ADAPTIVE_MODELS = ("claude-haiku-5-5",)
"""Models that think by default (adaptive thinking, effort medium)."""
NEW_TOKENIZER_MODELS = ("claude-haiku-5-5",)
CHARS_PER_TOKEN = 4.0
"""Haiku 4.5's tokenizer: about 4 characters of English per token."""
NEW_TOKENIZER_FACTOR = 1.3
"""The newer tokenizer counts about 30% more tokens for the same text."""
MESSAGE_OVERHEAD_TOKENS = 8
THINKING_TOKENS_BY_EFFORT = {"low": 120, "medium": 400, "high": 1200}
"""Thinking tokens a short answer costs when thinking is left on (output tokens)."""
DEFAULT_IMAGE_SIZE = (1000, 1000)
SIZE_MARKER = re.compile(r"fake-size-(\d+)x(\d+)")
API_MAX_LONG_SIDE = 1568
API_MAX_IMAGE_TOKENS = 1600


def text_tokens(model: str, text: str) -> int:
    tokens = len(text) / CHARS_PER_TOKEN
    if model.startswith(NEW_TOKENIZER_MODELS):
        tokens *= NEW_TOKENIZER_FACTOR
    return math.ceil(tokens)


def image_tokens(width: int, height: int) -> int:
    """Anthropic: tokens = width x height / 750."""
    return math.ceil(width * height / 750)


def _fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    longest = max(width, height)
    if longest <= long_side:
        return width, height
    scale = long_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def api_downscale(width: int, height: int) -> tuple[int, int]:
    """Images over 1568 px on the long side, or over ~1,600 tokens, are scaled down by the
    API (aspect ratio kept) before the model sees them."""
    width, height = _fit_long_side(width, height, API_MAX_LONG_SIDE)
    if width * height / 750 > API_MAX_IMAGE_TOKENS:
        scale = math.sqrt(API_MAX_IMAGE_TOKENS * 750 / (width * height))
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    return width, height


def thinking_tokens(body: dict[str, Any]) -> int:
    if not body["model"].startswith(ADAPTIVE_MODELS):
        return 0
    if (body.get("thinking") or {}).get("type") == "disabled":
        return 0
    effort = (body.get("output_config") or {}).get("effort") or "medium"
    return THINKING_TOKENS_BY_EFFORT.get(effort, 400)


def _system_text(system: Any) -> str:
    if isinstance(system, list):
        return "\n".join(block.get("text", "") for block in system)
    return str(system or "")


def _urls(body: dict[str, Any]) -> list[str]:
    return [
        block["source"].get("url", "")
        for m in body.get("messages", [])
        for block in (m.get("content") if isinstance(m.get("content"), list) else [])
        if block.get("type") == "image"
    ]


def _without_query(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": error_type, "message": message}}, status_code=status
    )


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
