/** What the tests share: the live service under test, its admin API, and a TCP proxy that
 * can drop every connection (the way a deploy or a flaky network drops a stream). */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";

export const API_URL = process.env.CREDITS_API_URL ?? "";
export const ADMIN_TOKEN = process.env.CREDITS_ADMIN_TOKEN ?? "";

/** Live tests need the service: pytest (tests/contract/test_typescript_client.py) starts it. */
export function requireLiveService(): void {
  assert.ok(API_URL, "CREDITS_API_URL is not set: run through pytest, which starts the service");
  assert.ok(ADMIN_TOKEN, "CREDITS_ADMIN_TOKEN is not set");
}

async function admin(method: string, path: string, body?: unknown): Promise<any> {
  const response = await fetch(`${API_URL}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${ADMIN_TOKEN}`,
      "Content-Type": "application/json",
      "Idempotency-Key": randomUUID(),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

export interface TestAccount {
  id: string;
  key: string;
  keyId: string;
}

export async function newAccount(): Promise<TestAccount> {
  const created = await admin("POST", "/v1/admin/accounts", {
    email: `${randomUUID()}@example.com`,
  });
  return { id: created.account.id, key: created.api_key.key, keyId: created.api_key.id };
}

export async function adjust(account: TestAccount, amount: number): Promise<void> {
  await admin("POST", `/v1/admin/accounts/${account.id}/adjustments`, {
    amount,
    reason: "credits-client test",
  });
}

export async function revokeKey(account: TestAccount): Promise<void> {
  const response = await fetch(`${API_URL}/v1/admin/api-keys/${account.keyId}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(response.status, 204);
}

/** A TCP proxy in front of `target` that records each connection's request head. */
export class DroppingProxy {
  readonly requests: string[] = [];
  private readonly sockets = new Set<net.Socket>();
  private server = net.createServer((client) => this.connect(client));
  port = 0;

  constructor(private readonly target: URL) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  private connect(client: net.Socket): void {
    const upstream = net.connect(Number(this.target.port), this.target.hostname);
    this.sockets.add(client).add(upstream);
    let head = "";
    client.on("data", (chunk) => {
      if (!head.includes("\r\n\r\n")) {
        head += chunk.toString("latin1");
        if (head.includes("\r\n\r\n")) this.requests.push(head.split("\r\n\r\n")[0] ?? "");
      }
    });
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
  }

  /** Cut every open connection, as a server that goes away would. */
  dropAll(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  /** The `Last-Event-ID` each stream request carried (null: none). */
  lastEventIds(path: string): (string | null)[] {
    return this.requests
      .filter((head) => head.startsWith(`GET ${path} `))
      .map((head) => /^last-event-id: *(.*)$/im.exec(head)?.[1]?.trim() ?? null);
  }

  async stop(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Resolve when `predicate` holds, polling; fail after `ms`. */
export async function eventually(
  predicate: () => boolean,
  what: string,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
