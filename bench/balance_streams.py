"""Live balance streams at scale: `python bench/balance_streams.py` (docs/benchmarks.md).

Starts the service (one uvicorn process, production settings) on a scratch PostgreSQL
database and opens Server-Sent Event streams with a minimal raw-socket client (so the
client costs little next to the server):

1. fan-out: `--fanout` streams of one account; the balance changes `--changes` times
   (admin adjustments); per stream and change, the time from the change's request to the
   new balance arriving on that stream (p50 / p95 / max);
2. idle: `--idle` streams spread over `--idle-accounts` accounts on the one instance; the
   server's RSS before and after (memory per stream), its CPU while they sit idle, and
   `GET /v1/balance` latency (wrk) without and with them open.

Figures are printed, never asserted. Needs `wrk` and a raised open-files limit."""

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import admin, production_service, scratch_database, wrk  # noqa: E402

DATABASE = "rankframe_bench_streams"


@dataclass
class Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytes = b""
    events: list[tuple[float, dict]] = field(default_factory=list)

    async def next_balance(self) -> dict:
        """The next `balance` event's data (chunked transfer encoding undone)."""
        while True:
            block, sep, rest = self.buffer.partition(b"\n\n")
            if sep:
                self.buffer = rest
                lines = block.decode().splitlines()
                if "event: balance" in lines:
                    data = "".join(line[5:].strip() for line in lines if line.startswith("data:"))
                    return json.loads(data)
                continue
            size_line = await self.reader.readline()
            if not size_line:
                raise ConnectionError("stream closed")
            size = int(size_line.strip() or b"0", 16)
            chunk = await self.reader.readexactly(size + 2)
            self.buffer += chunk[:-2]

    def close(self) -> None:
        self.writer.close()


async def open_stream(host: str, port: int, key: str) -> Stream:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            "GET /v1/balance/events HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
    )
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return Stream(reader, writer)


async def open_streams(host: str, port: int, keys: list[str], concurrency: int) -> list[Stream]:
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str) -> Stream:
        async with gate:
            stream = await open_stream(host, port, key)
            await stream.next_balance()  # the state on connect
            return stream

    return list(await asyncio.gather(*(one(k) for k in keys)))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def new_account(client, credits_: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    created = client.post("/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@b.example"})
    created.raise_for_status()
    account_id, key = created.json()["account"]["id"], created.json()["api_key"]["key"]
    if credits_:
        adjust(client, account_id, credits_)
    return account_id, key


def adjust(client, account_id: str, amount: int) -> None:  # type: ignore[no-untyped-def]
    client.post(
        f"/v1/admin/accounts/{account_id}/adjustments",
        json={"amount": amount, "reason": "bench"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    ).raise_for_status()


async def fanout(  # type: ignore[no-untyped-def]
    service, host: str, port: int, streams_count: int, changes: int
) -> tuple[list[float], list[float]]:
    """Per delivery, ms from the change's request; and per change, to its first delivery."""
    with admin(service) as client:
        account_id, key = new_account(client, 1_000_000)
        streams = await open_streams(host, port, [key] * streams_count, 200)
        latencies: list[float] = []
        firsts: list[float] = []
        try:
            for change in range(1, changes + 1):
                expected = 1_000_000 + change

                async def arrival(stream: Stream, expected: int = expected) -> float:
                    while (await stream.next_balance())["available"] != expected:
                        pass
                    return time.perf_counter()

                waiting = [asyncio.create_task(arrival(s)) for s in streams]
                await asyncio.sleep(0.5)  # every reader waiting
                started = time.perf_counter()
                await asyncio.to_thread(adjust, client, account_id, 1)
                arrived = await asyncio.wait_for(asyncio.gather(*waiting), timeout=120)
                latencies += [(t - started) * 1000 for t in arrived]
                firsts.append((min(arrived) - started) * 1000)
                await asyncio.sleep(1)
        finally:
            for stream in streams:
                stream.close()
    return latencies, firsts


async def main_async(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = {"DB_POOL_SIZE": "10", "STARTER_CREDITS": "0"}
    with scratch_database(DATABASE), production_service(DATABASE, 1, **env) as service:
        host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
        pid = service.process.pid
        latencies, firsts = await fanout(service, host, port, args.fanout, args.changes)
        print(
            f"fan-out, {args.fanout} streams of one account, {args.changes} changes: "
            f"p50 {statistics.median(latencies):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms, "
            f"max {max(latencies):.0f} ms ({len(latencies)} deliveries); first delivery of "
            f"a change after {statistics.median(firsts):.0f} ms (median)",
            flush=True,
        )

        with admin(service) as client:
            accounts = [new_account(client, 100) for _ in range(args.idle_accounts)]
        badge_key = accounts[0][1]
        await asyncio.sleep(2)
        baseline = await asyncio.to_thread(
            wrk,
            f"{service.url}/v1/balance",
            connections=8,
            seconds=args.seconds,
            headers={"Authorization": f"Bearer {badge_key}"},
        )
        rss_before = rss_kb(pid)
        keys = [accounts[n % len(accounts)][1] for n in range(args.idle)]
        opened = time.perf_counter()
        streams = await open_streams(host, port, keys, 200)
        opened = time.perf_counter() - opened
        await asyncio.sleep(5)
        rss_after = rss_kb(pid)
        cpu_start = cpu_seconds(pid)
        await asyncio.sleep(10)
        idle_cpu = (cpu_seconds(pid) - cpu_start) / 10
        loaded = await asyncio.to_thread(
            wrk,
            f"{service.url}/v1/balance",
            connections=8,
            seconds=args.seconds,
            headers={"Authorization": f"Bearer {badge_key}"},
        )
        for stream in streams:
            stream.close()
        print(
            f"idle: {args.idle} streams over {args.idle_accounts} accounts opened in "
            f"{opened:.1f} s; RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB = "
            f"{(rss_after - rss_before) / args.idle:.1f} KB per stream; server CPU while "
            f"idle {idle_cpu:.1%} of a core",
            flush=True,
        )
        print(
            f"GET /v1/balance (wrk, 8 clients, {args.seconds} s): without streams "
            f"{baseline.requests_per_second:.0f} req/s, p50 {baseline.p50_ms:.2f} ms, "
            f"p99 {baseline.p99_ms:.2f} ms; with {args.idle} streams open "
            f"{loaded.requests_per_second:.0f} req/s, p50 {loaded.p50_ms:.2f} ms, "
            f"p99 {loaded.p99_ms:.2f} ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--idle-accounts", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
