"""Schemathesis against a live server: no 5xx, every response as the document says."""

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.servers import running_servers

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failures(postgres_database, capsys):
    with running_servers(postgres_database.url, 1) as (server,):
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        created = httpx.post(
            f"{server.url}/v1/admin/accounts", json={"email": "fuzz@example.com"}, headers=admin
        )
        assert created.status_code == 201, created.text
        body = created.json()
        account_id, key = body["account"]["id"], body["api_key"]["key"]
        funded = httpx.post(
            f"{server.url}/v1/admin/accounts/{account_id}/adjustments",
            json={"amount": 100_000, "reason": "fuzzing budget"},
            headers={**admin, "Idempotency-Key": "fuzz-funding"},
        )
        assert funded.status_code == 201, funded.text
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--no-color",
            ],
            env={**os.environ, "RF_ACCOUNT_KEY": key, "RF_ADMIN_TOKEN": ADMIN_TOKEN},
            capture_output=True,
            text=True,
            timeout=900,
        )
    with capsys.disabled():
        print("\n--- schemathesis run summary ---")
        print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
