/**
 * Pay click -> the badge showing the new balance, in Chromium, over PURCHASES purchases of
 * one account (the first-time offer, then the smaller tier): prints one JSON line with every
 * sample in milliseconds. Run by bench/plugin_ui.py, which starts the service and the
 * stand-in Polar and prints the figures.
 */
import { adjust, expectBadge, launch, newAccount, openPlugin } from "../tests/harness.mjs";

const purchases = Number(process.env.PURCHASES || 20);
const browser = await launch();
try {
  const account = await newAccount();
  await adjust(account, 100);
  const page = await openPlugin(browser, account.key);
  let credits = 100;
  await expectBadge(page, "100 Credits");
  const samples = [];
  for (let n = 0; n < purchases; n += 1) {
    const packageId = n === 0 ? "first_time" : "small";
    await page.getByTestId("buy-credits").click();
    await page.getByTestId(`package-${packageId}`).waitFor();
    const [checkout] = await Promise.all([
      page.waitForEvent("popup"),
      page.getByTestId(`package-${packageId}`).click(),
    ]);
    const pay = checkout.getByTestId("polar-pay");
    await pay.waitFor();
    credits += packageId === "first_time" ? 30_000 : 1_000;
    const expected = `${credits.toLocaleString("en-US")} Credits`;
    const started = performance.now();
    await pay.click();
    await expectBadge(page, expected, 30_000);
    samples.push(performance.now() - started);
    await page.getByTestId("purchase-success").waitFor();
    await checkout.close();
  }
  console.log(JSON.stringify({ purchases, samples_ms: samples }));
} finally {
  await browser.close();
}
