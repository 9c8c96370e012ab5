"""The plugin's polling sign-in: create, approve, poll; wrong read keys, expiry, the key
handed out exactly once (also to concurrent polls, on two server processes), rate limits."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import update

from app.accounts.models import PluginSession
from app.db import create_engine, create_sessionmaker, utcnow
from tests.apps import asgi_client, running_app
from tests.conftest import ADMIN, make_settings, new_account
from tests.servers import running_servers

AUTHORIZE = "https://dashboard.rankframe.test/plugin/authorize?from=plugin"


@pytest.fixture(scope="module")
async def plugin_client(database) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database, plugin_authorize_url=AUTHORIZE, plugin_sessions_burst=1000)
    async with running_app(settings) as application, asgi_client(application) as c:
        c.app = application  # type: ignore[attr-defined]
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def start(client: httpx.AsyncClient) -> dict:
    created = await client.post("/v1/plugin-sessions")
    assert created.status_code == 201, created.text
    return created.json()


async def test_the_handshake_hands_out_a_working_key_exactly_once(plugin_client):
    account = await new_account(plugin_client)
    session = await start(plugin_client)
    url = urlsplit(session["authorize_url"])
    assert session["authorize_url"].startswith("https://dashboard.rankframe.test/plugin/authorize")
    assert parse_qs(url.query) == {"from": ["plugin"], "session": [session["id"]]}
    assert session["read_key"] not in session["authorize_url"]

    poll = f"/v1/plugin-sessions/{session['id']}"
    pending = await plugin_client.get(poll, headers=bearer(session["read_key"]))
    assert pending.status_code == 202 and pending.json() == {"status": "pending"}

    approved = await plugin_client.post(
        f"/v1/admin/plugin-sessions/{session['id']}/approve",
        json={"account_id": str(account.id)},
        headers=ADMIN,
    )
    assert approved.status_code == 204
    again = await plugin_client.post(
        f"/v1/admin/plugin-sessions/{session['id']}/approve",
        json={"account_id": str(account.id)},
        headers=ADMIN,
    )
    assert again.status_code == 204  # the same approval twice: no-op
    other = await new_account(plugin_client)
    elsewhere = await plugin_client.post(
        f"/v1/admin/plugin-sessions/{session['id']}/approve",
        json={"account_id": str(other.id)},
        headers=ADMIN,
    )
    assert elsewhere.status_code == 409
    assert elsewhere.json()["code"] == "plugin_session_already_approved"

    got = await plugin_client.get(poll, headers=bearer(session["read_key"]))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["status"] == "approved"
    key = body["api_key"]["key"]
    me = await plugin_client.get("/v1/me", headers=bearer(key))
    assert me.status_code == 200 and me.json()["id"] == str(account.id)

    gone = await plugin_client.get(poll, headers=bearer(session["read_key"]))
    assert gone.status_code == 410 and gone.json()["code"] == "plugin_session_gone"
    keys = (await plugin_client.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
    assert len(keys["api_keys"]) == 2  # the account's first key and this one


async def test_wrong_read_keys_unknown_sessions_and_bad_input(plugin_client):
    session = await start(plugin_client)
    poll = f"/v1/plugin-sessions/{session['id']}"
    for key in ("rfr_wrong", session["read_key"] + "x", session["read_key"][:-1]):
        wrong = await plugin_client.get(poll, headers=bearer(key))
        assert wrong.status_code == 404, key
    assert (await plugin_client.get(poll)).status_code == 401
    unknown = await plugin_client.get(
        f"/v1/plugin-sessions/{uuid.uuid4()}", headers=bearer(session["read_key"])
    )
    assert unknown.status_code == 404
    assert (await plugin_client.get("/v1/plugin-sessions/nope")).status_code == 422
    approve = f"/v1/admin/plugin-sessions/{session['id']}/approve"
    assert (
        await plugin_client.post(approve, json={"account_id": "x"}, headers=ADMIN)
    ).status_code == 422
    assert (
        await plugin_client.post(approve, json={"account_id": str(uuid.uuid4())}, headers=ADMIN)
    ).status_code == 404
    assert (
        await plugin_client.post(approve, json={"account_id": str(uuid.uuid4())})
    ).status_code == 401
    missing = await plugin_client.post(
        f"/v1/admin/plugin-sessions/{uuid.uuid4()}/approve",
        json={"account_id": str(uuid.uuid4())},
        headers=ADMIN,
    )
    assert missing.status_code == 404
    # Still pending: nothing above changed it.
    still = await plugin_client.get(poll, headers=bearer(session["read_key"]))
    assert still.status_code == 202


async def _expire(settings_database, session_id: str) -> None:
    engine = create_engine(make_settings(settings_database))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(
                update(PluginSession)
                .where(PluginSession.id == uuid.UUID(session_id))
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()


async def test_an_expired_session_answers_410_approved_or_not(plugin_client, database):
    account = await new_account(plugin_client)
    pending, approved = await start(plugin_client), await start(plugin_client)
    assert (
        await plugin_client.post(
            f"/v1/admin/plugin-sessions/{approved['id']}/approve",
            json={"account_id": str(account.id)},
            headers=ADMIN,
        )
    ).status_code == 204
    for session in (pending, approved):
        await _expire(database, session["id"])
        gone = await plugin_client.get(
            f"/v1/plugin-sessions/{session['id']}", headers=bearer(session["read_key"])
        )
        assert gone.status_code == 410
    late = await plugin_client.post(
        f"/v1/admin/plugin-sessions/{pending['id']}/approve",
        json={"account_id": str(account.id)},
        headers=ADMIN,
    )
    assert late.status_code == 410
    keys = (await plugin_client.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
    assert len(keys["api_keys"]) == 1  # no key was made


async def test_concurrent_polls_get_the_key_once(plugin_client):
    account = await new_account(plugin_client)
    session = await start(plugin_client)
    await plugin_client.post(
        f"/v1/admin/plugin-sessions/{session['id']}/approve",
        json={"account_id": str(account.id)},
        headers=ADMIN,
    )
    answers = await asyncio.gather(
        *(
            plugin_client.get(
                f"/v1/plugin-sessions/{session['id']}", headers=bearer(session["read_key"])
            )
            for _ in range(10)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [410] * 9
    keys = (await plugin_client.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
    assert len(keys["api_keys"]) == 2


async def test_session_creation_is_rate_limited_per_address(database):
    settings = make_settings(
        database,
        plugin_authorize_url=AUTHORIZE,
        plugin_sessions_burst=3,
        plugin_sessions_per_minute=1,
    )
    async with (
        running_app(settings) as application,
        asgi_client(application, base_url="http://t", client=("203.0.113.7", 1234)) as first,
        asgi_client(application, base_url="http://t", client=("203.0.113.8", 1234)) as second,
    ):
        statuses = [(await first.post("/v1/plugin-sessions")).status_code for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        limited = await first.post("/v1/plugin-sessions")
        assert limited.json()["code"] == "rate_limited" and limited.headers["Retry-After"]
        assert (await second.post("/v1/plugin-sessions")).status_code == 201


async def test_without_an_authorize_url_plugin_sessions_answer_503(client):
    created = await client.post("/v1/plugin-sessions")
    assert created.status_code == 503 and created.json()["code"] == "service_not_configured"
    polled = await client.get(f"/v1/plugin-sessions/{uuid.uuid4()}", headers=bearer("rfr_x"))
    assert polled.status_code == 503


async def test_two_server_processes_hand_the_key_out_once_to_concurrent_polls(postgres_database):
    with contextlib.ExitStack() as stack:
        servers = await asyncio.to_thread(
            stack.enter_context,
            running_servers(
                postgres_database.url, 2, DB_POOL_SIZE="5", PLUGIN_AUTHORIZE_URL=AUTHORIZE
            ),
        )
        first, second = (httpx.AsyncClient(base_url=s.url, timeout=60) for s in servers)
        async with first, second:
            account = await new_account(first)
            for _ in range(5):
                session = await start(second)
                approved = await first.post(
                    f"/v1/admin/plugin-sessions/{session['id']}/approve",
                    json={"account_id": str(account.id)},
                    headers=ADMIN,
                )
                assert approved.status_code == 204
                answers = await asyncio.gather(
                    *(
                        (first if i % 2 else second).get(
                            f"/v1/plugin-sessions/{session['id']}",
                            headers=bearer(session["read_key"]),
                        )
                        for i in range(16)
                    )
                )
                assert sorted(a.status_code for a in answers) == [200] + [410] * 15
            detail = (await first.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
            assert len(detail["api_keys"]) == 1 + 5
