"""Economy batches: items go to Anthropic's Message Batches API (half the model cost, results
within 24 hours) instead of the batch workers.

Every instance runs one `EconomyBatches` loop beside its workers:

* submit: the oldest queued economy items (of one batch, up to
  `ECONOMY_MAX_REQUESTS_PER_BATCH`) are claimed under a lease, sent as one message batch
  (`custom_id` `item-<item id>`), and the message batch's id is stored with the items
  `running` in it, in one transaction, the moment Anthropic accepted it;
* poll: any instance takes a submitted message batch that is due (`SKIP LOCKED`, then
  `next_poll_at` moved on), retrieves it, and once it ended reads its JSONL results and
  settles them like standard items: succeeded and valid -> charged; errored, expired,
  canceled -> released; an output that breaks its rules (or an image variant the model could
  not fetch) is retried once as a standard call within its hold;
* keep alive: every `BATCH_HEARTBEAT_INTERVAL_SECONDS` the holds of the items at Anthropic
  are extended, by every instance (no instance owns them), so they outlive the message batch
  (up to 24 h) as long as any instance runs.

Settling is idempotent per item (only an item still `running` in that message batch is
recorded, under its row lock), so an instance killed mid-settle leaves the rest to the next
poll by any instance. A crash between Anthropic accepting a submission and our commit leaves
the items queued: after the lease they are submitted again (Anthropic then ran those
requests twice; credits are charged once, per hold, whatever happens).

Without `ANTHROPIC_API_KEY` the offline provider generates economy items right here (it
costs nothing), through the same recording.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anthropic

from app.credits import service as credits
from app.credits.service import Charge, HoldOutcome
from app.db import utcnow
from app.generation import economy_repository as repository
from app.generation import queue
from app.generation import repository as batches
from app.generation.background import every, keep_holds_alive
from app.generation.calls import call_provider, count_usage
from app.generation.lifecycle import ItemState, check_move
from app.generation.models import GenerationBatch, GenerationBatchItem, ProviderBatch
from app.generation.outputs import InvalidOutput
from app.generation.providers.anthropic import AnthropicProvider
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    ProviderError,
    ProviderResult,
)
from app.generation.runtime import GenerationRuntime
from app.generation.views import charge_description

logger = logging.getLogger(__name__)

PRIORITY = "economy"
RESULTS_GROUP = 200
"""Results settled in one transaction."""
POLL_BATCHES = 10
CUSTOM_ID_PREFIX = "item-"


def custom_id(item_id: int) -> str:
    return f"{CUSTOM_ID_PREFIX}{item_id}"


def item_id_of(custom: str) -> int | None:
    if not custom.startswith(CUSTOM_ID_PREFIX):
        return None
    try:
        return int(custom[len(CUSTOM_ID_PREFIX) :])
    except ValueError:
        return None


@dataclass(frozen=True)
class _Claimed:
    item_id: int
    batch_id: uuid.UUID
    kind: GenerationKind
    payload: dict[str, Any]


@dataclass
class _Outcome:
    """What one item's result comes to."""

    item_id: int
    kind: GenerationKind
    payload: dict[str, Any]
    answer: ProviderResult | ProviderError
    retry: bool = False
    """Retry once as a standard call (within the hold) before recording."""


