// The fleet page in Debian's Chromium (headless, driven by playwright-core), against real
// servers that tests/web_ui.rs starts with simulated agents. Run by that test, which passes:
//   GITAMP_UI_BASE           the open server's API listener (http://127.0.0.1:PORT)
//   GITAMP_UI_GUARDED_BASE   a server with --api-token-file, and GITAMP_UI_API_TOKEN its token
//   GITAMP_UI_WORK           the open server's Git work tree (this script commits and pushes)
//   GITAMP_UI_WEBHOOK_TOKEN  its generic webhook's token
//   GITAMP_UI_FAILED_AGENT   the id of the agent that fails every config
//   GITAMP_UI_SCREENSHOTS    where screenshots go
//   GITAMP_CHROMIUM          the browser (default /usr/bin/chromium)
// Tests run in order (one browser); each waits for what it observes, never for a fixed time.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  assert.ok(v, `${name} is not set (tests/web_ui.rs sets it)`);
  return v;
};
const BASE = env("GITAMP_UI_BASE");
const GUARDED = env("GITAMP_UI_GUARDED_BASE");
const API_TOKEN = env("GITAMP_UI_API_TOKEN");
const WORK = env("GITAMP_UI_WORK");
const WEBHOOK_TOKEN = env("GITAMP_UI_WEBHOOK_TOKEN");
const FAILED_AGENT = env("GITAMP_UI_FAILED_AGENT");
const SHOTS = env("GITAMP_UI_SCREENSHOTS");
const WAIT = 45_000;
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let browser;
let context;
let page;
/** Every request a page made: [method, url, has Authorization]. */
const requests = [];
const pageErrors = [];

async function newContext(options = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  ctx.on("request", (r) => requests.push([r.method(), r.url(), Boolean(r.headers().authorization)]));
  ctx.on("weberror", (e) => pageErrors.push(e.error().message));
  return ctx;
}

before(async () => {
  // launch() gives the browser a fresh temporary profile (user data dir) and removes it after.
  browser = await chromium.launch({
    executablePath: process.env.GITAMP_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // A closed network: nothing in the background may try to reach out.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context = await newContext();
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
});

function git(...args) {
  return execFileSync("git", ["-C", WORK, ...args], { encoding: "utf8" }).trim();
}

/** Commit the work tree, push it, ring the webhook; the new commit's id. */
async function commitAndAnnounce(message) {
  git("add", "-A");
  git("-c", "user.name=Web Test", "-c", "user.email=web@test", "commit", "-q", "-m", message);
  const sha = git("rev-parse", "HEAD");
  git("push", "-q", "origin", "HEAD:main");
  const resp = await fetch(`${BASE}/webhooks/generic`, {
    method: "POST", headers: { Authorization: `Bearer ${WEBHOOK_TOKEN}` }, body: "{}",
  });
  assert.equal(Math.floor(resp.status / 100), 2, `webhook answered ${resp.status}`);
  return sha;
}

async function apiJson(path) {
  const resp = await fetch(`${BASE}${path}`);
  assert.ok(resp.ok, `${path}: ${resp.status}`);
  return resp.json();
}

/** axe-core on the page as it is; fails listing every violation. */
async function axe(p, what) {
  // evaluate() runs outside the page's CSP, which forbids inline scripts.
  await p.evaluate(AXE);
  const result = await p.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const found = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("\n    ")}`);
  assert.deepEqual(found, [], `${what}: accessibility violations:\n${found.join("\n")}`);
}

test("the overview shows the served revision and the fleet's counts", async () => {
  const status = await apiJson("/api/v1/status");
  await page.goto(`${BASE}/`);
  const served = page.locator("#served-revision");
  await served.waitFor();
  assert.equal(await served.getAttribute("data-revision"), status.current_revision);
  assert.match(await served.innerText(), new RegExp(status.current_revision.slice(0, 12)));
  await page.locator("#agent-totals", { hasText: "8 agents, 8 connected" }).waitFor({ timeout: WAIT });
  const count = (s) => page.locator(`ul.chart li[data-status="${s}"] .count`).innerText();
  assert.equal(await count("synced"), "7");
  assert.equal(await count("failed"), "1");
  assert.match(await page.locator("#source").innerText(), /^file:\/\//);
  assert.equal(await page.locator(".rollout").count(), 4, "a progress bar per configuration");
  await page.screenshot({ path: join(SHOTS, "overview.png") });
});

test("a pushed commit appears and its rollout moves to done without a reload", async () => {
  await page.goto(`${BASE}/`);
  await page.locator("#served-revision").waitFor();
  await page.locator(".live.on").waitFor({ timeout: WAIT });
  // A reload would lose this.
  await page.evaluate(() => { window.__noReload = true; });
  const path = join(WORK, "processors/env-production.yaml");
  const text = readFileSync(path, "utf8");
  assert.match(text, /team: \S+/);
  writeFileSync(path, text.replace(/team: \S+/, "team: web-ui"));
  const sha = await commitAndAnnounce("tag production telemetry with the web-ui team");
  await page.locator(`#served-revision[data-revision="${sha}"]`).waitFor({ timeout: WAIT });
  // With its commit's subject and author, as Git gives them.
  assert.match(await page.locator("#served-commit").innerText(), /tag production telemetry with the web-ui team.* by Web Test/);
  const rollout = page.locator('.rollout[data-configuration="linux-production"]');
  await page.locator('.rollout[data-configuration="linux-production"][data-phase="complete"]', { hasText: "6/6 applied" })
    .waitFor({ timeout: WAIT });
  assert.match(await rollout.innerText(), /0 failed, 0 waiting/);
  // The server agrees, and the page still is the one loaded before the push.
  const configs = await apiJson("/api/v1/configurations");
  const lp = configs.items.find((c) => c.name === "linux-production");
  assert.equal(lp.rollout.synced, 6);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was reloaded");
  // The revision's page counts it as the API does: n/N and push → applied.
  const c = (await apiJson(`/api/v1/revisions/${sha}`)).convergence;
  assert.ok(c.applied >= 6, `applied: ${JSON.stringify(c)}`);
  await page.goto(`${BASE}/#/revisions/${sha}`);
  await page.locator("main", { hasText: `${c.applied}/${c.targeted}` }).waitFor({ timeout: WAIT });
  assert.match(await page.locator("main").innerText(), /p50 \d+ ms, p99 \d+ ms/);
});

