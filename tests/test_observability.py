"""Metrics, request ids, redacted JSON logs, and readiness that follows the database."""

import json
import logging
import re

from app.observability import JsonFormatter
from tests.apps import app_client
from tests.conftest import ADMIN, adjust, funded_account, make_settings, new_account


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_metrics_count_requests_credits_and_open_holds(client):
    account = await new_account(client)
    before = (await client.get("/metrics")).text
    assert (await adjust(client, account, 123)).status_code == 201
    await client.get("/v1/balance", headers=account.auth)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    granted = ("rankframe_credits_total", {"movement": "granted", "type": "adjustment"})
    assert metric(after, granted[0], **granted[1]) - metric(before, granted[0], **granted[1]) == 123
    requests = {"method": "GET", "route": "/v1/balance", "status": "200"}
    assert metric(after, "rankframe_http_requests_total", **requests) >= 1
    assert "rankframe_open_holds " in after
    assert "rankframe_http_request_duration_seconds_bucket" in after


async def test_a_refused_adjustment_counts_no_credits(client):
    account = await funded_account(client, 5)
    before = (await client.get("/metrics")).text
    assert (await adjust(client, account, -50)).status_code == 409
    after = (await client.get("/metrics")).text
    taken = {"movement": "taken", "type": "adjustment"}
    assert metric(after, "rankframe_credits_total", **taken) == metric(
        before, "rankframe_credits_total", **taken
    )


async def test_request_id_is_echoed_or_made(client):
    given = await client.get("/healthz", headers={"X-Request-ID": "plugin-req-42"})
    assert given.headers["x-request-id"] == "plugin-req-42"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])


def test_json_log_lines_redact_keys_and_tokens():
    record = logging.makeLogRecord(
        {
            "name": "app.test",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "used rfk_0123456789abcdef_SECRETsecret and Bearer abc.def and whsec_c2VjcmV0",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert "SECRETsecret" not in line["message"]
    assert "abc.def" not in line["message"]
    assert "c2VjcmV0" not in line["message"]
    assert line["message"].startswith("used rfk_0123456789abcdef_***")
    assert {"ts", "level", "logger", "request_id", "account_id"} <= line.keys()


async def test_access_log_names_the_account(client, caplog):
    account = await new_account(client)
    with caplog.at_level(logging.INFO, logger="app.access"):
        await client.get("/v1/me", headers=account.auth)
    access = [r for r in caplog.records if r.name == "app.access" and r.path == "/v1/me"]
    assert access and access[-1].account_id == str(account.id)
    assert access[-1].status == 200


async def test_readyz_fails_without_a_database_and_healthz_does_not(database, tmp_path):
    settings = make_settings(
        database, database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db"
    )
    async with app_client(settings, base_url="http://t", raise_app_exceptions=False) as c:
        ready = await c.get("/readyz")
        live = await c.get("/healthz")
        admin = await c.get(
            "/v1/admin/accounts/00000000-0000-0000-0000-000000000000", headers=ADMIN
        )
    assert ready.status_code == 503
    assert ready.json()["code"] == "database_unavailable"
    assert live.status_code == 200
    # Any other request: a 503 to retry, never a 500.
    assert admin.status_code == 503
    assert admin.json()["code"] == "database_unavailable"
    assert admin.headers["retry-after"] == "5"


async def test_metrics_count_generations_by_kind_and_outcome(client):
    account = await funded_account(client, 3)
    site = await client.post(
        "/v1/sites", json={"framer_project_id": "metrics-site", "name": "m"}, headers=account.auth
    )
    before = (await client.get("/metrics")).text
    response = await client.post(
        "/v1/generations",
        json={
            "kind": "meta_title",
            "site_id": site.json()["id"],
            "input": {"page_title": "Oak tables", "page_content": "Solid oak tables."},
        },
        headers=account.auth,
    )
    assert response.status_code == 201, response.text
    after = (await client.get("/metrics")).text
    succeeded = {"kind": "meta_title", "outcome": "succeeded"}
    assert (
        metric(after, "rankframe_generations_total", **succeeded)
        - metric(before, "rankframe_generations_total", **succeeded)
        == 1
    )
    consumed = {"movement": "consumed", "type": "consumption"}
    assert (
        metric(after, "rankframe_credits_total", **consumed)
        - metric(before, "rankframe_credits_total", **consumed)
        == 1
    )
    assert "rankframe_provider_call_duration_seconds_count" in after
