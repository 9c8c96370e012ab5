/**
 * The pictures in the README: the badge, the top-up modal and the bulk panel, at the
 * plugin's 320 px, from the live service. Writes PNGs to SCREENSHOTS_DIR.
 */
import { join } from "node:path";
import {
  adjust,
  connectSite,
  expectBadge,
  launch,
  newAccount,
  openPlugin,
  screenshotsDir,
} from "../tests/harness.mjs";

const out = screenshotsDir();
const browser = await launch();
try {
  const account = await newAccount();
  const site = await connectSite(account); // 500 starter credits
  await adjust(account, 59_998);
  const page = await openPlugin(browser, account.key, { width: 320, project: site.projectId });
  await page.emulateMedia({ colorScheme: "light" });
  await expectBadge(page, "60,498 Credits");
  await page.locator(".header").screenshot({ path: join(out, "badge.png") });

  await page.getByTestId("buy-credits").click();
  await page.getByTestId("package-first_time").waitFor();
  await page.screenshot({ path: join(out, "topup-modal.png") });
  await page.getByRole("button", { name: "Close" }).click();

  const urls = ["oak-table", "chair-detail", "workshop", "bench", "shelf", "lamp"]
    .map((name, i) => `https://cdn.example.com/fake-latency-${i < 3 ? 0.2 : 3}/${name}.jpg`)
    .join("\n");
  await page.getByTestId("bulk-input").fill(urls);
  await page.getByTestId("bulk-start").click();
  await page.waitForFunction(
    () => Number(document.querySelector('[data-testid="bulk-progress"]')?.getAttribute("aria-valuenow")) >= 3,
    null,
    { timeout: 30_000 },
  );
  await page.locator(".panel").first().screenshot({ path: join(out, "bulk-progress.png") });
  await page.getByTestId("bulk-results").waitFor({ timeout: 60_000 });
  await page.locator(".panel").first().screenshot({ path: join(out, "bulk-panel.png") });
  console.log(JSON.stringify({ screenshots: out }));
} finally {
  await browser.close();
}
