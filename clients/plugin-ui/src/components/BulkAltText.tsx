/**
 * Bulk alt text: image URLs, the cost against what is available before starting (the help
 * page's advice), a progress bar from `followBatch`, a cancel button, and the results.
 */
import {
  CreditsApiError,
  cancelBatch,
  connectSite,
  createBatch,
  followBatch,
  getBatch,
  type Batch,
  type BatchDetailOf,
} from "@rankframe/credits-client";
import { useEffect, useId, useRef, useState } from "react";
import { useCredits } from "../credits";
import { formatCredits, sentence } from "../messages";

export interface SiteRef {
  id: string;
  name: string;
}

type Run =
  | { kind: "idle" }
  | { kind: "starting" }
  | { kind: "running"; batch: Batch; canceling: boolean }
  | { kind: "done"; batch: BatchDetailOf<"alt_text">; urls: string[] };

function parseUrls(text: string): { urls: string[]; invalid: number[] } {
  const urls: string[] = [];
  const invalid: number[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (!line) return;
    try {
      const url = new URL(line);
      if (url.protocol !== "https:") throw new Error("not https");
      urls.push(url.toString());
    } catch {
      invalid.push(index + 1);
    }
  });
  return { urls, invalid };
}

function fileName(url: string): string {
  try {
    return decodeURIComponent(new URL(url).pathname.split("/").pop() || url);
  } catch {
    return url;
  }
}

export function BulkAltText({ site, onBuy }: { site: SiteRef; onBuy: () => void }) {
  const { client, balance } = useCredits();
  const inputId = useId();
  const [text, setText] = useState("");
  const [run, setRun] = useState<Run>({ kind: "idle" });
  const [error, setError] = useState<{ message: string; buy: boolean } | null>(null);
  const stop = useRef<AbortController | null>(null);
  useEffect(() => () => stop.current?.abort(), []);

  const { urls, invalid } = parseUrls(text);
  const available = balance?.available ?? 0;
  const short = Math.max(urls.length - available, 0);
  const busy = run.kind === "starting" || run.kind === "running";

  const start = async () => {
    setError(null);
    setRun({ kind: "starting" });
    const submitted = urls;
    try {
      const connected = await connectSite(client, { framer_project_id: site.id, name: site.name });
      const batch = await createBatch(client, {
        kind: "alt_text",
        site_id: connected.id,
        items: submitted.map((image_url) => ({ image_url })),
      });
      setRun({ kind: "running", batch, canceling: false });
      stop.current = new AbortController();
      const finished = await followBatch(client, batch.id, {
        signal: stop.current.signal,
        onProgress: ({ batch: latest }) =>
          setRun((r) => (r.kind === "running" ? { ...r, batch: latest } : r)),
      });
      if (!finished) return; // unmounted
      const detail = await getBatch(client, batch.id);
      if (detail.kind !== "alt_text") throw new Error("unexpected batch kind");
      setRun({ kind: "done", batch: detail, urls: submitted });
    } catch (e) {
      const insufficient = e instanceof CreditsApiError && e.isInsufficientCredits();
      setError({ message: sentence(e), buy: insufficient });
      setRun({ kind: "idle" });
    }
  };

  const cancel = async () => {
    if (run.kind !== "running") return;
    setRun({ ...run, canceling: true });
    try {
      await cancelBatch(client, run.batch.id);
    } catch (e) {
      setError({ message: sentence(e), buy: false });
    }
  };

  const progress = run.kind === "running" ? run.batch : run.kind === "done" ? run.batch : null;
  const finishedCount = progress ? progress.succeeded + progress.failed + progress.canceled : 0;

  return (
    <section className="panel" aria-labelledby={`${inputId}-title`}>
      <h2 id={`${inputId}-title`}>Bulk alt text</h2>
      <label htmlFor={inputId} className="field-label">
        Image URLs, one per line
      </label>
      <textarea
        id={inputId}
        data-testid="bulk-input"
        rows={5}
        value={text}
        disabled={busy}
        placeholder="https://framerusercontent.com/images/…"
        onChange={(e) => setText(e.target.value)}
      />
      <p className="bulk-cost" data-testid="bulk-cost" aria-live="polite">
        {urls.length === 0
          ? "Add image URLs to see the cost."
          : `${formatCredits(urls.length)} for ${urls.length} ${urls.length === 1 ? "image" : "images"} · ${formatCredits(available)} available`}
      </p>
      {invalid.length > 0 && (
        <p className="form-error" role="alert">
          {invalid.length === 1 ? "Line" : "Lines"} {invalid.join(", ")}{" "}
          {invalid.length === 1 ? "is not an https URL" : "are not https URLs"}.
        </p>
      )}
      {short > 0 && urls.length > 0 && !busy && (
        <p className="warning">
          You need {formatCredits(short)} more for this run.{" "}
          <button type="button" className="link-button" onClick={onBuy}>
            Buy credits
          </button>
        </p>
      )}
      <div className="row">
        <button
          type="button"
          className="primary"
          data-testid="bulk-start"
          disabled={busy || urls.length === 0 || invalid.length > 0}
          onClick={() => void start()}
        >
          {run.kind === "starting" ? "Starting…" : `Generate alt text (${formatCredits(urls.length)})`}
        </button>
        {run.kind === "running" && (
          <button
            type="button"
            className="secondary"
            data-testid="bulk-cancel"
            disabled={run.canceling}
            onClick={() => void cancel()}
          >
            {run.canceling ? "Canceling…" : "Cancel"}
          </button>
        )}
      </div>
      {error && (
        <p className="form-error" role="alert" data-testid="bulk-error">
          {error.message}{" "}
          {error.buy && (
            <button type="button" className="link-button" onClick={onBuy}>
              Buy credits
            </button>
          )}
        </p>
      )}
      {progress && (
        <div className="progress">
          <div
            className="progress__bar"
            data-testid="bulk-progress"
            role="progressbar"
            aria-label="Alt text progress"
            aria-valuemin={0}
            aria-valuemax={progress.total}
            aria-valuenow={finishedCount}
            data-status={progress.status}
          >
            <div
              className="progress__fill"
              style={{ width: `${progress.total ? (100 * finishedCount) / progress.total : 0}%` }}
            />
          </div>
          <p className="small muted">
            {finishedCount} of {progress.total} done · {progress.succeeded} generated
            {progress.failed ? ` · ${progress.failed} failed` : ""}
            {progress.canceled ? ` · ${progress.canceled} canceled` : ""}
          </p>
        </div>
      )}
      {run.kind === "done" && (
        <div>
          <p className="small" role="status">
            {run.batch.status === "canceled" ? "Canceled." : "Done."}{" "}
            {formatCredits(run.batch.credits_charged)} used.
          </p>
          <ol className="results" data-testid="bulk-results">
            {run.batch.items.map((item) => (
              <li key={item.index} data-status={item.status}>
                <span className="results__url" title={run.urls[item.index]}>
                  {fileName(run.urls[item.index] ?? "")}
                </span>
                <span className="results__text">
                  {item.status === "succeeded"
                    ? item.output?.text
                    : item.status === "canceled"
                      ? "Canceled: no credit used."
                      : `Failed: no credit used. ${item.error?.detail ?? ""}`}
                </span>
              </li>
            ))}
          </ol>
        </div>
      )}
    </section>
  );
}
