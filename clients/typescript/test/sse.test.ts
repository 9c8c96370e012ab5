/** The event-stream parser and the reconnect / resume protocol, against a local server that
 * speaks the contract exactly (ids, `retry:`, `Last-Event-ID`), so what the client does when
 * a stream drops is pinned down independently of the service's own progress on ids. */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  CreditsApiError,
  SseParser,
  createCreditsClient,
  followBatch,
  streamBalance,
  type Balance,
  type StreamState,
} from "@rankframe/credits-client";

describe("SseParser", () => {
  test("events, ids kept across events, comments, retry and every line ending", () => {
    const parser = new SseParser();
    const chunks = [
      "\ufeffretry: 2500\r\n",
      ": ping\n\nid: 7\nevent: balance\ndata: {\"a\":",
      "1}\n\n",
      "event: progress\rdata: one\rdata: two\r\r",
      "id: 9\ndata: third\r",
      "\n\n",
      "data\n\n",
    ];
    const seen = chunks.flatMap((chunk) => parser.feed(chunk));
    assert.deepEqual(seen, [
      { event: "balance", data: '{"a":1}', id: "7" },
      { event: "progress", data: "one\ntwo", id: "7" },
      { event: "message", data: "third", id: "9" },
      { event: "message", data: "", id: "9" },
    ]);
    assert.equal(parser.retryMs, 2500);
    assert.equal(parser.lastEventId, "9");
  });

  test("an event without data is not dispatched and an id with NUL is ignored", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed("event: balance\n\nid: a\0b\ndata: x\n\n"), [
      { event: "message", data: "x", id: "" },
    ]);
  });
});

interface Connection {
  lastEventId: string | undefined;
  authorization: string | undefined;
}

/** A service that sends numbered balance events and drops each stream after `perConnection`
 * of them; a reconnect with `Last-Event-ID: n` gets the events after n, nothing twice. */
class ScriptedStreams {
  readonly connections: Connection[] = [];
  server = http.createServer((request, response) => this.handle(request, response));
  perConnection = 2;
  total = 5;
  failNext = 0;
  url = "";

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const lastEventId = request.headers["last-event-id"] as string | undefined;
    this.connections.push({ lastEventId, authorization: request.headers.authorization });
    if (request.headers.authorization !== "Bearer good") {
      response.writeHead(401, { "Content-Type": "application/problem+json" });
      response.end(
        JSON.stringify({ type: "about:blank", title: "no", status: 401, detail: "Unknown key.", code: "unauthorized" }),
      );
      return;
    }
    if (this.failNext > 0) {
      this.failNext -= 1;
      response.writeHead(503, { "Content-Type": "application/problem+json", "Retry-After": "0" });
      response.end(JSON.stringify({ type: "x", title: "x", status: 503, detail: "busy", code: "database_unavailable" }));
      return;
    }
    response.writeHead(200, { "Content-Type": "text/event-stream" });
    const after = Number.parseInt(lastEventId ?? "", 10);
    let next = Number.isFinite(after) ? after + 1 : 1;
    response.write("retry: 50\n\n");
    const last = Math.min(this.total, next + this.perConnection - 1);
    for (; next <= last; next += 1) {
      const body = request.url?.startsWith("/v1/generation-batches")
        ? next === this.total
          ? `event: done\ndata: ${JSON.stringify({ batch: { id: "b", status: "completed", succeeded: next }, item: null })}\n\n`
          : `event: progress\ndata: ${JSON.stringify({ batch: { id: "b", status: "running", succeeded: next }, item: { index: next - 1, status: "succeeded" } })}\n\n`
        : `event: balance\ndata: ${JSON.stringify({ available: next, display: `${next} Credits` })}\n\n`;
      response.write(`id: ${next}\n${body}`);
    }
    if (next > this.total && request.url?.startsWith("/v1/balance")) {
      response.write(": ping\n\n"); // stays open: the test aborts it
      return;
    }
    response.end(); // the server drops the stream
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe("reconnect and Last-Event-ID resume", () => {
  const streams = new ScriptedStreams();
  before(() => streams.start());
  after(() => streams.stop());

  test("streamBalance reconnects after each drop and resumes after the last id", async () => {
    streams.connections.length = 0;
    const client = createCreditsClient(streams.url, "good");
    const seen: number[] = [];
    const states: StreamState[] = [];
    const controller = new AbortController();
    const running = streamBalance(
      client,
      (balance: Balance) => {
        seen.push(balance.available);
        if (balance.available === 5) setTimeout(() => controller.abort(), 20);
      },
      { signal: controller.signal, onState: (state) => states.push(state) },
    );
    await running; // resolves once aborted
    assert.deepEqual(seen, [1, 2, 3, 4, 5], "every event once, in order");
    assert.deepEqual(
      streams.connections.map((c) => c.lastEventId),
      [undefined, "2", "4"],
    );
    assert.ok(streams.connections.every((c) => c.authorization === "Bearer good"));
    assert.deepEqual(states, ["connecting", "open", "reconnecting", "open", "reconnecting", "open"]);
  });

  test("followBatch resumes over drops and resolves with the batch of `done`", async () => {
    streams.connections.length = 0;
    const client = createCreditsClient(streams.url, "good");
    const progress: number[] = [];
    const done = await followBatch(client, "b", {
      onProgress: ({ batch }) => progress.push(batch.succeeded),
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(done?.status, "completed");
    assert.deepEqual(progress, [1, 2, 3, 4]);
    assert.deepEqual(
      streams.connections.map((c) => c.lastEventId),
      [undefined, "2", "4"],
    );
  });

  test("a 5xx is retried and reported as `error`, then the stream goes on", async () => {
    streams.connections.length = 0;
    streams.failNext = 2;
    const client = createCreditsClient(streams.url, "good");
    const states: StreamState[] = [];
    const errors: string[] = [];
    const done = await followBatch(client, "b", {
      onState: (state, error) => {
        states.push(state);
        if (error) errors.push(error.code);
      },
      retryMs: 10,
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(done?.status, "completed");
    assert.deepEqual(errors, ["database_unavailable", "database_unavailable"]);
    assert.equal(states[0], "connecting");
    assert.ok(states.includes("error") && states.at(-1) === "open");
  });

  test("a 401 ends the stream with the typed CreditsApiError", async () => {
    const client = createCreditsClient(streams.url, "revoked");
    await assert.rejects(streamBalance(client, () => undefined), (error: unknown) => {
      assert.ok(error instanceof CreditsApiError);
      assert.equal(error.status, 401);
      assert.equal(error.code, "unauthorized");
      assert.equal(error.detail, "Unknown key.");
      return true;
    });
  });

  test("a service that cannot be reached is `network_error`, retried until aborted", async () => {
    const client = createCreditsClient("http://127.0.0.1:9", "good");
    const errors: CreditsApiError[] = [];
    await streamBalance(client, () => undefined, {
      retryMs: 10,
      signal: AbortSignal.timeout(300),
      onState: (_state, error) => error && errors.push(error),
    });
    assert.ok(errors.length >= 2, `retried (${errors.length} attempts)`);
    assert.ok(errors.every((e) => e.code === "network_error" && e.status === 0));
  });
});
