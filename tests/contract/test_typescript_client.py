"""The TypeScript client the plugin uses: generated from the committed document, type-checked,
and run against a live server the way the plugin would use it."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, ROOT
from tests.fakes.polar_server import running_fake_polar
from tests.payments.conftest import PRODUCTS
from tests.servers import running_servers

CLIENT = ROOT / "clients" / "typescript"


def npm(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    npm_bin = shutil.which("npm")
    assert npm_bin, "npm is required for the TypeScript client tests (scripts/setup.sh)"
    assert (CLIENT / "node_modules").is_dir(), "run scripts/setup.sh (npm ci) first"
    return subprocess.run(
        [npm_bin, *args], cwd=CLIENT, capture_output=True, text=True, timeout=timeout
    )


def test_generated_types_match_the_committed_document(tmp_path: Path):
    generated = tmp_path / "schema.d.ts"
    result = npm(
        "exec",
        "--",
        "openapi-typescript",
        str(ROOT / "openapi" / "openapi.json"),
        "-o",
        str(generated),
    )
    assert result.returncode == 0, result.stderr
    assert generated.read_text() == (CLIENT / "src" / "schema.d.ts").read_text(), (
        "clients/typescript/src/schema.d.ts is stale: run `npm run generate` there"
    )


def test_plugin_program_type_checks_and_runs_against_a_live_server(postgres_database):
    check = npm("run", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    build = npm("run", "build")
    assert build.returncode == 0, build.stdout + build.stderr

    with (
        running_fake_polar() as polar,
        running_servers(
            postgres_database.url,
            1,
            POLAR_ACCESS_TOKEN="polar_oat_ts",
            POLAR_SERVER_URL=polar.url,
            POLAR_PRODUCT_FIRST_TIME=PRODUCTS["first_time"],
            POLAR_PRODUCT_REFILL=PRODUCTS["refill"],
            POLAR_PRODUCT_SMALL=PRODUCTS["small"],
            STARTER_CREDITS="500",
        ) as (server,),
    ):
        created = httpx.post(
            f"{server.url}/v1/admin/accounts",
            json={"email": "plugin-flow@example.com"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert created.status_code == 201, created.text
        key = created.json()["api_key"]["key"]
        run = subprocess.run(
            ["node", "dist/plugin-flow.js", server.url, key],
            cwd=CLIENT,
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ},
        )
    assert run.returncode == 0, run.stdout + run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["before"] == 0
    assert seen["funded"] == 500  # the starter credits of the first site
    assert seen["after"] == 496  # one meta title and three alt texts
    assert seen["display"] == "496 Credits"
    assert seen["intent"] == "open"
    assert seen["batch"] == "completed"
    assert seen["events"][-1] == "done"
    # The current state on connect, then one per item still to finish.
    assert 1 <= seen["events"].count("progress") <= 4
