/**
 * Where the plugin finds its service and key. Standalone in a browser (no Framer needed):
 * `?api=http://127.0.0.1:8000&key=rfk_...` (optionally `&project=<id>&name=<site name>`).
 * Inside Framer: the built-in service URL and the key kept from sign-in.
 */
export const DEFAULT_API_URL: string =
  (import.meta.env.VITE_CREDITS_API_URL as string | undefined) ?? "https://credits.rankframe.com";
const KEY_STORAGE = "rankframe.credits.apiKey";

export interface PluginConfig {
  apiUrl: string;
  /** The API key from the query string, or the one sign-in stored. */
  apiKey: string | null;
  /** Where the key came from: a query-string key is never stored. */
  keySource: "query" | "storage" | null;
  /** The site the bulk run belongs to (the Framer project). */
  project: { id: string; name: string } | null;
}

export function readConfig(location: Location = window.location): PluginConfig {
  const query = new URLSearchParams(location.search);
  const apiUrl = (query.get("api") || DEFAULT_API_URL).replace(/\/+$/, "");
  const queryKey = query.get("key");
  const storedKey = safeStorage()?.getItem(KEY_STORAGE) ?? null;
  const projectId = query.get("project");
  return {
    apiUrl,
    apiKey: queryKey || storedKey,
    keySource: queryKey ? "query" : storedKey ? "storage" : null,
    project: projectId ? { id: projectId, name: query.get("name") || projectId } : null,
  };
}

/** Keep the key sign-in handed over (localStorage: never Framer's shared plugin data). */
export function storeApiKey(key: string | null): void {
  const storage = safeStorage();
  if (!storage) return;
  if (key) storage.setItem(KEY_STORAGE, key);
  else storage.removeItem(KEY_STORAGE);
}

function safeStorage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // storage blocked (a sandboxed iframe)
  }
}
