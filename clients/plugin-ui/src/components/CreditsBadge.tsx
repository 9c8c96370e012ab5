/** The coral pill in the header: the service's `display` text, live, with a refresh icon. */
import { useCredits } from "../credits";

export function CreditsBadge() {
  const { balance, state, refreshing, refresh } = useCredits();
  const text = balance?.display ?? (state === "error" ? "Credits unavailable" : "Loading credits…");
  return (
    <div className={`credits-pill credits-pill--${state}`}>
        <span
          className="credits-pill__text"
          data-testid="credits-badge"
          data-state={state}
          role="status"
          aria-live="polite"
          aria-busy={state === "loading"}
          title={balance && !balance.usable ? "Credits are frozen until the subscription is active" : undefined}
        >
          {text}
        </span>
        <button
          type="button"
          className={`credits-pill__refresh${refreshing ? " is-spinning" : ""}`}
          data-testid="credits-refresh"
          aria-label="Refresh credit balance"
          title="Refresh credit balance"
          onClick={() => void refresh()}
          disabled={refreshing}
        >
          <svg viewBox="0 0 24 24" width="14" height="14" aria-hidden="true">
            <path
              fill="currentColor"
              d="M17.65 6.35A7.96 7.96 0 0 0 12 4a8 8 0 1 0 7.75 10h-2.08A6 6 0 1 1 12 6c1.66 0 3.14.69 4.22 1.78L13 11h7V4l-2.35 2.35Z"
            />
          </svg>
        </button>
    </div>
  );
}

/** Under the header: the stream reconnecting, or what is wrong, as a sentence. */
export function CreditsStatus() {
  const { state, error } = useCredits();
  return (
    <>
      {state === "reconnecting" && (
        <span className="credits-note" role="status">
          Reconnecting…
        </span>
      )}
      {error && (
        <p className="credits-error" data-testid="credits-error" role="alert">
          {error}
        </p>
      )}
    </>
  );
}
