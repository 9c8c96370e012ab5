"""Fresh, empty databases of either kind for tests that must start from nothing."""

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.conftest import DEFAULT_PG, _pg_admin_connection


@contextlib.asynccontextmanager
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new, unmigrated database: a temp SQLite file, or a PostgreSQL database
    created here and dropped on exit."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'fresh-{secrets.token_hex(4)}.db'}"
        return
    base_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)
    name = f"rf_fresh_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await _pg_admin_connection(base_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await _pg_admin_connection(base_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
