/**
 * Server-Sent Events over `fetch` (so the request can carry `Authorization`, which
 * `EventSource` cannot send): a parser that follows the WHATWG event-stream rules, and a
 * connection loop that reconnects after the server drops the stream, resuming with
 * `Last-Event-ID` and honouring the server's `retry:`.
 */
import { CreditsApiError } from "./errors.js";
import type { CreditsClient } from "./client.js";

export interface SseMessage {
  /** `event:` (default `message`). */
  event: string;
  /** The `data:` lines joined with newlines. */
  data: string;
  /** The last event id at the time of this event (`id:`, kept across events). */
  id: string;
}

/** Incremental parser: feed it text as it arrives, get the complete events back. */
export class SseParser {
  lastEventId = "";
  /** The latest `retry:` the server sent, in milliseconds. */
  retryMs: number | undefined;
  private buffer = "";
  private started = false;
  private event = "";
  private data: string[] = [];

  feed(text: string): SseMessage[] {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    this.buffer += text;
    const messages: SseMessage[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone `\r` at the very end may be the first half of `\r\n`: wait for more.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const message = this.line(line);
      if (message) messages.push(message);
    }
    return messages;
  }

  private line(line: string): SseMessage | undefined {
    if (line === "") {
      if (this.data.length === 0) {
        this.event = "";
        return undefined;
      }
      const message = {
        event: this.event || "message",
        data: this.data.join("\n"),
        id: this.lastEventId,
      };
      this.event = "";
      this.data = [];
      return message;
    }
    if (line.startsWith(":")) return undefined; // a comment (`: ping`)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    return undefined;
  }
}

/** Where a live stream is: the badge shows `reconnecting` and `error` to the user. */
export type StreamState = "connecting" | "open" | "reconnecting" | "error";

export interface StreamOptions {
  signal?: AbortSignal;
  /** Every change of the connection's state; `error` carries the last failure. */
  onState?: (state: StreamState, error?: CreditsApiError) => void;
  /** First wait before reconnecting when the server sent no `retry:` (ms, default 1000). */
  retryMs?: number;
  /** Longest wait between attempts after repeated failures (ms, default 30000). */
  maxRetryMs?: number;
  /** Reconnect when nothing (not even a `: ping`) arrived for this long (ms, default 45000). */
  idleTimeoutMs?: number;
  /** Resume after this event id on the first connection. */
  lastEventId?: string;
}

/** Statuses after which reconnecting cannot help: the key, the resource or the request. */
const FINAL_STATUSES = new Set([400, 401, 403, 404, 410, 422]);

/**
 * Read `path` as an event stream until `onMessage` returns true (done), the signal aborts
 * (resolves), or the service answers with a final error such as `401` (rejects with the
 * `CreditsApiError`). Everything else (a dropped stream, a refused connection, a 5xx) is
 * retried, with `Last-Event-ID` set to the last id received.
 */
export async function runEventStream(
  client: CreditsClient,
  path: string,
  onMessage: (message: SseMessage) => boolean | void,
  options: StreamOptions = {},
): Promise<void> {
  const { signal } = options;
  const baseRetry = options.retryMs ?? 1000;
  const maxRetry = options.maxRetryMs ?? 30_000;
  const idleTimeout = options.idleTimeoutMs ?? 45_000;
  let lastEventId = options.lastEventId ?? "";
  let serverRetry: number | undefined;
  let failures = 0;
  let state: StreamState | undefined;
  const setState = (next: StreamState, error?: CreditsApiError) => {
    if (next !== state || error) {
      state = next;
      options.onState?.(next, error);
    }
  };
  setState("connecting");
  while (!signal?.aborted) {
    const attempt = new AbortController();
    const abortAttempt = () => attempt.abort();
    signal?.addEventListener("abort", abortAttempt, { once: true });
    let idle: ReturnType<typeof setTimeout> | undefined;
    const touch = () => {
      if (idle !== undefined) clearTimeout(idle);
      idle = setTimeout(() => attempt.abort(), idleTimeout);
    };
    let failure: CreditsApiError | undefined;
    try {
      const headers: Record<string, string> = {
        Authorization: `Bearer ${client.apiKey}`,
        Accept: "text/event-stream",
      }; // no Cache-Control header: it is not one CORS lets through without asking

      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      touch();
      let response: Response;
      try {
        response = await client.fetch(`${client.baseUrl}${path}`, {
          headers,
          signal: attempt.signal,
          cache: "no-store",
        });
      } catch (cause) {
        throw CreditsApiError.network(cause);
      }
      if (!response.ok) {
        const error = await CreditsApiError.read(response);
        if (FINAL_STATUSES.has(response.status)) {
          setState("error", error);
          throw new FinalStreamError(error);
        }
        if (error.retryAfterSeconds !== undefined) serverRetry = error.retryAfterSeconds * 1000;
        throw error;
      }
      if (!response.body) throw CreditsApiError.network(new Error("the response has no body"));
      failures = 0;
      setState("open");
      const parser = new SseParser();
      parser.lastEventId = lastEventId;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let finished = false;
      try {
        for (;;) {
          let chunk: ReadableStreamReadResult<string>;
          try {
            chunk = await reader.read();
          } catch {
            break; // the connection broke mid-stream: a drop, reconnect as after an end
          }
          if (chunk.done) break;
          touch();
          for (const message of parser.feed(chunk.value)) {
            lastEventId = parser.lastEventId;
            if (onMessage(message) === true) {
              finished = true;
              break;
            }
          }
          if (parser.retryMs !== undefined) serverRetry = parser.retryMs;
          lastEventId = parser.lastEventId;
          if (finished) break;
        }
      } finally {
        await reader.cancel().catch(() => undefined);
      }
      if (finished) return;
      // The server ended the stream (a deploy, a proxy's timeout): reconnect.
    } catch (error) {
      if (error instanceof FinalStreamError) throw error.error;
      if (signal?.aborted) break;
      failure =
        error instanceof CreditsApiError
          ? error
          : CreditsApiError.network(error instanceof Error ? error : new Error(String(error)));
    } finally {
      if (idle !== undefined) clearTimeout(idle);
      signal?.removeEventListener("abort", abortAttempt);
    }
    if (signal?.aborted) break;
    if (failure) {
      failures += 1;
      setState("error", failure);
    } else {
      setState("reconnecting");
    }
    const wait = Math.min(maxRetry, (serverRetry ?? baseRetry) * 2 ** Math.max(0, failures - 1));
    await sleep(wait, signal);
    if (!signal?.aborted && state !== "error") setState("reconnecting");
  }
}

class FinalStreamError extends Error {
  constructor(readonly error: CreditsApiError) {
    super(error.message);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
