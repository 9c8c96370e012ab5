"""Schemathesis against a live server: no 5xx, every response as the document says."""

import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, ROOT
from tests.fakes.event_receiver import SECRET as EVENTS_SECRET
from tests.fakes.polar_server import running_fake_polar
from tests.payments.conftest import PRODUCTS
from tests.polar_webhooks import SECRET
from tests.servers import running_servers

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = os.environ.get("SCHEMATHESIS_SEED", "89269574852231459400483100215802135323")
"""Pinned so CI is reproducible; every run adds one random seed too, printed in the log
(rerun it with SCHEMATHESIS_SEED=<seed>)."""

CORE_OPERATIONS = [
    ("POST", "/v1/sites"),
    ("GET", "/v1/sites/{site_id}"),
    ("POST", "/v1/generations"),
    ("GET", "/v1/generations/{generation_id}"),
    ("POST", "/v1/generation-batches"),
    ("GET", "/v1/generation-batches/{batch_id}"),
    ("GET", "/v1/generation-batches/{batch_id}/events"),
    ("POST", "/v1/generation-batches/{batch_id}/cancel"),
    ("POST", "/v1/purchase-intents"),
    ("GET", "/v1/purchase-intents/{intent_id}"),
    ("POST", "/v1/admin/accounts/{account_id}/adjustments"),
]
"""Each must answer 2xx at least once in every run, or the fuzzing did not reach it."""


def read_calls(log: Path) -> list[Any]:
    """The hooks' log: method, path, status, seconds, phase, problem code of each call."""
    return [json.loads(line) for line in log.read_text().splitlines()]


