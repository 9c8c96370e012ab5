import { createCreditsClient } from "@rankframe/credits-client";
import { useCallback, useMemo, useState } from "react";
import { BulkAltText, type SiteRef } from "./components/BulkAltText";
import { CreditsBadge, CreditsStatus } from "./components/CreditsBadge";
import { Estimator } from "./components/Estimator";
import { SignIn } from "./components/SignIn";
import { BuyCreditsButton, TopUpModal, type Purchase } from "./components/TopUp";
import { readConfig, storeApiKey } from "./config";
import { CreditsProvider, useCredits } from "./credits";
import { formatCredits } from "./messages";

export function App({ project }: { project: SiteRef | null }) {
  const config = useMemo(() => readConfig(), []);
  const [apiKey, setApiKey] = useState(config.apiKey);
  const client = useMemo(
    () => (apiKey ? createCreditsClient(config.apiUrl, apiKey) : null),
    [config.apiUrl, apiKey],
  );
  const site = project ??
    config.project ?? { id: `standalone-${window.location.host}`, name: "Standalone plugin UI" };
  const signIn = useCallback((key: string) => {
    storeApiKey(key);
    setApiKey(key);
  }, []);
  const signOut = useCallback(() => {
    storeApiKey(null);
    setApiKey(null);
  }, []);

  if (!client) {
    return (
      <main className="plugin">
        <SignIn apiUrl={config.apiUrl} onKey={signIn} />
      </main>
    );
  }
  return (
    <CreditsProvider client={client}>
      <Plugin site={site} onSignOut={config.keySource === "query" ? null : signOut} />
    </CreditsProvider>
  );
}

function Plugin({ site, onSignOut }: { site: SiteRef; onSignOut: (() => void) | null }) {
  const { signedOut } = useCredits();
  const [topUp, setTopUp] = useState(false);
  const [purchase, setPurchase] = useState<Purchase | null>(null);
  const purchased = useCallback((p: Purchase) => {
    setTopUp(false);
    setPurchase(p);
  }, []);

  return (
    <main className="plugin">
      <header className="header">
        <span className="header__title">Image SEO</span>
        <div className="header__credits">
          <CreditsBadge />
          <BuyCreditsButton
            onClick={() => {
              setPurchase(null);
              setTopUp(true);
            }}
          />
        </div>
      </header>
      <CreditsStatus />
      {signedOut && onSignOut && (
        <button type="button" className="link-button" onClick={onSignOut}>
          Sign in again
        </button>
      )}
      {purchase && (
        <p className="success" data-testid="purchase-success" role="status">
          Payment received: {formatCredits(purchase.intent.credits)} added. Your balance is{" "}
          {purchase.display}.
          <button
            type="button"
            className="icon-button"
            aria-label="Dismiss"
            onClick={() => setPurchase(null)}
          >
            ×
          </button>
        </p>
      )}
      <BulkAltText site={site} onBuy={() => setTopUp(true)} />
      <Estimator />
      {topUp && <TopUpModal onClose={() => setTopUp(false)} onPurchased={purchased} />}
    </main>
  );
}
