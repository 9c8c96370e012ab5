"""Stand-in HTTP servers on loopback ports, served from a thread for as long as a test
needs them (the stand-in Polar, the outbound events' receiver, the plugin's static
files), and the fixture shape the stand-ins share: one server a session, reset around
every test."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol, TypeVar


class Fake(Protocol):
    url: str

    def reset(self) -> None: ...


F = TypeVar("F", bound=Fake)


@contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port for `handler`; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving_fake(
    fake: F, handler: Callable[[F], type[BaseHTTPRequestHandler]], path: str = ""
) -> Iterator[F]:
    """Serve `handler(fake)`, `fake.url` its address (+ `path`)."""
    with serving(handler(fake)) as url:
        fake.url = url + path
        yield fake


def reset_around(fake: F) -> Iterator[F]:
    """A function fixture's body: the session's `fake`, with nothing left from other tests
    before and nothing left for them after."""
    fake.reset()
    yield fake
    fake.reset()
