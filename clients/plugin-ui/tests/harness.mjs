/**
 * What the browser tests share: Debian's Chromium driven by playwright-core (Playwright's
 * own browser download is not used), the live service pytest started
 * (tests/clients/test_plugin_ui.py), its admin API, and pytest's control endpoint that
 * stops and restarts the service or switches the stand-in Polar into failing.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

export const env = {
  api: required("CREDITS_API_URL"),
  admin: required("CREDITS_ADMIN_TOKEN"),
  ui: required("PLUGIN_UI_URL"),
  get control() {
    return required("CONTROL_URL");
  },
  chromium: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
};

function required(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run the browser tests through pytest (tests/clients)`);
  return value;
}

export async function launch() {
  return chromium.launch({
    executablePath: env.chromium,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/** One Chromium for a test file: launched before its tests, closed after them. */
export function useBrowser() {
  const holder = { browser: undefined };
  before(async () => {
    holder.browser = await launch();
  });
  after(() => holder.browser?.close());
  return () => holder.browser;
}

/** A page of the plugin UI for `key`, at the plugin's width. */
export async function openPlugin(browser, key, { width = 320, project, query = {} } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 760 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error(`[page error] ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") console.error(`[console] ${message.text()}`);
  });
  const params = new URLSearchParams({ api: env.api, ...(key ? { key } : {}), ...query });
  if (project) params.set("project", project);
  await page.goto(`${env.ui}/index.html?${params}`);
  return page;
}

async function admin(method, path, body) {
  const response = await fetch(`${env.api}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${env.admin}`,
      "Content-Type": "application/json",
      "Idempotency-Key": randomUUID(),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

export async function newAccount() {
  const created = await admin("POST", "/v1/admin/accounts", { email: `${randomUUID()}@example.com` });
  return { id: created.account.id, key: created.api_key.key };
}

export function adjust(account, amount) {
  return admin("POST", `/v1/admin/accounts/${account.id}/adjustments`, {
    amount,
    reason: "browser test",
  });
}

export async function accountApi(account, path, init = {}) {
  const response = await fetch(`${env.api}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${account.key}`, "Content-Type": "application/json", ...init.headers },
  });
  const body = await response.json();
  assert.ok(response.ok, `${path}: ${response.status} ${JSON.stringify(body)}`);
  return body;
}

export async function balanceOf(account) {
  return accountApi(account, "/v1/balance");
}

export async function ledgerOf(account) {
  return (await accountApi(account, "/v1/ledger?limit=200")).entries;
}

/** Connect a site through the API (the account's starter credits arrive with the first). */
export async function connectSite(account, projectId = randomUUID()) {
  const site = await accountApi(account, "/v1/sites", {
    method: "POST",
    body: JSON.stringify({ framer_project_id: projectId, name: "Browser test" }),
  });
  return { ...site, projectId };
}

/** Ask pytest to `stop` or `start` the service, or set the stand-in Polar's `polar-mode`. */
export async function control(action, value = "") {
  const response = await fetch(`${env.control}/${action}?value=${encodeURIComponent(value)}`, {
    method: "POST",
  });
  assert.equal(response.status, 204, `control ${action}: ${response.status}`);
}

/** The badge's exact text (the service's `display`). */
export async function badgeText(page) {
  return (await page.getByTestId("credits-badge").textContent())?.trim();
}

export async function expectBadge(page, text, timeout = 10_000) {
  await page.waitForFunction(
    (expected) => document.querySelector('[data-testid="credits-badge"]')?.textContent === expected,
    text,
    { timeout },
  );
}

export function screenshotsDir() {
  return process.env.SCREENSHOTS_DIR || mkdtempSync(join(tmpdir(), "plugin-ui-"));
}
