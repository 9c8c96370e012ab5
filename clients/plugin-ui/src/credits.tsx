/**
 * One balance for the whole plugin: the live stream (`streamBalance`), the refresh button's
 * `GET /v1/balance`, and the connection state the badge shows.
 */
import {
  CreditsApiError,
  getBalance,
  streamBalance,
  type Balance,
  type CreditsClient,
  type StreamState,
} from "@rankframe/credits-client";
import { createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import { sentence } from "./messages";

export type BadgeState = "loading" | "live" | "reconnecting" | "error";

export interface Credits {
  client: CreditsClient;
  balance: Balance | null;
  /** Increases with every balance the stream or a refresh delivered. */
  version: number;
  state: BadgeState;
  /** What went wrong, as a sentence (null when all is well). */
  error: string | null;
  refreshing: boolean;
  refresh: () => Promise<void>;
  /** The key was revoked or is unknown: the plugin must sign in again. */
  signedOut: boolean;
}

const CreditsContext = createContext<Credits | null>(null);

export function useCredits(): Credits {
  const credits = useContext(CreditsContext);
  if (!credits) throw new Error("useCredits outside <CreditsProvider>");
  return credits;
}

export function CreditsProvider({
  client,
  children,
}: {
  client: CreditsClient;
  children: React.ReactNode;
}) {
  const [balance, setBalance] = useState<Balance | null>(null);
  const [version, setVersion] = useState(0);
  const [connection, setConnection] = useState<StreamState>("connecting");
  const [streamError, setStreamError] = useState<string | null>(null);
  const [refreshError, setRefreshError] = useState<string | null>(null);
  const [refreshing, setRefreshing] = useState(false);
  const [signedOut, setSignedOut] = useState(false);

  const accept = useCallback((next: Balance) => {
    setBalance(next);
    setVersion((v) => v + 1);
  }, []);

  useEffect(() => {
    const controller = new AbortController();
    streamBalance(client, accept, {
      signal: controller.signal,
      retryMs: 1000,
      maxRetryMs: 5000,
      onState: (state, error) => {
        setConnection(state);
        if (state === "open") {
          setStreamError(null);
          setRefreshError(null);
        } else if (state === "error" && error) setStreamError(sentence(error));
      },
    }).catch((error: unknown) => {
      setConnection("error");
      setStreamError(sentence(error));
      if (error instanceof CreditsApiError && error.status === 401) setSignedOut(true);
    });
    return () => controller.abort();
  }, [client, accept]);

  const refresh = useCallback(async () => {
    setRefreshing(true);
    try {
      accept(await getBalance(client));
      setRefreshError(null);
    } catch (error) {
      setRefreshError(sentence(error));
      if (error instanceof CreditsApiError && error.status === 401) setSignedOut(true);
    } finally {
      setRefreshing(false);
    }
  }, [client, accept]);

  const error = refreshError ?? streamError;
  const state: BadgeState = error
    ? "error"
    : connection === "reconnecting"
      ? "reconnecting"
      : balance
        ? "live"
        : "loading";
  const value = useMemo<Credits>(
    () => ({ client, balance, version, state, error, refreshing, refresh, signedOut }),
    [client, balance, version, state, error, refreshing, refresh, signedOut],
  );
  return <CreditsContext.Provider value={value}>{children}</CreditsContext.Provider>;
}
