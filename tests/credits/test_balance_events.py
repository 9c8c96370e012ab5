"""The live balance stream, against real server processes (SSE needs a real connection)."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from app.credits.events import listener_application_name
from tests.conftest import ADMIN
from tests.databases import pg_connect
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
    id: str | None = None
    retry: int | None = None


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
        elif line.startswith("id:"):
            current.id = line[3:].strip()
        elif line.startswith("retry:"):
            current.retry = int(line[6:].strip())


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

                ping = False
                async with asyncio.timeout(WAIT):
                    async for event in events:
                        if "ping" in event.comments:
                            ping = True
                            break
                assert ping

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

                admin = await pg_connect(postgres_database.url)
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


async def _adjust(http: httpx.AsyncClient, base: str, account_id: str, amount: int) -> None:
    adjusted = await http.post(
        f"{base}/v1/admin/accounts/{account_id}/adjustments",
        json={"amount": amount, "reason": "sse test"},
        headers={**ADMIN, "Idempotency-Key": f"sse-{account_id}-{amount}"},
    )
    assert adjusted.status_code == 201, adjusted.text


async def _first_event(events: AsyncIterator[Event], pings: int = 1_000_000) -> Event | None:
    """The next `balance` event, or None if `pings` heartbeats come first (a stream that
    has nothing to send)."""
    seen = 0
    async with asyncio.timeout(WAIT):
        async for event in events:
            if event.name == "balance":
                return event
            seen += "ping" in event.comments
            if seen >= pings:
                return None
    raise AssertionError("stream ended")


async def test_balance_events_have_ids_and_resume_from_last_event_id(database):
    with running_servers(database.url, 1, BALANCE_HEARTBEAT_SECONDS="0.3") as [server]:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            account_id, auth = await make_account(http, server.url)
            url = f"{server.url}/v1/balance/events"
            async with http.stream("GET", url, headers=auth) as stream:
                first = await _first_event(sse_events(stream))
            assert first is not None and first.id
            assert first.retry and first.retry > 0  # the first event of a connection
            assert json.loads(first.data)["available"] == 0

            # Resuming from the current state: nothing twice, only what happens next.
            resumed = {**auth, "Last-Event-ID": first.id}
            async with http.stream("GET", url, headers=resumed) as stream:
                events = sse_events(stream)
                assert await _first_event(events, pings=4) is None
                await _adjust(http, server.url, account_id, 7)
                after = await _first_event(events)
                assert after is not None and json.loads(after.data)["available"] == 7
                assert after.id != first.id
                assert after.retry  # the first event this connection sent

            # Resuming from an older event: the current state at once.
            async with http.stream("GET", url, headers=resumed) as stream:
                caught_up = await _first_event(sse_events(stream))
            assert caught_up is not None
            assert (caught_up.id, json.loads(caught_up.data)["available"]) == (after.id, 7)

            # An unknown or malformed id counts as none: the current state first.
            for junk in ("nonsense", "x" * 300, "\u00e9t\u00e9"):
                headers = {**auth, "Last-Event-ID": junk.encode()}
                async with http.stream("GET", url, headers=headers) as stream:
                    assert stream.status_code == 200
                    current = await _first_event(sse_events(stream))
                assert current is not None and current.id == after.id


async def _stream_ends(response: httpx.Response) -> list[Event]:
    """Every event until the server closes the stream."""
    return [event async for event in sse_events(response)]


async def test_revoking_a_key_closes_its_balance_stream(database):
    with running_servers(database.url, 1) as [server]:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            created = await http.post(
                f"{server.url}/v1/admin/accounts",
                json={"email": f"revoke-{id(http)}@example.com"},
                headers=ADMIN,
            )
            body = created.json()
            account_id, key_id = body["account"]["id"], body["api_key"]["id"]
            auth = {"Authorization": f"Bearer {body['api_key']['key']}"}
            url = f"{server.url}/v1/balance/events"
            async with http.stream("GET", url, headers=auth) as stream:
                events = sse_events(stream)
                assert (await next_balance(events))["available"] == 0
                revoked = await http.delete(
                    f"{server.url}/v1/admin/api-keys/{key_id}", headers=ADMIN
                )
                assert revoked.status_code == 204, revoked.text
                await _adjust(http, server.url, account_id, 3)
                async with asyncio.timeout(5):
                    late = [event async for event in events]
            assert [e for e in late if e.name == "balance"] == []
            again = await http.get(url, headers=auth)
            assert again.status_code == 401


async def test_a_revoked_keys_streams_close_on_another_instance(postgres_database):
    from tests.fakes.anthropic_server import FakeAnthropic

    fake = FakeAnthropic().start()
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": fake.url,
        "GENERATION_CONCURRENCY": "1",
        "STARTER_CREDITS": "0",
    }
    try:
        with running_servers(postgres_database.url, 2, **env) as [a, b]:
            async with httpx.AsyncClient(timeout=WAIT) as http:
                created = await http.post(
                    f"{a.url}/v1/admin/accounts",
                    json={"email": f"revoke-b-{id(http)}@example.com"},
                    headers=ADMIN,
                )
                body = created.json()
                account_id, key_id = body["account"]["id"], body["api_key"]["id"]
                auth = {"Authorization": f"Bearer {body['api_key']['key']}"}
                await _adjust(http, a.url, account_id, 100)
                site = await http.post(
                    f"{a.url}/v1/sites", json={"framer_project_id": "p", "name": "S"}, headers=auth
                )
                items = [{"page_content": f"Page {n} fake:latency=0.3"} for n in range(60)]
                batch = await http.post(
                    f"{a.url}/v1/generation-batches",
                    json={"kind": "meta_title", "site_id": site.json()["id"], "items": items},
                    headers=auth,
                )
                assert batch.status_code == 202, batch.text
                batch_url = f"{b.url}/v1/generation-batches/{batch.json()['id']}/events"
                async with (
                    http.stream("GET", f"{b.url}/v1/balance/events", headers=auth) as balance,
                    http.stream("GET", batch_url, headers=auth) as progress,
                ):
                    balance_events, batch_events = sse_events(balance), sse_events(progress)
                    await next_balance(balance_events)
                    async with asyncio.timeout(WAIT):
                        async for event in batch_events:
                            if event.name == "progress" and json.loads(event.data)["item"]:
                                break  # the batch is being worked on
                    revoked = await http.delete(
                        f"{a.url}/v1/admin/api-keys/{key_id}", headers=ADMIN
                    )
                    assert revoked.status_code == 204
                    revoked_at = datetime.now(UTC)
                    async with asyncio.timeout(5):  # both close within seconds
                        late_balance = [e async for e in balance_events]
                        late_batch = [e async for e in batch_events]
        # Closed mid-batch; balances read after the revocation (plus clock slack) never sent.
        assert [e.name for e in late_batch if e.name == "done"] == []
        late = [
            datetime.fromisoformat(json.loads(e.data)["as_of"])
            for e in late_balance
            if e.name == "balance"
        ]
        assert all(as_of < revoked_at + timedelta(seconds=0.5) for as_of in late), late
    finally:
        fake.stop()
