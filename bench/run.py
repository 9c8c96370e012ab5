"""The service's benchmark on PostgreSQL: `python bench/run.py` (see docs/benchmarks.md).

Starts the service in its production configuration (several uvicorn workers) on a scratch
database, drives it with wrk on loopback, runs the same SQL raw with pgbench in the same
run, and prints one table. Figures are printed, never asserted."""

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import raw_sql  # noqa: E402
from bench.common import (  # noqa: E402
    LoadResult,
    RssSampler,
    admin,
    database_url,
    pgbench,
    production_service,
    psql,
    scratch_database,
    wrk,
)

DATABASE = "rankframe_bench"


@dataclass
class Row:
    name: str
    service: LoadResult
    raw: LoadResult | None
    note: str = ""

    def render(self) -> str:  # noqa: D102
        ratio = (
            f"{self.service.requests_per_second / self.raw.requests_per_second:6.1%}"
            if (self.raw and self.raw.requests_per_second)
            else "   n/a"
        )
        raw = f"{self.raw.requests_per_second:10.0f}" if self.raw else "       n/a"
        return (
            f"| {self.name:<38} | {self.service.requests_per_second:9.0f} | "
            f"{self.service.p50_ms:8.2f} | {self.service.p99_ms:8.2f} | {raw} | {ratio} | "
            f"{self.note}"
        )


