import { describe, expect, it } from "vitest";
import { BuilderError, parseBuildConfig, parseBuildConfigText } from "../src/index.js";

/** A valid request; each case changes one field to something hostile. */
const BASE = {
  service: "dockerhub",
  repository: "team/project",
  source: "https://git.example.com/team/project.git",
};

type Case = [label: string, patch: Record<string, unknown>, field: string, message: string | RegExp];

const CONTROL = ["\u0000", "\n", "\r", "\t", "\u001b[31m", "\u007f", "\u0085", "\u2028", "\u2029"];
const CONTROL_MESSAGE = "must not contain control characters or line breaks";

const TEXT_FIELDS = ["namespace", "name"] as const;

const CASES: Case[] = [
  // --- every text field with control characters and line breaks
  ...TEXT_FIELDS.flatMap((field) => CONTROL.map((char): Case => [`${field} with ${JSON.stringify(char)}`, { [field]: `a${char}b` }, field, CONTROL_MESSAGE])),
  ...CONTROL.map((char): Case => [`tag key with ${JSON.stringify(char)}`, { tags: [{ Key: `k${char}`, Value: "v" }] }, "tags.0.Key", CONTROL_MESSAGE]),
  ...CONTROL.map((char): Case => [`tag value with ${JSON.stringify(char)}`, { tags: [{ Key: "k", Value: `v${char}RUN id` }] }, "tags.0.Value", CONTROL_MESSAGE]),
  ...CONTROL.map((char): Case => [`ignore pattern with ${JSON.stringify(char)}`, { ignores: [`data${char}`] }, "ignores.0", CONTROL_MESSAGE]),
  ...CONTROL.map((char): Case => [`entry with ${JSON.stringify(char)}`, { entry: `main${char}.py` }, "entry", CONTROL_MESSAGE]),
  ...CONTROL.map((char): Case => [`dockerfile with ${JSON.stringify(char)}`, { dockerfile: `Dockerfile${char}` }, "dockerfile", CONTROL_MESSAGE]),
  ...CONTROL.map((char): Case => [`source with ${JSON.stringify(char)}`, { source: `https://git.example.com/a.git#main${char}RUN` }, "source", CONTROL_MESSAGE]),
  ["lone surrogate in name", { name: "a\ud800b" }, "name", "must be valid Unicode text"],
  ["lone surrogate in a tag value", { tags: [{ Key: "k", Value: "\udfff" }] }, "tags.0.Value", "must be valid Unicode text"],

  // --- overlong
  ["overlong repository", { repository: `a${"/a".repeat(130)}` }, "repository", "must be at most 255 characters"],
  ["overlong revision", { revision: "v".repeat(129) }, "revision", "must be a valid image tag"],
  ["overlong namespace", { namespace: "n".repeat(129) }, "namespace", "must be at most 128 characters"],
  ["overlong name", { name: "n".repeat(129) }, "name", "must be at most 128 characters"],
  ["overlong source", { source: `https://git.example.com/${"a".repeat(2100)}.git` }, "source", "must be at most 2048 characters"],
  ["overlong entry", { entry: `${"a/".repeat(520)}main.py` }, "entry", "must be at most 1024 characters"],
  ["overlong tag key", { tags: [{ Key: "k".repeat(129), Value: "v" }] }, "tags.0.Key", "must be at most 128 characters"],
  ["overlong tag value", { tags: [{ Key: "k", Value: "v".repeat(257) }] }, "tags.0.Value", "must be at most 256 characters"],
  ["too many tags", { tags: Array.from({ length: 51 }, (_, i) => ({ Key: `k${i}`, Value: "v" })) }, "tags", "must have at most 50 tags"],
  ["overlong ignore pattern", { ignores: ["a".repeat(257)] }, "ignores.0", "must be at most 256 characters"],
  ["too many ignore patterns", { ignores: Array.from({ length: 501 }, (_, i) => `p${i}`) }, "ignores", "must have at most 500 patterns"],
  ["overlong framework", { framework: "f".repeat(65) }, "framework", "must be a lowercase framework name"],
  ["overlong version", { version: "1".repeat(33) }, "version", "must be a version such as 2.6.0"],

  // --- ignore patterns Docker rejects (wildcards themselves are harmless: the matcher is linear-time)
  ["ignore pattern with an unterminated class", { ignores: ["data[abc"] }, "ignores.0", "has an unterminated character class"],
  ["ignore pattern with an escaped class end", { ignores: ["data[a\\]"] }, "ignores.0", "has an unterminated character class"],
  ["ignore pattern with a lone [", { ignores: ["["] }, "ignores.0", "has an unterminated character class"],
  ["ignore pattern with a reversed range", { ignores: ["file[z-a]"] }, "ignores.0", "has a reversed character range 'z-a'"],
  ["empty ignore pattern", { ignores: [""] }, "ignores.0", "must not be empty"],

  // --- wrong types
  ["service as a number", { service: 1 }, "service", "must be one of: dockerhub, ecr"],
  ["service unknown", { service: "gcr" }, "service", "must be one of: dockerhub, ecr"],
  ["repository as an array", { repository: ["team/project"] }, "repository", /expected string/],
  ["repository as an object", { repository: { toString: "x" } }, "repository", /expected string/],
  ["source as null", { source: null }, "source", /expected string/],
  ["revision as a number", { revision: 1 }, "revision", /expected string/],
  ["pyversion as a float", { pyversion: 3.1 }, "pyversion", 'must be a string: quote it in YAML (pyversion: "3.10")'],
  ["resource as a boolean", { resource: true }, "resource", "must be one of: cpu, gpu"],
  ["entry as a number", { entry: 7 }, "entry", /expected string/],
  ["tags as a string", { tags: "Project=x" }, "tags", /expected array/],
  ["tags as an object", { tags: { Key: "a", Value: "b" } }, "tags", /expected array/],
  ["tag as a string", { tags: ["Project=x"] }, "tags.0", /expected object/],
  ["tag with an extra field", { tags: [{ Key: "a", Value: "b", Extra: "c" }] }, "tags.0.Extra", "is not a known field"],
  ["ignores as a string", { ignores: "*.md" }, "ignores", /expected array/],
  ["ignore as a number", { ignores: [1] }, "ignores.0", /expected string/],
  ["nested arrays in ignores", { ignores: [["*.md"]] }, "ignores.0", /expected string/],
  ["unknown field", { dockerfile_content: "FROM scratch" }, "dockerfile_content", "is not a known field"],
  ["unknown field buildArgs", { buildArgs: { A: "1" } }, "buildArgs", "is not a known field"],

  // --- OCI names
  ["uppercase repository", { repository: "Team/Project" }, "repository", "must be lowercase path components"],
  ["repository with a registry host", { repository: "evil.example.com:5000/x" }, "repository", "must be lowercase path components"],
  ["repository with a tag", { repository: "team/project:latest" }, "repository", "must be lowercase path components"],
  ["repository with a digest", { repository: "team/project@sha256:abc" }, "repository", "must be lowercase path components"],
  ["repository with ..", { repository: "team/../project" }, "repository", "must be lowercase path components"],
  ["repository with a leading slash", { repository: "/team/project" }, "repository", "must be lowercase path components"],
  ["repository with a trailing slash", { repository: "team/project/" }, "repository", "must be lowercase path components"],
  ["repository with spaces", { repository: "team/my project" }, "repository", "must be lowercase path components"],
  ["repository with a homoglyph", { repository: "tеam/project" }, "repository", "must be lowercase path components"], // Cyrillic е
  ["empty repository", { repository: "" }, "repository", "is required"],
  ["revision starting with a dot", { revision: ".hidden" }, "revision", "must be a valid image tag"],
  ["revision starting with a dash", { revision: "-rm" }, "revision", "must be a valid image tag"],
  ["revision with a slash", { revision: "a/b" }, "revision", "must be a valid image tag"],
  ["revision with a shell substitution", { revision: "$(id)" }, "revision", "must be a valid image tag"],
  ["revision with a space", { revision: "v1 --push" }, "revision", "must be a valid image tag"],
  ["framework with a path", { framework: "../python" }, "framework", "must be a lowercase framework name"],
  ["framework with an image reference", { framework: "evil.io/python:latest" }, "framework", "must be a lowercase framework name"],
  ["version with a newline", { version: "2.6.0\nRUN id" }, "version", "must be a version such as 2.6.0"],
  ["version with a variable", { version: "${HOME}" }, "version", "must be a version such as 2.6.0"],
  ["pyversion 2.7", { pyversion: "2.7" }, "pyversion", 'must be a Python version such as "3.11"'],
  ["pyversion with an injection", { pyversion: '3.11"\nRUN id' }, "pyversion", 'must be a Python version such as "3.11"'],
  ["tag key with =", { tags: [{ Key: "a=b", Value: "c" }] }, "tags.0.Key", "must not contain '='"],
  ["empty tag key", { tags: [{ Key: "", Value: "c" }] }, "tags.0.Key", "must not be empty"],

  // --- paths
  ["entry climbing out", { entry: "../etc/passwd" }, "entry", "must be a relative path inside the source"],
  ["entry climbing out deeper", { entry: "src/../../etc/passwd" }, "entry", "must be a relative path inside the source"],
  ["absolute entry", { entry: "/etc/passwd" }, "entry", "must be a relative path inside the source"],
  ["entry with backslashes", { entry: "..\\..\\etc\\passwd" }, "entry", "must be a relative path inside the source"],
  ["entry with an empty segment", { entry: "src//main.py" }, "entry", "must be a relative path inside the source"],
  ["entry that is only ..", { entry: ".." }, "entry", "must be a relative path inside the source"],
  ["empty entry", { entry: "" }, "entry", "must be a relative path inside the source"],
  ["dockerfile climbing out", { dockerfile: "../Dockerfile" }, "dockerfile", "must be a relative path inside the source"],
  ["absolute dockerfile", { dockerfile: "/var/run/docker.sock" }, "dockerfile", "must be a relative path inside the source"],
  ["dockerfile with a trailing slash", { dockerfile: "docker/" }, "dockerfile", "must be a relative path inside the source"],

  // --- source URLs
  ["file:// source", { source: "file:///etc/passwd" }, "source", "must be a URL"],
  ["javascript: source", { source: "javascript:alert(1)" }, "source", "must be a URL"],
  ["gopher:// source", { source: "gopher://127.0.0.1:6379/_FLUSHALL" }, "source", "must be a URL"],
  ["ftp:// source", { source: "ftp://example.com/repo.tar.gz" }, "source", "must be a URL"],
  ["ssh:// source", { source: "ssh://git@github.com/a/b.git" }, "source", "must be a URL"],
  ["scp-like git source", { source: "git@github.com:a/b.git" }, "source", "must be a URL"],
  ["data: source", { source: "data:text/plain,hello" }, "source", "must be a URL"],
  ["relative source", { source: "../other/repo" }, "source", "must be a URL"],
  ["empty source", { source: "" }, "source", "is required"],
  ["credentials in the URL", { source: "https://user:token@github.com/a/b.git" }, "source", "git URLs must not embed credentials"],
  ["user only in the URL", { source: "https://token@github.com/a/b.git" }, "source", "git URLs must not embed credentials"],
  ["malformed IPv6 host", { source: "https://[::1/a.git" }, "source", "must be a URL"],
  ["s3 source that is not an archive", { source: "s3://bucket/key.zip" }, "source", "s3 sources must be s3://bucket/key.tar.gz"],
  ["s3 source without a bucket", { source: "s3:///key.tar.gz" }, "source", "s3 sources must be s3://bucket/key.tar.gz"],
  ["dir source with a host", { source: "dir://host/etc" }, "source", "dir sources dir:///absolute/path"],
];

