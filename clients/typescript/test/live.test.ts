/** The client against the live service (started by tests/contract/test_typescript_client.py
 * on PostgreSQL with the stand-in Claude): typed errors and outputs, and both streams,
 * including a stream the network drops while the balance changes. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  CreditsApiError,
  cancelBatch,
  connectSite,
  createBatch,
  createCreditsClient,
  createGeneration,
  estimateCredits,
  followBatch,
  getBalance,
  getBatch,
  getGeneration,
  listCreditPackages,
  streamBalance,
  type Balance,
  type BatchProgress,
  type StreamState,
} from "@rankframe/credits-client";
import {
  API_URL,
  DroppingProxy,
  adjust,
  eventually,
  newAccount,
  requireLiveService,
  revokeKey,
} from "./helpers.js";

before(requireLiveService);

describe("typed calls", () => {
  test("402 insufficient_credits carries needed and available", async () => {
    const account = await newAccount();
    const client = createCreditsClient(API_URL, account.key);
    const site = await connectSite(client, { framer_project_id: randomUUID(), name: "Typed" });
    await adjust(account, -498); // 500 starter credits, 2 left
    const error = await createBatch(client, {
      kind: "meta_title",
      site_id: site.id,
      items: [1, 2, 3].map((n) => ({ page_content: `Page ${n} about oak tables.` })),
    }).catch((e: unknown) => e);
    assert.ok(error instanceof CreditsApiError);
    assert.equal(error.status, 402);
    assert.equal(error.code, "insufficient_credits");
    assert.ok(error.isInsufficientCredits());
    assert.equal(error.needed, 3);
    assert.equal(error.available, 2);
    assert.equal(error.problem.needed, 3);
    assert.equal((await getBalance(client)).available, 2, "a 402 reserves nothing");
  });

  test("422 validation_error lists the errors; an unknown key is 401", async () => {
    const account = await newAccount();
    const client = createCreditsClient(API_URL, account.key);
    const invalid = await estimateCredits(client, { pages: -1 }).catch((e: unknown) => e);
    assert.ok(invalid instanceof CreditsApiError);
    assert.equal(invalid.code, "validation_error");
    assert.ok((invalid.errors?.length ?? 0) >= 1);
    const anonymous = createCreditsClient(API_URL, "rfk_unknown_key");
    const unauthorized = await getBalance(anonymous).catch((e: unknown) => e);
    assert.ok(unauthorized instanceof CreditsApiError);
    assert.equal(unauthorized.status, 401);
    assert.equal(unauthorized.code, "unauthorized");
  });

  test("outputs are typed by kind: text for a meta title, JSON-LD for a schema", async () => {
    const account = await newAccount();
    const client = createCreditsClient(API_URL, account.key);
    const site = await connectSite(client, { framer_project_id: randomUUID(), name: "Outputs" });
    const title = await createGeneration(client, {
      kind: "meta_title",
      site_id: site.id,
      input: { page_content: "Atelier Nord builds solid oak tables by hand in Oslo." },
    });
    const text: string = title.output.text; // typed: no cast needed
    assert.ok(text.length > 0 && text.length <= 60);
    const schema = await createGeneration(client, {
      kind: "schema",
      site_id: site.id,
      input: { schema_type: "Organization", page_content: "Atelier Nord, oak furniture, Oslo." },
    });
    assert.equal(schema.output.schema["@type"], "Organization");
    const read = await getGeneration(client, schema.id);
    if (read.kind === "schema") assert.equal(read.output?.schema["@context"], "https://schema.org");
    else assert.fail("the generation read back as another kind");
    assert.equal(title.balance.available, 499);
    const packages = await listCreditPackages(client);
    assert.deepEqual(
      packages.map((p) => [p.id, p.credits, p.price_cents]),
      [
        ["first_time", 30_000, 4900],
        ["refill", 30_000, 10_000],
        ["small", 1000, 1000],
      ],
    );
  });
});

describe("streamBalance", () => {
  let proxy: DroppingProxy;
  before(async () => {
    proxy = await new DroppingProxy(new URL(API_URL)).start();
  });
  after(() => proxy.stop());

  test("the balance on connect, every change, and the change made while the stream was cut", async () => {
    const account = await newAccount();
    const client = createCreditsClient(proxy.url, account.key);
    const seen: Balance[] = [];
    const states: StreamState[] = [];
    const controller = new AbortController();
    const running = streamBalance(client, (b) => seen.push(b), {
      signal: controller.signal,
      onState: (state) => states.push(state),
      retryMs: 100,
    });
    await eventually(() => seen.length === 1, "the balance on connect");
    assert.equal(seen[0]?.display, "0 Credits");
    await adjust(account, 1);
    await eventually(() => seen.at(-1)?.display === "1 Credit", "1 Credit");
    proxy.dropAll();
    await adjust(account, 60_497); // while no stream is connected
    await eventually(() => seen.at(-1)?.display === "60,498 Credits", "the change made meanwhile");
    controller.abort();
    await running;
    assert.deepEqual(states.slice(0, 3), ["connecting", "open", "reconnecting"]);
    assert.equal(states.at(-1), "open");
    const resumes = proxy.lastEventIds("/v1/balance/events");
    assert.ok(resumes.length >= 2, "it reconnected");
    // Every balance event carries an id: the reconnect resumes after the last one it got.
    assert.equal(resumes[0], null, "the first connection resumes nothing");
    assert.match(resumes[1] ?? "", /\S/, `the reconnect resumes after the last id: ${resumes}`);
  });

  test("a revoked key ends the stream with 401 after the server closes it", async () => {
    const account = await newAccount();
    const client = createCreditsClient(proxy.url, account.key);
    let opened = 0;
    const running = streamBalance(client, () => (opened += 1), { retryMs: 50 });
    await eventually(() => opened === 1, "the first balance");
    await revokeKey(account);
    proxy.dropAll(); // a stream the server has not closed yet is closed here
    await assert.rejects(running, (error: unknown) => {
      assert.ok(error instanceof CreditsApiError);
      assert.equal(error.code, "unauthorized");
      return true;
    });
  });
});

describe("followBatch", () => {
  test("progress per item and done, with the counters of the finished batch", async () => {
    const account = await newAccount();
    const client = createCreditsClient(API_URL, account.key);
    const site = await connectSite(client, { framer_project_id: randomUUID(), name: "Batch" });
    const batch = await createBatch(client, {
      kind: "alt_text",
      site_id: site.id,
      items: ["a", "b", "c"].map((n) => ({ image_url: `https://cdn.example.com/${n}.jpg` })),
    });
    const progress: BatchProgress[] = [];
    const done = await followBatch(client, batch.id, {
      onProgress: (p) => progress.push(p),
      signal: AbortSignal.timeout(30_000),
    });
    assert.equal(done?.status, "completed");
    assert.equal(done?.succeeded, 3);
    assert.equal(done?.credits_charged, 3);
    const items = progress.flatMap((p) => (p.item ? [p.item.index] : []));
    assert.ok(new Set(items).size === items.length, "no item twice");
    const detail = await getBatch(client, batch.id);
    if (detail.kind !== "alt_text") assert.fail("kind");
    assert.ok(detail.items.every((item) => typeof item.output?.text === "string"));
    assert.equal((await getBalance(client)).available, 497);
  });

  test("a stream cut mid-batch reconnects and still ends with done; a cancel ends it too", async () => {
    const proxy = await new DroppingProxy(new URL(API_URL)).start();
    try {
      const account = await newAccount();
      const client = createCreditsClient(proxy.url, account.key);
      const direct = createCreditsClient(API_URL, account.key); // calls the proxy does not cut
      const site = await connectSite(direct, { framer_project_id: randomUUID(), name: "Cut" });
      const slow = Array.from({ length: 30 }, (_, n) => ({
        image_url: `https://cdn.example.com/fake-latency-0.6/${n}.jpg`,
      }));
      const batch = await createBatch(direct, { kind: "alt_text", site_id: site.id, items: slow });
      const finishedItems = new Set<number>();
      let itemEvents = 0;
      let cut = false;
      let canceled = false;
      const done = await followBatch(client, batch.id, {
        retryMs: 50,
        signal: AbortSignal.timeout(60_000),
        onProgress: ({ item }) => {
          if (item) {
            finishedItems.add(item.index);
            itemEvents += 1;
          }
          if (item && !cut) {
            cut = true;
            setTimeout(() => proxy.dropAll(), 0);
          } else if (item && cut && !canceled) {
            canceled = true;
            void cancelBatch(direct, batch.id);
          }
        },
      });
      assert.ok(cut && canceled);
      const resumes = proxy.lastEventIds(`/v1/generation-batches/${batch.id}/events`);
      assert.ok(resumes.length >= 2, "it reconnected");
      assert.equal(resumes[0], null, "the first connection resumes nothing");
      assert.match(resumes[1] ?? "", /\S/, `the reconnect resumes after the last id: ${resumes}`);
      assert.equal(
        finishedItems.size,
        itemEvents,
        `no item reported twice across the reconnect: ${itemEvents} events, ${[...finishedItems]}`,
      );
      assert.equal(done?.status, "canceled");
      const final = await getBatch(direct, batch.id);
      assert.equal(final.succeeded + final.failed + final.canceled, 30);
      assert.ok(final.canceled >= 1, `items not yet generated were canceled: ${JSON.stringify(final)}`);
      const balance = await getBalance(direct);
      assert.equal(balance.available, 500 - final.succeeded, "only succeeded items are charged");
      assert.equal(balance.reserved, 0);
    } finally {
      await proxy.stop();
    }
  });
});