def counts_by_operation(log: Path) -> dict[tuple[str, str], Counter[str]]:
    """Per operation: answers by status class, and `seconds` spent waiting for them."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for method, path, status, elapsed, _, _ in read_calls(log):
        counts[(method, path)][f"{status // 100}xx"] += 1
        if status >= 500:
            counts[(method, path)][str(status)] += 1
        counts[(method, path)]["seconds"] += elapsed
    return counts


def answers(log: Path, operation: tuple[str, str]) -> str:
    """What one operation answered, by phase, status and problem code, most frequent first:
    for a core operation that never answered 2xx, where the fuzzing stopped."""
    seen: Counter[str] = Counter()
    for method, path, status, _, phase, code in read_calls(log):
        if (method, path) == operation:
            seen[f"{phase} {status} {code or ''}".rstrip()] += 1
    return ", ".join(f"{count} x {answer}" for answer, count in seen.most_common())


def table(counts: dict[tuple[str, str], Counter[str]]) -> str:
    lines = [f"{'operation':<58} {'2xx':>5} {'4xx':>5} {'5xx':>5} {'seconds':>8}"]
    for (method, path), by_class in sorted(counts.items(), key=lambda item: item[0][1]):
        lines.append(
            f"{method + ' ' + path:<58} {by_class['2xx']:>5} {by_class['4xx']:>5} "
            f"{by_class['5xx']:>5} {by_class['seconds']:>8.1f}"
        )
    return "\n".join(lines)


def setup_accounts(url: str) -> dict[str, str]:
    """The account the fuzzer acts as (funded, with one site) and one for admin calls."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = httpx.post(
        f"{url}/v1/admin/accounts", json={"email": "fuzz@example.com"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    account_id, key = body["account"]["id"], body["api_key"]["key"]
    funded = httpx.post(
        f"{url}/v1/admin/accounts/{account_id}/adjustments",
        json={"amount": 10_000_000, "reason": "fuzzing budget"},
        headers={**admin, "Idempotency-Key": "fuzz-funding"},
    )
    assert funded.status_code == 201, funded.text
    site = httpx.post(
        f"{url}/v1/sites",
        json={"framer_project_id": "fuzz-project", "name": "Fuzz"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert site.status_code == 201, site.text
    other = httpx.post(
        f"{url}/v1/admin/accounts", json={"email": "support@example.com"}, headers=admin
    )
    assert other.status_code == 201, other.text
    return {
        "RF_ACCOUNT_KEY": key,
        "RF_ADMIN_TOKEN": ADMIN_TOKEN,
        "RF_ACCOUNT_ID": account_id,
        "RF_KEY_ID": body["api_key"]["id"],
        "RF_SITE_ID": site.json()["id"],
        "RF_ADMIN_ACCOUNT_ID": other.json()["account"]["id"],
    }


def run_schemathesis(
    url: str, seed: str, phases: str, env: dict[str, str], log: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--no-color",
            "--seed",
            seed,
            "--phases",
            phases,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
            "RF_CALLS_LOG": str(log),
            "RF_HOOKS_SEED": seed,
        },
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_schemathesis_reaches_the_core_and_finds_no_failures(postgres_database, capsys, tmp_path):
    """Every operation, with payments wired to the stand-in Polar API (so purchase intents
    are really created) and the webhook secret set (so unsigned deliveries are refused);
    resources created during the run are used by later calls (tests/contract/hooks.py)."""
    random_seed = str(random.SystemRandom().getrandbits(128))
    results = []
    with (
        running_fake_polar() as polar,
        running_servers(
            postgres_database.url,
            1,
            POLAR_ACCESS_TOKEN="polar_oat_fuzz",
            POLAR_SERVER_URL=polar.url,
            POLAR_WEBHOOK_SECRET=SECRET,
            POLAR_PRODUCT_FIRST_TIME=PRODUCTS["first_time"],
            POLAR_PRODUCT_REFILL=PRODUCTS["refill"],
            POLAR_PRODUCT_SMALL=PRODUCTS["small"],
            RATE_LIMIT_PURCHASES_PER_MINUTE="100000",
            RATE_LIMIT_PURCHASES_BURST="100000",
            RATE_LIMIT_GENERATIONS_PER_MINUTE="100000",
            RATE_LIMIT_GENERATIONS_BURST="100000",
            # Plugin sign-in and outbound events configured, so their operations answer
            # as in production (events go to a closed port: every attempt fails, retried).
            PLUGIN_AUTHORIZE_URL="https://dashboard.rankframe.test/plugin/authorize",
            EVENTS_WEBHOOK_URL="http://127.0.0.1:9/events",
            EVENTS_WEBHOOK_SECRET=EVENTS_SECRET,
        ) as (server,),
    ):
        env = setup_accounts(server.url)
        # Both runs take every phase: a random-seed run of only fuzzing and stateful never
        # got a 2xx from the generation operations (twice), while full runs always did.
        all_phases = "examples,coverage,fuzzing,stateful"
        runs = (("pinned", SEED, all_phases), ("random", random_seed, all_phases))
        for label, seed, phases in runs:
            log = tmp_path / f"calls-{label}.jsonl"
            log.touch()
            result = run_schemathesis(server.url, seed, phases, env, log)
            results.append((label, seed, result, log))
    problems = []
    for label, seed, result, log in results:
        counts = counts_by_operation(log)
        with capsys.disabled():
            print(f"\n--- schemathesis, {label} seed {seed} (SCHEMATHESIS_SEED={seed}) ---")
            print(result.stdout[-3000:])
            print(table(counts))
        if result.returncode != 0 and label == "pinned":
            problems.append(
                f"{label} seed {seed}:\n{result.stdout[-20000:]}{result.stderr[-5000:]}"
            )
        elif result.returncode != 0:
            # The random seed explores: its conformance findings are printed above with the
            # seed to replay them, and gate nothing (CI must not fail by chance); a server
            # error gates on every seed.
            # (`502 generation_failed` of a generation is documented, see schemathesis.toml.)
            crashed = [
                f"{m} {p}: {c['5xx']} x 5xx"
                for (m, p), c in counts.items()
                if c["5xx"] - (c["502"] if (m, p) == ("POST", "/v1/generations") else 0)
            ]
            if crashed:
                problems.append(f"{label} seed {seed}: server errors: {', '.join(crashed)}")
        never = [
            f"{m} {p} ({answers(log, (m, p)) or 'never called'})"
            for m, p in CORE_OPERATIONS
            if counts[(m, p)]["2xx"] == 0
        ]
        if never:
            problems.append(f"{label} seed {seed}: never answered 2xx: {'; '.join(never)}")
    assert not problems, "\n".join(problems)
