import { BuilderError } from "@m1l0/config";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateDockerfile, isAptSourceLine, isDebianPackageName, parseAptTxt, type DockerfileSpec } from "../src/index.js";

const base: DockerfileSpec = { baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: false, labels: { "ai.m1l0.build-id": "b1" } };
const instructions = (text: string) => text.trimEnd().split("\n").filter((line) => !line.startsWith("#") && !/^\s/.test(line));
/** The exec-form array of a `RUN [...]` line. */
const execForm = (line: string): string[] => JSON.parse(line.replace(/^RUN /, "")) as string[];

function thrown(run: () => unknown): BuilderError {
  try {
    run();
  } catch (error) {
    if (error instanceof BuilderError) return error;
    throw error;
  }
  throw new Error("expected a BuilderError");
}

describe("parseAptTxt", () => {
  it("reads names one or more per line, skips comments and blank lines, drops duplicates", () => {
    expect(parseAptTxt("\uFEFF# system packages\ncurl\r\n\n  libgl1 ffmpeg  # video\nlibstdc++6 g++-12 python3.11-venv\ncurl\n")).toEqual(["curl", "libgl1", "ffmpeg", "libstdc++6", "g++-12", "python3.11-venv"]);
    expect(parseAptTxt("# nothing\n\n")).toEqual([]);
  });

  it.each([
    ["curl; rm -rf /", 1, '"curl;"', "only lowercase letters"],
    ["ok-one\n$(id)", 2, '"$(id)"', "start with a letter or a digit"],
    ["ok\n\n`touch x`", 3, '"`touch"', "start with a letter or a digit"],
    ["--allow-unauthenticated", 1, '"--allow-unauthenticated"', "start with a letter or a digit"],
    ["-oDebug::pkgProblemResolver=1", 1, '"-oDebug::pkgProblemResolver=1"', "start with a letter or a digit"],
    ["LibGL1", 1, '"LibGL1"', "lowercase"],
    ["x", 1, '"x"', "at least two characters"],
    ["curl=7.88.1", 1, '"curl=7.88.1"', "versions are not supported"],
    ["curl:amd64", 1, '"curl:amd64"', "architecture qualifiers"],
    ["a".repeat(129), 1, "", "longer than 128"],
  ])("refuses %j naming the line and the reason", (text, line, word, reason) => {
    const error = thrown(() => parseAptTxt(text));
    expect(error.code).toBe("INVALID_DEPENDENCY_FILE");
    expect(error.message).toMatch(new RegExp(`^apt\\.txt line ${line}: `));
    expect(error.message).toContain(word);
    expect(error.message).toContain(reason);
  });

  it("caps the file's size and its package count", () => {
    expect(thrown(() => parseAptTxt("a1\n".repeat(30_000))).message).toMatch(/larger than 64 KiB/);
    expect(thrown(() => parseAptTxt(Array.from({ length: 501 }, (_, i) => `pkg${i}`).join("\n"))).message).toMatch(/at most 500/);
  });

  it("names are the Debian grammar and nothing else", () => {
    for (const name of ["gcc", "g++", "libc6", "python3.11", "0ad", "fonts-dejavu-core"]) expect(isDebianPackageName(name)).toBe(true);
    for (const name of ["", "a", "Gcc", "-x", ".x", "+x", "a b", "a\nb", "a/b", "a'b", 'a"b', "a\\b", "a*"]) expect(isDebianPackageName(name)).toBe(false);
  });
});

describe("apt sources (operator setting)", () => {
  it("accepts one-line deb entries only", () => {
    expect(isAptSourceLine("deb http://deb.debian.org/debian bookworm main")).toBe(true);
    expect(isAptSourceLine("deb [trusted=yes] http://172.17.0.1:8080/ ./")).toBe(true);
    expect(isAptSourceLine("deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://mirror.internal/debian bookworm main contrib")).toBe(true);
    for (const line of ["", "deb", "deb-src http://x/ bookworm main", "deb http://x/", "deb [a=$(id)] http://x/ y", "rm -rf /", "deb http://x/ y\ndeb http://z/ w", "deb http://user:secret@mirror.internal/debian bookworm main"]) expect(isAptSourceLine(line)).toBe(false);
  });
});