function issuesOf(input: unknown): Array<{ field: string; message: string }> {
  let thrown: unknown;
  try {
    parseBuildConfig(input);
  } catch (error) {
    thrown = error;
  }
  expect(thrown, "expected the config to be refused").toBeInstanceOf(BuilderError);
  expect((thrown as BuilderError).code).toBe("VALIDATION_FAILED");
  return (thrown as BuilderError).issues ?? [];
}

describe("hostile build configs", () => {
  it("has a valid base (so each case fails because of its one hostile field)", () => {
    expect(parseBuildConfig(BASE)).toMatchObject(BASE);
  });

  it.each(CASES)("refuses %s", (_label, patch, field, message) => {
    const issues = issuesOf({ ...BASE, ...patch });
    const issue = issues.find((candidate) => candidate.field === field);
    expect(issue, `an issue for ${field} in ${JSON.stringify(issues)}`).toBeDefined();
    if (typeof message === "string") expect(issue!.message).toContain(message);
    else expect(issue!.message).toMatch(message);
  });

  it("accepts realistic ignore patterns and wildcard-heavy ones (matching is linear-time, so they are harmless)", () => {
    const ignores = ["**/node_modules/**/*.js", "**/*.pyc", "*.md", "*a*a*a*a*a*a*a*a*b", "**/**/**/**/**/**/**/**/a", "file[0-9]", "x[^a-c]", "[]]", "a\\[b"];
    expect(parseBuildConfig({ ...BASE, ignores }).ignores).toEqual(ignores);
  });
});