test("a rejected commit shows its diagnostics", async () => {
  await page.goto(`${BASE}/`);
  await page.locator(".live.on").waitFor({ timeout: WAIT });
  writeFileSync(join(WORK, "configurations/broken.yaml"),
    "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n" +
    "  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n");
  const bad = await commitAndAnnounce("add a configuration with a dangling destination");
  const box = page.locator(`#last-rejected[data-revision="${bad}"]`);
  await box.waitFor({ timeout: WAIT });
  const text = await box.innerText();
  assert.match(text, /configurations\/broken\.yaml:\d+/);
  assert.match(text, /E\d{3}/);
  assert.match(text, /does-not-exist/);
  assert.match(text, /rejected/);
  await page.screenshot({ path: join(SHOTS, "overview-rejected.png"), fullPage: true });
  // Put the repository back for what follows.
  rmSync(join(WORK, "configurations/broken.yaml"));
  await commitAndAnnounce("remove the broken configuration");
});

test("the agents table filters by status, selector and text, on the server", async () => {
  await page.goto(`${BASE}/#/agents`);
  const rows = page.locator("#agents-result tbody tr");
  const counted = (n) => page.locator("#agents-count", { hasText: new RegExp(` of ${n}$`) }).waitFor({ timeout: WAIT });
  await counted(8);
  await page.getByLabel("Status").selectOption("failed");
  await counted(1);
  assert.equal(await rows.count(), 1);
  assert.match(await rows.first().innerText(), /payments[\s\S]*failed/);
  assert.match(page.url(), /status=failed/);
  await page.getByLabel("Status").selectOption("");
  await page.getByLabel("Label selector").fill("deployment.environment=staging");
  await counted(2);
  assert.equal(await rows.count(), 2);
  await page.getByLabel("Label selector").fill("deployment.environment in (");
  await page.locator("#agents-result .error").waitFor({ timeout: WAIT });
  await page.getByLabel("Label selector").fill("");
  await page.getByLabel("Search").fill("prod-0");
  await counted(6);
  await page.getByLabel("Sort by").selectOption("-last_seen");
  await counted(6);
  await page.getByLabel("Search").fill("");
  await counted(8);
  await axe(page, "agents");
});

test("an agent's page shows its desired vs effective diff", async () => {
  await page.goto(`${BASE}/#/agents/${FAILED_AGENT}`);
  const d = page.locator("#config-diff");
  await d.waitFor({ timeout: WAIT });
  assert.ok(await d.locator(".ins").count() > 0, "added lines");
  assert.ok(await d.locator(".del").count() > 0, "removed lines");
  assert.ok(await d.locator(".k").count() > 0, "highlighted keys");
  const main = await page.locator("main").innerText();
  assert.match(main, /connection refused/);
  assert.match(main, /deployment\.environment/);
  assert.match(main, /AcceptsRemoteConfig/);
  assert.match(main, /Connection history/);
  await page.screenshot({ path: join(SHOTS, "agent.png"), fullPage: true });
  await axe(page, "agent");
});

test("configurations show their rendered YAML, revisions their history", async () => {
  await page.goto(`${BASE}/#/configurations/linux-production`);
  const yaml = page.locator("#rendered");
  await yaml.waitFor({ timeout: WAIT });
  assert.match(await yaml.innerText(), /exporters:/);
  assert.ok(await yaml.locator(".k").count() > 5);
  assert.match(await page.locator("main").innerText(), /Copy YAML/);
  await axe(page, "configuration");
  await page.goto(`${BASE}/#/revisions`);
  await page.locator("td .badge.rejected").first().waitFor({ timeout: WAIT });
  assert.ok(await page.locator("td .badge.accepted").count() >= 2);
  await axe(page, "revisions");
});

