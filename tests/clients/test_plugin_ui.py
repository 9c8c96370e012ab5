"""The plugin's credits UI in a real browser: `clients/plugin-ui` built to static files,
served by a plain static server, driven by playwright-core on Debian's Chromium against the
service on PostgreSQL and the stand-in Polar (whose checkout page pays for real: a signed
`order.paid` to the service). The browser tests themselves are `clients/plugin-ui/tests/`."""

import contextlib
import http.server
import os
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.clients.live import (
    CLIENTS,
    LiveService,
    assert_all_passed,
    npm,
    running_live_service,
    static_site,
)
from tests.fakes.loopback import serving
from tests.polar_webhooks import delivery, subscription
from tests.servers import start_server, stop_server

UI = CLIENTS / "plugin-ui"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def lapse_subscription(service: LiveService, account_id: str) -> None:
    """Polar revokes the account's subscription (a signed `subscription.revoked`)."""
    now = datetime.now(UTC)
    body, headers = delivery(
        "subscription.revoked",
        subscription(
            subscription_id=str(uuid.uuid4()),
            account_id=account_id,
            status="canceled",
            modified_at=now.isoformat(),
            current_period_end=(now - timedelta(days=1)).isoformat(),
        ),
    )
    answer = httpx.post(f"{service.url}/v1/webhooks/polar", content=body, headers=headers)
    assert answer.status_code == 202, answer.text


@contextlib.contextmanager
def control_server(service: LiveService) -> Iterator[str]:
    """What a browser test cannot do from inside the browser: stop or start the service,
    make the stand-in Polar fail."""

    class Control(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            value = urllib.parse.parse_qs(url.query).get("value", [""])[0]
            if url.path == "/stop":
                service.crash()
            elif url.path == "/start":
                service.restart()
            elif url.path == "/polar-mode" and value in ("ok", "error", "timeout"):
                service.polar.mode = value  # type: ignore[assignment]
            elif url.path == "/lapse":
                lapse_subscription(service, value)
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(204)
            self.end_headers()

    with serving(Control) as url:
        yield url


def test_plugin_ui_in_chromium(postgres_database):
    assert os.path.exists(CHROMIUM), "Chromium is required (scripts/setup-clients.sh installs it)"
    build = npm("plugin-ui", "run", "build")
    assert build.returncode == 0, build.stdout + build.stderr
    with (
        running_live_service(postgres_database.url, webhook_instance=True) as service,
        static_site(UI / "dist") as ui_url,
        control_server(service) as control_url,
    ):
        sign_in = start_server(
            postgres_database.url, **{**service.env, "PLUGIN_AUTHORIZE_URL": f"{ui_url}/authorize"}
        )
        env = {
            **service.node_env(),
            "SIGNIN_API_URL": sign_in.url,
            "PLUGIN_UI_URL": ui_url,
            "CONTROL_URL": control_url,
            "CHROMIUM_PATH": CHROMIUM,
        }
        try:
            run = npm("plugin-ui", "test", env=env, timeout=600)
        finally:
            stop_server(sign_in)
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-10000:] + run.stderr[-4000:]
    assert_all_passed(run.stdout, at_least=14)
