"""Operator commands: `python -m app reconcile | sweep-holds | openapi`."""

import argparse
import asyncio
import json
import sys
from pathlib import Path

from app.config import get_settings
from app.db import create_engine, create_sessionmaker


async def _reconcile() -> int:
    import app.models  # noqa: F401  (every model, so the metadata is complete)
    from app.credits.service import find_mismatches

    engine = create_engine(get_settings())
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            mismatches = await find_mismatches(session)
    finally:
        await engine.dispose()
    if mismatches:
        print(f"reconcile: {len(mismatches)} account(s) do not balance:", file=sys.stderr)
        for mismatch in mismatches:
            print(f"  {mismatch.describe()}", file=sys.stderr)
        return 1
    print(
        "reconcile: every account balances (available + reserved == ledger sum, "
        "reserved == open holds)"
    )
    return 0


async def _sweep_holds() -> int:
    from app.credits.sweeper import sweep_once
    from app.generation.service import fail_interrupted_generations

    engine = create_engine(get_settings())
    try:
        released = await sweep_once(create_sessionmaker(engine))
        interrupted = await fail_interrupted_generations(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    print(f"sweep-holds: released {released} expired hold(s)")
    print(f"sweep-holds: failed {interrupted} interrupted generation(s), uncharged")
    return 0


def _openapi(output: str | None) -> int:
    from app.main import create_app

    document = json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"
    if output:
        Path(output).write_text(document)
    else:
        sys.stdout.write(document)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("reconcile", help="check every account's balance against its ledger")
    commands.add_parser("sweep-holds", help="release holds whose time-to-live has passed")
    openapi = commands.add_parser("openapi", help="print or write the OpenAPI document")
    openapi.add_argument("--output", "-o", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.command == "reconcile":
        return asyncio.run(_reconcile())
    if args.command == "sweep-holds":
        return asyncio.run(_sweep_holds())
    return _openapi(args.output)


if __name__ == "__main__":
    sys.exit(main())
