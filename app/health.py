import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from app.errors import AppError, problem_responses

router = APIRouter(tags=["health"])


class DatabaseUnavailable(AppError):
    status = 503
    code = "database_unavailable"
    title = "The database is not answering"


class HealthRead(BaseModel):
    status: str


@router.get("/healthz")
async def healthz() -> HealthRead:
    """Liveness: the process answers. Does not touch the database."""
    return HealthRead(status="ok")


@router.get("/readyz", responses=problem_responses(DatabaseUnavailable))
async def readyz(request: Request) -> HealthRead:
    """Readiness: the database answers a query within 5 seconds."""
    try:
        async with asyncio.timeout(5), request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__} while querying the database") from exc
    return HealthRead(status="ok")
