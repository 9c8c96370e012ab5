"""A generation request's HTTP answer (`Outcome`), the answers given when the generation
cannot end normally, and storing an answer for the request's `Idempotency-Key`."""

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import idempotency
from app.errors import DatabaseUnavailable, app_error_body
from app.generation.errors import GenerationFailed
from app.generation.models import Generation


@dataclass(frozen=True)
class Outcome:
    """A generation request's HTTP answer: a body to send and, for a key, to store."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_problem(self) -> bool:
        return self.status_code >= 400


def unrecorded_outcome(generation_id: uuid.UUID, *, result_at_stake: bool) -> Outcome:
    """The truth when the database failed after the reserve may have committed."""
    if result_at_stake:
        detail = (
            "The database stopped answering while this generation's result was being "
            f"recorded. Unless the charge was already recorded (GET /v1/generations/"
            f"{generation_id} then shows it succeeded, with its output), the generation "
            "fails and its credit is given back as soon as the database answers again."
        )
        extra: dict[str, Any] = {"generation_id": str(generation_id)}
    else:
        detail = (
            "The database stopped answering while this generation was starting. Nothing is "
            "charged: a credit held for it, if any, is given back as soon as the database "
            "answers again."
        )
        extra = {"generation_id": str(generation_id), "credits_charged": 0}
    error = DatabaseUnavailable(
        detail + " A retry with the same Idempotency-Key then gets the recorded answer, or "
        "runs it anew.",
        headers={"Retry-After": "5"},
        **extra,
    )
    return Outcome(error.status, app_error_body(error), error.headers)


def stored_failure_outcome(generation: Generation) -> Outcome:
    error = GenerationFailed(
        "The generation was interrupted. Nothing was charged.",
        generation_id=str(generation.id),
        credits_charged=0,
        reason="interrupted",
    )
    return Outcome(error.status, app_error_body(error))


async def store(session: AsyncSession, generation: Generation, outcome: Outcome) -> None:
    """The answer for the generation's key (`idempotency.finish`): stored when final; a 503
    (provider unavailable, interrupted, database) frees the key so a retry after
    Retry-After generates again."""
    if generation.idempotency_record_id is None:
        return
    claim = idempotency.Claim(generation.idempotency_record_id)
    if outcome.status_code == 503:
        # The record goes with the key: the generation no longer points at it.
        generation.idempotency_record_id = None
        await session.flush()
    await idempotency.finish(session, claim, outcome.status_code, outcome.body)
