/**
 * Plugin sign-in, Framer's polling pattern: ask the service for a session, open its
 * `authorize_url` (the dashboard approves it), and poll with the session's read key until
 * the service hands over an API key, exactly once.
 */
import { CreditsApiError } from "./errors.js";

export interface PluginSession {
  id: string;
  read_key: string;
  authorize_url: string;
  expires_at: string;
}

export type PluginSessionPoll =
  | { status: "pending" }
  | { status: "approved"; apiKey: string }
  /** `410`: expired, or its key was already handed out. */
  | { status: "gone" };

async function call(fetcher: typeof fetch, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetcher(url, init);
  } catch (cause) {
    if (cause instanceof DOMException && cause.name === "AbortError") throw cause;
    throw CreditsApiError.network(cause);
  }
}

/** `POST /v1/plugin-sessions` (no auth). A `404` or `503` means sign-in is not offered. */
export async function createPluginSession(
  baseUrl: string,
  fetcher: typeof fetch = (input, init) => globalThis.fetch(input, init),
): Promise<PluginSession> {
  const response = await call(fetcher, `${baseUrl.replace(/\/+$/, "")}/v1/plugin-sessions`, {
    method: "POST",
    headers: { Accept: "application/json" },
  });
  if (response.status !== 201) throw await CreditsApiError.read(response);
  return (await response.json()) as PluginSession;
}

/** `GET /v1/plugin-sessions/{id}` with the read key: pending, the API key, or gone. */
export async function pollPluginSession(
  baseUrl: string,
  session: Pick<PluginSession, "id" | "read_key">,
  fetcher: typeof fetch = (input, init) => globalThis.fetch(input, init),
  signal?: AbortSignal,
): Promise<PluginSessionPoll> {
  const url = `${baseUrl.replace(/\/+$/, "")}/v1/plugin-sessions/${encodeURIComponent(session.id)}`;
  const response = await call(fetcher, url, {
    headers: { Authorization: `Bearer ${session.read_key}`, Accept: "application/json" },
    cache: "no-store",
    signal,
  });
  if (response.status === 202) return { status: "pending" };
  if (response.status === 410) return { status: "gone" };
  if (response.status !== 200) throw await CreditsApiError.read(response);
  const body = (await response.json()) as { api_key?: string | { key?: string } };
  const apiKey = typeof body.api_key === "string" ? body.api_key : body.api_key?.key;
  if (!apiKey) throw CreditsApiError.network(new Error("an approved session without an api_key"));
  return { status: "approved", apiKey };
}
