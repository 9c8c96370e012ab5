"""Production refuses the settings that would lose money or lock nobody out; the admin
endpoints can be switched off."""

import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.apps import app_client
from tests.conftest import ADMIN, ADMIN_TOKEN

SQLITE = "sqlite+aiosqlite:////tmp/unused.db"


def production(**values: object) -> Settings:
    return Settings(_env_file=None, environment="production", **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"admin_token": ADMIN_TOKEN}, "DATABASE_URL is required in production"),
        ({"database_url": SQLITE}, "ADMIN_TOKEN is required in production"),
        ({"database_url": SQLITE, "admin_token": "x" * 31}, "at least 32"),
        ({"database_url": SQLITE, "admin_token": ""}, "ADMIN_TOKEN is required"),
    ],
)
def test_production_refuses(values, message, monkeypatch):
    for name in ("DATABASE_URL", "ADMIN_TOKEN", "ADMIN_API_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match=message):
        production(**values)


def test_production_without_admin_endpoints_needs_no_token(monkeypatch):
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    assert production(database_url=SQLITE, admin_api_enabled=False).admin_token is None


def test_transaction_pooling_needs_a_direct_listen_url():
    url = "postgresql+asyncpg://postgres@127.0.0.1:6432/x"
    with pytest.raises(ValidationError, match="DATABASE_LISTEN_URL is required"):
        Settings(_env_file=None, database_url=url, db_transaction_pooling=True)  # type: ignore[call-arg]
    direct = "postgresql+asyncpg://postgres@127.0.0.1:5432/x"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=url, db_transaction_pooling=True, database_listen_url=direct
    )
    assert settings.listen_url == direct


async def test_admin_endpoints_switched_off_answer_401_even_with_the_token(tmp_path):
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/off.db",
        admin_token=ADMIN_TOKEN,
        admin_api_enabled=False,
        hold_sweep_interval_seconds=3600.0,
    )
    async with app_client(settings, base_url="http://t") as client:
        answer = await client.post("/v1/admin/accounts", json={"email": "a@b.co"}, headers=ADMIN)
    assert answer.status_code == 401
    assert "ADMIN_API_ENABLED=false" in answer.json()["detail"]