describe("generated Dockerfile per layout", () => {
  it("apt.txt: one exec-form RUN before anything of the project, the names as separate arguments after --", () => {
    const text = generateDockerfile({ ...base, aptPackages: ["curl", "libgl1"], aptSources: ["deb [trusted=yes] http://10.0.0.5/ ./"] });
    const lines = instructions(text);
    const apt = lines.findIndex((line) => line.startsWith("RUN "));
    expect(lines.slice(0, apt).map((line) => line.split(" ")[0])).toEqual(["FROM", "ENV", "WORKDIR"]);
    const args = execForm(lines[apt]!);
    expect(args.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    expect(args.slice(3)).toEqual(["apt.txt", "deb [trusted=yes] http://10.0.0.5/ ./", "--", "curl", "libgl1"]);
    // the script is fixed text: no name or source inside it
    expect(args[2]).not.toMatch(/curl|libgl1|10\.0\.0\.5/);
    expect(args[2]).toBe(execForm(instructions(generateDockerfile({ ...base, aptPackages: ["git"] }))[3]!)[2]);
    expect(apt).toBeLessThan(lines.indexOf("COPY . ./"));
  });

  it("apt.txt: refuses names or sources that were not validated, whoever calls it", () => {
    expect(thrown(() => generateDockerfile({ ...base, aptPackages: ["curl && id"] })).code).toBe("INTERNAL");
    expect(thrown(() => generateDockerfile({ ...base, aptPackages: ["curl"], aptSources: ["deb http://x/ y\nRUN id"] })).code).toBe("INTERNAL");
    // an empty list is no apt layer at all
    expect(generateDockerfile({ ...base, aptPackages: [] })).not.toContain("apt-get");
  });

  it("pyproject.toml: metadata and static dependencies before the code, pip install . after it", () => {
    const lines = instructions(generateDockerfile({ ...base, project: { pyproject: true } }));
    const code = lines.indexOf("COPY . ./");
    expect(lines.indexOf("COPY pyproject.toml ./")).toBeGreaterThan(0);
    expect(lines.indexOf("COPY pyproject.toml ./")).toBeLessThan(code);
    const deps = lines.findIndex((line) => line.startsWith("RUN ") && line.includes("tomllib"));
    expect(deps).toBe(lines.indexOf("COPY pyproject.toml ./") + 1);
    expect(execForm(lines[deps]!).slice(0, 2)).toEqual(["python3", "-c"]);
    expect(lines[code + 1]).toBe('RUN ["python3","-m","pip","install","."]');
  });

  it("setup.py alone: no dependency layer can come before the code (setup.py is code), pip install . after it", () => {
    const lines = instructions(generateDockerfile({ ...base, project: { pyproject: false } }));
    const code = lines.indexOf("COPY . ./");
    expect(lines.slice(0, code).filter((line) => line.startsWith("RUN ") || line.startsWith("COPY "))).toEqual([]);
    expect(lines[code + 1]).toBe('RUN ["python3","-m","pip","install","."]');
  });

  it("every layout together: apt, requirements, pyproject dependencies, entry, code, project, labels", () => {
    const lines = instructions(generateDockerfile({ ...base, hasRequirements: true, aptPackages: ["curl"], project: { pyproject: true } }));
    const kinds = lines.map((line) =>
      line.includes("apt-get") ? "apt" : line.includes("requirements.txt") ? line.split(" ")[0] + " requirements" : line.includes("pyproject.toml") ? line.split(" ")[0] + " pyproject" : line === "COPY . ./" ? "code" : line.includes('"pip","install","."') ? "project" : line.split(" ")[0],
    );
    expect(kinds).toEqual(["FROM", "ENV", "WORKDIR", "apt", "COPY requirements", "RUN requirements", "COPY pyproject", "RUN pyproject", "ENTRYPOINT", "code", "project", "LABEL"]);
  });

  // Docker reuses a step's layer when the step text and everything before it is unchanged and,
  // for a COPY, the copied files are. So a code-only change keeps every dependency layer exactly
  // when each one comes before `COPY . ./` and copies only the layout's own metadata file.
  it.each([
    ["requirements.txt", { hasRequirements: true }, ["requirements.txt"]],
    ["pyproject.toml", { project: { pyproject: true } }, ["pyproject.toml"]],
    ["apt.txt", { aptPackages: ["curl"] }, []],
    ["all", { hasRequirements: true, aptPackages: ["curl"], project: { pyproject: true } }, ["requirements.txt", "pyproject.toml"]],
  ] as const)("%s: the dependency layers come before the code and copy only their metadata", (_name, layout, copied) => {
    const lines = instructions(generateDockerfile({ ...base, ...layout }));
    const code = lines.indexOf("COPY . ./");
    const before = lines.slice(0, code);
    expect(before.filter((line) => line.startsWith("COPY ")).map((line) => line.split(" ")[1])).toEqual(copied);
    const installs = lines.filter((line) => line.startsWith("RUN ") && !line.includes('"pip","install","."'));
    expect(installs.length).toBeGreaterThan(0);
    for (const install of installs) expect(lines.indexOf(install)).toBeLessThan(code);
    // the labels (per-build values) come after every dependency layer
    expect(lines.findIndex((line) => line.startsWith("LABEL"))).toBeGreaterThan(code);
  });
});

describe("the apt script run by a real shell", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-apt-script-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("passes sources and names to apt-get verbatim, never evaluating them", () => {
    // a stand-in apt-get on PATH records its arguments and the sources file it was given
    const record = path.join(dir, "calls");
    writeFileSync(path.join(dir, "apt-get"), `#!/bin/sh\nfor a in "$@"; do printf '[%s]' "$a"; case "$a" in Dir::Etc::SourceList=*) printf '{%s}' "$(cat "\${a#*=}")";; esac; done >> "${record}"\necho >> "${record}"\n`);
    chmodSync(path.join(dir, "apt-get"), 0o755);
    const args = execForm(instructions(generateDockerfile({ ...base, aptPackages: ["curl"] })).find((line) => line.includes("apt-get"))!);
    const script = args[2]!;
    // never let the test's shell clean the host's apt lists
    expect(script).toContain("/var/lib/apt/lists/*");
    // hostile words straight into the script (the generator would refuse them): the shell only passes them on
    const marker = path.join(dir, "pwned");
    execFileSync("/bin/sh", ["-c", script.replaceAll("/var/lib/apt/lists/*", path.join(dir, "lists")), "apt.txt", `deb http://x/ $(touch ${marker}) ./`, "--", `curl;touch ${marker}`, "`touch " + marker + "`"], {
      env: { PATH: `${dir}:/usr/bin:/bin` },
    });
    const calls = readFileSync(record, "utf8").trim().split("\n");
    expect(calls).toHaveLength(2);
    expect(calls[0]).toContain(`deb http://x/ $(touch ${marker}) ./`);
    expect(calls[0]).toContain("[update]");
    expect(calls[1]).toContain(`[install][-y][--no-install-recommends][curl;touch ${marker}][\`touch ${marker}\`]`);
    expect(() => readFileSync(marker)).toThrow();
  });

  it("without sources it uses the image's own sources.list", () => {
    const record = path.join(dir, "calls");
    writeFileSync(record, "");
    const script = execForm(instructions(generateDockerfile({ ...base, aptPackages: ["curl"] })).find((line) => line.includes("apt-get"))!)[2]!;
    expect(script).toContain("/var/lib/apt/lists/*");
    execFileSync("/bin/sh", ["-c", script.replaceAll("/var/lib/apt/lists/*", path.join(dir, "lists")), "apt.txt", "--", "curl"], { env: { PATH: `${dir}:/usr/bin:/bin` } });
    expect(readFileSync(record, "utf8").trim().split("\n")).toEqual(["[-o][APT::Update::Error-Mode=any][update]", "[install][-y][--no-install-recommends][curl]"]);
  });
});
