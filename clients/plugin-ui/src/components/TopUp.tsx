/**
 * The purple Buy Credits button and its top-up modal: the packages with credits, price and
 * price per credit; a choice opens a Polar checkout in a window of its own, and the modal
 * waits for the balance stream to bring the credits (a checkout window cannot tell us).
 */
import {
  createPurchaseIntent,
  getPurchaseIntent,
  listCreditPackages,
  type CreditPackage,
  type PackageId,
  type PurchaseIntent,
} from "@rankframe/credits-client";
import { useCallback, useEffect, useId, useRef, useState } from "react";
import { useCredits } from "../credits";
import { insideFramer } from "../framer";
import { formatCredits, formatPrice, sentence } from "../messages";

export interface Purchase {
  intent: PurchaseIntent;
  display: string;
}

export function BuyCreditsButton({ onClick }: { onClick: () => void }) {
  return (
    <button type="button" className="buy-credits" data-testid="buy-credits" onClick={onClick}>
      Buy Credits
    </button>
  );
}

const UNAVAILABLE: Record<string, string> = {
  first_time_offer_used: "Already used: this offer is for your first purchase only.",
  subscription_inactive: "Needs an active RankFrame subscription.",
  payments_not_configured: "Not available on this service yet.",
};

type Step =
  | { kind: "choose" }
  | { kind: "creating"; packageId: PackageId }
  | {
      kind: "waiting";
      intent: PurchaseIntent;
      url: string;
      popup: Window | null;
      windowClosed: boolean;
    };

