"""Calibration apps for the benchmark, served like the service (uvicorn, same workers):
the floor the machine sets for a Python endpoint that does one database round trip.

* `bench.calibration:fastapi_app`: a bare FastAPI endpoint, one asyncpg `fetchrow`, no
  authentication (what the issue's 12% figure refers to);
* `bench.calibration:asgi_app`: the same without any framework, a plain ASGI callable.

Both read the same row the badge reads (`credit_balance` by account id)."""

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI

DSN = os.environ.get("CALIBRATION_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ACCOUNT = uuid.UUID(os.environ.get("CALIBRATION_ACCOUNT", str(uuid.UUID(int=0))))
SQL = "SELECT available, reserved FROM credit_balance WHERE account_id = $1"
_pool: asyncpg.Pool | None = None


async def _open() -> asyncpg.Pool:
    return await asyncpg.create_pool(DSN, min_size=1, max_size=10)


@contextlib.asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    global _pool
    _pool = await _open()
    yield
    await _pool.close()


fastapi_app = FastAPI(lifespan=_lifespan)


@fastapi_app.get("/balance")
async def balance() -> dict[str, int]:
    assert _pool is not None
    row = await _pool.fetchrow(SQL, ACCOUNT)
    return {"available": row["available"], "reserved": row["reserved"]}


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pool = await _open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _pool.close()  # type: ignore[union-attr]
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _pool is not None
    row = await _pool.fetchrow(SQL, ACCOUNT)
    body = json.dumps({"available": row["available"], "reserved": row["reserved"]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
