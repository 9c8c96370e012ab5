"""The app-lifetime objects generation endpoints use, as typed dependencies: `Runtime`
(the generation runtime), `Economy` (the economy batches) and `Broadcaster` (the balance
broadcaster, whose revocations end a batch's stream)."""

from typing import Annotated

from fastapi import Depends, Request

from app.credits.events import BalanceBroadcaster
from app.generation.economy import EconomyBatches
from app.generation.runtime import GenerationRuntime


async def get_runtime(request: Request) -> GenerationRuntime:
    runtime: GenerationRuntime = request.app.state.generation
    return runtime


Runtime = Annotated[GenerationRuntime, Depends(get_runtime)]


async def get_economy(request: Request) -> EconomyBatches:
    economy: EconomyBatches = request.app.state.economy
    return economy


Economy = Annotated[EconomyBatches, Depends(get_economy)]


async def get_broadcaster(request: Request) -> BalanceBroadcaster:
    broadcaster: BalanceBroadcaster = request.app.state.balance_broadcaster
    return broadcaster


Broadcaster = Annotated[BalanceBroadcaster, Depends(get_broadcaster)]
