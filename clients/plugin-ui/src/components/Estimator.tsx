/** The help page's planning guide, from `GET /v1/estimate`: credits for a full pass. */
import { estimateCredits, type Estimate } from "@rankframe/credits-client";
import { useId, useState } from "react";
import { useCredits } from "../credits";
import { formatCredits, sentence } from "../messages";

const PACKAGE_NAMES: Record<string, string> = {
  first_time: "First-time offer (30,000 credits for $49)",
  refill: "Regular refill (30,000 credits for $100)",
  small: "Smaller tier (1,000 credits for $10)",
};

function CountField(props: {
  label: string;
  testId: string;
  value: string;
  onChange: (value: string) => void;
}) {
  return (
    <label>
      {props.label}
      <input
        type="number"
        min={0}
        max={1000000}
        inputMode="numeric"
        data-testid={props.testId}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
      />
    </label>
  );
}

export function Estimator() {
  const { client } = useCredits();
  const id = useId();
  const [pages, setPages] = useState("10");
  const [images, setImages] = useState("20");
  const [schema, setSchema] = useState(false);
  const [estimate, setEstimate] = useState<Estimate | null>(null);
  const [error, setError] = useState<string | null>(null);

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      setEstimate(
        await estimateCredits(client, {
          pages: Number.parseInt(pages || "0", 10),
          images: Number.parseInt(images || "0", 10),
          schema,
        }),
      );
    } catch (e) {
      setError(sentence(e));
    }
  };

  return (
    <section className="panel" aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>Plan your credits</h2>
      <form className="estimator" onSubmit={(e) => void submit(e)}>
        <CountField label="Pages" testId="estimate-pages" value={pages} onChange={setPages} />
        <CountField label="Images" testId="estimate-images" value={images} onChange={setImages} />
        <label className="checkbox">
          <input type="checkbox" checked={schema} onChange={(e) => setSchema(e.target.checked)} />
          Schema per page
        </label>
        <button type="submit" className="secondary" data-testid="estimate-submit">
          Estimate
        </button>
      </form>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {estimate && (
        <div className="estimate" data-testid="estimate-result" role="status">
          <p>
            <strong data-testid="estimate-total">About {formatCredits(estimate.credits.total)}</strong>{" "}
            for a full pass: {estimate.credits.meta_titles} titles,{" "}
            {estimate.credits.meta_descriptions} descriptions, {estimate.credits.alt_text} alt texts
            {estimate.credits.schema ? `, ${estimate.credits.schema} schema sets` : ""}.
          </p>
          <p className="small">
            Recommended: {PACKAGE_NAMES[estimate.recommended_package] ?? estimate.recommended_package}
          </p>
        </div>
      )}
    </section>
  );
}
