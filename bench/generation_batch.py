"""Benchmarks of bulk runs, on PostgreSQL (a fresh database per scenario), the service in
uvicorn processes of its own and the stand-in Claude in another. Figures go to
docs/benchmarks.md.

    .venv/bin/python -m bench.generation_batch                       # every scenario
    .venv/bin/python -m bench.generation_batch --only throughput,fairness,ratelimit,explain
    .venv/bin/python -m bench.generation_batch --sqlite               # throughput on SQLite

* throughput: 500 meta titles at GENERATION_CONCURRENCY 8, 200 ms per call (the stand-in
  answers 200 ms after a request arrived), on one instance (ideal 12.5 s) and on two
  (ideal 6.25 s), the clock from the batch's `POST` to its `done` event; `--repeat` runs
  (3 by default), each on a fresh setup, and their medians. Same-run baseline: the same
  500 calls made straight to the stand-in by the SDK at the same concurrency (what the
  stand-in and this machine cost by themselves).
* fairness: a 4-item batch started 1 s into another account's 1,000-item batch (two
  instances, 200 ms calls): its first result and its completion, against the same 4-item
  batch alone in the same run.
* ratelimit: 200 items against a stand-in that takes at most 4 calls at once (one instance
  of concurrency 8, 200 ms per call): wall time against items / 4 x latency, and the
  stand-in's 429s.
* explain: `EXPLAIN ANALYZE` of the fair claim (limit 8) with 100,000 queued items (100
  accounts x 1 batch of 1,000; then one account with 100 batches of 1,000).
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
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple

import anthropic
import httpx
from sqlalchemy import text

from app.config import Settings
from app.db import create_engine, utcnow
from app.generation.fair import FAIR_CLAIM_SQL
from tests.apps import ADMIN
from tests.databases import create_database, drop_database, run_alembic
from tests.servers import ServerProcess, free_port, start_server, stop_server

ITEMS = 500
CONCURRENCY = 8
LATENCY = 0.2


def start_fake(latency: float, max_concurrent: int | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "tests.fakes.anthropic_server", "--port", str(port),
               "--latency", str(latency)]  # fmt: skip
    if max_concurrent is not None:
        command += ["--max-concurrent", str(max_concurrent)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the stand-in Anthropic API did not start")


class Setup:
    """A fresh database, the stand-in and `instances` servers; torn down on exit."""

    def __init__(
        self,
        instances: int,
        *,
        max_concurrent: int | None = None,
        sqlite: bool = False,
        **env: str,
    ) -> None:
        self.instances = instances
        self.max_concurrent = max_concurrent
        self.sqlite = sqlite
        self.env = env
        self.servers: list[ServerProcess] = []

    async def __aenter__(self) -> "Setup":
        self.tmp = tempfile.TemporaryDirectory()
        if self.sqlite:
            self.url = f"sqlite+aiosqlite:///{os.path.join(self.tmp.name, 'bench.db')}"
            await run_alembic(self.url, ("upgrade", "head"))
        else:
            self.url = await create_database("postgres", self.tmp.name)
        self.fake, self.fake_port = start_fake(LATENCY, self.max_concurrent)
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "ANTHROPIC_BASE_URL": self.fake_url,
            "GENERATION_CONCURRENCY": str(CONCURRENCY),
            "BATCH_EVENTS_INTERVAL_SECONDS": "0.2",
            "STARTER_CREDITS": "0",
            "DB_POOL_SIZE": "5",
            **self.env,
        }
        for _ in range(self.instances):
            self.servers.append(await asyncio.to_thread(start_server, self.url, **env))
        return self

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.fake_port}"

    async def __aexit__(self, *_: object) -> None:
        for server in self.servers:
            await asyncio.to_thread(stop_server, server)
        self.fake.terminate()
        self.fake.wait()
        if not self.sqlite:
            await drop_database(self.url)
        self.tmp.cleanup()

    async def fake_stats(self) -> dict[str, int]:
        async with httpx.AsyncClient(base_url=self.fake_url) as client:
            return (await client.get("/fake/stats")).json()  # type: ignore[no-any-return]


async def customer(url: str, credits: int) -> tuple[dict[str, str], str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        created = (
            await client.post(
                "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@bench.example"},
                headers=ADMIN,
            )
        ).json()  # fmt: skip
        auth = {"Authorization": f"Bearer {created['api_key']['key']}"}
        site = await client.post(
            "/v1/sites", json={"framer_project_id": uuid.uuid4().hex, "name": "B"}, headers=auth
        )
        await client.post(
            f"/v1/admin/accounts/{created['account']['id']}/adjustments",
            json={"amount": credits, "reason": "benchmark"},
            headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
        )
        return auth, site.json()["id"]


def items(count: int, label: str) -> list[dict[str, str]]:
    return [{"page_content": f"{label} page {i}: handmade oak tables.", "language": "en"}
            for i in range(count)]  # fmt: skip


class BatchRun(NamedTuple):
    elapsed: float
    """Seconds from the `POST` to the `done` event."""
    final: dict[str, Any]
    """The batch in the `done` event."""
    batch_id: str
    posted: float
    """Seconds the `POST` took (its answer is part of `elapsed`)."""


async def run_batch(
    url: str,
    auth: dict[str, str],
    site_id: str,
    inputs: list[dict[str, str]],
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> BatchRun:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        batch = await client.post(
            "/v1/generation-batches",
            json={"kind": "meta_title", "site_id": site_id, "items": inputs},
            headers=auth,
        )
        posted = time.perf_counter() - started
        assert batch.status_code == 202, batch.text
        batch_id = batch.json()["id"]
        final: dict[str, Any] | None = None
        # From event 0: items finished before the stream connected are sent too (so a
        # "first result" measured on arrival is an upper bound, never missed).
        async with client.stream(
            "GET",
            f"/v1/generation-batches/{batch_id}/events",
            headers={**auth, "Last-Event-ID": "0"},
        ) as stream:
            event = None
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    if on_event is not None and event is not None:
                        on_event(event, data)
                    if event == "done":
                        final = data["batch"]
                        break
        assert final is not None
        return BatchRun(time.perf_counter() - started, final, batch_id, posted)


async def direct_baseline(fake_url: str, count: int, concurrency: int) -> float:
    """The same calls straight to the stand-in through the SDK, `concurrency` at once."""
    client = anthropic.AsyncAnthropic(api_key="sk-ant-bench", base_url=fake_url, max_retries=0)
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            queue.pop()
            await client.messages.create(
                model="claude-haiku-5-5",
                max_tokens=100,
                system="Write the page's meta title.",
                messages=[{"role": "user", "content": "Handmade oak tables."}],
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def throughput(instances: int, sqlite: bool = False, repeat: int = 1) -> None:
    """`repeat` runs, each on a fresh setup with its own baseline; then their medians."""
    runs: list[tuple[float, float, float]] = []
    for _ in range(repeat):
        async with Setup(instances, sqlite=sqlite) as setup:
            baseline = await direct_baseline(setup.fake_url, ITEMS, CONCURRENCY * instances)
            auth, site_id = await customer(setup.servers[0].url, ITEMS)
            url = setup.servers[0].url
            run = await run_batch(url, auth, site_id, items(ITEMS, "T"))
            assert run.final["succeeded"] == ITEMS, run.final
        runs.append((run.elapsed, baseline, run.posted))
        _print_throughput(instances, sqlite, *runs[-1], "")
    if repeat > 1:
        medians = [sorted(run[n] for run in runs)[repeat // 2] for n in range(3)]
        _print_throughput(instances, sqlite, *medians, f"median of {repeat}: ")


def _print_throughput(
    instances: int, sqlite: bool, elapsed: float, baseline: float, posted: float, label: str
) -> None:
    slots = CONCURRENCY * instances
    ideal = ITEMS / slots * LATENCY
    target = ideal * 1.05
    rounds = -(-ITEMS // slots)  # the busiest slot makes this many calls one after another
    backend = "sqlite" if sqlite else "postgres"
    print(
        f"{label}throughput ({backend}, {instances} instance(s) x concurrency {CONCURRENCY}): "
        f"{ITEMS} items in {elapsed:.2f} s; ideal {ideal:.2f} s "
        f"({(elapsed / ideal - 1) * 100:+.1f} %; target {target:.3f} s "
        f"{'met' if elapsed <= target else 'NOT met'}); "
        f"same-run baseline (SDK straight to the stand-in) {baseline:.2f} s "
        f"({(elapsed / baseline - 1) * 100:+.1f} % over it; {rounds} calls in a row at "
        f"{baseline / rounds * 1000:.1f} ms); the batch's POST {posted * 1000:.0f} ms "
        f"(baseline + POST: {baseline + posted:.3f} s)",
        flush=True,
    )


async def fairness() -> None:
    async with Setup(2) as setup:
        first, second = (server.url for server in setup.servers)
        small_auth, small_site = await customer(second, 20)
        alone_first: list[float] = []

        def first_result(into: list[float], since: list[float]) -> Callable[..., None]:
            def note(event: str, data: dict[str, Any]) -> None:
                if event == "progress" and data.get("item") and not into:
                    into.append(time.perf_counter() - since[0])

            return note

        since = [time.perf_counter()]
        alone = (
            await run_batch(
                second, small_auth, small_site, items(4, "alone"), first_result(alone_first, since)
            )
        ).elapsed
        big_auth, big_site = await customer(first, 1000)
        big_task = asyncio.create_task(run_batch(first, big_auth, big_site, items(1000, "big")))
        await asyncio.sleep(1.0)
        beside_first: list[float] = []
        since = [time.perf_counter()]
        beside = (
            await run_batch(
                second,
                small_auth,
                small_site,
                items(4, "beside"),
                first_result(beside_first, since),
            )
        ).elapsed
        big_elapsed, big_final, _, _ = await big_task
    print(
        f"fairness (2 instances x {CONCURRENCY}, {LATENCY * 1000:.0f} ms calls): a 4-item batch "
        f"beside another account's 1,000-item batch: first result {beside_first[0]:.2f} s, "
        f"complete {beside:.2f} s; alone in the same run: first result {alone_first[0]:.2f} s, "
        f"complete {alone:.2f} s; the big batch took {big_elapsed:.2f} s "
        f"(ideal {1000 / (2 * CONCURRENCY) * LATENCY:.2f} s), {big_final['succeeded']} succeeded"
    )


async def ratelimit(count: int = 200, cap: int = 4) -> None:
    async with Setup(1, max_concurrent=cap) as setup:
        auth, site_id = await customer(setup.servers[0].url, count)
        elapsed, final, _, _ = await run_batch(
            setup.servers[0].url, auth, site_id, items(count, "R")
        )
        stats = await setup.fake_stats()
    ideal = count / cap * LATENCY
    print(
        f"rate limit (stand-in takes {cap} at once; 1 instance x concurrency {CONCURRENCY}): "
        f"{count} items in {elapsed:.2f} s, {final['succeeded']} succeeded; "
        f"items / {cap} x latency = {ideal:.2f} s ({elapsed / ideal:.2f}x); "
        f"{stats['rejected']} x 429 out of {stats['calls']} calls; peak {stats['peak_in_flight']}"
    )


async def explain() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = await create_database("postgres", tmp)
        engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
        try:
            for layout, accounts, batches in (("100 accounts x 1 batch", 100, 1),
                                              ("1 account x 100 batches", 1, 100)):  # fmt: skip
                async with engine.begin() as connection:
                    await connection.execute(text(EMPTY))
                    await _fill(connection, accounts, batches, 1000)
                async with engine.connect() as connection:
                    await connection.execute(text("ANALYZE"))
                    await connection.commit()
                    now = utcnow()
                    params = {
                        "now": now, "limit": CONCURRENCY, "instance_id": "bench",
                        "claim_token": uuid.uuid4(), "claimed_until": now + timedelta(seconds=60),
                    }  # fmt: skip
                    times = []
                    plan: list[str] = []
                    for _ in range(5):
                        transaction = await connection.begin()
                        rows = await connection.execute(
                            text("EXPLAIN (ANALYZE, BUFFERS) " + FAIR_CLAIM_SQL), params
                        )
                        plan = [row[0] for row in rows]
                        await transaction.rollback()
                        times.append(float(plan[-1].split(":")[1].split()[0]))
                    times.sort()
                    print(
                        f"fair claim EXPLAIN ANALYZE, 100,000 queued items ({layout}), limit "
                        f"{CONCURRENCY}: execution {times[len(times) // 2]:.2f} ms (median of 5; "
                        f"min {times[0]:.2f}, max {times[-1]:.2f}); "
                        f"planning {plan[-2].split(':')[1].strip()}"
                    )
                    if os.environ.get("BENCH_SHOW_PLAN"):
                        print("\n".join(plan))
        finally:
            await engine.dispose()
            await drop_database(url)


EMPTY = "TRUNCATE generation_batch_item, generation_batch, site, account CASCADE"
FILL = (
    """INSERT INTO account (id, email, created_at, trial_ends_at, subscription_status,
                            cancel_at_period_end)
       SELECT gen_random_uuid(), 'bench' || a || '@example.com', now(),
              now() + interval '7 days', 'trialing', false
       FROM generate_series(1, :accounts) a""",
    """INSERT INTO site (id, account_id, framer_project_id, name, created_at)
       SELECT gen_random_uuid(), id, 'p', 's', now() FROM account""",
    """INSERT INTO generation_batch (id, account_id, site_id, kind, status, total, created_at,
                                     event_seq)
       SELECT gen_random_uuid(), s.account_id, s.id, 'meta_title', 'running', :per_batch,
              now() - make_interval(secs => b), 0
       FROM site s, generate_series(1, :batches) b""",
    """INSERT INTO generation_batch_item (batch_id, index, input, status, hold_id,
                                          credits_charged, attempts)
       SELECT b.id, i, '{"page_content": "x"}'::json, 'queued', gen_random_uuid(), 0, 0
       FROM generation_batch b, generate_series(0, :per_batch - 1) i""",
)


async def _fill(connection: Any, accounts: int, batches: int, per_batch: int) -> None:
    values = {"accounts": accounts, "batches": batches, "per_batch": per_batch}
    for statement in FILL:
        names = [name for name in values if f":{name}" in statement]
        await connection.execute(text(statement), {name: values[name] for name in names})


SCENARIOS = ("throughput", "fairness", "ratelimit", "explain")


async def main_async(only: list[str], sqlite: bool, repeat: int) -> None:
    if sqlite:
        await throughput(1, sqlite=True, repeat=repeat)
        return
    for scenario in only:
        if scenario == "throughput":
            await throughput(1, repeat=repeat)
            await throughput(2, repeat=repeat)
        elif scenario == "fairness":
            await fairness()
        elif scenario == "ratelimit":
            await ratelimit()
        elif scenario == "explain":
            await explain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--sqlite", action="store_true", help="throughput on one SQLite file")
    parser.add_argument(
        "--repeat", type=int, default=3, help="throughput runs per setting (medians printed)"
    )
    args = parser.parse_args()
    asyncio.run(main_async([s for s in args.only.split(",") if s], args.sqlite, args.repeat))


if __name__ == "__main__":
    main()
