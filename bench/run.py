"""The service's benchmark on PostgreSQL: `python bench/run.py` (see docs/benchmarks.md).

Starts the service in its production configuration (several uvicorn workers) on a scratch
database, drives it with wrk on loopback, runs the same SQL raw with pgbench in the same
run, and prints one table. Figures are printed, never asserted."""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    LoadResult,
    RssSampler,
    admin,
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

    def render(self) -> str:
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
    psql(DATABASE, "ANALYZE")


def balance_rows(service, seconds: int, connections: int) -> list[Row]:  # type: ignore[no-untyped-def]
    with admin(service) as client:
        account_id, key = new_account(client, "balance@bench.example", 1000)
        empty_id, empty_key = new_account(client, "empty@bench.example", 0)
        big_id, big_key = new_account(client, "big@bench.example", 0)
    url = f"{service.url}/v1/balance"
    served = wrk(
        url, connections=connections, seconds=seconds, headers={"Authorization": f"Bearer {key}"}
    )
    raw = pgbench(
        DATABASE,
        "SELECT available, reserved FROM credit_balance WHERE account_id = :acct;\n",
        clients=connections,
        seconds=seconds,
        variables={"acct": account_id},
    )
    rows = [Row("GET /v1/balance (API key auth)", served, raw, "raw: single-row select")]
    empty = wrk(
        url, connections=8, seconds=seconds, headers={"Authorization": f"Bearer {empty_key}"}
    )
    seed_ledger(big_id, 1_000_000)
    big = wrk(url, connections=8, seconds=seconds, headers={"Authorization": f"Bearer {big_key}"})
    rows.append(Row("balance, 0 ledger rows (8 clients)", empty, None))
    rows.append(
        Row(
            "balance, 1,000,000 ledger rows (8 clients)",
            big,
            None,
            f"p50 ratio to 0 rows: {big.p50_ms / empty.p50_ms:.2f}x",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients")
    args = parser.parse_args()

    rows: list[Row] = []
    with scratch_database(DATABASE), production_service(DATABASE, args.workers) as service:
        with RssSampler(service) as rss:
            rows += balance_rows(service, args.seconds, args.connections)
        peak_rss_mib = rss.peak_kib / 1024

    print()
    print(
        f"PostgreSQL, {args.workers} uvicorn workers, wrk and pgbench with "
        f"{args.connections} connections, {args.seconds} s per run, on this machine"
    )
    print("| scenario | service /s | p50 ms | p99 ms | raw /s | service/raw | note")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.render())
    print(f"\npeak worker RSS: {peak_rss_mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
