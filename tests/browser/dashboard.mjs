// Drives the dashboard page in Debian's headless Chromium as a new user:
// sign up, read the code from MailDev, verify, create an app, add a rule,
// send events through the API, and watch the counts and the invalid event
// appear without reloading; then set an alert and watch it fire, edit,
// delete and mute alerts. Exits non-zero on the first failed expectation.
//   node dashboard.mjs <app url> <maildev url> <screenshot dir>
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(new URL("../../.tools/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const [base, maildev, shots] = process.argv.slice(2);
const email = `browser-${Date.now()}@example.com`;
const password = "correct horse battery staple";

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
const page = await context.newPage();
const violations = [];
page.on("console", (m) => { if (/Content Security Policy|Refused to/.test(m.text())) violations.push(m.text()); });
page.on("pageerror", (e) => violations.push(`page error: ${e.message}`));
const external = [];
page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("blob:")) external.push(r.url()); });

async function code() {
  for (let i = 0; i < 100; i++) {
    const mails = await (await fetch(`${maildev}/api/email`)).json();
    const mail = mails.find((m) => m.to.some((t) => t.address === email));
    if (mail) return mail.text.match(/\b\d{6}\b/)[0];
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("no code arrived");
}

try {
  // / redirects to the page; sign up and verify with the emailed code.
  await page.goto(`${base}/`);
  assert.equal(new URL(page.url()).pathname, "/dashboard");
  const signUp = page.locator("#sign-up-form");
  await signUp.getByLabel("Email").fill(email);
  await signUp.getByLabel(/Password/).fill(password);
  await signUp.getByRole("button", { name: "Sign up" }).click();
  await page.locator("#verify-form").waitFor();
  await page.getByLabel("Code").fill(await code());
  await page.getByRole("button", { name: "Verify" }).click();
  await page.locator("#who-email", { hasText: email }).waitFor();

  // Nothing of the session is in storage the page's scripts can read.
  const stored = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie);
  assert.equal(stored, "{}{}", "no token in localStorage, sessionStorage or a script-visible cookie");

  // Create an app: the key is shown once with a ready curl command.
  await page.locator("#apps-empty").waitFor();
  await page.getByLabel("New app name").fill("Browser shop");
  await page.getByRole("button", { name: "Create app" }).click();
  await page.locator("#key-value", { hasText: "lvd_ingest_" }).waitFor();
  const key = (await page.locator("#key-value").textContent()).trim();
  assert.match(key, /^lvd_ingest_/);
  assert.ok((await page.locator("#curl-example").textContent()).includes(key));
  await page.screenshot({ path: `${shots}/01-app-created.png`, fullPage: true });

  // A rule, with the server's inline error for a schema that does not compile first.
  await page.getByRole("button", { name: "Browser shop" }).click();
  await page.getByRole("button", { name: "Rules" }).click();
  const rule = page.locator("#rule-form");
  await rule.getByLabel("Event", { exact: true }).fill("checkout");
  await rule.getByLabel(/JSON Schema/).fill('{"type": "object", "properties": {"amount": {"type": "numbr"}}}');
  await rule.getByRole("button", { name: "Save rule" }).click();
  await rule.locator(".errors li", { hasText: "/schema/properties/amount" }).waitFor();
  await rule.getByLabel(/JSON Schema/).fill('{"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}, "amount": {"type": "number"}}}');
  await rule.getByRole("button", { name: "Save rule" }).click();
  await page.locator("#versions li", { hasText: "v1" }).waitFor();
  await page.locator("#test-form").getByLabel("Properties").fill('{"plan": "gold"}');
  await page.locator("#test-form").getByRole("button", { name: "Test" }).click();
  await page.locator("#test-result", { hasText: "invalid" }).waitFor();

  // Live view: empty first, then the events sent through the API appear.
  await page.getByRole("button", { name: "Live" }).click();
  await page.locator("#live-state", { hasText: "Live" }).waitFor();
  await page.locator("#live-empty").waitFor();
  const send = async (body) => {
    const r = await fetch(`${base}/api/logs`, { method: "POST", headers: { "Content-Type": "application/json", "X-Api-Key": key }, body: JSON.stringify(body) });
    assert.equal(r.status, 202);
  };
  await send({ batch: [
    { event: "checkout", properties: { plan: "pro", amount: 49 } },
    { event: "checkout", properties: { plan: "pro", amount: 9 } },
    { event: "signup", properties: {} },
  ] });
  await send({ event: "checkout", properties: { plan: "gold", amount: "49" } });
  await page.locator(".total.valid .n", { hasText: /^2$/ }).waitFor({ timeout: 5000 });
  await page.locator(".total.invalid .n", { hasText: /^1$/ }).waitFor({ timeout: 5000 });
  await page.locator(".total.unplanned .n", { hasText: /^1$/ }).waitFor({ timeout: 5000 });
  await page.locator("#by-event tbody tr", { hasText: "checkout" }).waitFor();
  await page.locator("#top-errors tbody tr", { hasText: "/plan" }).waitFor();
  const item = page.locator("#tail .tail-item", { hasText: "checkout" });
  await item.waitFor({ timeout: 5000 });
  await page.screenshot({ path: `${shots}/02-live-view.png`, fullPage: true });

  // The invalid event opens with its errors and the failing fields marked.
  await item.click();
  await page.locator("#detail-errors li", { hasText: "enum" }).waitFor();
  const marked = await page.locator("#detail-json mark").allTextContents();
  assert.ok(marked.some((m) => m.includes('"plan"')) && marked.some((m) => m.includes('"amount"')), `marked: ${marked}`);
  await page.screenshot({ path: `${shots}/03-invalid-event.png`, fullPage: true });

  // On a phone-sized screen the page still fits.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than a phone`);
  // The chart fits its container, so the newest bucket (the right end) shows.
  await page.waitForFunction(() => {
    const box = document.getElementById("chart").getBoundingClientRect();
    const over = document.querySelector("#chart .u-over").getBoundingClientRect();
    return over.right <= box.right + 1 && box.right <= window.innerWidth;
  }, null, { timeout: 5000 });
  const newest = await page.evaluate(() => {
    const u = state.chart.plot;
    const x = u.over.getBoundingClientRect().left + u.valToPos(u.data[0][u.data[0].length - 1], "x");
    const box = document.getElementById("chart");
    return { x, right: Math.min(box.getBoundingClientRect().right, window.innerWidth), scroll: box.scrollWidth - box.clientWidth };
  });
  assert.ok(newest.x <= newest.right && newest.scroll <= 1, `the newest bucket is cut off: ${JSON.stringify(newest)}`);
  await page.screenshot({ path: `${shots}/04-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1200, height: 900 });

  // Reports and exports: ask for each, watch it finish without reloading,
  // download it.
  await page.getByRole("button", { name: "Reports & exports" }).click();
  const jobForm = page.locator("#job-form");
  const finish = async (what) => {
    await jobForm.getByLabel("What").selectOption(what);
    const rows = page.locator("#job-list tbody tr");
    const before = await rows.count();
    await jobForm.getByRole("button", { name: "Create" }).click();
    // Wait for the new job's row (newest first): until the list reloads,
    // the first row is the previous job, already done.
    await rows.nth(before).waitFor({ timeout: 10000 });
    const row = rows.first();
    await row.locator(".job-status.done").waitFor({ timeout: 30000 });
    const [download] = await Promise.all([page.waitForEvent("download"), row.getByRole("button", { name: "Download" }).click()]);
    const path = `${shots}/${download.suggestedFilename()}`;
    await download.saveAs(path);
    return { name: download.suggestedFilename(), path };
  };
  const exported = await finish("export:csv");
  assert.match(exported.name, /^lvd-export-.*\.csv$/);
  const { readFile } = await import("node:fs/promises");
  const csv = await readFile(exported.path, "utf8");
  assert.ok(csv.startsWith("id,received_at,timestamp,event,status"), csv.slice(0, 80));
  assert.equal(csv.trimEnd().split("\r\n").length, 1 + 4, "the header and the four events");
  const report = await finish("report:html");
  assert.match(report.name, /^lvd-report-.*\.html$/);
  await page.screenshot({ path: `${shots}/05-jobs.png`, fullPage: true });
  // The report opens on its own (no server, nothing external) in Chromium.
  const reportPage = await context.newPage();
  await reportPage.goto(`file://${report.path}`);
  await reportPage.locator("h1", { hasText: "Browser shop" }).waitFor();
  assert.equal(await reportPage.locator("svg rect").count() > 0, true, "the chart has bars");
  await reportPage.screenshot({ path: `${shots}/06-report.png`, fullPage: true });
  await reportPage.close();

  // Alerts: a webhook at a private address is refused beside its field;
  // then a violation_rate alert that the invalid checkout above trips (the
  // worker checks a new alert at once, then every 15 s) shows its firing in
  // the history without a reload.
  await page.getByRole("button", { name: "Alerts", exact: true }).click();
  await page.locator("#alerts-empty").waitFor();
  const alertForm = page.locator("#alert-form");
  await alertForm.getByLabel("Kind").selectOption("violation_rate");
  await alertForm.getByLabel(/^Threshold/).fill("0");
  await alertForm.getByLabel("Minimum events").fill("1");
  await alertForm.getByLabel(/^Webhook URL/).fill("https://10.0.0.1/hook");
  await alertForm.getByRole("button", { name: "Create alert" }).click();
  await alertForm.locator('[data-error="webhook_url"]', { hasText: "private" }).waitFor();
  assert.equal(await alertForm.getByLabel(/^Webhook URL/).getAttribute("aria-invalid"), "true");
  await alertForm.getByLabel(/^Webhook URL/).fill("");
  await alertForm.getByRole("button", { name: "Create alert" }).click();
  const rateAlert = page.locator("#alert-list li.alert[data-kind=violation_rate]");
  await rateAlert.waitFor();
  assert.equal(await alertForm.locator('[data-error="webhook_url"]').textContent(), "", "the error is gone");
  assert.equal(await page.locator("#secret-box").isVisible(), false, "no webhook, no secret");
  await rateAlert.getByRole("button", { name: "History" }).click();
  // One invalid of three judged events (the unplanned one is not judged).
  const fired = rateAlert.locator(".history li", { hasText: "firing" });
  await fired.waitFor({ timeout: 30000 });
  assert.match(await fired.first().textContent(), /figure 33\.3% against threshold 0%/);
  await rateAlert.locator(".alert-title .badge-firing", { hasText: "firing" }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: `${shots}/07-alerts.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const alertsOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(alertsOverflow <= 1, `the alerts tab is ${alertsOverflow}px wider than a phone`);
  await page.screenshot({ path: `${shots}/08-alerts-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1200, height: 900 });

  // With a webhook, the secret is shown once. (Checkout arrived minutes ago,
  // so this alert stays ok and nothing is posted.)
  await alertForm.getByLabel("Kind").selectOption("event_missing");
  assert.equal(await alertForm.getByLabel(/^Threshold/).isVisible(), false, "event_missing takes no threshold");
  await alertForm.getByLabel("Event", { exact: true }).fill("checkout");
  await alertForm.getByLabel("Window").selectOption("1h");
  await alertForm.getByLabel(/^Webhook URL/).fill("https://hooks.example.com/lvd");
  await alertForm.getByRole("button", { name: "Create alert" }).click();
  await page.locator("#secret-value", { hasText: /^whsec_[0-9a-f]{64}$/ }).waitFor();
  assert.match(await page.locator("#secret-box").textContent(), /will not be shown again/);
  const missing = page.locator("#alert-list li.alert[data-kind=event_missing]");
  await missing.locator("dd", { hasText: "no event for 60 min" }).waitFor();

  // Edit it inline, then delete it with a second click.
  await missing.getByRole("button", { name: "Edit" }).click();
  await missing.getByLabel("Window").selectOption("15m");
  await missing.getByRole("button", { name: "Save changes" }).click();
  await missing.locator("dd", { hasText: "no event for 15 min" }).waitFor();
  await missing.getByRole("button", { name: "Delete" }).click();
  await missing.getByRole("button", { name: "Click again to delete" }).click();
  await missing.waitFor({ state: "detached" });

  // Muted, the alert says so and goes back to ok.
  await rateAlert.getByRole("button", { name: "Mute", exact: true }).click();
  await rateAlert.locator(".alert-title .badge-muted").waitFor();
  await rateAlert.getByRole("button", { name: "Unmute", exact: true }).waitFor();
  await rateAlert.locator(".alert-title .badge-ok", { hasText: "ok" }).waitFor();
  assert.match(await rateAlert.locator(".facts").textContent(), /no, muted/);

  // Sign out; a reload stays signed out (the refresh cookie was revoked).
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.reload();
  await page.locator("#sign-in-form").waitFor();

  assert.deepEqual(violations, [], "no CSP violations or script errors");
  assert.deepEqual(external, [], "nothing loaded from another origin");
  console.log(`ok: screenshots in ${shots}`);
} catch (err) {
  await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  console.error(err);
  process.exitCode = 1;
} finally {
  await browser.close();
}
