/**
 * The service's shapes, from the generated `schema.d.ts`, with generation outputs tied to
 * their kind: `meta_title`, `meta_description` and `alt_text` give `{text}`, `schema` gives
 * `{schema}` (a JSON-LD object). Narrow on `kind` and the output's type follows.
 */
import type { components } from "./schema.js";

type Schemas = components["schemas"];

export type Balance = Schemas["BalanceRead"];
export type CreditPackage = Schemas["CreditPackageRead"];
export type PackageId = "first_time" | "refill" | "small";
export type PurchaseIntent = Schemas["PurchaseIntentRead"];
export type Estimate = Schemas["EstimateRead"];
export type Site = Schemas["SiteRead"];
export type LedgerEntry = Schemas["LedgerEntryRead"];
export type LedgerPage = Schemas["LedgerPage"];
export type GenerationError = Schemas["GenerationError"];
export type Batch = Schemas["BatchRead"];

export type GenerationKind = Schemas["GenerationRead"]["kind"];
export type TextOutput = Schemas["TextOutput"];
export type SchemaOutput = Schemas["SchemaOutput"];
export type PageInput = Schemas["PageInput"];
export type AltTextInput = Schemas["AltTextInput"];
export type SchemaInput = Schemas["SchemaInput"];

/** The output of one generation of kind `K`. */
export type OutputOf<K extends GenerationKind> = K extends "schema" ? SchemaOutput : TextOutput;
/** The input of one generation of kind `K`. */
export type InputOf<K extends GenerationKind> = K extends "alt_text"
  ? AltTextInput
  : K extends "schema"
    ? SchemaInput
    : PageInput;

/** `POST /v1/generations` for kind `K`. */
export interface GenerationRequest<K extends GenerationKind = GenerationKind> {
  kind: K;
  site_id: string;
  input: InputOf<K>;
}

/** `POST /v1/generation-batches` for kind `K`. */
export interface BatchRequest<K extends GenerationKind = GenerationKind> {
  kind: K;
  site_id: string;
  items: InputOf<K>[];
  /** `standard` (default; interactive) or `economy` (half the model cost, within 24 h). */
  priority?: Batch["priority"];
}

/** One generation of kind `K`: its `output` is `OutputOf<K>` (null unless it succeeded). */
export type GenerationOf<K extends GenerationKind> = Omit<
  Schemas["GenerationRead"],
  "kind" | "output"
> & { kind: K; output: OutputOf<K> | null };

/** Any generation, discriminated by `kind`. */
export type Generation = { [K in GenerationKind]: GenerationOf<K> }[GenerationKind];

/** The `201` of `POST /v1/generations`: succeeded, so the output is there. */
export type GenerationCreatedOf<K extends GenerationKind> = Omit<
  Schemas["GenerationCreated"],
  "kind" | "output" | "status"
> & { kind: K; status: "succeeded"; output: OutputOf<K> };

export type BatchItemOf<K extends GenerationKind> = Omit<Schemas["BatchItemRead"], "output"> & {
  output?: OutputOf<K> | null;
};
export type BatchItem = Schemas["BatchItemRead"];

/** A batch with its items, of kind `K`. */
export type BatchDetailOf<K extends GenerationKind> = Omit<Schemas["BatchDetail"], "kind" | "items"> & {
  kind: K;
  items: BatchItemOf<K>[];
};

/** Any batch with its items, discriminated by `kind`. */
export type BatchDetail = { [K in GenerationKind]: BatchDetailOf<K> }[GenerationKind];

/** The data of a batch's `progress` and `done` events. */
export interface BatchProgress {
  batch: Batch;
  /** The item that just finished; null in the first event of a connection and in `done`. */
  item: BatchItem | null;
}

/** True for the kinds whose output is `{text}`. */
export function isTextKind(kind: GenerationKind): kind is Exclude<GenerationKind, "schema"> {
  return kind !== "schema";
}

/** Check that an output has the shape its kind promises (the types then hold at run time). */
export function checkOutput<K extends GenerationKind>(
  kind: K,
  output: unknown,
): OutputOf<K> | null {
  if (output === null || output === undefined) return null;
  if (typeof output !== "object") throw new TypeError(`${kind} output is not an object`);
  if (kind === "schema") {
    const schema = (output as { schema?: unknown }).schema;
    if (!schema || typeof schema !== "object") throw new TypeError("schema output has no `schema`");
  } else if (typeof (output as { text?: unknown }).text !== "string") {
    throw new TypeError(`${kind} output has no \`text\``);
  }
  return output as OutputOf<K>;
}