def new_account(client, email: str, credits: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    created = client.post("/v1/admin/accounts", json={"email": email})
    created.raise_for_status()
    body = created.json()
    account_id, key = body["account"]["id"], body["api_key"]["key"]
    if credits:
        client.post(
            f"/v1/admin/accounts/{account_id}/adjustments",
            json={"amount": credits, "reason": "benchmark"},
            headers={"Idempotency-Key": f"bench-{account_id}"},
        ).raise_for_status()
    return account_id, key


def seed_ledger(account_id: str, rows: int) -> None:
    """`rows` one-credit entries for the account, with a balance that matches them."""
    psql(
        DATABASE,
        "INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, description, "
        "created_at) SELECT gen_random_uuid(), "
        f"'{account_id}'::uuid, 'adjustment', 1, g, 'seed', now() "
        f"FROM generate_series(1, {rows}) AS g",
    )
    psql(
        DATABASE,
        f"UPDATE credit_balance SET available = available + {rows} "
        f"WHERE account_id = '{account_id}'::uuid",
    )
    # Let the bulk insert's background work (autovacuum, the checkpoint) finish first, so
    # the reads after it measure the table, not the machine catching up.
    psql(DATABASE, "VACUUM ANALYZE ledger_entry")
    psql(DATABASE, "CHECKPOINT")


def balance_rows(service, seconds: int, connections: int) -> tuple[list[Row], str, str]:  # type: ignore[no-untyped-def]
    with admin(service) as client:
        account_id, key = new_account(client, "balance@bench.example", 1000)
        _, empty_key = new_account(client, "empty@bench.example", 0)
        big_id, big_key = new_account(client, "big@bench.example", 0)
    url = f"{service.url}/v1/balance"
    served = wrk(
        url, connections=connections, seconds=seconds, headers={"Authorization": f"Bearer {key}"}
    )
    empty = wrk(
        url, connections=8, seconds=seconds, headers={"Authorization": f"Bearer {empty_key}"}
    )
    seed_ledger(big_id, 1_000_000)
    big = wrk(url, connections=8, seconds=seconds, headers={"Authorization": f"Bearer {big_key}"})
    # The 0-row account again, now in the same conditions as the 1,000,000-row one.
    empty_after = wrk(
        url, connections=8, seconds=seconds, headers={"Authorization": f"Bearer {empty_key}"}
    )
    rows = [
        Row("GET /v1/balance (API key auth)", served, None, "raw: single-row select"),
        Row("  the same, raw: the badge's own statement", served, None, "key, account, balance"),
        Row("balance, 0 ledger rows (8 clients)", empty, None),
        Row(
            "balance, 1,000,000 ledger rows (8 clients)",
            big,
            None,
            f"p50 {big.p50_ms / empty_after.p50_ms:.2f}x the 0-row figure just after",
        ),
        Row("balance, 0 ledger rows, again after the seeding", empty_after, None),
    ]
    return rows, account_id, key.split("_")[1]


def generation_accounts(service, count: int, credits: int) -> Path:  # type: ignore[no-untyped-def]
    """`count` funded accounts with a site each: a wrk keys file, and the `bench_account`
    table the raw pgbench script picks from."""
    lines, values = [], []
    with admin(service) as client:
        for n in range(1, count + 1):
            account_id, key = new_account(client, f"gen{n}@bench.example", credits)
            site = client.post(
                "/v1/sites",
                json={"framer_project_id": f"bench-{n}", "name": "bench"},
                headers={"Authorization": f"Bearer {key}"},
            )
            site.raise_for_status()
            site_id = site.json()["id"]
            lookup = key.split("_")[1]
            lines.append(f"{key} {site_id}")
            values.append(f"({n}, '{account_id}'::uuid, '{site_id}'::uuid, '{lookup}')")
    psql(DATABASE, "DROP TABLE IF EXISTS bench_account")
    psql(
        DATABASE,
        "CREATE TABLE bench_account (n int PRIMARY KEY, account_id uuid, "
        "site_id uuid, lookup_id text)",
    )
    psql(DATABASE, "INSERT INTO bench_account VALUES " + ", ".join(values))
    keys = Path(f"/tmp/rankframe-bench-keys-{count}.txt")
    keys.write_text("\n".join(lines) + "\n")
    return keys


def account_state(account_id: str) -> tuple[int, int, int]:
    available, reserved = psql(
        DATABASE,
        f"SELECT available, reserved FROM credit_balance WHERE account_id = '{account_id}'",
    ).split("|")
    consumed = psql(
        DATABASE,
        f"SELECT count(*) FROM ledger_entry WHERE account_id = '{account_id}' "
        "AND type = 'consumption'",
    )
    return int(available), int(reserved), int(consumed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts for the cycle")
    args = parser.parse_args()

    script = raw_sql.generation_cycle()
    lua = Path(__file__).parent / "generation.lua"
    hot_credits = 10_000_000
    env = {
        # Per worker at most 40 connections (20 SQLAlchemy, 20 driver), 80 for two workers:
        # inside PostgreSQL's 100.
        "DB_POOL_SIZE": "10",
        "STARTER_CREDITS": "0",
        "RATE_LIMIT_GENERATIONS_PER_MINUTE": "100000000",
        "RATE_LIMIT_GENERATIONS_BURST": "100000000",
    }
    with scratch_database(DATABASE):
        # The service first (its pools would crowd PostgreSQL's 100 connections), then the
        # same SQL raw, on the same data, in the same run.
        with production_service(DATABASE, args.workers, **env) as service:
            with RssSampler(service) as rss:
                rows, balance_account, balance_lookup = balance_rows(
                    service, args.seconds, args.connections
                )
                keys = generation_accounts(service, args.accounts, 1_000_000)
                cycle = wrk(
                    f"{service.url}/v1/generations",
                    connections=args.connections,
                    seconds=args.seconds,
                    script=lua,
                    env={"RF_KEYS": str(keys)},
                )
                hot_keys = generation_accounts_hot(service, hot_credits)
                hot_id = hot_keys[1]
                hot = wrk(
                    f"{service.url}/v1/generations",
                    connections=64,
                    seconds=args.seconds,
                    script=lua,
                    env={"RF_KEYS": str(hot_keys[0])},
                )
            peak_rss_mib = rss.peak_kib / 1024
        available, reserved, consumed = account_state(hot_id)
        succeeded = hot.requests - hot.non_2xx
        # wrk stops counting at its deadline; requests still in flight then are finished
        # (and charged) by the service, so charges >= counted successes. Exact means: the
        # balance is the funding minus one credit per consumption entry, nothing left held.
        exact = available == hot_credits - consumed and reserved == 0 and consumed >= succeeded
        reconcile = subprocess.run(
            [sys.executable, "-m", "app", "reconcile"],
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "DATABASE_URL": database_url(DATABASE)},
            capture_output=True,
        )
        exact = exact and reconcile.returncode == 0

        calibration = []
        for name, target in [
            ("calibration: bare FastAPI + asyncpg, no auth", "bench.calibration:fastapi_app"),
            ("calibration: plain ASGI + asyncpg, no auth", "bench.calibration:asgi_app"),
        ]:
            with production_service(
                DATABASE,
                args.workers,
                target=target,
                ready_path="/balance",
                CALIBRATION_DSN=database_url(DATABASE).replace("+asyncpg", ""),
                CALIBRATION_ACCOUNT=balance_account,
            ) as bare:
                measured = wrk(
                    f"{bare.url}/balance", connections=args.connections, seconds=args.seconds
                )
            calibration.append(Row(name, measured, None, "same statement as the raw select"))

        raw_balance = pgbench(
            DATABASE,
            "SELECT available, reserved FROM credit_balance WHERE account_id = :acct;\n",
            clients=args.connections,
            seconds=args.seconds,
            variables={"acct": balance_account},
        )
        raw_badge = pgbench(
            DATABASE,
            raw_sql.balance_read(),
            clients=args.connections,
            seconds=args.seconds,
            variables={"lookup": balance_lookup},
        )
        raw_cycle = pgbench(
            DATABASE,
            script,
            clients=args.connections,
            seconds=args.seconds,
            variables={"accounts": str(args.accounts)},
        )
        psql(DATABASE, "DELETE FROM bench_account WHERE n <> 1")
        hot_lookup = hot_keys[0].read_text().split("_")[1]
        psql(
            DATABASE,
            f"UPDATE bench_account SET account_id = '{hot_id}'::uuid, site_id = "
            f"(SELECT id FROM site WHERE account_id = '{hot_id}'::uuid), "
            f"lookup_id = '{hot_lookup}'",
        )
        raw_hot = pgbench(
            DATABASE, script, clients=64, seconds=args.seconds, variables={"accounts": "1"}
        )

    rows[0].raw = raw_balance
    rows[1].raw = raw_badge
    for row in calibration:
        row.raw = raw_balance
    rows[2:2] = calibration
    rows.append(
        Row(
            f"generation cycle, {args.accounts} accounts",
            cycle,
            raw_cycle,
            f"non-2xx: {cycle.non_2xx}",
        )
    )
    rows.append(
        Row(
            "generation cycle, one hot account (64 clients)",
            hot,
            raw_hot,
            f"balance exact, reconcile clean: {exact} ({available} available, "
            f"{reserved} held, {consumed} charged, {succeeded} successes counted)",
        )
    )
    print()
    print(
        f"PostgreSQL, {args.workers} uvicorn workers (offline provider: zero latency), "
        f"wrk and pgbench on loopback, {args.connections} clients unless noted, "
        f"{args.seconds} s per run"
    )
    print("| scenario | service /s | p50 ms | p99 ms | raw /s | service/raw | note |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.render())
    print(f"\npeak worker RSS: {peak_rss_mib:.1f} MiB")
    return 0 if exact else 1


def generation_accounts_hot(service, credits: int) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    with admin(service) as client:
        account_id, key = new_account(client, "hot@bench.example", credits)
        site = client.post(
            "/v1/sites",
            json={"framer_project_id": "bench-hot", "name": "hot"},
            headers={"Authorization": f"Bearer {key}"},
        )
        site.raise_for_status()
    keys = Path("/tmp/rankframe-bench-keys-hot.txt")
    keys.write_text(f"{key} {site.json()['id']}\n")
    return keys, account_id


if __name__ == "__main__":
    sys.exit(main())
