"""The raw side of the benchmark: pgbench scripts made from the service's own statements.

The generation cycle's script is built from the SQL constants the service runs
(`AUTHENTICATE_SQL`, and `RESERVE_GENERATION_SQL`, `CHARGE_GENERATION_SQL`: the ledger's
statements of `app.credits.statements` around the generation row), with each `$n`
parameter replaced by what the service would bind, so the raw figure is the same SQL,
not a copy that can drift. Ids the service makes in Python are made from pgbench random
numbers (`md5(...)::uuid`), and the bench's own account table is read inside the
authentication statement, so raw does no round trip the service does not."""

import re

from app.accounts.service import AUTHENTICATE_SQL
from app.credits.events import CHANNEL
from app.credits.repository import BALANCE_BY_API_KEY_SQL
from app.generation.repository import CHARGE_GENERATION_SQL, RESERVE_GENERATION_SQL

PAGE = '{"page_title": "Handmade oak furniture", "page_content": "Solid oak tables."}'
OUTPUT = '{"text": "Handmade Oak Furniture"}'
RATE_PER_MINUTE = 100_000_000
"""`RATE_LIMIT_GENERATIONS_PER_MINUTE` and `_BURST` of `bench/run.py`."""


def bind(sql: str, values: dict[int, str]) -> str:
    """`sql` with each `$n` replaced by the SQL text `values[n]`."""

    def replace(match: re.Match[str]) -> str:
        return f"({values[int(match.group(1))]})"

    bound = re.sub(r"\$(\d+)", replace, sql)
    return " ".join(bound.split())  # pgbench reads one statement per line


def generation_cycle() -> str:
    """One single generation as the service runs it: authenticate, reserve, charge."""
    generation = "md5(:g::text)::uuid"
    hold = "md5(:h::text)::uuid"
    # The key's row, with the bench's (account, site, key) row number `:n` read inside it.
    authenticate = bind(
        AUTHENTICATE_SQL, {1: "SELECT lookup_id FROM bench_account WHERE n = :n"}
    ).replace(
        "SELECT ",
        "SELECT (SELECT account_id FROM bench_account WHERE n = :n) AS acct, "
        "(SELECT site_id FROM bench_account WHERE n = :n) AS site, ",
        1,
    )
    reserve = bind(
        RESERVE_GENERATION_SQL,
        {
            1: ":acct::uuid",
            2: ":site::uuid",
            3: generation,
            4: hold,
            5: "'meta_title'",
            6: "now()",
            7: "now() + interval '300 seconds'",
            8: f"'{PAGE}'",
            9: "NULL",
            10: f"'{CHANNEL}'",
            # The rate bucket (migration 0006), as generous as the benchmark's settings.
            11: f"{RATE_PER_MINUTE / 60}",
            12: f"{RATE_PER_MINUTE}",
        },
    )
    charge = bind(
        CHARGE_GENERATION_SQL,
        {
            1: generation,
            2: hold,
            3: "now()",
            4: f"'{OUTPUT}'",
            5: "'offline-extractive-1'",
            6: "12",
            7: "5",
            8: "0",
            9: "gen_random_uuid()",
            10: "'AI generation: meta title'",
            11: f"'{CHANNEL}'",
        },
    )
    return "\n".join(
        [
            r"\set n random(1, :accounts)",
            r"\set g random(1, 1000000000000000)",
            r"\set h random(1, 1000000000000000)",
            authenticate + r" \gset",
            reserve + ";",
            charge + ";",
            "",
        ]
    )


def balance_read() -> str:
    """The badge's statement, for the account whose key is `:lookup`."""
    return bind(BALANCE_BY_API_KEY_SQL, {1: ":lookup"}) + ";\n"
