/**
 * `@rankframe/credits-client`: the typed client of the RankFrame credits service.
 *
 * ```ts
 * import { createCreditsClient, getBalance, streamBalance } from "@rankframe/credits-client";
 * const client = createCreditsClient("https://credits.rankframe.com", apiKey);
 * const { display } = await getBalance(client); // "60,498 Credits"
 * ```
 */
export * from "./client.js";
export * from "./errors.js";
export * from "./sse.js";
export * from "./streams.js";
export * from "./types.js";
export * from "./plugin-sessions.js";
export type { components, operations, paths } from "./schema.js";
