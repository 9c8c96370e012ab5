"""The alert rule: the state machine, and its SQL spelling for the fast reserve."""

import itertools

import pytest
from sqlalchemy import text

from app.credits.alerts import TRANSITION_EVENTS, AlertState, next_state, next_state_sql

OK, LOW, DEPLETED = AlertState.OK, AlertState.LOW, AlertState.DEPLETED


@pytest.mark.parametrize(
    ("available", "threshold", "state", "falling", "expected"),
    [
        (49, 50, OK, True, LOW),
        (50, 50, OK, True, OK),
        (0, 50, OK, True, DEPLETED),
        (0, 50, LOW, True, DEPLETED),
        (1, 50, DEPLETED, False, DEPLETED),  # a bounce off 0 is not a new crossing
        (50, 50, DEPLETED, False, OK),
        (50, 50, LOW, False, OK),
        (30, 50, OK, False, OK),  # granted 30 under a threshold of 50: not "low" yet
        (0, 0, OK, True, OK),  # alerts off
        (0, 50, OK, False, OK),  # a rise never makes things worse
    ],
)
def test_next_state(available, threshold, state, falling, expected):
    assert next_state(available, threshold, state, falling=falling) is expected


def test_every_move_that_sends_is_a_real_crossing():
    assert TRANSITION_EVENTS[(OK, DEPLETED)] == ("balance.low", "balance.depleted")
    assert all(old is not new for old, new in TRANSITION_EVENTS)


async def test_the_fast_reserve_sql_agrees_with_the_rule(engine):
    """Every (available after, threshold, state) of a fall, judged by the database's CASE
    and by Python."""
    values = [0, 1, 2, 49, 50, 51, 1000]
    cases = list(itertools.product(values, [0, 1, 50, 1000], list(AlertState)))
    sql = next_state_sql("CAST(:available AS BIGINT)")
    async with engine.connect() as connection:
        for available, threshold, state in cases:
            got = await connection.scalar(
                text(
                    f"SELECT {sql} FROM (SELECT CAST(:threshold AS BIGINT) AS "
                    "low_balance_threshold, CAST(:state AS VARCHAR(16)) AS alert_state) "
                    "AS credit_balance"
                ),
                {"available": available, "threshold": threshold, "state": state.value},
            )
            assert got == next_state(available, threshold, state, falling=True).value, (
                available,
                threshold,
                state,
            )
