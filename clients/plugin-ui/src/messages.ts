/** Errors as sentences for people: the service's codes never reach the screen. */
import { CreditsApiError } from "@rankframe/credits-client";

const credits = (n: number) => `${n.toLocaleString("en-US")} ${n === 1 ? "credit" : "credits"}`;

export function sentence(error: unknown): string {
  if (!(error instanceof CreditsApiError)) {
    return "Something went wrong. Please try again.";
  }
  switch (error.code) {
    case "network_error":
      return "Can't reach the credits service. Check your connection; retrying…";
    case "unauthorized":
      return "This API key is not valid any more. Sign in again to see your credits.";
    case "subscription_inactive":
      return "Your RankFrame subscription is not active, so credits can't be used or bought right now. Renew it in the dashboard.";
    case "payment_provider_error":
      return "The payment provider could not open a checkout just now. Please try again in a moment.";
    case "service_not_configured":
      return "Buying credits is not set up on this service yet.";
    case "first_time_offer_unavailable":
      return "The first-time offer has already been used on this account. Choose another package.";
    case "insufficient_credits": {
      const needed = error.needed ?? 0;
      const available = error.available ?? 0;
      return `This run needs ${credits(needed)}, but only ${credits(available)} ${available === 1 ? "is" : "are"} available. Buy ${credits(Math.max(needed - available, 0))} more to start it.`;
    }
    case "rate_limited":
      return "Too many requests at once. Please wait a few seconds and try again.";
    case "validation_error":
      return "Some of what was sent is not valid. Check the entries and try again.";
    case "not_found":
      return "That could not be found any more.";
    default:
      if (error.status >= 500)
        return "The credits service had a problem. Please try again in a moment.";
      return "The request could not be completed. Please try again.";
  }
}

export function formatCredits(n: number): string {
  return credits(n);
}

export function formatPrice(cents: number): string {
  return `$${(cents / 100).toLocaleString("en-US", {
    minimumFractionDigits: cents % 100 ? 2 : 0,
    maximumFractionDigits: 2,
  })}`;
}
