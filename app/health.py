import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import func, select, text

from app import metrics
from app.credits.models import CreditHold
from app.db import SessionMaker, utcnow
from app.deps import Engine
from app.errors import DatabaseUnavailable, problem_responses
from app.outbound import repository as outbound_repository

router = APIRouter(tags=["health"])


class HealthRead(BaseModel):
    status: str


@router.get("/healthz")
async def healthz() -> HealthRead:
    """Liveness: the process answers. Does not touch the database."""
    return HealthRead(status="ok")


@router.get("/readyz", responses=problem_responses(DatabaseUnavailable))
async def readyz(engine: Engine) -> HealthRead:
    """Readiness: the database answers a query within 5 seconds."""
    try:
        async with asyncio.timeout(5), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__} while querying the database") from exc
    return HealthRead(status="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def get_metrics(sessionmaker: SessionMaker) -> PlainTextResponse:
    """Prometheus text format: requests, generations, credits moved, provider and webhook
    outcomes, and the open holds (read from the database, so the same on every instance)."""
    extra = ""
    try:
        async with asyncio.timeout(5), sessionmaker() as session:
            count, total = (
                await session.execute(
                    select(func.count(), func.coalesce(func.sum(CreditHold.amount), 0)).where(
                        CreditHold.status == "open"
                    )
                )
            ).one()
            pending, oldest = await outbound_repository.pending_summary(session)
            await session.rollback()
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        extra = (
            "# HELP rankframe_open_holds Open credit holds\n# TYPE rankframe_open_holds gauge\n"
            f"rankframe_open_holds {count}\n"
            "# HELP rankframe_open_hold_credits Credits held by open holds\n"
            "# TYPE rankframe_open_hold_credits gauge\n"
            f"rankframe_open_hold_credits {total}\n"
            "# HELP rankframe_outbox_pending_events Outbound events not yet delivered\n"
            "# TYPE rankframe_outbox_pending_events gauge\n"
            f"rankframe_outbox_pending_events {pending}\n"
            "# HELP rankframe_outbox_oldest_pending_age_seconds Age of the oldest "
            "undelivered outbound event (0 when none)\n"
            "# TYPE rankframe_outbox_oldest_pending_age_seconds gauge\n"
            f"rankframe_outbox_oldest_pending_age_seconds {age:.3f}\n"
        )
    except Exception:
        extra = ""
    body, content_type = metrics.exposition(extra)
    return PlainTextResponse(body, media_type=content_type)
