import { existsSync, mkdirSync, statSync } from "node:fs";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT_DIR, createGitFixture, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SCREENSHOT = path.join(ROOT_DIR, "test-results", "dashboard-finished-build.png");
/** what an untranslated bull-board label looks like: its i18n key (MENU.QUEUES, QUEUE.STATUS.LATEST, …) */
const RAW_KEY = /^[A-Z_]+\.[A-Z_.]+$/;
const UI_TIMEOUT = 30_000;

let stack: RunningStack;
let browser: Browser;
const cleanups: Array<() => void> = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/install.sh installs Debian's chromium`);
  stack = await startStack();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  for (const cleanup of cleanups) cleanup();
});

/**
 * Runs in the page: every visible text (text nodes, and placeholder/title/aria-label of visible
 * elements). A string, because this project's TypeScript has no DOM library.
 */
const VISIBLE_TEXTS = `(() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent && node.textContent.trim();
    if (text && node.parentElement && node.parentElement.checkVisibility({ visibilityProperty: true, opacityProperty: true })) found.push(text);
  }
  for (const element of document.querySelectorAll("[placeholder],[title],[aria-label]")) {
    if (!element.checkVisibility()) continue;
    for (const name of ["placeholder", "title", "aria-label"]) {
      const value = (element.getAttribute(name) || "").trim();
      if (value) found.push(value);
    }
  }
  return found;
})()`;

/** Every visible text on the page that is an i18n key rather than words. */
async function visibleRawKeys(page: Page): Promise<string[]> {
  const texts = (await page.evaluate(VISIBLE_TEXTS)) as string[];
  expect(texts.length).toBeGreaterThan(0);
  return [...new Set(texts.filter((text) => RAW_KEY.test(text)))];
}

/** Visible elements whose whole text is this English word, in any case ("Latest", "LATEST"). */
function englishLabel(page: Page, word: string) {
  return page.getByText(new RegExp(`^${word}$`, "i")).filter({ visible: true });
}

