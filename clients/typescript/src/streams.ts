/**
 * The two live streams the plugin follows: the account's balance (the badge) and a batch's
 * progress (the bulk panel). Both reconnect by themselves and resume with `Last-Event-ID`.
 */
import type { CreditsClient } from "./client.js";
import { CreditsApiError } from "./errors.js";
import { runEventStream, type StreamOptions } from "./sse.js";
import type { Balance, Batch, BatchProgress } from "./types.js";

export type StreamBalanceOptions = StreamOptions;

/**
 * Follow `GET /v1/balance/events`: `onBalance` gets the balance on every (re)connect and
 * after every change. Runs until `signal` aborts (then resolves); rejects only when
 * reconnecting cannot help, e.g. `401` for a revoked key.
 */
export function streamBalance(
  client: CreditsClient,
  onBalance: (balance: Balance) => void,
  options: StreamBalanceOptions = {},
): Promise<void> {
  return runEventStream(
    client,
    "/v1/balance/events",
    (message) => {
      if (message.event !== "balance") return;
      onBalance(parse<Balance>(message.data));
    },
    options,
  );
}

export interface FollowBatchOptions extends StreamOptions {
  /** The batch's counters after each finished item (and the current state on connect). */
  onProgress?: (progress: BatchProgress) => void;
  /** The batch at its end (`completed` or `canceled`). */
  onDone?: (batch: Batch) => void;
}

/**
 * Follow `GET /v1/generation-batches/{id}/events` until `done`; resolves with the finished
 * batch (or with `undefined` when `signal` aborts first).
 */
export async function followBatch(
  client: CreditsClient,
  batchId: string,
  options: FollowBatchOptions = {},
): Promise<Batch | undefined> {
  let finished: Batch | undefined;
  await runEventStream(
    client,
    `/v1/generation-batches/${encodeURIComponent(batchId)}/events`,
    (message) => {
      if (message.event === "progress") {
        options.onProgress?.(parse<BatchProgress>(message.data));
      } else if (message.event === "done") {
        finished = parse<BatchProgress>(message.data).batch;
        options.onDone?.(finished);
        return true;
      }
      return false;
    },
    options,
  );
  return finished;
}

function parse<T>(data: string): T {
  try {
    return JSON.parse(data) as T;
  } catch (cause) {
    throw CreditsApiError.network(new Error(`an event whose data is not JSON: ${String(cause)}`));
  }
}
