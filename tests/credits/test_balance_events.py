"""The live balance stream, against real server processes (SSE needs a real connection)."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from app.credits.events import listener_application_name
from tests.conftest import ADMIN
from tests.payments.conftest import PRODUCTS
from tests.polar_webhooks import SECRET, delivery, order
from tests.servers import running_servers

WAIT = 20.0
"""Generous bound on waiting for an event; the test proves arrival, not speed."""


@dataclass
class Event:
    name: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)


async def sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    current = Event()
    async for line in response.aiter_lines():
        if line == "":
            yield current
            current = Event()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        elif line.startswith("event:"):
            current.name = line[6:].strip()
        elif line.startswith("data:"):
            current.data += line[5:].strip()


async def next_balance(events: AsyncIterator[Event]) -> dict:
    async with asyncio.timeout(WAIT):
        async for event in events:
            if event.name == "balance":
                return json.loads(event.data)
    raise AssertionError("stream ended")


async def balance_reaching(events: AsyncIterator[Event], available: int) -> dict:
    while True:
        balance = await next_balance(events)
        if balance["available"] == available:
            return balance


async def make_account(http: httpx.AsyncClient, base: str) -> tuple[str, dict]:
    response = await http.post(
        f"{base}/v1/admin/accounts",
        json={"email": f"sse{id(http)}{base[-5:]}@example.com"},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["account"]["id"], {"Authorization": f"Bearer {body['api_key']['key']}"}


async def test_stream_sends_the_balance_on_connect_after_each_change_and_heartbeats(database):
    with running_servers(database.url, 1, BALANCE_HEARTBEAT_SECONDS="0.2") as [server]:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            account_id, auth = await make_account(http, server.url)
            async with http.stream(
                "GET", f"{server.url}/v1/balance/events", headers=auth
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = sse_events(response)
                first = await next_balance(events)
                assert (first["available"], first["display"]) == (0, "0 Credits")

                heartbeat = False
                async with asyncio.timeout(WAIT):
                    async for event in events:
                        if "heartbeat" in event.comments:
                            heartbeat = True
                            break
                assert heartbeat

                for amount, expected in ((1, 1), (249, 250), (-50, 200)):
                    adjusted = await http.post(
                        f"{server.url}/v1/admin/accounts/{account_id}/adjustments",
                        json={"amount": amount, "reason": "sse test"},
                        headers={**ADMIN, "Idempotency-Key": f"sse-{amount}"},
                    )
                    assert adjusted.status_code == 201
                    balance = await balance_reaching(events, expected)
                    assert balance["display"] == (
                        "1 Credit" if expected == 1 else f"{expected} Credits"
                    )


async def test_stream_refuses_without_an_api_key(database):
    with running_servers(database.url, 1) as [server]:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            response = await http.get(f"{server.url}/v1/balance/events")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_webhook_on_instance_a_reaches_a_stream_on_instance_b(postgres_database):
    env = {"POLAR_WEBHOOK_SECRET": SECRET, "POLAR_PRODUCT_REFILL": PRODUCTS["refill"]}
    with running_servers(postgres_database.url, 2, **env) as [a, b]:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            account_id, auth = await make_account(http, a.url)
            async with http.stream("GET", f"{b.url}/v1/balance/events", headers=auth) as stream:
                events = sse_events(stream)
                assert (await next_balance(events))["available"] == 0

                body, headers = delivery(
                    "order.paid", order(product_id=PRODUCTS["refill"], account_id=account_id)
                )
                paid = await http.post(f"{a.url}/v1/webhooks/polar", content=body, headers=headers)
                assert paid.status_code == 202, paid.text

                balance = await balance_reaching(events, 30_000)
                assert balance["display"] == "30,000 Credits"


async def test_stream_survives_a_dropped_listen_connection(postgres_database):
    with running_servers(postgres_database.url, 2) as [a, b]:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            account_id, auth = await make_account(http, a.url)
            async with http.stream("GET", f"{b.url}/v1/balance/events", headers=auth) as stream:
                events = sse_events(stream)
                assert (await next_balance(events))["available"] == 0

                url = make_url(postgres_database.url)
                admin = await asyncpg.connect(
                    host=url.host,
                    port=url.port or 5432,
                    user=url.username,
                    password=url.password,
                    database=url.database,
                )
                try:
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = ANY($1)",
                        [listener_application_name(s.process.pid) for s in (a, b)],
                    )
                finally:
                    await admin.close()
                assert killed == 2  # one listener per instance

                adjusted = await http.post(
                    f"{a.url}/v1/admin/accounts/{account_id}/adjustments",
                    json={"amount": 75, "reason": "after reconnect"},
                    headers={**ADMIN, "Idempotency-Key": "after-reconnect"},
                )
                assert adjusted.status_code == 201
                assert (await balance_reaching(events, 75))["available"] == 75
