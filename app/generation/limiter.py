"""The process's one gate in front of the AI provider, shared by batch workers and single
generations: adaptive concurrency (AIMD).

* Every call holds a slot; at most `limit` slots are out (`GENERATION_CONCURRENCY` at most).
* A 429 or 529 halves the limit (at least 1; once per round of calls, so one burst of
  rejections cuts once) and pauses new calls until its `retry-after` has passed.
* The `anthropic-ratelimit-*-remaining` / `-reset` headers of every answer slow it down
  before the limit: nothing left means no new call until the reset; no more requests left
  than the calls this process could add anyway means no growth.
* Each success grows the limit by 1/limit, i.e. by one slot per `limit` successes, back up
  to the ceiling; within one slot of the level where the last cut happened it grows
  `PROBE_SLOWDOWN` times slower (the provider said no there: probe it rarely), and once
  above that level without a rejection it forgets it.

A batch worker waits for a slot as long as it takes (its item stays claimed, and a cancel
still stops it); a single generation waits a bounded time, then answers 503.
"""

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime

from app import metrics

RATE_LIMITED_STATUSES = frozenset({429, 529})
REMAINING_HEADERS = (
    "anthropic-ratelimit-requests",
    "anthropic-ratelimit-tokens",
    "anthropic-ratelimit-input-tokens",
    "anthropic-ratelimit-output-tokens",
)
DEFAULT_PAUSE_SECONDS = 1.0
"""A 429 without `retry-after`: pause new calls this long."""
MAX_PAUSE_SECONDS = 60.0
PROBE_SLOWDOWN = 8
"""How much slower the limit grows near the level that was last rejected."""


class SlotUnavailable(Exception):
    """No slot within the wait: the provider is saturated or asked us to back off."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"no provider slot; retry in {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return min(seconds, MAX_PAUSE_SECONDS)
    return None


def _reset_in_seconds(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    try:
        reset = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if reset.tzinfo is None:
        reset = reset.replace(tzinfo=UTC)
    return max(0.0, min((reset - now).total_seconds(), MAX_PAUSE_SECONDS))


class AdaptiveLimiter:
    def __init__(
        self, ceiling: int, *, clock: Callable[[], float] = time.monotonic, name: str = "provider"
    ) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_use = 0
        self.paused_until = 0.0
        self.rate_limited = 0
        """429/529 answers seen (for metrics and benchmarks)."""
        self._clock = clock
        self._name = name
        self._cut_at_calls: int | None = None
        self._rejected_at: float | None = None
        """The limit when the last cut happened: growth slows just below it."""
        self._calls_started = 0
        self._urgent = 0
        """Bounded waits (single generations) waiting now: batch waits let them go first."""
        self._changed = asyncio.Condition()
        self._report()

    @property
    def allowed(self) -> int:
        return max(1, math.floor(self.limit))

    def _report(self) -> None:
        metrics.PROVIDER_CONCURRENCY_LIMIT.labels(self._name).set(self.allowed)

    @contextlib.asynccontextmanager
    async def slot(self, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109
        """Hold one slot for a provider call. With a `timeout` (a single generation, whose
        customer is waiting) the wait is bounded (`SlotUnavailable` after it) and served
        before the waits without one (batch workers)."""
        await self._acquire(timeout)
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= 1
                self._changed.notify_all()

    async def _acquire(self, wait_seconds: float | None) -> None:
        deadline = None if wait_seconds is None else self._clock() + wait_seconds
        async with self._changed:
            if deadline is not None:
                self._urgent += 1
            try:
                await self._wait_for_slot(deadline)
            finally:
                if deadline is not None:
                    self._urgent -= 1
                    self._changed.notify_all()
            self.in_use += 1
            self._calls_started += 1

    async def _wait_for_slot(self, deadline: float | None) -> None:
        while True:
            now = self._clock()
            paused_for = self.paused_until - now
            free = self.in_use < self.allowed and (deadline is not None or not self._urgent)
            if paused_for <= 0 and free:
                return
            wait: float | None = paused_for if paused_for > 0 else None
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    raise SlotUnavailable(max(1, math.ceil(max(paused_for, 1.0))))
                wait = left if wait is None else min(wait, left)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """What one provider answer says: its status and rate-limit headers."""
        now = self._clock()
        pause = 0.0
        tight = False
        wall_now = datetime.now(UTC)
        for prefix in REMAINING_HEADERS:
            remaining = headers.get(f"{prefix}-remaining")
            if remaining is None:
                continue
            try:
                left = int(remaining)
            except ValueError:
                continue
            if left <= 0:
                pause = max(pause, _reset_in_seconds(headers.get(f"{prefix}-reset"), wall_now) or 0)
                tight = True
            elif prefix == "anthropic-ratelimit-requests" and left <= self._headroom():
                # No more room than the calls we could add ourselves: do not grow.
                tight = True
        if status_code in RATE_LIMITED_STATUSES:
            self.rate_limited += 1
            metrics.PROVIDER_RATE_LIMITED.labels(self._name).inc()
            retry_after = _retry_after_seconds(headers)
            pause = max(pause, DEFAULT_PAUSE_SECONDS if retry_after is None else retry_after)
            # Once per round: the calls already in flight when we cut may be rejected too.
            since_cut = (
                None if self._cut_at_calls is None else self._calls_started - self._cut_at_calls
            )
            if since_cut is None or since_cut >= self.allowed:
                self._rejected_at = float(self.allowed)
                self.limit = max(1.0, self.limit / 2)
                self._cut_at_calls = self._calls_started
        elif 200 <= status_code < 300 and not tight:
            self._grow()
        if pause > 0:
            self.paused_until = max(self.paused_until, now + pause)
        self._report()
        self._wake()

    def _grow(self) -> None:
        step = 1 / self.limit
        if self._rejected_at is not None:
            if self.limit > self._rejected_at:
                self._rejected_at = None  # the level that was refused is served now
            elif self.limit + 1 > self._rejected_at:
                step /= PROBE_SLOWDOWN
        self.limit = min(float(self.ceiling), self.limit + step)

    def _headroom(self) -> int:
        """Calls this process could start without growing (this answer's slot included)."""
        return max(0, self.allowed - self.in_use) + 1

    def _wake(self) -> None:
        """Let waiters look again (the limit may have grown); never blocks the caller."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(notify())
            _background.add(task)
            task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()