test("missing things get a clear message", async () => {
  const resp = await page.goto(`${BASE}/no/such/page`);
  assert.equal(resp.status(), 404);
  await page.locator("h1", { hasText: "Not found" }).waitFor();
  await page.goto(`${BASE}/#/agents/00000000-0000-0000-0000-000000000000`);
  await page.locator(".notfound", { hasText: "no agent" }).waitFor({ timeout: WAIT });
  await page.goto(`${BASE}/#/revisions/deadbeef`);
  await page.locator(".notfound", { hasText: "no revision" }).waitFor({ timeout: WAIT });
  await page.goto(`${BASE}/#/nowhere`);
  await page.locator(".notfound").waitFor();
});

test("the overview passes axe in light and dark, and fits a narrow window", async () => {
  await page.goto(`${BASE}/`);
  await page.locator("#served-revision").waitFor();
  await axe(page, "overview (light)");
  const dark = await newContext({ colorScheme: "dark" });
  const p = await dark.newPage();
  await p.goto(`${BASE}/`);
  await p.locator("#served-revision").waitFor();
  await axe(p, "overview (dark)");
  await p.screenshot({ path: join(SHOTS, "overview-dark.png") });
  await p.setViewportSize({ width: 390, height: 800 });
  await p.goto(`${BASE}/#/agents`);
  await p.locator("#agents-count").waitFor();
  await p.goto(`${BASE}/`);
  await p.locator("#served-revision").waitFor();
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a narrow window`);
  await p.screenshot({ path: join(SHOTS, "overview-narrow.png"), fullPage: true });
  await dark.close();
});

/** Wait for the sign-in form to say the token was refused; on failure, say what it shows. */
async function refusedShown(p, when) {
  try {
    await p.locator("form.login .error", { hasText: "refused" }).waitFor({ timeout: WAIT });
  } catch (e) {
    const shown = await p.locator("main").innerText().catch(() => "(unreadable)");
    throw new Error(`${when}: no "refused" message; the page shows:\n${shown}\n${e.message}`);
  }
}

test("with a token, the page shows the login and nothing else until it is given", async () => {
  const ctx = await newContext();
  const p = await ctx.newPage();
  const status = await (await fetch(`${GUARDED}/api/v1/status`, { headers: { Authorization: `Bearer ${API_TOKEN}` } })).json();
  await p.goto(`${GUARDED}/#/agents`);
  const form = p.locator("form.login");
  await form.waitFor();
  assert.equal(await p.locator("#nav").isVisible(), false);
  const main = await p.locator("main").innerText();
  assert.doesNotMatch(main, new RegExp(status.current_revision.slice(0, 12)));
  assert.equal(await p.locator("main table").count(), 0);
  await axe(p, "login");
  await p.screenshot({ path: join(SHOTS, "login.png") });
  // A wrong token is refused: the login again, saying so.
  await p.getByLabel("API token").fill("not-the-token");
  await p.getByRole("button", { name: "Sign in" }).click();
  await refusedShown(p, "after a wrong token");
  // The right one opens the page; it stays in the session, never in the address.
  const before = requests.length;
  await p.getByLabel("API token").fill(API_TOKEN);
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.locator("#agents-count", { hasText: "of 0" }).waitFor({ timeout: WAIT });
  await p.locator(".live.on").waitFor({ timeout: WAIT });
  assert.equal(await p.evaluate(() => sessionStorage.getItem("gitamp.token")), API_TOKEN);
  assert.doesNotMatch(p.url(), new RegExp(API_TOKEN));
  const apiCalls = requests.slice(before).filter(([, url]) => url.startsWith(`${GUARDED}/api/`));
  assert.ok(apiCalls.length >= 3, "the page called the API");
  for (const [method, url, auth] of apiCalls) assert.ok(auth, `${method} ${url} without the token`);
  for (const [, url] of requests) assert.doesNotMatch(url, new RegExp(API_TOKEN));
  // An expired token (one the server no longer takes) brings the login back. It is set as the
  // reloaded page starts: set in the page still open, a request of that page could be refused
  // first, drop the token and leave the reloaded page with none (no "refused" then).
  await p.addInitScript(() => sessionStorage.setItem("gitamp.token", "expired"));
  await p.reload();
  await refusedShown(p, "after a reload with an expired token");
  await ctx.close();
});

test("the page only reads, and loads nothing from elsewhere", () => {
  assert.ok(requests.length > 20);
  const origins = new Set([new URL(BASE).origin, new URL(GUARDED).origin]);
  for (const [method, url] of requests) {
    assert.equal(method, "GET", `${method} ${url}`);
    assert.ok(origins.has(new URL(url).origin), `a request to another origin: ${url}`);
  }
  assert.deepEqual(pageErrors, [], "uncaught errors on the page");
});
