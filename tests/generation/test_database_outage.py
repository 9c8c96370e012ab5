"""The database stops and restarts under a running service (a throwaway cluster of the
test's own, never the machine's server): every answer during the outage is a `503`
problem+json, none after it is back fails, interrupted generations are told the truth and
resolved as soon as the database answers, and the ledger reconciles."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from app.config import Settings
from app.credits import service as credits
from app.credits.models import CreditHold, LedgerEntry
from app.db import create_engine, create_sessionmaker
from app.generation.models import Generation
from tests.apps import ADMIN, customer
from tests.databases import run_alembic
from tests.servers import ServerProcess, start_server, stop_server
from tests.throwaway_postgres import ThrowawayCluster, throwaway_cluster

BASE_ENV = {
    "STARTER_CREDITS": "0",
    "DB_POOL_SIZE": "4",
    "HOLD_TTL_SECONDS": "120",
    "GENERATION_TIMEOUT_SECONDS": "30",
    "RATE_LIMIT_GENERATIONS_PER_MINUTE": "1000000",
    "RATE_LIMIT_GENERATIONS_BURST": "1000000",
}


@pytest.fixture
async def cluster() -> AsyncIterator[ThrowawayCluster]:
    with throwaway_cluster() as made:
        await run_alembic(made.url, ("upgrade", "head"))
        yield made


async def _customer(client: httpx.AsyncClient, credits_: int) -> tuple[uuid.UUID, dict, str]:
    who = await customer(client, credits_, site_name="S")
    return who.id, who.auth, who.site_id


async def _ledger_state(url: str, account_id: uuid.UUID) -> tuple[int, int, list[str]]:
    """(consumption entries, open holds, reconcile mismatches) read from the database."""
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            consumed = len(
                (
                    await session.execute(
                        select(LedgerEntry.id).where(
                            LedgerEntry.account_id == account_id,
                            LedgerEntry.type == "consumption",
                        )
                    )
                ).all()
            )
            holds = len(
                (
                    await session.execute(
                        select(CreditHold.id).where(
                            CreditHold.account_id == account_id, CreditHold.status == "open"
                        )
                    )
                ).all()
            )
            mismatches = [m.describe() for m in await credits.find_mismatches(session)]
    finally:
        await engine.dispose()
    return consumed, holds, mismatches


def _assert_never_500(responses: list[httpx.Response]) -> None:
    for response in responses:
        if response.status_code < 400:
            continue
        assert response.status_code == 503, (response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", response.text
        assert response.json()["code"] in ("database_unavailable", "shutting_down")


async def test_after_a_restart_under_load_no_request_fails(cluster):
    server: ServerProcess = await asyncio.to_thread(start_server, cluster.url, **BASE_ENV)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            account_id, auth, site_id = await _customer(client, 1_000)
            generation = {
                "kind": "meta_title",
                "site_id": site_id,
                "input": {"page_content": "Oak tables, made by hand in Vermont."},
            }
            responses: list[tuple[float, httpx.Response]] = []
            stop = asyncio.Event()

            async def one(kind: int) -> None:
                started = time.monotonic()
                if kind == 0:
                    response = await client.get("/v1/me", headers=auth)
                elif kind == 1:
                    response = await client.get("/v1/balance", headers=auth)
                else:
                    response = await client.post("/v1/generations", json=generation, headers=auth)
                responses.append((started, response))

            async def load() -> None:
                while not stop.is_set():
                    await asyncio.gather(*(one(n % 3) for n in range(9)))

            # Warm: every kept driver connection and pooled connection is open.
            await asyncio.gather(*(one(n % 3) for n in range(30)))
            loader = asyncio.create_task(load())
            await asyncio.sleep(1)
            await asyncio.to_thread(cluster.stop, "fast")
            await asyncio.sleep(1)
            await asyncio.to_thread(cluster.start)
            back_at = time.monotonic()
            await asyncio.sleep(3)
            stop.set()
            await loader
            # And a restart while the service is idle: every connection it keeps is stale.
            await asyncio.gather(*(one(n % 3) for n in range(30)))
            await asyncio.to_thread(cluster.stop, "fast")
            await asyncio.to_thread(cluster.start)
            after = [await client.get("/v1/me", headers=auth) for _ in range(20)]
            after += await asyncio.gather(*(client.get("/v1/me", headers=auth) for _ in range(20)))
    finally:
        await asyncio.to_thread(stop_server, server)

    failed_after = [
        (r.status_code, r.text) for started, r in responses if started > back_at and r.is_error
    ]
    failed_me = [r.status_code for r in after if r.status_code != 200]
    print(
        f"\nrestart under load: {len(responses)} requests, "
        f"{sum(1 for s, r in responses if s > back_at)} after the database was back, "
        f"{len(failed_after)} of them failed, "
        f"{sum(1 for _, r in responses if r.status_code == 500)} answered 500; "
        f"after an idle restart {len(failed_me)} of 40 GET /v1/me failed"
    )
    _assert_never_500([r for _, r in responses])
    assert failed_after == []
    assert failed_me == []
    charged = sum(1 for _, r in responses if r.request.method == "POST" and r.status_code == 201)
    consumed, holds, mismatches = await _ledger_state(cluster.url, account_id)
    assert (consumed, holds, mismatches) == (charged, 0, [])


async def test_an_outage_mid_generation_is_told_truly_and_resolved_once_the_database_is_back(
    cluster, fake_anthropic
):
    env = {
        **BASE_ENV,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": fake_anthropic.url,
        "ANTHROPIC_MAX_RETRIES": "0",
        "GENERATION_TIMEOUT_SECONDS": "30",
    }
    server: ServerProcess = await asyncio.to_thread(start_server, cluster.url, **env)
    tag = uuid.uuid4().hex
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            account_id, auth, site_id = await _customer(client, 10)
            key = uuid.uuid4().hex
            body = {
                "kind": "meta_title",
                "site_id": site_id,
                "input": {"page_content": f"{tag} fake:latency=2"},
            }
            keyed = {**auth, "Idempotency-Key": key}
            pending = asyncio.create_task(client.post("/v1/generations", json=body, headers=keyed))
            async with asyncio.timeout(30):
                while not fake_anthropic.calls_mentioning(tag):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.to_thread(cluster.stop, "fast")  # the reserve committed; the model works

            cut_off = await pending
            assert cut_off.status_code == 503, cut_off.text
            assert cut_off.headers["content-type"] == "application/problem+json"
            problem = cut_off.json()
            assert problem["code"] == "database_unavailable"
            generation_id = uuid.UUID(problem["generation_id"])
            assert "nothing was changed" not in problem["detail"].lower()

            # Everything a client can send during the outage: a 503 problem+json, never 500.
            during = await asyncio.gather(
                client.get("/v1/me", headers=auth),
                client.get("/v1/balance", headers=auth),
                client.get("/v1/ledger", headers=auth),
                client.post("/v1/generations", json=body, headers=auth),
                client.post(
                    "/v1/generations", json=body, headers={**auth, "Idempotency-Key": "other"}
                ),
                client.post(
                    f"/v1/admin/accounts/{account_id}/adjustments",
                    json={"amount": 1, "reason": "outage"},
                    headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
                ),
                client.get(f"/v1/generations/{generation_id}", headers=auth),
            )
            assert all(r.status_code == 503 for r in during), [r.text for r in during]
            _assert_never_500(list(during))

            await asyncio.to_thread(cluster.start)
            # Resolved as soon as the database answers (the hold would live 120 s).
            async with asyncio.timeout(15):
                while True:
                    connection = await cluster.connect()
                    try:
                        status = await connection.fetchval(
                            "SELECT status FROM generation WHERE id = $1", generation_id
                        )
                    finally:
                        await connection.close()
                    if status != "running":
                        break
                    await asyncio.sleep(0.2)
            assert status == "failed"
            read = await client.get(f"/v1/generations/{generation_id}", headers=auth)
            assert (read.json()["status"], read.json()["credits_charged"]) == ("failed", 0)
            balance = (await client.get("/v1/balance", headers=auth)).json()
            assert (balance["available"], balance["reserved"]) == (10, 0)

            # The key was freed: its retry generates, and is charged once.
            retried = await client.post("/v1/generations", json=body, headers=keyed)
            assert retried.status_code == 201, retried.text
            replayed = await client.post("/v1/generations", json=body, headers=keyed)
            assert replayed.json()["id"] == retried.json()["id"]
    finally:
        await asyncio.to_thread(stop_server, server)

    consumed, holds, mismatches = await _ledger_state(cluster.url, account_id)
    assert (consumed, holds, mismatches) == (1, 0, [])
    engine = create_engine(Settings(_env_file=None, database_url=cluster.url))  # type: ignore[call-arg]
    try:
        async with create_sessionmaker(engine)() as session:
            statuses = sorted(
                (await session.execute(select(Generation.status).where(
                    Generation.account_id == account_id
                ))).scalars()
            )  # fmt: skip
    finally:
        await engine.dispose()
    assert statuses == ["failed", "succeeded"]
