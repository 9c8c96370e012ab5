/** Sign-in from the plugin (Framer's polling pattern) against the service's plugin sessions:
 * a second instance of the service with PLUGIN_AUTHORIZE_URL set (SIGNIN_API_URL). */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { adjust, env, expectBadge, newAccount, openPlugin, useBrowser } from "./harness.mjs";

const signInApi = process.env.SIGNIN_API_URL;

const browser = useBrowser();
before(() => assert.ok(signInApi, "SIGNIN_API_URL is not set: run through pytest (tests/clients)"));

test("no key: sign in through the dashboard's authorize page, then the badge", async () => {
  const account = await newAccount();
  await adjust(account, 1);
  const page = await openPlugin(browser(), null, { query: { api: signInApi } });
  const start = page.getByTestId("sign-in-start");
  await start.waitFor();
  const [authorize] = await Promise.all([page.waitForEvent("popup"), start.click()]);
  await page.getByTestId("sign-in-waiting").waitFor();
  const session = new URL(authorize.url()).searchParams.get("session");
  assert.ok(session, `the authorize page names the session: ${authorize.url()}`);
  assert.doesNotMatch(authorize.url(), /rfr_/, "the read key never leaves the plugin");
  // The dashboard, after its own sign-in, approves the session for the account.
  const approved = await fetch(`${signInApi}/v1/admin/plugin-sessions/${session}/approve`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ account_id: account.id }),
  });
  assert.equal(approved.status, 204);
  await expectBadge(page, "1 Credit", 15_000);
  const stored = await page.evaluate(() => localStorage.getItem("rankframe.credits.apiKey"));
  assert.match(stored ?? "", /\S/, "the key is kept in localStorage");
  await page.reload();
  await expectBadge(page, "1 Credit");
  await authorize.close();
  await page.context().close();
});
