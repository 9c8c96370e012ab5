/** Buying credits as a person does: Buy Credits, the top-up modal, the Polar checkout in a
 * window of its own, Pay, and the badge adding the credits from the balance stream. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  adjust,
  balanceOf,
  connectSite,
  control,
  expectBadge,
  ledgerOf,
  newAccount,
  openPlugin,
  useBrowser,
} from "./harness.mjs";

const browser = useBrowser();

test("the first-time offer through the popup: +30,000 on the badge, then the offer is unavailable", async () => {
  const account = await newAccount();
  await adjust(account, 498);
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "498 Credits");

  await page.getByRole("button", { name: "Buy Credits" }).click();
  const modal = page.getByTestId("topup-modal");
  await modal.waitFor();
  assert.equal(await modal.getAttribute("role"), "dialog");
  const offer = page.getByTestId("package-first_time");
  await offer.waitFor();
  assert.match(await offer.getAttribute("class"), /package--best/, "the first-time offer is highlighted");
  assert.match(await offer.textContent(), /30,000 credits.*\$49.*\$0\.0016 per credit/);
  assert.match(await page.getByTestId("package-refill").textContent(), /30,000 credits.*\$100.*\$0\.0033 per credit/);
  assert.match(await page.getByTestId("package-small").textContent(), /1,000 credits.*\$10.*\$0\.0100 per credit/);

  const [checkout, intentRequest] = await Promise.all([
    page.waitForEvent("popup"),
    page.waitForRequest((r) => new URL(r.url()).pathname === "/v1/purchase-intents" && r.method() === "POST"),
    offer.click(),
  ]);
  assert.match(intentRequest.headers()["idempotency-key"] ?? "", /^[0-9a-f-]{36}$/);
  assert.deepEqual(intentRequest.postDataJSON(), { package_id: "first_time" });
  await page.getByTestId("checkout-waiting").waitFor();
  await checkout.getByTestId("polar-pay").waitFor();
  assert.equal(await checkout.getByTestId("polar-amount").textContent(), "$49.00");
  assert.match(await page.getByTestId("checkout-waiting").textContent(), /Waiting for your payment of \$49/);
  await checkout.getByTestId("polar-pay").click();
  await checkout.getByTestId("polar-paid").waitFor();

  await expectBadge(page, "30,498 Credits");
  await page.getByTestId("purchase-success").waitFor();
  assert.match(await page.getByTestId("purchase-success").textContent(), /30,000 credits added/);
  assert.equal(await page.getByTestId("topup-modal").count(), 0, "the modal closed");

  // Exactly one purchase on the ledger, and the balance the badge shows.
  const purchases = (await ledgerOf(account)).filter((e) => e.type === "purchase");
  assert.deepEqual(purchases.map((e) => e.amount), [30_000]);
  assert.equal((await balanceOf(account)).available, 30_498);

  await page.getByTestId("buy-credits").click();
  const used = page.getByTestId("package-first_time");
  await used.waitFor();
  assert.equal(await used.isDisabled(), true);
  assert.match(await used.textContent(), /Already used: this offer is for your first purchase only/);
  assert.equal(await page.getByTestId("package-refill").isDisabled(), false);
  await checkout.close();
  await page.context().close();
});

test("a checkout window closed before paying is said in a sentence; nothing is granted", async () => {
  const account = await newAccount();
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "0 Credits");
  await page.getByTestId("buy-credits").click();
  await page.getByTestId("package-small").waitFor();
  const [checkout] = await Promise.all([page.waitForEvent("popup"), page.getByTestId("package-small").click()]);
  await page.getByTestId("checkout-waiting").waitFor();
  await checkout.getByTestId("polar-pay").waitFor();
  await checkout.close();
  const closed = page.getByText("The checkout window was closed before the payment went through");
  await closed.waitFor();
  assert.equal((await balanceOf(account)).available, 0);
  await page.context().close();
});

test("Polar failing: payment_provider_error is shown as a sentence, no code", async () => {
  const account = await newAccount();
  const page = await openPlugin(browser(), account.key);
  await expectBadge(page, "0 Credits");
  await control("polar-mode", "error");
  try {
    await page.getByTestId("buy-credits").click();
    await page.getByTestId("package-refill").waitFor();
    await page.getByTestId("package-refill").click();
    const error = page.getByTestId("topup-error");
    await error.waitFor();
    const text = await error.textContent();
    assert.match(text, /payment provider could not open a checkout/);
    assert.doesNotMatch(text, /payment_provider_error/);
    assert.equal(await page.getByTestId("checkout-waiting").count(), 0);
  } finally {
    await control("polar-mode", "ok");
  }
  await page.context().close();
});

test("a lapsed subscription: packages unavailable with the reason, the bulk run refused in a sentence", async () => {
  const account = await newAccount();
  const site = await connectSite(account); // 500 starter credits
  await control("lapse", account.id);
  const page = await openPlugin(browser(), account.key, { project: site.projectId });
  await expectBadge(page, "500 Credits"); // the balance is kept, frozen
  await page.getByTestId("buy-credits").click();
  for (const id of ["first_time", "refill", "small"]) {
    const offer = page.getByTestId(`package-${id}`);
    await offer.waitFor();
    assert.equal(await offer.isDisabled(), true);
    assert.match(await offer.textContent(), /Needs an active RankFrame subscription/);
  }
  await page.getByRole("button", { name: "Close" }).click();
  await page.getByTestId("bulk-input").fill("https://cdn.example.com/one.jpg");
  await page.getByTestId("bulk-start").click();
  const error = page.getByTestId("bulk-error");
  await error.waitFor();
  assert.match(await error.textContent(), /subscription is not active/);
  assert.doesNotMatch(await error.textContent(), /subscription_inactive/);
  assert.equal((await balanceOf(account)).available, 500);
  await page.context().close();
});
