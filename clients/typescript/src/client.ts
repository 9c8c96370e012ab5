/**
 * The RankFrame credits client: openapi-fetch over the types generated from
 * openapi/openapi.json (`npm run generate`). Every error is RFC 9457 problem+json.
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type Problem = components["schemas"]["Problem"];
export type Balance = components["schemas"]["BalanceRead"];

export class CreditsApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(`${status} ${problem.code}: ${problem.detail}`);
  }
}

/** A client for one account's API key (the plugin) against `baseUrl`. */
export function createCreditsClient(baseUrl: string, apiKey: string) {
  const auth: Middleware = {
    onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${apiKey}`);
      return request;
    },
  };
  const client = createClient<paths>({ baseUrl });
  client.use(auth);
  return client;
}

/** The problem a failed call returned, as an exception. */
export function raiseProblem(response: Response, error: unknown): never {
  throw new CreditsApiError(response.status, error as Problem);
}
