"""Operator commands: `python -m app reconcile [--json] | sweep-holds | serve | openapi`.

Exit codes (for cron jobs and monitors): 0 done (and, for `reconcile`, every account
balances); 1 some account does not balance; 2 the command could not run at all (no
database, a database without the schema, a bad setting): one line on stderr says why.
"""

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from app.config import Settings, get_settings

EXIT_OK = 0
EXIT_DOES_NOT_BALANCE = 1
EXIT_CANNOT_RUN = 2

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


class CannotRun(Exception):
    """The command cannot do its job; the message is the one line an operator reads."""


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
            for e in error.errors()
        )
        raise CannotRun(f"invalid settings: {problems}") from None


def _head_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_heads())


def _known_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(ALEMBIC_INI)))
    return {revision.revision for revision in script.walk_revisions()}


def _refuse_missing_sqlite_file(settings: Settings) -> None:
    """SQLite creates a missing file on connect: an operator command must never do that."""
    from sqlalchemy.engine import make_url

    if not settings.is_sqlite:
        return
    database = make_url(settings.database_url).database
    if database and database != ":memory:" and not Path(database).is_file():
        raise CannotRun(
            f"no database at {Path(database).resolve()} (set DATABASE_URL, or create it with "
            "`alembic upgrade head`)"
        )


async def _check_schema(engine: Any) -> None:
    """The database answers and is migrated to a revision this code knows is complete."""
    from sqlalchemy import inspect, text

    def _revisions(connection: Any) -> list[str] | None:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in rows]

    try:
        async with engine.connect() as connection:
            revisions = await connection.run_sync(_revisions)
    except Exception as error:  # the driver's errors differ per database; all mean one thing
        raise CannotRun(f"cannot reach the database: {_one_line(error)}") from None
    if not revisions:
        raise CannotRun(
            "the database has no schema (no alembic_version): run `alembic upgrade head` first"
        )
    heads = _head_revisions()
    behind = [r for r in revisions if r in _known_revisions() and r not in heads]
    if behind:
        raise CannotRun(
            f"the database schema is at revision {', '.join(sorted(revisions))}, this code "
            f"needs {', '.join(sorted(heads))}: run `alembic upgrade head` first"
        )
    # A revision this code does not know is newer code's migration: its schema is a superset.


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


async def _engine(settings: Settings) -> Any:
    from sqlalchemy.exc import ArgumentError

    from app.db import create_engine

    try:
        _refuse_missing_sqlite_file(settings)
        engine = create_engine(settings)
    except ArgumentError as error:
        raise CannotRun(f"DATABASE_URL is not a database URL: {_one_line(error)}") from None
    try:
        await _check_schema(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def _reconcile(as_json: bool) -> int:
    import app.models  # noqa: F401  (every model, so the metadata is complete)
    from app.credits.service import find_mismatches
    from app.db import create_sessionmaker

    engine = await _engine(_settings())
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            mismatches = await find_mismatches(session)
    finally:
        await engine.dispose()
    if as_json:
        report = {
            "balanced": not mismatches,
            "mismatches": [
                {
                    **{
                        field.name: getattr(mismatch, field.name)
                        for field in dataclasses.fields(mismatch)
                    },
                    "account_id": str(mismatch.account_id),
                }
                for mismatch in mismatches
            ],
        }
        print(json.dumps(report))
    elif mismatches:
        print(f"reconcile: {len(mismatches)} account(s) do not balance:", file=sys.stderr)
        for mismatch in mismatches:
            print(f"  {mismatch.describe()}", file=sys.stderr)
    else:
        print(
            "reconcile: every account balances (available + reserved == ledger sum, "
            "reserved == open holds)"
        )
    return EXIT_DOES_NOT_BALANCE if mismatches else EXIT_OK


async def _sweep_holds() -> int:
    from app.credits.sweeper import sweep_once
    from app.db import create_sessionmaker
    from app.generation.recovery import fail_interrupted_generations

    engine = await _engine(_settings())
    try:
        released = await sweep_once(create_sessionmaker(engine))
        interrupted = await fail_interrupted_generations(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    print(f"sweep-holds: released {released} expired hold(s)")
    print(f"sweep-holds: failed {interrupted} interrupted generation(s), uncharged")
    return EXIT_OK


def _serve(uvicorn_args: list[str]) -> int:
    """`alembic upgrade head`, then uvicorn's own command line, in one process: one
    interpreter start and one import of the app's dependencies instead of two."""
    import uvicorn
    from alembic import command
    from alembic.config import Config

    _settings()
    command.upgrade(Config(str(ALEMBIC_INI)), "head")
    uvicorn.main.main(args=["app.main:app", *uvicorn_args], prog_name="python -m app serve")
    return EXIT_OK  # uvicorn exits through SystemExit; this is not reached


def _openapi(output: str | None) -> int:
    from app.main import create_app

    document = json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"
    if output:
        Path(output).write_text(document)
    else:
        sys.stdout.write(document)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    reconcile = commands.add_parser(
        "reconcile", help="check every account's balance against its ledger"
    )
    reconcile.add_argument(
        "--json", action="store_true", help="one JSON object on stdout, for monitoring"
    )
    commands.add_parser("sweep-holds", help="release holds whose time-to-live has passed")
    commands.add_parser(
        "serve",
        help="migrate, then run uvicorn (options after `serve` go to uvicorn)",
        add_help=False,
    )
    openapi = commands.add_parser("openapi", help="print or write the OpenAPI document")
    openapi.add_argument("--output", "-o", help="file to write (default: stdout)")
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "reconcile":
            return asyncio.run(_reconcile(args.json))
        if args.command == "sweep-holds":
            return asyncio.run(_sweep_holds())
        if args.command == "serve":
            return _serve(rest)
        return _openapi(args.output)
    except CannotRun as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
