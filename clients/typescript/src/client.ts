/**
 * The RankFrame credits client: openapi-fetch over the types generated from
 * openapi/openapi.json, plus one typed function per thing the plugin does. Every failure
 * is thrown as a `CreditsApiError` carrying the service's problem+json.
 */
import createClient, { type Client } from "openapi-fetch";
import { CreditsApiError } from "./errors.js";
import type { paths } from "./schema.js";
import {
  checkOutput,
  type Balance,
  type Batch,
  type BatchDetail,
  type BatchRequest,
  type CreditPackage,
  type Estimate,
  type Generation,
  type GenerationCreatedOf,
  type GenerationKind,
  type GenerationRequest,
  type LedgerPage,
  type PackageId,
  type PurchaseIntent,
  type Site,
} from "./types.js";

export interface CreditsClientOptions {
  /** A `fetch` to use instead of `globalThis.fetch` (tests, proxies). */
  fetch?: typeof fetch;
}

/** An openapi-fetch client for one account's API key, and what the streams need. */
export type CreditsClient = Client<paths> & {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly fetch: typeof fetch;
};

/** A client for one account's API key (the plugin's) against `baseUrl`. */
export function createCreditsClient(
  baseUrl: string,
  apiKey: string,
  options: CreditsClientOptions = {},
): CreditsClient {
  const root = baseUrl.replace(/\/+$/, "");
  const fetcher = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const client = createClient<paths>({
    baseUrl: root,
    fetch: (request: Request) => fetcher(request),
    headers: { Authorization: `Bearer ${apiKey}` },
  });
  return Object.assign(client, { baseUrl: root, apiKey, fetch: fetcher });
}

interface Result<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The data of a successful call, or its problem thrown as a `CreditsApiError`. */
export async function unwrap<T>(call: Promise<Result<T>>): Promise<T> {
  let result: Result<T>;
  try {
    result = await call;
  } catch (cause) {
    if (cause instanceof CreditsApiError) throw cause;
    if (cause instanceof DOMException && cause.name === "AbortError") throw cause;
    throw CreditsApiError.network(cause);
  }
  if (!result.response.ok || result.data === undefined) {
    throw CreditsApiError.fromResponse(result.response, result.error);
  }
  return result.data;
}

function newIdempotencyKey(): string {
  return globalThis.crypto.randomUUID();
}

/** `GET /v1/balance`: the badge (`display`), never cached. */
export function getBalance(client: CreditsClient, signal?: AbortSignal): Promise<Balance> {
  return unwrap(client.GET("/v1/balance", { signal }));
}

/** `GET /v1/credit-packages`: the three packages, with this account's availability. */
export async function listCreditPackages(client: CreditsClient): Promise<CreditPackage[]> {
  return (await unwrap(client.GET("/v1/credit-packages"))).packages;
}

/** `POST /v1/purchase-intents`: a Polar checkout to open (`checkout_url`). */
export function createPurchaseIntent(
  client: CreditsClient,
  packageId: PackageId,
  options: { successUrl?: string; idempotencyKey?: string } = {},
): Promise<PurchaseIntent> {
  return unwrap(
    client.POST("/v1/purchase-intents", {
      body: { package_id: packageId, success_url: options.successUrl },
      headers: { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() },
    }),
  );
}

/** `GET /v1/purchase-intents/{id}`: `open`, `completed`, `expired` or `refunded`. */
export function getPurchaseIntent(client: CreditsClient, intentId: string): Promise<PurchaseIntent> {
  return unwrap(
    client.GET("/v1/purchase-intents/{intent_id}", { params: { path: { intent_id: intentId } } }),
  );
}

/** `POST /v1/sites`: connect a Framer project (the first one ever grants starter credits). */
export function connectSite(
  client: CreditsClient,
  site: { framer_project_id: string; name: string },
): Promise<Site> {
  return unwrap(client.POST("/v1/sites", { body: site }));
}

/** `GET /v1/estimate`: the planning guide's credits for a site. */
export function estimateCredits(
  client: CreditsClient,
  query: { pages?: number; images?: number; schema?: boolean },
): Promise<Estimate> {
  return unwrap(client.GET("/v1/estimate", { params: { query } }));
}

/** `GET /v1/ledger`: one page, newest first. */
export function listLedger(
  client: CreditsClient,
  query: { limit?: number; cursor?: string } = {},
): Promise<LedgerPage> {
  return unwrap(client.GET("/v1/ledger", { params: { query } }));
}

/** `POST /v1/generations`: one output for one credit, typed by `kind`. */
export async function createGeneration<K extends GenerationKind>(
  client: CreditsClient,
  request: GenerationRequest<K>,
  options: { idempotencyKey?: string } = {},
): Promise<GenerationCreatedOf<K>> {
  const created = await unwrap(
    client.POST("/v1/generations", {
      body: request as never,
      headers: { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() },
    }),
  );
  checkOutput(request.kind, created.output);
  return created as unknown as GenerationCreatedOf<K>;
}

/** `GET /v1/generations/{id}`, discriminated by `kind`. */
export async function getGeneration(client: CreditsClient, generationId: string): Promise<Generation> {
  const generation = await unwrap(
    client.GET("/v1/generations/{generation_id}", {
      params: { path: { generation_id: generationId } },
    }),
  );
  checkOutput(generation.kind, generation.output);
  return generation as Generation;
}

/** `POST /v1/generation-batches`: every item's credit reserved now, or `402` and none. */
export function createBatch<K extends GenerationKind>(
  client: CreditsClient,
  request: BatchRequest<K>,
  options: { idempotencyKey?: string } = {},
): Promise<Batch> {
  return unwrap(
    client.POST("/v1/generation-batches", {
      body: request as never,
      headers: { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() },
    }),
  );
}

/** `GET /v1/generation-batches/{id}`: the batch and every item, typed by `kind`. */
export async function getBatch(client: CreditsClient, batchId: string): Promise<BatchDetail> {
  const batch = await unwrap(
    client.GET("/v1/generation-batches/{batch_id}", { params: { path: { batch_id: batchId } } }),
  );
  for (const item of batch.items) checkOutput(batch.kind, item.output);
  return batch as BatchDetail;
}

/** `POST /v1/generation-batches/{id}/cancel`: items not yet generated are released. */
export function cancelBatch(client: CreditsClient, batchId: string): Promise<Batch> {
  return unwrap(
    client.POST("/v1/generation-batches/{batch_id}/cancel", {
      params: { path: { batch_id: batchId } },
    }),
  );
}

/** The problem a failed openapi-fetch call returned, as an exception. */
export function raiseProblem(response: Response, error: unknown): never {
  throw CreditsApiError.fromResponse(response, error);
}
