import { BuilderError, parseBuildConfig } from "@m1l0/config";
import { describe, expect, it } from "vitest";
import { GENERATOR_VERSION, buildLabels, generateDockerfile, lastFilesystemStep, type DockerfileSpec } from "../src/index.js";

// ---------------------------------------------------------------------------------------------
// A small model of how BuildKit's Dockerfile frontend reads what we generate: physical lines,
// comments, continuation lines, LABEL's quote-aware word splitting (parser/line_parsers.go
// parseWords + parseNameVal) and the shell lexer's double-quote processing (shell/lex.go).
// ---------------------------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  rest: string;
}

const PARSER_DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;

function parseDockerfile(text: string): Instruction[] {
  expect(text.endsWith("\n")).toBe(true);
  const physical = text.slice(0, -1).split("\n");
  const instructions: Instruction[] = [];
  for (let i = 0; i < physical.length; i++) {
    let line = physical[i] ?? "";
    if (/^\s*#/.test(line) || line.trim() === "") continue;
    line = line.replace(/^\s+/, "");
    while (/\\[ \t]*$/.test(line)) {
      line = line.replace(/\\[ \t]*$/, "");
      i++;
      const next = physical[i];
      if (next === undefined) break;
      if (/^\s*#/.test(next)) continue;
      line += next;
    }
    const match = /^(\S+)\s*(.*)$/.exec(line);
    expect(match).not.toBeNull();
    instructions.push({ keyword: (match?.[1] ?? "").toUpperCase(), rest: match?.[2] ?? "" });
  }
  return instructions;
}

/** Go's unicode.IsSpace */
const isSpace = (ch: string) => /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u.test(ch);

function parseWords(rest: string): string[] {
  const words: string[] = [];
  const chars = Array.from(rest);
  let phase: "spaces" | "word" | "quote" = "spaces";
  let word = "";
  let quote = "";
  let blankOK = false;
  for (let pos = 0; pos <= chars.length; pos++) {
    let ch = chars[pos] ?? "";
    if (phase === "spaces") {
      if (pos === chars.length) break;
      if (isSpace(ch)) continue;
      phase = "word";
    }
    if (pos === chars.length) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === "word") {
      if (isSpace(ch)) {
        phase = "spaces";
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = "quote";
      }
      if (ch === "\\") {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos] ?? "";
      }
      word += ch;
      continue;
    }
    // in quote
    if (ch === quote) phase = "word";
    if (ch === "\\" && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = "word";
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos] ?? "";
    }
    word += ch;
  }
  return words;
}

/** The shell lexer on one word; fails on anything that would substitute a variable. */
function processWord(word: string): string {
  const chars = Array.from(word);
  let out = "";
  let i = 0;
  while (i < chars.length) {
    const ch = chars[i] ?? "";
    if (ch === '"') {
      i++;
      for (;;) {
        const c = chars[i];
        if (c === undefined) throw new Error(`unterminated double quote in ${word}`);
        if (c === '"') {
          i++;
          break;
        }
        if (c === "$") throw new Error(`unescaped $ would substitute a variable in ${word}`);
        if (c === "\\" && (chars[i + 1] === '"' || chars[i + 1] === "$" || chars[i + 1] === "\\")) {
          out += chars[i + 1];
          i += 2;
          continue;
        }
        out += c;
        i++;
      }
      continue;
    }
    throw new Error(`unquoted text ${JSON.stringify(ch)} in ${word}`);
  }
  return out;
}

function parseLabels(rest: string): [string, string][] {
  return parseWords(rest).map((w) => {
    expect(w).toContain("=");
    const at = w.indexOf("=");
    return [processWord(w.slice(0, at)), processWord(w.slice(at + 1))];
  });
}

// ---------------------------------------------------------------------------------------------

const seedConfig = parseBuildConfig({
  service: "dockerhub",
  repository: "m1l0/mnist",
  source: "https://github.com/m1l0ai/mnist.git",
  revision: "v1",
  namespace: "m1l0",
  name: "mnist",
  framework: "tensorflow",
  version: "2.6.0",
  pyversion: "3.6",
  resource: "cpu",
  entry: "main.py",
  tags: [{ Key: "team", Value: "vision" }],
});

const seedLabels = () =>
  buildLabels({
    config: seedConfig,
    buildId: "bld_0000000000abcdefghjkmnpqrs",
    commit: "0123456789abcdef0123456789abcdef01234567",
    source: "https://github.com/m1l0ai/mnist.git",
    baseImage: "tensorflow/tensorflow:2.6.0",
  });

