"""Benchmark: a batch of 500 meta titles at concurrency 8 against a stand-in Claude that
takes 200 ms per call. Ideal: 500 / 8 x 0.2 s = 12.5 s; the target is within 15 % of it.

    .venv/bin/python -m bench.generation_batch                      # a fresh SQLite file
    .venv/bin/python -m bench.generation_batch --database-url postgresql+asyncpg://...

It runs the real thing: the stand-in API and the service each in a process of their own
(uvicorn), the service on a freshly migrated database, the clock from the batch's `POST`
to its `done` event. Prints the elapsed time, the ideal and the overhead.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import httpx

from tests.conftest import ADMIN, run_alembic
from tests.servers import free_port, start_server, stop_server

ITEMS = 500
CONCURRENCY = 8
LATENCY = 0.2


def start_fake(latency: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.anthropic_server", "--port", str(port),
         "--latency", str(latency)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the stand-in Anthropic API did not start")


def run(database_url: str) -> float:
    asyncio.run(run_alembic(database_url, ("upgrade", "head")))
    fake, fake_port = start_fake(LATENCY)
    server = start_server(
        database_url,
        ANTHROPIC_API_KEY="sk-ant-bench",
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{fake_port}",
        GENERATION_CONCURRENCY=str(CONCURRENCY),
        BATCH_EVENTS_INTERVAL_SECONDS="0.2",
        STARTER_CREDITS="0",
    )
    try:
        return asyncio.run(measure(server.url))
    finally:
        stop_server(server)
        fake.terminate()
        fake.wait()


async def measure(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        created = await client.post(
            "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@bench.example"},
            headers=ADMIN,
        )  # fmt: skip
        account = created.json()
        auth = {"Authorization": f"Bearer {account['api_key']['key']}"}
        site = await client.post(
            "/v1/sites", json={"framer_project_id": "bench", "name": "Bench"}, headers=auth
        )
        await client.post(
            f"/v1/admin/accounts/{account['account']['id']}/adjustments",
            json={"amount": ITEMS, "reason": "benchmark"},
            headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
        )
        items = [
            {"page_content": f"Page {i}: handmade oak tables from Vermont.", "language": "en"}
            for i in range(ITEMS)
        ]
        started = time.perf_counter()
        batch = await client.post(
            "/v1/generation-batches",
            json={"kind": "meta_title", "site_id": site.json()["id"], "items": items},
            headers=auth,
        )
        assert batch.status_code == 202, batch.text
        accepted = time.perf_counter() - started
        batch_id = batch.json()["id"]
        final = None
        async with client.stream(
            "GET", f"/v1/generation-batches/{batch_id}/events", headers=auth
        ) as stream:
            event = None
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event == "done":
                    final = json.loads(line[len("data: ") :])["batch"]
                    break
        elapsed = time.perf_counter() - started
        assert final is not None and final["succeeded"] == ITEMS, final
        balance = (await client.get("/v1/balance", headers=auth)).json()
        assert (balance["available"], balance["reserved"]) == (0, 0), balance
    print(f"the batch was accepted (500 credits reserved) in {accepted:.2f} s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{os.path.join(tmp, 'bench.db')}"
        elapsed = run(url)
    ideal = ITEMS / CONCURRENCY * LATENCY
    overhead = (elapsed / ideal - 1) * 100
    backend = url.split("+", 1)[0]
    print(
        f"batch of {ITEMS} at concurrency {CONCURRENCY}, {LATENCY * 1000:.0f} ms per call "
        f"({backend}): {elapsed:.2f} s; ideal {ideal:.2f} s; overhead {overhead:+.1f} % "
        f"({'within' if overhead <= 15 else 'OVER'} the 15 % target)"
    )


if __name__ == "__main__":
    main()
