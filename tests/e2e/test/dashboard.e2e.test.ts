import { existsSync, mkdirSync, statSync } from "node:fs";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT_DIR, createGitFixture, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SCREENSHOT = path.join(ROOT_DIR, "test-results", "dashboard-finished-build.png");

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

describe("dashboard (bull-board at /admin/queues) in headless Chromium", () => {
  it("lists a finished build, and the screenshot is kept under test-results/", async () => {
    const repo = createGitFixture(path.join(ROOT_DIR, "examples/mnist"), {
      Dockerfile: `FROM ${services.baseImageBusybox}\nCOPY main.py /app/main.py\nCMD ["cat", "/app/main.py"]\n`,
    });
    cleanups.push(repo.cleanup);
    const id = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/dashboard-e2e", source: repo.url, revision: `d-${Date.now().toString(36)}`, dockerfile: "Dockerfile" });
    expect((await waitForBuild(stack.apiUrl, id)).status).toBe("succeeded");

    // admin only: a browser asks for Basic credentials (token as the password), a user token is refused
    const dashboard = `${stack.apiUrl}/admin/queues/queue/${encodeURIComponent(stack.queueName)}?status=completed`;
    const challenge = await fetch(dashboard);
    expect(challenge.status).toBe(401);
    expect(challenge.headers.get("www-authenticate")).toMatch(/^Basic /);
    expect((await fetch(dashboard, { headers: { authorization: `Basic ${Buffer.from(`x:${stack.tokens.alice}`).toString("base64")}` } })).status).toBe(403);

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    try {
      // what an operator types: http://admin:TOKEN@host/admin/queues
      const withCredentials = new URL(dashboard);
      withCredentials.username = "admin";
      withCredentials.password = stack.token;
      await page.goto(withCredentials.toString());
      // bull-board shows the job id (= build id) on the job card
      await page.getByText(id).first().waitFor({ timeout: 30_000 });
      await expect(page.title()).resolves.toMatch(/M1L0 builds|bull/i);
      mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    } finally {
      await page.close();
    }
    expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
  });
});
