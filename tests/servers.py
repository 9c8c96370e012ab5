"""Real server processes for tests: uvicorn instances of the app on loopback ports."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx

from tests.apps import ADMIN_TOKEN
from tests.databases import ROOT, pooler_settings

STARTUP_SECONDS = 90
"""Import, lifespan (the balance listener waits up to 10 s) and first answer: seconds on an
idle machine, but a machine whose cores are shared with other test runs was seen taking
over 30 s."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill_hard(self) -> None:
        """`kill -9`: no shutdown hooks, no lifespan exit."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def start_server(
    database_url: str,
    port: int | None = None,
    *,
    uvicorn_args: Sequence[str] = (),
    **env: str,
) -> ServerProcess:
    """`uvicorn app.main:app` on `port` (a free one by default); `uvicorn_args` are added
    to its command."""
    port = port or free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
        **{key.upper(): value for key, value in pooler_settings(database_url).items()},
        **env,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *uvicorn_args,
        ],
        cwd=ROOT,
        env=environment,
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return ServerProcess(process, port)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start within {STARTUP_SECONDS} s")


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.contextmanager
def running_servers(
    database_url: str, count: int, *, uvicorn_args: Sequence[str] = (), **env: str
) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            servers.append(start_server(database_url, uvicorn_args=uvicorn_args, **env))
        yield servers
    finally:
        for server in servers:
            stop_server(server)