describe("generateDockerfile", () => {
  it("renders the seed config exactly", () => {
    const text = generateDockerfile({ baseImage: "tensorflow/tensorflow:2.6.0", entry: seedConfig.entry, hasRequirements: true, labels: seedLabels() });
    expect(text).toBe(
      [
        `# generated by m1l0-image-builder, dockerfile generator v${GENERATOR_VERSION}`,
        "FROM tensorflow/tensorflow:2.6.0",
        "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1",
        "WORKDIR /app",
        "COPY requirements.txt ./",
        "RUN python3 -m pip install -r requirements.txt",
        'ENTRYPOINT ["python3","main.py"]',
        "COPY . ./",
        'LABEL "org.opencontainers.image.source"="https://github.com/m1l0ai/mnist.git" \\',
        '      "org.opencontainers.image.revision"="0123456789abcdef0123456789abcdef01234567" \\',
        '      "org.opencontainers.image.title"="mnist" \\',
        '      "org.opencontainers.image.vendor"="m1l0" \\',
        '      "org.opencontainers.image.version"="v1" \\',
        '      "org.opencontainers.image.base.name"="tensorflow/tensorflow:2.6.0" \\',
        '      "ai.m1l0.build-id"="bld_0000000000abcdefghjkmnpqrs" \\',
        '      "ai.m1l0.framework"="tensorflow" \\',
        '      "ai.m1l0.framework-version"="2.6.0" \\',
        '      "ai.m1l0.python"="3.6" \\',
        '      "ai.m1l0.resource"="cpu" \\',
        '      "ai.m1l0.base-image"="tensorflow/tensorflow:2.6.0" \\',
        '      "ai.m1l0.tag.team"="vision"',
        "",
      ].join("\n"),
    );
  });

  it("omits the requirements layer and the LABEL instruction when there is nothing to put there", () => {
    const text = generateDockerfile({ baseImage: "m1l0-local/python:3.11-bookworm", entry: "src/app.py", hasRequirements: false, labels: {}, workdir: "/opt/model" });
    expect(text).toBe(
      [
        `# generated by m1l0-image-builder, dockerfile generator v${GENERATOR_VERSION}`,
        "FROM m1l0-local/python:3.11-bookworm",
        "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1",
        "WORKDIR /opt/model",
        'ENTRYPOINT ["python3","src/app.py"]',
        "COPY . ./",
        "",
      ].join("\n"),
    );
  });

  it("orders layers for caching: pip and the entrypoint before the code, labels after every cached layer", () => {
    const keywords = parseDockerfile(generateDockerfile({ baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: true, labels: seedLabels() })).map((i) => i.keyword);
    expect(keywords).toEqual(["FROM", "ENV", "WORKDIR", "COPY", "RUN", "ENTRYPOINT", "COPY", "LABEL"]);
    // two builds differing only in build id / commit share every line up to the LABEL
    const a = generateDockerfile({ baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: true, labels: { "ai.m1l0.build-id": "a" } });
    const b = generateDockerfile({ baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: true, labels: { "ai.m1l0.build-id": "b" } });
    const upToLabel = (text: string) => text.slice(0, text.indexOf("LABEL"));
    expect(upToLabel(a)).toBe(upToLabel(b));
    expect(a).not.toBe(b);
  });

  it("starts with a fixed comment that is not a parser directive", () => {
    const first = generateDockerfile({ baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: false, labels: {} }).split("\n")[0] ?? "";
    expect(first.startsWith("# generated by m1l0-image-builder")).toBe(true);
    expect(first).not.toMatch(PARSER_DIRECTIVE);
    expect(first).not.toContain("=");
  });

  it("escapes quotes, backslashes and $ in labels so Docker reads them back literally", () => {
    const labels = { 'we"ird\\ key $HOME': 'a "quoted" \\ value with $HOME, ${PATH} and \\$X', "ai.m1l0.tag.note": "ends with a backslash\\" };
    const text = generateDockerfile({ baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: false, labels });
    expect(text).toContain('"we\\"ird\\\\ key \\$HOME"="a \\"quoted\\" \\\\ value with \\$HOME, \\${PATH} and \\\\\\$X"');
    const label = parseDockerfile(text).find((i) => i.keyword === "LABEL");
    expect(parseLabels(label?.rest ?? "")).toEqual(Object.entries(labels));
  });

  it("rejects control characters, newlines, '=' in keys, empty keys and broken Unicode", () => {
    const base: DockerfileSpec = { baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: false, labels: {} };
    const bad: DockerfileSpec[] = [
      { ...base, labels: { k: "x\nRUN evil" } },
      { ...base, labels: { k: "x\rRUN evil" } },
      { ...base, labels: { k: "tab\there" } },
      { ...base, labels: { k: "line\u2028separator" } },
      { ...base, labels: { "k\nRUN evil": "v" } },
      { ...base, labels: { "a=b": "v" } },
      { ...base, labels: { "": "v" } },
      { ...base, labels: { k: "lone \ud800 surrogate" } },
      { ...base, entry: "main.py\nRUN evil" },
      { ...base, entry: "" },
    ];
    for (const spec of bad) {
      expect(() => generateDockerfile(spec), JSON.stringify(spec)).toThrow(BuilderError);
      try {
        generateDockerfile(spec);
      } catch (error) {
        expect((error as BuilderError).code).toBe("VALIDATION_FAILED");
      }
    }
  });

  it("rejects base images and workdirs that are not plain references and paths", () => {
    const base: DockerfileSpec = { baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: false, labels: {} };
    for (const baseImage of ["python:3.11-slim AS evil", "python:3.11\nRUN evil", "$BASE", "--platform=linux/amd64 python", "Python:3", "", "python:3.11-slim # c"]) {
      expect(() => generateDockerfile({ ...base, baseImage }), baseImage).toThrow(/not a valid image reference/);
    }
    for (const ok of ["localhost:5000/team/img:1.0", `python@sha256:${"ab".repeat(32)}`, "ghcr.io/a/b/c"]) {
      expect(generateDockerfile({ ...base, baseImage: ok })).toContain(`FROM ${ok}\n`);
    }
    for (const workdir of ["app", "/app/../etc", "/$HOME", "/a b", "/app\nRUN evil", "/./x"]) {
      expect(() => generateDockerfile({ ...base, workdir }), workdir).toThrow(BuilderError);
    }
  });

  it("keeps the entry in exec form", () => {
    const entry = 'dir with space/we"ird\\$HOME[1].py';
    const text = generateDockerfile({ baseImage: "python:3.11-slim", entry, hasRequirements: false, labels: {} });
    const instruction = parseDockerfile(text).find((i) => i.keyword === "ENTRYPOINT");
    expect(JSON.parse(instruction?.rest ?? "")).toEqual(["python3", entry]);
  });
});