/** Opens the dashboard as a person does: the address, the sign-in form, the token, the button. */
async function signIn(page: Page, url: string, token: string): Promise<void> {
  await page.goto(url);
  await page.waitForURL(/\/admin\/login\?next=/, { timeout: UI_TIMEOUT });
  await page.getByLabel("Admin API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

describe("dashboard (bull-board at /admin/queues) in headless Chromium", () => {
  it("a person signs in with the token form and reads a finished build in English, with its phase and the link to its log", async () => {
    const repo = createGitFixture(path.join(ROOT_DIR, "examples/mnist"), {
      Dockerfile: `FROM ${services.baseImageBusybox}\nCOPY main.py /app/main.py\nCMD ["cat", "/app/main.py"]\n`,
    });
    cleanups.push(repo.cleanup);
    const revision = `d-${Date.now().toString(36)}`;
    const id = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/dashboard-e2e", source: repo.url, revision, dockerfile: "Dockerfile" });
    const failedId = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/dashboard-e2e", source: repo.url, revision: `${revision}-f`, dockerfile: "missing/Dockerfile" });
    expect((await waitForBuild(stack.apiUrl, id)).status).toBe("succeeded");
    expect((await waitForBuild(stack.apiUrl, failedId)).status).toBe("failed");

    const dashboard = `${stack.apiUrl}/admin/queues/queue/${encodeURIComponent(stack.queueName)}?status=completed`;
    // a script without a token gets 401, a user token 403
    expect((await fetch(`${stack.apiUrl}/admin/queues/api/queues`)).status).toBe(401);
    expect((await fetch(`${stack.apiUrl}/admin/queues/api/queues`, { headers: { authorization: `Bearer ${stack.tokens.alice}` } })).status).toBe(403);

    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, locale: "en-US" });
    const page = await context.newPage();
    try {
      // a user token is refused at the form
      await signIn(page, dashboard, stack.tokens.alice);
      await page.getByRole("alert").filter({ hasText: "not an admin token" }).waitFor({ timeout: UI_TIMEOUT });
      expect(await context.cookies()).toEqual([]);

      // the admin token: back to the page asked for, the queue and the build on it
      await page.getByLabel("Admin API token").fill(stack.token);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.waitForURL((url) => url.pathname === `/admin/queues/queue/${encodeURIComponent(stack.queueName)}`, { timeout: UI_TIMEOUT });
      await page.getByText(id).first().waitFor({ timeout: UI_TIMEOUT });
      await expect(page.title()).resolves.toBe("M1L0 builds");

      // English words, and not one raw translation key
      for (const label of ["Latest", "Active", "Completed", "Failed", "Data", "Progress", "Logs"]) {
        // the whole text is the word (bull-board writes the status tabs in capitals: "LATEST"), never its key
        await englishLabel(page, label).first().waitFor({ state: "visible", timeout: UI_TIMEOUT });
      }
      expect(await visibleRawKeys(page)).toEqual([]);

      // the build's phase as its progress, and where its log is
      const card = page.locator("div", { has: page.getByText(id, { exact: true }) }).filter({ has: page.getByText("Progress", { exact: true }) }).last();
      await card.getByText("Progress", { exact: true }).click();
      await card.getByText('"succeeded"').waitFor({ timeout: UI_TIMEOUT });
      await card.getByText(`"/builds/${id}/logs"`).waitFor({ timeout: UI_TIMEOUT });
      await card.getByText("100%").waitFor({ timeout: UI_TIMEOUT });
      await card.getByText("Logs", { exact: true }).click();
      await card.getByText(`build log: /builds/${id}/logs`, { exact: false }).first().waitFor({ timeout: UI_TIMEOUT });
      expect(await visibleRawKeys(page)).toEqual([]);
      mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });

      // the session: an HttpOnly, SameSite=Strict cookie for /admin only, which is not the token
      const cookies = await context.cookies();
      expect(cookies).toHaveLength(1);
      expect(cookies[0]).toMatchObject({ name: "m1l0_dashboard", path: "/admin", httpOnly: true, sameSite: "Strict" });
      expect(cookies[0]!.value).not.toContain(stack.token);
      expect(cookies[0]!.expires - Date.now() / 1000).toBeLessThanOrEqual(3600 + 5);
      // the browser's session opens the dashboard's data, never the build API
      expect((await page.request.get(`${stack.apiUrl}/admin/queues/api/queues`)).status()).toBe(200);
      expect((await page.request.get(`${stack.apiUrl}/builds`)).status()).toBe(401);
      expect((await page.request.get(`${stack.apiUrl}/builds`, { headers: { cookie: `m1l0_dashboard=${cookies[0]!.value}` } })).status()).toBe(401);

      // "Sign out" in the header's menu (the person icon) ends it: the dashboard sends the browser back to the form
      await page.locator('button[aria-haspopup="menu"]').last().click();
      await page.getByRole("menuitem", { name: "Sign out" }).click();
      await page.getByText("You are signed out.").waitFor({ timeout: UI_TIMEOUT });
      expect(await context.cookies()).toEqual([]);
      await page.goto(dashboard);
      await page.waitForURL(/\/admin\/login\?next=/, { timeout: UI_TIMEOUT });
    } finally {
      await context.close();
    }
    expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);

    // each job's progress is its build's phase; a failed build stops at the phase it failed in
    const jobs = async (status: string) => {
      const response = await fetch(`${stack.apiUrl}/admin/queues/api/queues?activeQueue=${encodeURIComponent(stack.queueName)}&status=${status}&page=1&jobsPerPage=50`, { headers: { authorization: `Bearer ${stack.token}` } });
      const body = (await response.json()) as { queues: Array<{ name: string; jobs: Array<{ id: string; progress: unknown; data: unknown }> }> };
      return body.queues.find((queue) => queue.name === stack.queueName)!.jobs;
    };
    const done = (await jobs("completed")).find((job) => job.id === id)!;
    expect(done.progress).toMatchObject({ progress: 100, phase: "succeeded", log: `/builds/${id}/logs` });
    const failed = (await jobs("failed")).find((job) => job.id === failedId)!;
    expect(failed.progress).toMatchObject({ progress: 10, phase: "failed", log: `/builds/${failedId}/logs` });
    // what the dashboard shows of a job never holds a credential
    const logs = await fetch(`${stack.apiUrl}/admin/queues/api/queues/${encodeURIComponent(stack.queueName)}/${id}/logs`, { headers: { authorization: `Bearer ${stack.token}` } });
    const shown = JSON.stringify([done, failed, await logs.json()]);
    expect(shown).toContain(`/builds/${id}/logs`);
    for (const secret of [services.registryPassword, services.gitPrivateToken, stack.token, stack.tokens.alice]) expect(shown).not.toContain(secret);
  });

  it("the raw-key check fails when the locale files do not reach the browser (it can fail)", async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, locale: "en-US" });
    const page = await context.newPage();
    try {
      // what a broken static route or base path did: bull-board without its messages.json
      await page.route("**/static/locales/**", (route) => route.fulfill({ status: 404, body: "" }));
      await signIn(page, `${stack.apiUrl}/admin/queues/queue/${encodeURIComponent(stack.queueName)}?status=completed`, stack.token);
      await page.getByText("QUEUE.STATUS.LATEST", { exact: true }).first().waitFor({ timeout: UI_TIMEOUT });
      expect(await visibleRawKeys(page)).toEqual(expect.arrayContaining(["QUEUE.STATUS.LATEST", "JOB.TABS.DATA"]));
      for (const label of ["Latest", "Active", "Data"]) expect(await englishLabel(page, label).count(), label).toBe(0);
    } finally {
      await context.close();
    }
  });
});
