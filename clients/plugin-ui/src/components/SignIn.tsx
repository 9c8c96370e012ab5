/**
 * Without an API key: sign in through the dashboard (Framer's polling pattern: open the
 * authorize page, poll the session with its read key), or, where the service does not offer
 * sign-in, a clear "no API key" screen.
 */
import {
  CreditsApiError,
  createPluginSession,
  pollPluginSession,
  type PluginSession,
} from "@rankframe/credits-client";
import { useEffect, useState } from "react";
import { sentence } from "../messages";

const POLL_MS = 2500;

type Phase =
  | { kind: "checking" }
  | { kind: "unavailable" }
  | { kind: "ready"; session: PluginSession }
  | { kind: "waiting"; session: PluginSession }
  | { kind: "error"; message: string };

export function SignIn({ apiUrl, onKey }: { apiUrl: string; onKey: (key: string) => void }) {
  const [phase, setPhase] = useState<Phase>({ kind: "checking" });

  // Is sign-in offered here? `POST /v1/plugin-sessions` answers 404 (not this version) or
  // 503 (not configured) where it is not; where it is, that session is the one used.
  useEffect(() => {
    let current = true;
    createPluginSession(apiUrl).then(
      (session) => current && setPhase({ kind: "ready", session }),
      (e: unknown) => {
        if (!current) return;
        if (e instanceof CreditsApiError && (e.status === 404 || e.status === 405 || e.status === 503))
          setPhase({ kind: "unavailable" });
        else setPhase({ kind: "error", message: sentence(e) });
      },
    );
    return () => {
      current = false;
    };
  }, [apiUrl]);

  const begin = async () => {
    try {
      const fresh =
        phase.kind === "ready" && Date.parse(phase.session.expires_at) - Date.now() > 60_000;
      const session = fresh ? phase.session : await createPluginSession(apiUrl);
      window.open(session.authorize_url, "rankframe-sign-in", "popup,width=480,height=720");
      setPhase({ kind: "waiting", session });
    } catch (e) {
      setPhase({ kind: "error", message: sentence(e) });
    }
  };

  const session = phase.kind === "waiting" ? phase.session : null;
  useEffect(() => {
    if (!session) return;
    const controller = new AbortController();
    const timer = setInterval(async () => {
      try {
        const polled = await pollPluginSession(apiUrl, session, undefined, controller.signal);
        if (polled.status === "approved") {
          clearInterval(timer);
          onKey(polled.apiKey);
        } else if (polled.status === "gone") {
          clearInterval(timer);
          setPhase({ kind: "error", message: "The sign-in expired. Please start it again." });
        }
      } catch {
        // a poll that failed is tried again at the next tick
      }
    }, POLL_MS);
    return () => {
      clearInterval(timer);
      controller.abort();
    };
  }, [apiUrl, session, onKey]);

  return (
    <section className="panel sign-in" data-testid="sign-in" aria-labelledby="sign-in-title">
      <h2 id="sign-in-title">RankFrame credits</h2>
      {phase.kind === "checking" && <p className="muted">Checking sign-in…</p>}
      {phase.kind === "unavailable" && (
        <div data-testid="no-api-key">
          <p>
            <strong>No API key.</strong> This plugin needs your RankFrame API key to show and use
            your credits, and this service does not offer sign-in from the plugin yet.
          </p>
          <p className="small muted">
            Open the plugin with <code>?key=rfk_…</code> (and <code>&amp;api=</code> for another
            service), or copy a key from dashboard.rankframe.com.
          </p>
        </div>
      )}
      {phase.kind === "ready" && (
        <>
          <p>Sign in with your RankFrame account to see and use your credits.</p>
          <button type="button" className="primary" data-testid="sign-in-start" onClick={() => void begin()}>
            Sign in to RankFrame
          </button>
        </>
      )}
      {phase.kind === "waiting" && (
        <p role="status" data-testid="sign-in-waiting">
          Finish signing in in the window that opened; this plugin continues by itself.
        </p>
      )}
      {phase.kind === "error" && (
        <>
          <p className="form-error" role="alert">
            {phase.message}
          </p>
          <button type="button" className="secondary" onClick={() => void begin()}>
            Try again
          </button>
        </>
      )}
    </section>
  );
}
