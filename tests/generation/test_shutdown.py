"""A deploy (SIGTERM) during single generations: what each client is told is what it is
charged. Real uvicorn processes with `--timeout-graceful-shutdown`, the stand-in Claude
slowed down, with and without `Idempotency-Key`."""

import asyncio
import signal
import uuid

import httpx

from tests.apps import customer
from tests.generation.conftest import assert_reconciles, consumption_entries, open_holds
from tests.servers import start_server, stop_server

SERVER_ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "ANTHROPIC_TIMEOUT_SECONDS": "30",
    "ANTHROPIC_MAX_RETRIES": "0",
    "GENERATION_TIMEOUT_SECONDS": "30",
    "HOLD_TTL_SECONDS": "120",
    "STARTER_CREDITS": "0",
}
GRACE_SECONDS = 2
SLOW_SECONDS = 6  # longer than the grace: these cannot finish before the server stops
QUICK_SECONDS = 0.5  # these can


async def _customer(client: httpx.AsyncClient, credits_: int) -> tuple[uuid.UUID, dict, str]:
    who = await customer(client, credits_, site_name="S")
    return who.id, who.auth, who.site_id


async def test_sigterm_during_slow_generations_charges_exactly_what_clients_were_told(
    gen_database, gen_sessionmaker, fake_anthropic
):
    env = {**SERVER_ENV, "ANTHROPIC_BASE_URL": fake_anthropic.url}
    graceful = ["--timeout-graceful-shutdown", str(GRACE_SECONDS)]
    server = await asyncio.to_thread(start_server, gen_database.url, uvicorn_args=graceful, **env)
    tag = uuid.uuid4().hex
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            account_id, auth, site_id = await _customer(client, 20)
            requests = []
            for speed, seconds in (("slow", SLOW_SECONDS), ("quick", QUICK_SECONDS)):
                for keyed in (True, False, True, False):
                    body = {
                        "kind": "meta_title",
                        "site_id": site_id,
                        "input": {
                            "page_content": f"{tag} {speed} {len(requests)} fake:latency={seconds}"
                        },
                    }
                    key = uuid.uuid4().hex if keyed else None
                    requests.append((speed, key, body))

            async def send(key: str | None, body: dict) -> httpx.Response:
                headers = {**auth, **({"Idempotency-Key": key} if key else {})}
                return await client.post("/v1/generations", json=body, headers=headers)

            sent = [asyncio.create_task(send(key, body)) for _, key, body in requests]
            async with asyncio.timeout(30):
                while len(fake_anthropic.calls_mentioning(tag)) < len(requests):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)  # every call is with the model now
            responses = await asyncio.gather(*sent, return_exceptions=True)
        await asyncio.to_thread(server.process.wait, 30)
    finally:
        await asyncio.to_thread(stop_server, server)

    told_charged = 0
    for (speed, _key, _body), response in zip(requests, responses, strict=True):
        assert isinstance(response, httpx.Response), f"{speed}: no answer: {response!r}"
        # Never uvicorn's own `500 text/plain`.
        assert response.headers["content-type"].startswith("application/"), response.text
        body = response.json()
        if speed == "quick":
            assert response.status_code == 201, response.text
            assert body["credits_charged"] == 1
            told_charged += 1
        else:
            assert response.status_code == 503, response.text
            assert body["code"] == "generation_interrupted"
            assert body["credits_charged"] == 0
            assert response.headers["retry-after"]
    assert told_charged == 4

    consumed = await consumption_entries(gen_sessionmaker, account_id)
    assert len(consumed) == told_charged
    assert await open_holds(gen_sessionmaker, account_id) == []
    await assert_reconciles(gen_sessionmaker)

    # The interrupted keyed requests were not stored as answers: a retry with the same key
    # (on the next server) really generates, and is charged once.
    server = await asyncio.to_thread(start_server, gen_database.url, **env)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            retried = await asyncio.gather(
                *(
                    client.post(
                        "/v1/generations", json=body, headers={**auth, "Idempotency-Key": key}
                    )
                    for speed, key, body in requests
                    if speed == "slow" and key is not None
                )
            )
            assert [r.status_code for r in retried] == [201, 201], [r.text for r in retried]
            balance = (await client.get("/v1/balance", headers=auth)).json()
    finally:
        await asyncio.to_thread(stop_server, server)
    assert (balance["available"], balance["reserved"]) == (20 - told_charged - 2, 0)
    assert len(await consumption_entries(gen_sessionmaker, account_id)) == told_charged + 2
    await assert_reconciles(gen_sessionmaker)
