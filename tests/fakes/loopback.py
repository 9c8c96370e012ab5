"""Stand-in HTTP servers on loopback ports, served from a thread for as long as a test
needs them (the stand-in Polar and the outbound events' receiver), and the fixture shape
they share: one server a session, reset around every test."""

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
def serving(
    fake: F, handler: Callable[[F], type[BaseHTTPRequestHandler]], path: str = ""
) -> Iterator[F]:
    """Serve `handler(fake)` on a free loopback port, `fake.url` its address (+ `path`);
    shut down at exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def reset_around(fake: F) -> Iterator[F]:
    """A function fixture's body: the session's `fake`, with nothing left from other tests
    before and nothing left for them after."""
    fake.reset()
    yield fake
    fake.reset()