describe("lastFilesystemStep", () => {
  // the classic builder numbers every instruction as a step, FROM being 1
  const steps = (spec: DockerfileSpec) => parseDockerfile(generateDockerfile(spec)).map((instruction) => instruction.keyword);
  it.each([
    ["code only", { hasRequirements: false }],
    ["requirements", { hasRequirements: true }],
    ["project (pip install . after the code)", { hasRequirements: true, project: { pyproject: true }, aptPackages: ["curl"] }],
  ] as const)("%s: the step is the last that changes files, and only LABEL follows it", (_name, layout) => {
    const spec: DockerfileSpec = { baseImage: "python:3.11-slim", entry: "main.py", labels: seedLabels(), ...layout };
    const keywords = steps(spec);
    const step = lastFilesystemStep(spec);
    expect(["COPY", "RUN"]).toContain(keywords[step - 1]);
    expect(keywords.slice(step)).toEqual(["LABEL"]);
  });

  it("is the last step when there are no labels", () => {
    const spec: DockerfileSpec = { baseImage: "python:3.11-slim", entry: "main.py", hasRequirements: true, labels: {} };
    expect(lastFilesystemStep(spec)).toBe(steps(spec).length);
  });
});

describe("buildLabels", () => {
  it("uses OCI keys, adds m1l0 keys and one key per tag, and no timestamp", () => {
    const labels = seedLabels();
    expect(Object.keys(labels)).not.toContain("org.opencontainers.image.created");
    expect(labels).toEqual({
      "org.opencontainers.image.source": "https://github.com/m1l0ai/mnist.git",
      "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
      "org.opencontainers.image.title": "mnist",
      "org.opencontainers.image.vendor": "m1l0",
      "org.opencontainers.image.version": "v1",
      "org.opencontainers.image.base.name": "tensorflow/tensorflow:2.6.0",
      "ai.m1l0.build-id": "bld_0000000000abcdefghjkmnpqrs",
      "ai.m1l0.framework": "tensorflow",
      "ai.m1l0.framework-version": "2.6.0",
      "ai.m1l0.python": "3.6",
      "ai.m1l0.resource": "cpu",
      "ai.m1l0.base-image": "tensorflow/tensorflow:2.6.0",
      "ai.m1l0.tag.team": "vision",
    });
  });

  it("leaves out what the request does not have, and never leaks credentials", () => {
    const config = parseBuildConfig({ service: "ecr", repository: "team/app", source: "s3://bucket/app.tar.gz" });
    const labels = buildLabels({ config, buildId: "b1", source: "https://user:secret@git.example.com/repo.git", baseImage: "python:3.11-slim" });
    expect(labels["org.opencontainers.image.source"]).toBe("https://git.example.com/repo.git");
    for (const key of ["org.opencontainers.image.revision", "org.opencontainers.image.title", "org.opencontainers.image.vendor", "ai.m1l0.framework-version"]) {
      expect(labels).not.toHaveProperty(key);
    }
    expect(labels["ai.m1l0.framework"]).toBe("python");
    expect(labels["ai.m1l0.python"]).toBe("3.11");
    expect(labels["org.opencontainers.image.version"]).toBe("latest");
  });
});

