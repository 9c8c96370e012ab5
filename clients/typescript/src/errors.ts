/**
 * Every error of the service is RFC 9457 `application/problem+json` with a stable `code`;
 * `CreditsApiError` carries that problem, typed, with its extras (`needed`, `available`).
 */
import type { components } from "./schema.js";

export type Problem = components["schemas"]["Problem"];
export type ValidationProblem = components["schemas"]["ValidationProblem"];

/** The stable codes of the contract (the service may add more; they stay strings). */
export type ProblemCode =
  | "unauthorized"
  | "not_found"
  | "validation_error"
  | "insufficient_credits"
  | "subscription_inactive"
  | "first_time_offer_unavailable"
  | "idempotency_key_reused"
  | "generation_failed"
  | "provider_unavailable"
  | "payment_provider_error"
  | "service_not_configured"
  | "invalid_signature"
  | "rate_limited"
  | "payload_too_large"
  | "network_error"
  | (string & {});

/** `402 insufficient_credits`: what the request needed and what the account had. */
export interface InsufficientCreditsProblem extends Problem {
  code: "insufficient_credits";
  needed: number;
  available: number;
}

export class CreditsApiError extends Error {
  override readonly name = "CreditsApiError";
  /** HTTP status; 0 when the service could not be reached at all. */
  readonly status: number;
  readonly code: ProblemCode;
  readonly detail: string;
  readonly problem: Problem;
  /** Seconds to wait before retrying, from `Retry-After`, when the service sent one. */
  readonly retryAfterSeconds: number | undefined;

  constructor(status: number, problem: Problem, retryAfterSeconds?: number) {
    super(`${status} ${problem.code}: ${problem.detail}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code;
    this.detail = problem.detail;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** Credits the request needed (`insufficient_credits`). */
  get needed(): number | undefined {
    return numberField(this.problem, "needed");
  }

  /** Credits the account had available (`insufficient_credits`). */
  get available(): number | undefined {
    return numberField(this.problem, "available");
  }

  /** Validation errors (`validation_error`). */
  get errors(): ValidationProblem["errors"] | undefined {
    const errors = this.problem["errors"];
    return Array.isArray(errors) ? (errors as ValidationProblem["errors"]) : undefined;
  }

  isInsufficientCredits(): this is CreditsApiError & { problem: InsufficientCreditsProblem } {
    return this.code === "insufficient_credits";
  }

  /** The error for a failed response and its body (parsed problem, text, or nothing). */
  static fromResponse(response: Response, body: unknown): CreditsApiError {
    const retryAfter = Number.parseFloat(response.headers.get("retry-after") ?? "");
    return new CreditsApiError(
      response.status,
      asProblem(response.status, response.statusText, body),
      Number.isFinite(retryAfter) ? retryAfter : undefined,
    );
  }

  /** Read the body of a failed response and make the error. */
  static async read(response: Response): Promise<CreditsApiError> {
    let body: unknown = undefined;
    try {
      const text = await response.text();
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    } catch {
      body = undefined;
    }
    return CreditsApiError.fromResponse(response, body);
  }

  /** The service could not be reached (DNS, refused connection, dropped response). */
  static network(cause: unknown): CreditsApiError {
    const message = cause instanceof Error ? cause.message : String(cause);
    const error = new CreditsApiError(0, {
      type: "about:blank",
      title: "The credits service could not be reached",
      status: 0,
      detail: message,
      code: "network_error",
    });
    (error as { cause?: unknown }).cause = cause;
    return error;
  }
}

function numberField(problem: Problem, name: string): number | undefined {
  const value = problem[name];
  return typeof value === "number" ? value : undefined;
}

function asProblem(status: number, statusText: string, body: unknown): Problem {
  if (body && typeof body === "object" && typeof (body as Problem).code === "string") {
    const problem = body as Problem;
    return {
      ...problem,
      type: typeof problem.type === "string" ? problem.type : "about:blank",
      title: typeof problem.title === "string" ? problem.title : statusText,
      status: typeof problem.status === "number" ? problem.status : status,
      detail: typeof problem.detail === "string" ? problem.detail : statusText,
    };
  }
  // Not the service's problem+json (a proxy's error page, an empty body).
  const text = typeof body === "string" ? body.slice(0, 300) : "";
  return {
    type: "about:blank",
    title: statusText || `HTTP ${status}`,
    status,
    detail: text || statusText || `HTTP ${status}`,
    code: `http_${status}`,
  };
}
