"""The dispatcher: on every instance, sends due outbox events to `EVENTS_WEBHOOK_URL`.

A short transaction claims due events, as many as there are free slots out of
`EVENTS_DISPATCH_BATCH` (`SELECT ... FOR UPDATE SKIP LOCKED`, so instances take different
events; each is then pushed out of reach for `EVENTS_CLAIM_SECONDS`); each POST goes out on
its own with no transaction or connection held (at most `EVENTS_TIMEOUT_SECONDS`, redirects
not followed); a second short transaction records the attempt if the event is still under
this claim. An instance killed mid-round
leaves its events pending: once the claim runs out, any instance sends them again with
the same `webhook-id` (at least once; receivers dedupe by that id). The claim outlives
the timeout, so two instances never send one event at the same time.

Every attempt is a Standard Webhooks message (`standardwebhooks`): `webhook-id` (the
event's), `webhook-timestamp` (now) and `webhook-signature` over the stored body.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app import metrics
from app.config import Settings
from app.db import utcnow
from app.outbound import repository, service
from app.outbound.models import OutboundEvent
from app.outbound.service import AttemptResult

logger = logging.getLogger(__name__)


def events_configured(settings: Settings) -> bool:
    return bool(settings.events_webhook_url) and settings.events_webhook_secret is not None


@dataclass(frozen=True)
class _Claimed:
    event: OutboundEvent
    claimed_until: datetime


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
    ) -> None:
        assert settings.events_webhook_url and settings.events_webhook_secret is not None
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.client = client
        self.url = settings.events_webhook_url
        self.signer = Webhook(settings.events_webhook_secret.get_secret_value())

    async def claim(self, limit: int) -> list[_Claimed]:
        """Take up to `limit` due events for this instance (a short transaction)."""
        now = utcnow()
        claimed_until = now + timedelta(seconds=self.settings.events_claim_seconds)
        async with self.sessionmaker() as session, session.begin():
            events = await repository.claim_due(session, now, limit, claimed_until)
        return [_Claimed(event, claimed_until) for event in events]

    async def deliver(self, claimed: _Claimed) -> None:
        """One attempt, with no transaction open while it is sent; then its outcome, if the
        event is still under this claim."""
        result = await self._send(claimed.event)
        async with self.sessionmaker() as session, session.begin():
            locked = await repository.lock_claimed(session, claimed.event.id, claimed.claimed_until)
            if locked is None:
                return  # redelivered or taken over meanwhile: not ours to record
            outcome = await service.record_attempt(
                session,
                locked,
                result,
                schedule=self.settings.events_retry_schedule_seconds,
                now=utcnow(),
            )
        metrics.EVENT_DELIVERIES.labels(claimed.event.type, outcome.value).inc()

    async def _send(self, event: OutboundEvent) -> AttemptResult:
        message_id = service.webhook_id(event)
        sent_at = utcnow()
        headers = {
            "content-type": "application/json",
            "user-agent": "RankFrame-Credits-Webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self.signer.sign(message_id, sent_at, event.body),
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.events_timeout_seconds):
                response = await self.client.post(
                    self.url, content=event.body.encode(), headers=headers
                )
        except TimeoutError:
            error: str | None = f"no answer within {self.settings.events_timeout_seconds:g} s"
            status_code = None
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            status_code = None
        else:
            status_code = response.status_code
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        elapsed = round((time.monotonic() - started) * 1000)
        return AttemptResult(status_code, error, elapsed)

    async def run_forever(self) -> None:
        """Keep up to `EVENTS_DISPATCH_BATCH` attempts in flight, each on its own: a
        receiver that hangs holds its slot for the timeout, not everyone else's events."""
        slots = self.settings.events_dispatch_batch
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                free = slots - len(in_flight)
                claimed: list[_Claimed] = []
                if free > 0:
                    try:
                        claimed = await self.claim(free)
                    except Exception:
                        logger.exception("claiming outbound events failed; retrying")
                for one in claimed:
                    task = asyncio.create_task(self._deliver_logged(one))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(claimed) < free or free <= 0:
                    await asyncio.sleep(self.settings.events_dispatch_interval_seconds)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _deliver_logged(self, claimed: _Claimed) -> None:
        try:
            await self.deliver(claimed)
        except Exception:
            # Its claim runs out and the event is tried again.
            logger.exception("recording an outbound event attempt failed")


@contextlib.asynccontextmanager
async def run_outbound(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[None]:
    """For the app's lifetime: the dispatcher, when events are configured."""
    tasks = []
    client: httpx.AsyncClient | None = None
    if events_configured(settings):
        client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(settings.events_timeout_seconds),
        )
        dispatcher = Dispatcher(settings, sessionmaker, client)
        tasks.append(asyncio.create_task(dispatcher.run_forever()))
    elif settings.events_webhook_url:
        logger.error(
            "EVENTS_WEBHOOK_URL is set but EVENTS_WEBHOOK_SECRET is not: outbound events are "
            "kept in the outbox and not sent until the secret is set"
        )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if client is not None:
            await client.aclose()
