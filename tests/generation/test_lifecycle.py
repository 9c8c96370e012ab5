"""The batch item life cycle table, and the published statuses it maps to."""

import pytest

from app.generation import lifecycle
from app.generation.lifecycle import (
    CANCELABLE,
    FINISHED,
    LEASED,
    TRANSITIONS,
    InvalidTransition,
    ItemState,
    check_move,
)
from app.generation.models import ITEM_STATUSES
from app.generation.schemas import ItemStatus


def test_finished_states_are_final_and_every_other_state_can_finish():
    assert {ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELED} == FINISHED
    for state in ItemState:
        seen, frontier = {state}, [state]
        while frontier:
            for target in TRANSITIONS[frontier.pop()]:
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
        assert seen & FINISHED, state


def test_claimed_and_generating_differ_where_a_cancel_is_concerned():
    assert {ItemState.QUEUED, ItemState.CLAIMED} == CANCELABLE
    assert ItemState.GENERATING not in CANCELABLE  # a call in flight may finish
    assert {ItemState.CLAIMED, ItemState.GENERATING} == LEASED
    assert check_move("claimed", ItemState.GENERATING) is ItemState.GENERATING
    with pytest.raises(InvalidTransition):
        check_move("queued", ItemState.GENERATING)  # never without a claim
    with pytest.raises(InvalidTransition):
        check_move("succeeded", ItemState.QUEUED)


def test_the_published_statuses_stay_those_of_the_api():
    assert set(lifecycle.PUBLISHED) == set(ItemState)
    assert set(lifecycle.PUBLISHED.values()) == set(ItemStatus.__args__)  # type: ignore[attr-defined]
    assert lifecycle.published("claimed") == "queued"
    assert lifecycle.published("generating") == "running"
    assert set(ITEM_STATUSES) == {state.value for state in ItemState}