describe("hostile config documents (YAML and JSON text)", () => {
  const refusedText = (text: string): BuilderError => {
    let thrown: unknown;
    try {
      parseBuildConfigText(text);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(BuilderError);
    expect((thrown as BuilderError).code).toBe("VALIDATION_FAILED");
    return thrown as BuilderError;
  };

  it("refuses a billion-laughs YAML bomb quickly, as an alias-count attack", () => {
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let level = 1; level < 10; level++) {
      const previous = String.fromCharCode(96 + level);
      const current = String.fromCharCode(97 + level);
      lines.push(`${current}: &${current} [${Array(9).fill(`*${previous}`).join(",")}]`);
    }
    const started = Date.now();
    const error = refusedText(`${lines.join("\n")}\nservice: dockerhub\n`);
    expect(error.message).toMatch(/the config is neither valid YAML nor JSON: .*alias/i);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("refuses a quadratic alias blow-up hidden in one field", () => {
    const error = refusedText(`x: &x [a, a, a, a, a, a, a, a]\ny: [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\n`);
    expect(error.message).toMatch(/alias/i);
  });

  it.each([
    ["an undefined alias", `service: *nothing\n`],
    ["a tab-indented mapping", "service: dockerhub\n\trepository: x\n"],
    ["an unterminated JSON object", '{"service": "dockerhub", "repository": '],
    ["a duplicated key", "service: dockerhub\nservice: ecr\n"],
  ])("refuses %s as invalid YAML", (_label, text) => {
    expect(refusedText(text).issues).toEqual([{ field: "(body)", message: "is not valid YAML or JSON" }]);
  });

  it("refuses a self-referencing alias without hanging on the cycle", () => {
    const error = refusedText("service: &s [*s]\nrepository: team/project\nsource: https://git.example.com/a.git\n");
    expect(error.issues).toContainEqual(expect.objectContaining({ field: "service" }));
  });

  it.each([
    ["a YAML sequence", "- a\n- b\n"],
    ["a YAML scalar", "just text\n"],
    ["a JSON array", "[1, 2]"],
    ["a JSON null", "null"],
    ["an empty document", ""],
  ])("refuses %s as not being an object", (_label, text) => {
    expect(refusedText(text).issues).toEqual([{ field: "(body)", message: "must be an object" }]);
  });

  it.each([
    ["__proto__ in YAML", `service: dockerhub\nrepository: team/project\nsource: https://git.example.com/a.git\n__proto__: {polluted: yes}\n`, "__proto__"],
    ["constructor in YAML", `service: dockerhub\nrepository: team/project\nsource: https://git.example.com/a.git\nconstructor: {prototype: {polluted: yes}}\n`, "constructor"],
    ["__proto__ in JSON", `{"service":"dockerhub","repository":"team/project","source":"https://git.example.com/a.git","__proto__":{"polluted":true}}`, "__proto__"],
    ["__proto__ inside a tag", `service: dockerhub\nrepository: team/project\nsource: https://git.example.com/a.git\ntags: [{Key: a, Value: b, __proto__: {polluted: yes}}]\n`, "tags.0.__proto__"],
    ["prototype in YAML", `service: dockerhub\nrepository: team/project\nsource: https://git.example.com/a.git\nprototype: {polluted: yes}\n`, "prototype"],
  ])("refuses %s as an unknown field and pollutes no prototype", (_label, text, field) => {
    const error = refusedText(text);
    expect(error.issues).toContainEqual({ field, message: "is not a known field" });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
  });
});
