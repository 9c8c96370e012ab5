"""The service the client tests run against, the way the plugin meets it: uvicorn processes
on PostgreSQL, CORS open to localhost, payments wired to the stand-in Polar (whose checkout
page sends the signed `order.paid` back to the service), generations through the stand-in
Claude API. Node and the browser reach it over loopback like any other client."""

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.apps import ADMIN_TOKEN
from tests.databases import ROOT
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.loopback import serving
from tests.fakes.polar_server import FakePolar, running_fake_polar
from tests.payments.conftest import PRODUCTS
from tests.polar_webhooks import SECRET
from tests.servers import ServerProcess, start_server, stop_server

CLIENTS = ROOT / "clients"
PRICES = {PRODUCTS["first_time"]: 4900, PRODUCTS["refill"]: 10_000, PRODUCTS["small"]: 1000}


@dataclass
class LiveService:
    server: ServerProcess
    polar: FakePolar
    anthropic: FakeAnthropic
    database_url: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def crash(self) -> None:
        """The service goes away at once (`kill -9`): streams drop, connections are refused."""
        self.server.kill_hard()

    def restart(self) -> None:
        """Start the service again on the same port (after `crash`)."""
        self.server = start_server(self.database_url, self.server.port, **self.env)

    def node_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CREDITS_API_URL": self.url,
            "CREDITS_ADMIN_TOKEN": ADMIN_TOKEN,
            "POLAR_URL": self.polar.url,
        }


def service_env(polar: FakePolar, anthropic: FakeAnthropic, **overrides: str) -> dict[str, str]:
    return {
        "CORS_ALLOW_LOCALHOST": "true",
        "POLAR_ACCESS_TOKEN": "polar_oat_clients",
        "POLAR_SERVER_URL": polar.url,
        "POLAR_WEBHOOK_SECRET": SECRET,
        "POLAR_PRODUCT_FIRST_TIME": PRODUCTS["first_time"],
        "POLAR_PRODUCT_REFILL": PRODUCTS["refill"],
        "POLAR_PRODUCT_SMALL": PRODUCTS["small"],
        "ANTHROPIC_API_KEY": "sk-ant-clients",
        "ANTHROPIC_BASE_URL": anthropic.url,
        "ANTHROPIC_MAX_RETRIES": "0",
        "STARTER_CREDITS": "500",
        "DB_POOL_SIZE": "3",
        "GENERATION_CONCURRENCY": "2",
        "BATCH_POLL_INTERVAL_SECONDS": "0.2",
        "BATCH_EVENTS_INTERVAL_SECONDS": "0.1",
        "SSE_PING_INTERVAL_SECONDS": "2",
        "BALANCE_HEARTBEAT_SECONDS": "2",
        "RATE_LIMIT_PURCHASES_PER_MINUTE": "10000",
        "RATE_LIMIT_PURCHASES_BURST": "10000",
        **overrides,
    }


@contextlib.contextmanager
def running_live_service(
    database_url: str, *, webhook_instance: bool = False, **overrides: str
) -> Iterator[LiveService]:
    """The service; with `webhook_instance`, Polar's webhooks go to a second instance on the
    same database, so what the plugin sees of a purchase crossed instances (as behind a
    load balancer)."""
    anthropic = FakeAnthropic().start()
    try:
        with running_fake_polar() as polar:
            polar.product_prices = dict(PRICES)
            env = service_env(polar, anthropic, **overrides)
            server = start_server(database_url, **env)
            service = LiveService(server, polar, anthropic, database_url, env)
            other = start_server(database_url, **env) if webhook_instance else None
            polar.webhook_url = f"{(other or server).url}/v1/webhooks/polar"
            try:
                yield service
            finally:
                stop_server(service.server)
                if other is not None:
                    stop_server(other)
    finally:
        anthropic.stop()


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """Serve built static files the way any static host would (the plugin's `dist/`)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    with serving(functools.partial(Quiet, directory=str(directory))) as url:
        yield url


def new_account_key(service_url: str, email: str) -> str:
    """A new account (no credits yet) and its API key."""
    created = httpx.post(
        f"{service_url}/v1/admin/accounts",
        json={"email": email},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"]["key"])


def node_test_summary(output: str) -> dict[str, int]:
    """The closing counts of `node --test` (`# tests 11`, `# pass 11`, ...)."""
    counts = dict(
        re.findall(r"^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$", output, re.M)
    )
    return {name: int(value) for name, value in counts.items()}


def assert_all_passed(output: str, at_least: int) -> None:
    summary = node_test_summary(output)
    assert summary.get("tests", 0) >= at_least, summary
    assert summary["pass"] == summary["tests"], summary
    assert summary["fail"] == summary["cancelled"] == summary["skipped"] == summary["todo"] == 0


def npm(package: str, *args: str, timeout: int = 600, env: dict[str, str] | None = None):
    npm_bin = shutil.which("npm")
    assert npm_bin, "npm is required for the client tests (scripts/setup-clients.sh)"
    cwd = CLIENTS / package
    assert (cwd / "node_modules").is_dir(), f"run scripts/setup-clients.sh ({package})"
    return subprocess.run(
        [npm_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
