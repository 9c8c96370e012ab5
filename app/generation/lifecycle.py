"""The life of a batch item, in one place: its states, the moves allowed between them, and
what each state is called in the API.

    queued ──claim──> claimed ──start──> generating ──> succeeded | failed
      ^  │              │  │                 │
      │  └─cancel─┐     │  └─cancel──┐       └─> queued (rate limited, shutdown, lease lost)
      │           v     v            v
      └───────── canceled <──────────┘  (claimed -> queued: shutdown, lease lost)

`claimed` (taken by a worker, not yet sent) and `generating` (the model call may be in
flight) are different states so that a cancel can stop the first and must let the second
finish: the move `claimed -> generating` is a committed conditional update made just
before the model call, only while the batch is not canceled and the claim is still the
worker's. A cancel that commits first therefore always wins, on every instance.
"""

import enum


class ItemState(enum.StrEnum):
    QUEUED = "queued"
    """Waiting for a worker (or for a provider's Retry-After to pass)."""
    CLAIMED = "claimed"
    """Taken by a worker under a lease; no model call has started."""
    GENERATING = "generating"
    """The worker was allowed to call the model; the call may be in flight."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    ItemState.QUEUED: frozenset({ItemState.CLAIMED, ItemState.CANCELED}),
    ItemState.CLAIMED: frozenset(
        {
            ItemState.GENERATING,
            ItemState.QUEUED,  # handed back at shutdown, or its lease ran out
            ItemState.CANCELED,  # the batch was canceled before the call started
            ItemState.FAILED,  # out of attempts, or its hold expired, before any call
        }
    ),
    ItemState.GENERATING: frozenset(
        {
            ItemState.SUCCEEDED,
            ItemState.FAILED,
            ItemState.QUEUED,  # rate limited, shut down mid-call, or its lease ran out
            ItemState.CANCELED,  # its worker died after its batch was canceled
        }
    ),
    ItemState.SUCCEEDED: frozenset(),
    ItemState.FAILED: frozenset(),
    ItemState.CANCELED: frozenset(),
}

FINISHED = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
UNFINISHED = frozenset(ItemState) - FINISHED
LEASED = frozenset({ItemState.CLAIMED, ItemState.GENERATING})
"""States owned by a worker under a lease (`claimed_until`); reclaimable once it passed."""
CANCELABLE = frozenset(
    state for state in UNFINISHED if ItemState.CANCELED in TRANSITIONS[state]
) - {ItemState.GENERATING}
"""What a cancel stops: everything not yet sent to the model."""

PUBLISHED: dict[ItemState, str] = {
    ItemState.QUEUED: "queued",
    ItemState.CLAIMED: "queued",
    ItemState.GENERATING: "running",
    ItemState.SUCCEEDED: "succeeded",
    ItemState.FAILED: "failed",
    ItemState.CANCELED: "canceled",
}
"""The API's item statuses (unchanged): a claimed item has not started, so it is still
`queued` to the customer; `running` means its model call may be under way."""


class InvalidTransition(Exception):
    pass


def can_move(current: ItemState | str, target: ItemState) -> bool:
    return target in TRANSITIONS[ItemState(current)]


def check_move(current: ItemState | str, target: ItemState) -> ItemState:
    """`target`, or `InvalidTransition` if the table does not allow the move."""
    if not can_move(current, target):
        raise InvalidTransition(f"a batch item cannot go from {current} to {target}")
    return target


def published(state: ItemState | str) -> str:
    return PUBLISHED[ItemState(state)]


def sql_list(states: frozenset[ItemState] | set[ItemState]) -> str:
    """`'a', 'b'` for SQL text (sorted, so statements and migrations are stable)."""
    return ", ".join(f"'{state.value}'" for state in sorted(states))


def values(states: frozenset[ItemState] | set[ItemState]) -> list[str]:
    return sorted(state.value for state in states)
