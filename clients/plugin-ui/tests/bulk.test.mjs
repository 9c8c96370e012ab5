/** Bulk alt text in a real browser: the cost against the balance before starting, the 402
 * explained, a run with its progress bar and results, and a cancel. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  adjust,
  balanceOf,
  connectSite,
  expectBadge,
  ledgerOf,
  newAccount,
  openPlugin,
  useBrowser,
} from "./harness.mjs";

const browser = useBrowser();

const urls = (n, latency) =>
  Array.from({ length: n }, (_, i) => `https://cdn.example.com/fake-latency-${latency}/photo-${i}.jpg`).join("\n");

test("the cost against what is available, and a 402 explained with what is missing", async () => {
  const account = await newAccount();
  const site = await connectSite(account); // 500 starter credits
  await adjust(account, -498);
  const page = await openPlugin(browser(), account.key, { project: site.projectId });
  await expectBadge(page, "2 Credits");
  await page.getByTestId("bulk-input").fill(urls(3, 0));
  assert.equal(await page.getByTestId("bulk-cost").textContent(), "3 credits for 3 images · 2 credits available");
  await page.getByTestId("bulk-start").click();
  const error = page.getByTestId("bulk-error");
  await error.waitFor();
  assert.match(
    await error.textContent(),
    /This run needs 3 credits, but only 2 credits are available\. Buy 1 credit more to start it\./,
  );
  await error.getByRole("button", { name: "Buy credits" }).click();
  await page.getByTestId("topup-modal").waitFor();
  assert.equal((await balanceOf(account)).available, 2, "nothing reserved");
  await page.context().close();
});

test("a run: progress bar to the end, the results, one credit per image", async () => {
  const account = await newAccount();
  const site = await connectSite(account);
  const page = await openPlugin(browser(), account.key, { project: site.projectId });
  await expectBadge(page, "500 Credits");
  await page.getByTestId("bulk-input").fill(urls(5, 0.3));
  await page.getByTestId("bulk-start").click();
  const bar = page.getByTestId("bulk-progress");
  await bar.waitFor();
  assert.equal(await bar.getAttribute("aria-valuemax"), "5");
  const seen = new Set();
  const deadline = Date.now() + 30_000;
  while ((await page.getByTestId("bulk-results").count()) === 0 && Date.now() < deadline) {
    seen.add(await bar.getAttribute("aria-valuenow"));
    await page.waitForTimeout(50);
  }
  const results = page.getByTestId("bulk-results").locator("li");
  assert.equal(await results.count(), 5);
  for (const text of await results.allTextContents()) assert.match(text, /A red barn in a snowy field at dawn/);
  assert.equal(await bar.getAttribute("aria-valuenow"), "5");
  assert.ok([...seen].some((n) => n !== "0" && n !== "5"), `progress in between: ${[...seen]}`);
  await expectBadge(page, "495 Credits");
  const consumed = (await ledgerOf(account)).filter((e) => e.type === "consumption");
  assert.equal(consumed.reduce((sum, e) => sum - e.amount, 0), 5);
  await page.context().close();
});

test("cancel: items not yet generated are released, only finished ones are charged", async () => {
  const account = await newAccount();
  const site = await connectSite(account);
  const page = await openPlugin(browser(), account.key, { project: site.projectId });
  await expectBadge(page, "500 Credits");
  // 40 images of a second each: far longer than the moment it takes to press Cancel.
  await page.getByTestId("bulk-input").fill(urls(40, 1));
  await page.getByTestId("bulk-start").click();
  await page.waitForFunction(
    () => Number(document.querySelector('[data-testid="bulk-progress"]')?.getAttribute("aria-valuenow")) >= 1,
    null,
    { timeout: 20_000 },
  );
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.getByTestId("bulk-results").waitFor({ timeout: 30_000 });
  const statuses = await page
    .getByTestId("bulk-results")
    .locator("li")
    .evaluateAll((items) => items.map((li) => li.getAttribute("data-status")));
  assert.equal(statuses.length, 40);
  const succeeded = statuses.filter((s) => s === "succeeded").length;
  const canceled = statuses.filter((s) => s === "canceled").length;
  assert.ok(canceled >= 1, `some were canceled: ${statuses}`);
  assert.equal(await page.getByTestId("bulk-progress").getAttribute("data-status"), "canceled");
  const balance = await balanceOf(account);
  assert.equal(balance.reserved, 0, "no credit held");
  assert.equal(balance.available, 500 - succeeded, "only the generated images were charged");
  await expectBadge(page, balance.display);
  await page.context().close();
});
