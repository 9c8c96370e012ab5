/** The credits badge in a real browser: the service's `display` at 0, 1 and 60,498, live;
 * the refresh icon; the service going away and coming back; no API key. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  adjust,
  badgeText,
  control,
  env,
  expectBadge,
  newAccount,
  openPlugin,
  useBrowser,
} from "./harness.mjs";

const browser = useBrowser();

test("the badge shows the service's display at 0, 1 and 60,498 credits, live", async () => {
  const account = await newAccount();
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "0 Credits");
  await adjust(account, 1);
  await expectBadge(page, "1 Credit"); // through the balance stream, no reload
  await adjust(account, 60_497);
  await expectBadge(page, "60,498 Credits");
  const badge = page.getByTestId("credits-badge");
  assert.equal(await badge.getAttribute("data-state"), "live");
  assert.equal(await badge.getAttribute("role"), "status", "read out by screen readers");
  // The pill's colours are the help page's: a dark red pill with coral text and border.
  const colours = await page.locator(".credits-pill").evaluate((el) => {
    const style = getComputedStyle(el);
    return [style.backgroundColor, style.borderTopColor];
  });
  assert.deepEqual(colours, ["rgb(91, 26, 26)", "rgb(255, 127, 110)"]);
  const buy = await page.getByTestId("buy-credits").evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(buy, "rgb(124, 58, 237)", "the Buy Credits button is purple");
  await page.reload();
  await expectBadge(page, "60,498 Credits");
  await page.context().close();
});

test("the refresh icon refetches GET /v1/balance and shows its display", async () => {
  const account = await newAccount();
  await adjust(account, 41);
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "41 Credits");
  const refresh = page.getByRole("button", { name: "Refresh credit balance" });
  assert.equal(await refresh.getAttribute("data-testid"), "credits-refresh");
  const fetched = page.waitForResponse(
    (r) => new URL(r.url()).pathname === "/v1/balance" && r.request().method() === "GET",
  );
  await refresh.click();
  const response = await fetched;
  assert.equal(response.status(), 200);
  assert.equal((await response.json()).display, "41 Credits");
  await expectBadge(page, "41 Credits");
  await page.context().close();
});

test("the service going away: the badge shows its error state, then recovers by itself", async () => {
  const account = await newAccount();
  await adjust(account, 7);
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "7 Credits");
  await control("stop");
  try {
    await page.getByTestId("credits-error").waitFor({ timeout: 15_000 });
    assert.match(await page.getByTestId("credits-error").textContent(), /can't reach the credits service/i);
    assert.equal(await page.getByTestId("credits-badge").getAttribute("data-state"), "error");
    assert.equal(await badgeText(page), "7 Credits", "the last known balance stays readable");
    await page.getByTestId("credits-refresh").click(); // a refresh while it is down says so too
    await page.getByTestId("credits-error").waitFor();
  } finally {
    await control("start");
  }
  await page.getByTestId("credits-error").waitFor({ state: "detached", timeout: 20_000 });
  await page.waitForFunction(
    () => document.querySelector('[data-testid="credits-badge"]')?.getAttribute("data-state") === "live",
  );
  await adjust(account, 3); // live again: a change arrives through the new stream
  await expectBadge(page, "10 Credits");
  await page.context().close();
});

test("without a key: the no-API-key state (sign-in is not offered by this service)", async () => {
  const page = await openPlugin(browser(), null);
  await page.getByTestId("no-api-key").waitFor();
  assert.match(await page.getByTestId("no-api-key").textContent(), /No API key/);
  assert.equal(await page.getByTestId("credits-badge").count(), 0);
  await page.context().close();
});

test("fits the plugin's 260 and 400 px widths without sideways scrolling", async () => {
  const account = await newAccount();
  await adjust(account, 60_498);
  for (const width of [260, 400]) {
    const page = await openPlugin(browser(), account.key, { width });
    await expectBadge(page, "60,498 Credits");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${width} px: ${overflow} px too wide`);
    const buttons = await page.getByRole("button").evaluateAll((els) =>
      els.map((el) => (el.getAttribute("aria-label") || el.textContent || "").trim()),
    );
    assert.ok(buttons.every((name) => name.length > 0), "every button has a label");
    await page.context().close();
  }
});

test("the planning-guide estimator: GET /v1/estimate's total and recommended package", async () => {
  const account = await newAccount();
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "0 Credits");
  await page.getByTestId("estimate-pages").fill("50");
  await page.getByTestId("estimate-images").fill("200");
  const answered = page.waitForResponse((r) => new URL(r.url()).pathname === "/v1/estimate");
  await page.getByTestId("estimate-submit").click();
  const response = await answered;
  assert.equal(new URL(response.url()).searchParams.get("images"), "200");
  const result = page.getByTestId("estimate-result");
  await result.waitFor();
  assert.equal(await page.getByTestId("estimate-total").textContent(), "About 300 credits");
  assert.match(await result.textContent(), /50 titles, 50 descriptions, 200 alt texts/);
  assert.match(await result.textContent(), /Recommended: First-time offer/);
  await page.context().close();
});
