"""Balance fan-out: one read per change per instance, the same event to every stream."""

import asyncio
import contextlib
import json

from tests.conftest import adjust, funded_account


async def test_one_read_per_change_reaches_every_stream_of_the_account(app, client):
    broadcaster = app.state.balance_broadcaster
    account = await funded_account(client, 5)
    other = await funded_account(client, 1)
    with contextlib.ExitStack() as stack:
        streams = [stack.enter_context(broadcaster.subscribe(account.id, None)) for _ in range(500)]
        bystander = stack.enter_context(broadcaster.subscribe(other.id, None))
        # The funding's own notification may still be on its way: let it land first.
        await asyncio.sleep(0.5)
        for stream in streams:
            stream.latest = None
        bystander.latest = None
        reads_before = broadcaster.reads
        assert (await adjust(client, account, 3)).status_code == 201
        async with asyncio.timeout(20):
            while any(stream.latest is None for stream in streams):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert broadcaster.reads - reads_before == 1
        (event,) = {stream.latest for stream in streams}  # one event object for all
        assert json.loads(event.data)["available"] == 8
        assert event.id == (await broadcaster.current(account.id)).id
        assert bystander.latest is None  # another account's streams read nothing

        # Changes that arrive while a read runs are coalesced, never lost.
        for _ in range(5):
            assert (await adjust(client, account, 1)).status_code == 201
        async with asyncio.timeout(20):
            while any(  # noqa: ASYNC110
                json.loads(s.latest.data)["available"] != 13 for s in streams if s.latest
            ):
                await asyncio.sleep(0.01)
        assert broadcaster.reads - reads_before <= 6