export function TopUpModal({
  onClose,
  onPurchased,
}: {
  onClose: () => void;
  onPurchased: (purchase: Purchase) => void;
}) {
  const { client, version, balance } = useCredits();
  const titleId = useId();
  const [packages, setPackages] = useState<CreditPackage[] | null>(null);
  const [step, setStep] = useState<Step>({ kind: "choose" });
  const [error, setError] = useState<string | null>(null);
  const attemptKey = useRef<{ packageId: PackageId; key: string } | null>(null);
  const dialog = useRef<HTMLDivElement>(null);

  const load = useCallback(() => {
    setError(null);
    listCreditPackages(client).then(setPackages, (e: unknown) => setError(sentence(e)));
  }, [client]);
  useEffect(load, [load]);
  useEffect(() => dialog.current?.focus(), []);

  const choose = async (pkg: CreditPackage) => {
    setError(null);
    // One key per attempt at a package: a retry after a lost answer returns the same checkout.
    if (attemptKey.current?.packageId !== pkg.id) {
      attemptKey.current = { packageId: pkg.id, key: crypto.randomUUID() };
    }
    // In a browser, open the window inside the click (pop-up blockers), then point it at the
    // checkout. Framer's desktop app opens windows in the system browser: only the real URL.
    const popup = insideFramer()
      ? null
      : window.open("", "rankframe-checkout", "popup,width=480,height=720");
    setStep({ kind: "creating", packageId: pkg.id });
    try {
      const intent = await createPurchaseIntent(client, pkg.id, {
        idempotencyKey: attemptKey.current.key,
      });
      const url = intent.checkout_url;
      if (!url) throw new Error("the purchase intent has no checkout_url");
      let opened = popup;
      if (opened && !opened.closed) opened.location.href = url;
      else opened = window.open(url, "rankframe-checkout", "popup,width=480,height=720");
      setStep({ kind: "waiting", intent, url, popup: opened, windowClosed: false });
    } catch (e) {
      popup?.close();
      setError(sentence(e));
      setStep({ kind: "choose" });
    }
  };

  // Every balance the stream brings while we wait: has this purchase been credited?
  const waitingIntent = step.kind === "waiting" ? step.intent : null;
  useEffect(() => {
    if (!waitingIntent) return;
    let current = true;
    getPurchaseIntent(client, waitingIntent.id).then(
      (intent) => {
        if (!current) return;
        if (intent.status === "completed") {
          attemptKey.current = null;
          onPurchased({ intent, display: balance?.display ?? "" });
        } else if (intent.status === "expired") {
          setError("This checkout expired before it was paid. Choose a package to start again.");
          setStep({ kind: "choose" });
        }
      },
      () => undefined, // the stream's own error state shows an unreachable service
    );
    return () => {
      current = false;
    };
  }, [client, waitingIntent, version, balance, onPurchased]);

  // A checkout window closed before its payment: say so, and keep listening.
  const popup = step.kind === "waiting" ? step.popup : null;
  useEffect(() => {
    if (!popup) return;
    const timer = setInterval(() => {
      if (popup.closed) {
        clearInterval(timer);
        setStep((s) => (s.kind === "waiting" ? { ...s, windowClosed: true } : s));
      }
    }, 500);
    return () => clearInterval(timer);
  }, [popup]);

  const reopen = () => {
    if (step.kind !== "waiting") return;
    const opened = window.open(step.url, "rankframe-checkout", "popup,width=480,height=720");
    setStep({ ...step, popup: opened, windowClosed: false });
  };

  return (
    <div className="modal-backdrop" onClick={onClose}>
      <div
        className="modal"
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        data-testid="topup-modal"
        tabIndex={-1}
        ref={dialog}
        onClick={(e) => e.stopPropagation()}
        onKeyDown={(e) => e.key === "Escape" && onClose()}
      >
        <div className="modal__head">
          <h2 id={titleId}>Buy credits</h2>
          <button type="button" className="icon-button" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </div>
        {step.kind === "waiting" ? (
          <div className="waiting" data-testid="checkout-waiting" role="status">
            <div className="spinner" aria-hidden="true" />
            <p>
              Waiting for your payment of <strong>{formatPrice(step.intent.price_cents)}</strong>{" "}
              for {formatCredits(step.intent.credits)} in the Polar checkout window…
            </p>
            {step.popup === null && (
              <p className="warning">
                The checkout window could not be opened (pop-ups may be blocked).{" "}
                <a href={step.url} target="_blank" rel="noreferrer">
                  Open the checkout
                </a>
                .
              </p>
            )}
            {step.windowClosed && (
              <p className="warning" role="alert">
                The checkout window was closed before the payment went through. If you paid, the
                credits will still arrive here.{" "}
                <button type="button" className="link-button" onClick={reopen}>
                  Reopen the checkout
                </button>
              </p>
            )}
            <button type="button" className="secondary" onClick={() => setStep({ kind: "choose" })}>
              Choose another package
            </button>
          </div>
        ) : (
          <>
            {packages === null && !error && <p className="muted">Loading packages…</p>}
            <ul className="packages">
              {packages?.map((pkg) => {
                const best = pkg.id === "first_time" && pkg.available;
                const busy = step.kind === "creating" && step.packageId === pkg.id;
                return (
                  <li key={pkg.id}>
                    <button
                      type="button"
                      className={`package${best ? " package--best" : ""}`}
                      data-testid={`package-${pkg.id}`}
                      data-available={pkg.available}
                      disabled={!pkg.available || step.kind === "creating"}
                      aria-describedby={`${titleId}-${pkg.id}`}
                      onClick={() => void choose(pkg)}
                    >
                      <span className="package__name">
                        {pkg.name}
                        {best && <span className="package__tag">Best value</span>}
                      </span>
                      <span className="package__credits">{formatCredits(pkg.credits)}</span>
                      <span className="package__price">{formatPrice(pkg.price_cents)}</span>
                      <span className="package__per" id={`${titleId}-${pkg.id}`}>
                        {pkg.available
                          ? `$${pkg.price_per_credit} per credit`
                          : (UNAVAILABLE[pkg.unavailable_reason ?? ""] ?? "Not available.")}
                      </span>
                      {busy && <span className="package__busy">Opening checkout…</span>}
                    </button>
                  </li>
                );
              })}
            </ul>
            <p className="muted small">Payments are handled by Polar. Credits never expire while your subscription is active.</p>
          </>
        )}
        {error && (
          <p className="form-error" role="alert" data-testid="topup-error">
            {error}{" "}
            {packages === null && (
              <button type="button" className="link-button" onClick={load}>
                Try again
              </button>
            )}
          </p>
        )}
      </div>
    </div>
  );
}
