"""Generation's app-lifetime objects as typed dependencies: `Runtime` (the generation
runtime) and `Economy` (the economy batches). The app-wide ones (settings, the balance
broadcaster, ...) are in `app.deps`."""

from typing import Annotated

from fastapi import Depends, Request

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