// ---------------------------------------------------------------------------------------------
// Property test: whatever users type, the structure of the Dockerfile does not move.
// ---------------------------------------------------------------------------------------------

function rng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SAFE_PIECES = [
  '"', "'", "\\", "\\\\", '\\"', "$", "$HOME", "${HOME}", "${X:-y}", "$(id)", "`id`", "{", "}", "#", "# escape=`", "=", " ", "  ",
  "\u00a0", "\u3000", "\u200b", "\ufeff", "é", "日本語", "🚀", "a", "Z", "0", "-", ".", "/", ":", "[", "]", ",", ";", "&&", "|", "*", "%",
  "RUN evil", "LABEL x=y", "\\ ", " \\",
];
const CONTROL_PIECES = ["\nRUN evil", "\r\nRUN evil", "\n", "\t", "\u0000", "\u001b[31m", "\u007f", "\u0085", "\u2028", "\u2029"];

function randomText(next: () => number, pieces: readonly string[], maxPieces: number): string {
  const count = Math.floor(next() * (maxPieces + 1));
  let text = "";
  for (let i = 0; i < count; i++) text += pieces[Math.floor(next() * pieces.length)] ?? "";
  return text;
}

describe("property: user text never escapes its place", () => {
  const iterations = 1500;

  it("keeps the instruction sequence and reads every label and the entry back unchanged", () => {
    const next = rng(20240611);
    for (let i = 0; i < iterations; i++) {
      const hasRequirements = next() < 0.5;
      const tags = Array.from({ length: 3 }, () => ({
        Key: randomText(next, SAFE_PIECES.filter((p) => !p.includes("=")), 6) || "k",
        Value: randomText(next, SAFE_PIECES, 10),
      }));
      const config = parseBuildConfig({
        service: "dockerhub",
        repository: "team/app",
        source: "https://example.com/repo.git",
        name: randomText(next, SAFE_PIECES, 8),
        namespace: randomText(next, SAFE_PIECES, 8) || "ns",
        tags,
      });
      const labels = buildLabels({ config, buildId: `b${i}`, commit: randomText(next, SAFE_PIECES, 4) || "c", source: "https://example.com/repo.git", baseImage: "python:3.11-slim" });
      const entry = randomText(next, SAFE_PIECES, 8) || "main.py";
      const text = generateDockerfile({ baseImage: "python:3.11-slim", entry, hasRequirements, labels });

      const physicalLines = text.split("\n").length;
      const labelCount = Object.keys(labels).length;
      // header + FROM, ENV, WORKDIR, [COPY, RUN], ENTRYPOINT, COPY, one line per label, trailing ""
      expect(physicalLines, text).toBe(1 + 3 + (hasRequirements ? 2 : 0) + 1 + labelCount + 1 + 1);

      const instructions = parseDockerfile(text);
      expect(instructions.map((x) => x.keyword)).toEqual(
        hasRequirements ? ["FROM", "ENV", "WORKDIR", "COPY", "RUN", "ENTRYPOINT", "COPY", "LABEL"] : ["FROM", "ENV", "WORKDIR", "ENTRYPOINT", "COPY", "LABEL"],
      );
      const label = instructions.find((x) => x.keyword === "LABEL");
      expect(parseLabels(label?.rest ?? ""), text).toEqual(Object.entries(labels));
      const entrypoint = instructions.find((x) => x.keyword === "ENTRYPOINT");
      expect(JSON.parse(entrypoint?.rest ?? "")).toEqual(["python3", entry]);
      expect(text.split("\n")[0]).not.toMatch(PARSER_DIRECTIVE);
    }
  });

  it("rejects any label or entry carrying a control character or line break", () => {
    const next = rng(7);
    for (let i = 0; i < iterations; i++) {
      const poison = randomText(next, SAFE_PIECES, 4) + (CONTROL_PIECES[Math.floor(next() * CONTROL_PIECES.length)] ?? "\n") + randomText(next, SAFE_PIECES, 4);
      const where = Math.floor(next() * 3);
      const spec: DockerfileSpec = {
        baseImage: "python:3.11-slim",
        entry: where === 0 ? poison : "main.py",
        hasRequirements: true,
        labels: where === 1 ? { [poison.replaceAll("=", "")]: "v" } : { k: where === 2 ? poison : "v" },
      };
      expect(() => generateDockerfile(spec), JSON.stringify(spec)).toThrow(BuilderError);
    }
  });
});