@dataclass
class EconomyBatches:
    runtime: GenerationRuntime
    instance_id: str
    nudge: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    @property
    def anthropic(self) -> AnthropicProvider | None:
        provider = self.runtime.provider
        return provider if isinstance(provider, AnthropicProvider) else None

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run_forever(), name="economy-batches"))
        self._tasks.append(asyncio.create_task(self._keep_alive_forever(), name="economy-holds"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run_forever(self) -> None:
        while True:
            self.nudge.clear()
            for step in (self.submit, self.poll):
                try:
                    while await step():
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("economy batches: %s failed; retrying", step.__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.economy_poll_interval_seconds):
                    await self.nudge.wait()

    async def _keep_alive_forever(self) -> None:
        await every(
            self.settings.batch_heartbeat_interval_seconds,
            self.keep_alive,
            "economy batches: keeping holds alive",
        )

    async def keep_alive(self) -> None:
        """Extend the holds of every economy item at Anthropic."""
        ttl = timedelta(seconds=self.settings.batch_hold_ttl_seconds)
        async with self.runtime.sessionmaker() as session, session.begin():
            holds = await repository.in_flight_holds(session)
        await keep_holds_alive(self.runtime.sessionmaker, holds, ttl)

    # --- submitting ---

    async def submit(self) -> bool:
        """Submit one group of queued economy items; whether there was one."""
        settings = self.settings
        now = utcnow()
        token = uuid.uuid4()
        claimed: list[_Claimed] = []
        async with self.runtime.sessionmaker() as session, session.begin():
            # The batch row first, then its items: the order a cancel locks them in.
            batch_id = await repository.next_batch_to_submit(session, now)
            if batch_id is None:
                return False
            batch = (await queue.lock_batches(session, [batch_id]))[batch_id]
            found = await repository.claim_items(
                session, now, settings.economy_max_requests_per_batch, batch_id
            )
            if not found:
                return False  # another instance is taking them right now
            alive = set(
                await credits.keep_alive(
                    session,
                    [item.hold_id for item in found],
                    ttl=timedelta(seconds=settings.batch_hold_ttl_seconds),
                    now=now,
                )
            )
            for item in found:
                if item.status != ItemState.QUEUED:  # its submitter's lease ran out
                    item.status = check_move(item.status, ItemState.QUEUED)
                if item.hold_id not in alive or item.attempts >= settings.batch_max_attempts:
                    await credits.release(session, item.hold_id, now=now)
                    expired = item.hold_id not in alive
                    queue.fail_item(
                        item,
                        batch,
                        "reservation_expired" if expired else "interrupted",
                        "Its credit reservation expired before it could be generated."
                        if expired
                        else "It could not be submitted.",
                        now,
                    )
                    continue
                # Claimed for this submission: a cancel until it is sent still stops it.
                item.status = check_move(item.status, ItemState.CLAIMED)
                item.claimed_by = self.instance_id
                item.claim_token = token
                item.claimed_until = now + timedelta(seconds=settings.batch_lease_seconds)
                item.attempts += 1
                claimed.append(
                    _Claimed(item.id, batch.id, GenerationKind(batch.kind), dict(item.input))
                )
            if claimed:
                if self.anthropic is None:  # generated here, now: started in this commit
                    for item in found:
                        if item.claim_token == token:
                            item.status = check_move(item.status, ItemState.GENERATING)
                await queue.mark_batch_running(session, batch_id)
        if not claimed:
            return True
        if self.anthropic is None:
            await self._generate_here(claimed, token)
        else:
            await self._submit_to_anthropic(self.anthropic, claimed, token)
        return True

    async def _submit_to_anthropic(
        self, provider: AnthropicProvider, claimed: list[_Claimed], token: uuid.UUID
    ) -> None:
        requests = [
            {
                "custom_id": custom_id(one.item_id),
                "params": provider.request_for(one.kind, one.payload),
            }
            for one in claimed
        ]
        try:
            message_batch = await provider.client.messages.batches.create(
                requests=requests  # type: ignore[arg-type]
            )
        except anthropic.APIError:
            # The lease runs out and the items are submitted again (or fail after attempts).
            logger.exception("economy batches: submitting %d items failed", len(claimed))
            return
        now = utcnow()
        batch_id = claimed[0].batch_id
        async with self.runtime.sessionmaker() as session, session.begin():
            session.add(
                ProviderBatch(
                    id=message_batch.id,
                    batch_id=batch_id,
                    model=provider.model,
                    status="submitted",
                    request_count=len(requests),
                    created_at=now,
                    next_poll_at=now
                    + timedelta(seconds=self.settings.economy_poll_interval_seconds),
                )
            )
            await session.flush()
            submitted = await repository.mark_submitted(
                session, [one.item_id for one in claimed], token, message_batch.id
            )
            batch = await batches.lock_batch(session, batch_id)
            if batch.status == "canceled" or submitted == 0:
                found = await session.get(ProviderBatch, message_batch.id)
                assert found is not None
                found.cancel_requested_at = now
        logger.info(
            "economy batches: %d items of batch %s sent as %s",
            submitted,
            batch_id,
            message_batch.id,
        )
        if submitted < len(claimed):
            await self.cancel_at_provider(batch_id)

    async def _generate_here(self, claimed: list[_Claimed], token: uuid.UUID) -> None:
        """No Message Batches API (offline provider): generate now, record as economy."""
        for one in claimed:
            answer = await call_provider(
                self.runtime.provider, self.settings, one.kind, one.payload
            )
            async with self.runtime.sessionmaker() as session, session.begin():
                batch = (await queue.lock_batches(session, [one.batch_id]))[one.batch_id]
                items = await queue.lock_items(session, [one.item_id])
                item = items.get(one.item_id)
                if item is None or item.status != ItemState.GENERATING or item.claim_token != token:
                    continue
                await self._record(
                    session, batch, [(item, _Outcome(one.item_id, one.kind, one.payload, answer))]
                )
            await self._complete(one.batch_id)

    # --- polling and settling ---

    async def poll(self) -> bool:
        """Poll the message batches that are due; whether any was."""
        now = utcnow()
        until = now + timedelta(seconds=self.settings.economy_poll_interval_seconds)
        async with self.runtime.sessionmaker() as session, session.begin():
            due = await repository.claim_due_provider_batches(session, now, until, POLL_BATCHES)
        provider = self.anthropic
        if provider is None:
            return False
        for provider_batch in due:
            try:
                await self._poll_one(provider, provider_batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("economy batches: polling %s failed", provider_batch.id)
        return False

    async def _poll_one(self, provider: AnthropicProvider, provider_batch: ProviderBatch) -> None:
        client = provider.client
        if provider_batch.cancel_requested_at is not None and provider_batch.canceled_at is None:
            await self._cancel_one(provider, provider_batch.id)
        message_batch = await client.messages.batches.retrieve(provider_batch.id)
        if message_batch.processing_status != "ended":
            return
        kinds: dict[int, tuple[GenerationKind, dict[str, Any]]] = {}
        async with self.runtime.sessionmaker() as session, session.begin():
            batch = await session.get(GenerationBatch, provider_batch.batch_id)
            assert batch is not None
            kind = GenerationKind(batch.kind)
            for item in await batches.list_items(session, provider_batch.batch_id):
                if (
                    item.provider_batch_id == provider_batch.id
                    and item.status == ItemState.GENERATING
                ):
                    kinds[item.id] = (kind, dict(item.input))
        group: list[_Outcome] = []
        results = await client.messages.batches.results(provider_batch.id)
        async for line in results:
            item_id = item_id_of(line.custom_id)
            if item_id is None or item_id not in kinds:
                continue
            kind, payload = kinds[item_id]
            group.append(self._outcome(provider, item_id, kind, payload, line.result))
            if len(group) >= RESULTS_GROUP:
                await self._settle(provider_batch, group)
                group = []
        if group:
            await self._settle(provider_batch, group)
        async with self.runtime.sessionmaker() as session, session.begin():
            missing = await repository.running_item_ids(session, provider_batch.id)
            if missing:
                batch_id = provider_batch.batch_id
                batch = (await queue.lock_batches(session, [batch_id]))[batch_id]
                items = await repository.lock_running_items(session, provider_batch.id, missing)
                now = utcnow()
                await credits.release_many(session, [i.hold_id for i in items.values()], now=now)
                for item in items.values():
                    queue.fail_item(
                        item, batch, "missing_result", "Anthropic returned no result for it.", now
                    )
            await repository.mark_settled(session, provider_batch.id, utcnow())
        await self._complete(provider_batch.batch_id)

    def _outcome(
        self,
        provider: AnthropicProvider,
        item_id: int,
        kind: GenerationKind,
        payload: dict[str, Any],
        result: Any,
    ) -> _Outcome:
        if result.type == "succeeded":
            message = result.message
            usage = message.usage
            model = message.model or provider.model
            try:
                output = provider.read_output(kind, payload, message)
            except InvalidOutput as exc:
                failure = ProviderError(
                    FailureKind.FAILED,
                    exc.reason,
                    f"Claude's output was not usable: {exc.detail}",
                    model=model,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                )
                return _Outcome(item_id, kind, payload, failure, retry=True)
            return _Outcome(
                item_id,
                kind,
                payload,
                ProviderResult(output, model, usage.input_tokens, usage.output_tokens, 0),
            )
        if result.type == "errored":
            error_type = result.error.error.type
            failure = ProviderError(
                FailureKind.FAILED,
                "upstream_error" if error_type != "invalid_request_error" else "invalid_request",
                f"Anthropic could not process it ({error_type}).",
                model=provider.model,
            )
            # An image variant the model could not fetch: the standard call tries the original.
            retry = error_type == "invalid_request_error" and kind is GenerationKind.ALT_TEXT
            return _Outcome(item_id, kind, payload, failure, retry=retry)
        reason = "expired" if result.type == "expired" else "canceled_by_provider"
        detail = (
            "Anthropic did not process it within 24 hours."
            if result.type == "expired"
            else "Anthropic canceled it."
        )
        return _Outcome(item_id, kind, payload, ProviderError(FailureKind.FAILED, reason, detail))

    async def _settle(self, provider_batch: ProviderBatch, group: list[_Outcome]) -> None:
        for outcome in group:
            answer = outcome.answer
            count_usage(self.settings, outcome.kind, answer, PRIORITY)
        # Retries as standard calls (no transaction open), then one transaction for all.
        provider = self.anthropic
        for outcome in group:
            if outcome.retry and provider is not None:
                economy = outcome.answer
                retried = await self._standard_retry(provider, outcome.kind, outcome.payload)
                outcome.answer = _with_tokens_added(retried, economy)
        async with self.runtime.sessionmaker() as session, session.begin():
            batch_id = provider_batch.batch_id
            batch = (await queue.lock_batches(session, [batch_id]))[batch_id]
            items = await repository.lock_running_items(
                session, provider_batch.id, [outcome.item_id for outcome in group]
            )
            await self._record(
                session,
                batch,
                [(items[o.item_id], o) for o in group if o.item_id in items],
                latency_from=provider_batch.created_at,
            )

    async def _standard_retry(
        self, provider: AnthropicProvider, kind: GenerationKind, payload: dict[str, Any]
    ) -> ProviderResult | ProviderError:
        """The one retry of an economy result that broke its rules: a standard call (one
        output attempt; the economy result was the first), within the item's hold."""
        try:
            async with asyncio.timeout(self.settings.generation_timeout_seconds):
                answer: ProviderResult | ProviderError = await provider.generate(
                    kind, payload, attempts=1
                )
        except ProviderError as exc:
            answer = exc
        except TimeoutError:
            answer = ProviderError(
                FailureKind.FAILED, "timeout", "The generation took too long.", model=provider.model
            )
        count_usage(self.settings, kind, answer, "standard")
        return answer

    async def _record(
        self,
        session: Any,
        batch: GenerationBatch,
        results: Sequence[tuple[GenerationBatchItem, _Outcome]],
        *,
        latency_from: Any = None,
    ) -> None:
        """Charge the items that succeeded, release the others (the caller locked them)."""
        now = utcnow()
        charges = [
            Charge(
                item.hold_id,
                1,
                f"{charge_description(outcome.kind)} (economy batch)",
                batch_id=item.batch_id,
            )
            for item, outcome in results
            if isinstance(outcome.answer, ProviderResult)
        ]
        settled = await credits.settle_many(session, charges, now=now) if charges else {}
        released = []
        for item, outcome in results:
            answer = outcome.answer
            item.model = answer.model
            item.input_tokens = answer.input_tokens
            item.output_tokens = answer.output_tokens
            item.claimed_until = None
            item.claim_token = None
            if latency_from is not None:
                item.latency_ms = round((now - latency_from).total_seconds() * 1000)
            if isinstance(answer, ProviderResult):
                if latency_from is None:
                    item.latency_ms = answer.latency_ms
                if settled[item.hold_id].outcome is HoldOutcome.SETTLED:
                    queue.finish_item(item, batch, ItemState.SUCCEEDED, now)
                    item.output = answer.output
                    item.credits_charged = 1
                else:
                    queue.fail_item(
                        item,
                        batch,
                        "reservation_expired",
                        "The result arrived after the credit reservation had expired.",
                        now,
                    )
            else:
                released.append(item.hold_id)
                queue.fail_item(item, batch, answer.reason, answer.detail, now)
                if answer.kind is FailureKind.UNAVAILABLE:
                    item.error_code = "provider_unavailable"
        if released:
            await credits.release_many(session, released, now=now)

    async def _complete(self, batch_id: uuid.UUID) -> None:
        async with self.runtime.sessionmaker() as session, session.begin():
            await queue.complete_batch_if_done(session, batch_id, utcnow())

    # --- canceling ---

    async def cancel_at_provider(self, batch_id: uuid.UUID) -> None:
        """Call Anthropic's cancel for every message batch of a canceled batch (the poller
        calls it again for any this could not reach)."""
        provider = self.anthropic
        if provider is None:
            return
        async with self.runtime.sessionmaker() as session, session.begin():
            pending = [
                b.id
                for b in await repository.provider_batches_of(session, batch_id)
                if b.cancel_requested_at is not None
            ]
        for provider_batch_id in pending:
            try:
                await self._cancel_one(provider, provider_batch_id)
            except Exception:
                logger.exception("economy batches: canceling %s failed", provider_batch_id)

    async def _cancel_one(self, provider: AnthropicProvider, provider_batch_id: str) -> None:
        await provider.client.messages.batches.cancel(provider_batch_id)
        async with self.runtime.sessionmaker() as session, session.begin():
            await repository.mark_canceled_at_provider(session, provider_batch_id, utcnow())


def _with_tokens_added(
    answer: ProviderResult | ProviderError, earlier: ProviderResult | ProviderError
) -> ProviderResult | ProviderError:
    """`answer` carrying the tokens of the economy result before it too."""
    input_tokens = answer.input_tokens + earlier.input_tokens
    output_tokens = answer.output_tokens + earlier.output_tokens
    if isinstance(answer, ProviderResult):
        return ProviderResult(
            answer.output, answer.model, input_tokens, output_tokens, answer.latency_ms
        )
    answer.input_tokens, answer.output_tokens = input_tokens, output_tokens
    answer.model = answer.model or earlier.model
    return answer
