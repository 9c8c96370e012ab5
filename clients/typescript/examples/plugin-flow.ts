/**
 * What the Framer plugin does, end to end, through the generated client:
 * read the balance badge, list packages, create a purchase intent, connect a site,
 * generate a meta title, start a bulk alt-text batch and follow it to the end.
 *
 * Usage: node build-test/examples/plugin-flow.js <baseUrl> <apiKey>
 * Prints one JSON line of what it saw; exits non-zero on any unexpected answer.
 */
import assert from "node:assert/strict";
import { createCreditsClient, followBatch, raiseProblem } from "@rankframe/credits-client";

async function main(): Promise<void> {
  const [baseUrl, apiKey] = process.argv.slice(2);
  assert.ok(baseUrl && apiKey, "usage: plugin-flow <baseUrl> <apiKey>");
  const api = createCreditsClient(baseUrl, apiKey);

  // 1. The badge.
  const balance = await api.GET("/v1/balance");
  if (!balance.data) raiseProblem(balance.response, balance.error);
  assert.equal(balance.response.headers.get("cache-control"), "no-store");
  const before = balance.data.available;
  assert.match(balance.data.display, /^[\d,]+ Credits?$/);

  // 2. Packages and a purchase intent for the first-time offer.
  const packages = await api.GET("/v1/credit-packages");
  if (!packages.data) raiseProblem(packages.response, packages.error);
  const firstTime = packages.data.packages.find((p) => p.id === "first_time");
  assert.ok(firstTime?.available, "first-time offer available to a new account");
  assert.equal(firstTime.credits, 30_000);
  assert.equal(firstTime.price_cents, 4_900);
  const intent = await api.POST("/v1/purchase-intents", {
    body: { package_id: "first_time", success_url: "https://example.com/thanks" },
    headers: { "Idempotency-Key": `plugin-flow-${Date.now()}` },
  });
  if (!intent.data) raiseProblem(intent.response, intent.error);
  assert.equal(intent.data.status, "open");
  assert.ok(intent.data.checkout_url?.startsWith("http"), "a Polar checkout to pay at");

  // 3. A site, then one meta title: one credit.
  const site = await api.POST("/v1/sites", {
    body: { framer_project_id: `plugin-flow-${Date.now()}`, name: "Plugin flow" },
  });
  if (!site.data) raiseProblem(site.response, site.error);
  const afterSite = await api.GET("/v1/balance");
  if (!afterSite.data) raiseProblem(afterSite.response, afterSite.error);
  const funded = afterSite.data.available;

  const generation = await api.POST("/v1/generations", {
    body: {
      kind: "meta_title",
      site_id: site.data.id,
      input: {
        page_title: "Handmade oak furniture | Atelier Nord",
        page_content: "Atelier Nord builds solid oak tables and chairs by hand in Oslo.",
      },
    },
    headers: { "Idempotency-Key": `plugin-flow-title-${Date.now()}` },
  });
  if (!generation.data) raiseProblem(generation.response, generation.error);
  assert.equal(generation.data.status, "succeeded");
  assert.equal(generation.data.credits_charged, 1);
  const output = generation.data.output as { text?: string };
  assert.ok(output.text && output.text.length <= 60, "a meta title of at most 60 characters");

  // 4. Bulk alt text for three images, followed over Server-Sent Events.
  const images = ["oak-table.jpg", "chair-detail.jpg", "workshop.jpg"].map((name) => ({
    image_url: `https://cdn.example.com/${name}`,
    context: "Handmade oak furniture",
  }));
  const batch = await api.POST("/v1/generation-batches", {
    body: { kind: "alt_text", site_id: site.data.id, items: images },
    headers: { "Idempotency-Key": `plugin-flow-batch-${Date.now()}` },
  });
  if (!batch.data) raiseProblem(batch.response, batch.error);
  assert.equal(batch.data.total, 3);
  const events: string[] = [];
  const done = await followBatch(api, batch.data.id, {
    onProgress: () => events.push("progress"),
    onDone: () => events.push("done"),
    signal: AbortSignal.timeout(60_000),
  });
  assert.equal(done?.status, "completed");

  const finished = await api.GET("/v1/generation-batches/{batch_id}", {
    params: { path: { batch_id: batch.data.id } },
  });
  if (!finished.data) raiseProblem(finished.response, finished.error);
  assert.equal(finished.data.status, "completed");
  assert.equal(finished.data.succeeded, 3);
  assert.equal(finished.data.credits_charged, 3);

  const after = await api.GET("/v1/balance");
  if (!after.data) raiseProblem(after.response, after.error);
  assert.equal(after.data.available, funded - 4, "one title and three alt texts: 4 credits");

  console.log(
    JSON.stringify({
      before,
      funded,
      after: after.data.available,
      display: after.data.display,
      intent: intent.data.status,
      title: output.text,
      batch: finished.data.status,
      events,
    }),
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
