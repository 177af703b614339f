import { describe, expect, it } from "vitest";
import { BuilderError, newBuildId, parseBuildConfig, parseBuildConfigText, BUILD_ID_PATTERN } from "../src/index.js";

// The original service's README sample, verbatim apart from `service` order.
const SEED = {
  service: "ecr",
  repository: "target/myproject",
  revision: "latest",
  namespace: "cheeprojects",
  name: "myproject",
  framework: "tensorflow",
  version: "2.6.0",
  pyversion: "3.6",
  resource: "cpu",
  entry: "main.py",
  tags: [
    { Key: "Project", Value: "mnist" },
    { Key: "Framework", Value: "tensorflow-cpu-2.4.0" },
  ],
  source: "https://github.com/myrepo/myproject.git",
  ignores: ["*.md", "*.npy", ".pytest_cache", ".gitignore", ".git", "__pycache__", "*.pyc", "tmp*", "checkpoints*", "models*", "backups", "checkpoints", "*.tar.gz", "data"],
};

function issuesOf(input: unknown): Array<{ field: string; message: string }> {
  try {
    parseBuildConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(BuilderError);
    expect((error as BuilderError).code).toBe("VALIDATION_FAILED");
    return (error as BuilderError).issues ?? [];
  }
  throw new Error("expected validation to fail");
}

describe("build config schema", () => {
  it("accepts the original service's seed config unchanged", () => {
    const config = parseBuildConfig(SEED);
    expect(config).toMatchObject({ service: "ecr", repository: "target/myproject", pyversion: "3.6", entry: "main.py" });
    expect(config.tags).toHaveLength(2);
    expect(config.ignores).toContain("data");
  });

  it("accepts the same config as YAML and as JSON text", () => {
    const yaml = `service: dockerhub
repository: target/myproject
source: https://git.example.com/me/myproject.git
pyversion: "3.6"
tags: [{Key: Project, Value: mnist}]
ignores: ['*.md', data]
`;
    expect(parseBuildConfigText(yaml)).toMatchObject({ service: "dockerhub", tags: [{ Key: "Project", Value: "mnist" }], ignores: ["*.md", "data"] });
    expect(parseBuildConfigText(JSON.stringify(SEED)).repository).toBe("target/myproject");
  });

  it("applies defaults for optional fields", () => {
    const config = parseBuildConfig({ service: "dockerhub", repository: "me/app", source: "https://example.com/a.git" });
    expect(config).toMatchObject({ revision: "latest", framework: "python", pyversion: "3.11", resource: "cpu", entry: "main.py", tags: [], ignores: [] });
  });

  it("names every missing required field", () => {
    const fields = issuesOf({}).map((issue) => issue.field).sort();
    expect(fields).toEqual(["repository", "service", "source"]);
  });

  it("names every unknown field, including inside tags", () => {
    const issues = issuesOf({ ...SEED, servce: "ecr", extra: 1, tags: [{ Key: "a", Value: "b", Colour: "red" }] });
    expect(issues.map((issue) => issue.field).sort()).toEqual(["extra", "servce", "tags.0.Colour"]);
    expect(issues.every((issue) => issue.message === "is not a known field")).toBe(true);
  });

  it("rejects wrong types with the field and reason", () => {
    const issues = issuesOf({ ...SEED, pyversion: 3.6, tags: "Project=mnist", ignores: [1] });
    const byField = Object.fromEntries(issues.map((issue) => [issue.field, issue.message]));
    expect(byField["pyversion"]).toMatch(/quote it in YAML/);
    expect(byField["tags"]).toBeDefined();
    expect(byField["ignores.0"]).toBeDefined();
  });

  it.each([
    ["service", "gcr", /dockerhub, ecr/],
    ["repository", "Target/MyProject", /lowercase/],
    ["repository", "a//b", /lowercase/],
    ["revision", "-bad", /valid image tag/],
    ["revision", "a".repeat(129), /valid image tag/],
    ["resource", "tpu", /cpu, gpu/],
    ["entry", "../etc/passwd", /relative path/],
    ["entry", "/abs/main.py", /relative path/],
    ["entry", "main.py\nRUN evil", /control characters/],
    ["dockerfile", "../Dockerfile", /relative path/],
    ["source", "ftp://example.com/x", /must be a URL/],
    ["source", "https://user:secret@example.com/x.git", /must not embed credentials/],
    ["source", "s3://bucket/file.zip", /s3:\/\/bucket\/key.tar.gz/],
    ["namespace", "a\u0000b", /control characters/],
    ["name", "\ud800x", /valid Unicode/],
    ["pyversion", "2.7", /Python version/],
  ])("rejects %s=%j", (field, value, reason) => {
    const issues = issuesOf({ ...SEED, [field]: value });
    const issue = issues.find((candidate) => candidate.field === field);
    expect(issue, JSON.stringify(issues)).toBeDefined();
    expect(issue!.message).toMatch(reason);
  });

  it("rejects tag keys and values with line breaks, and too many tags", () => {
    expect(issuesOf({ ...SEED, tags: [{ Key: "a\nb", Value: "v" }] })[0]!.field).toBe("tags.0.Key");
    expect(issuesOf({ ...SEED, tags: [{ Key: "a", Value: "v\r" }] })[0]!.field).toBe("tags.0.Value");
    expect(issuesOf({ ...SEED, tags: [{ Key: "a=b", Value: "v" }] })[0]).toEqual({ field: "tags.0.Key", message: "must not contain '='" });
    expect(issuesOf({ ...SEED, tags: Array.from({ length: 51 }, (_, i) => ({ Key: `k${i}`, Value: "v" })) })[0]!.field).toBe("tags");
  });

  it("rejects a non-object body and unparseable text clearly", () => {
    expect(issuesOf([1, 2])[0]!.field).toBe("(body)");
    expect(() => parseBuildConfigText("service: [unclosed")).toThrowError(/neither valid YAML nor JSON/);
  });
});

describe("build ids", () => {
  it("are prefixed, unique, time-sortable and fit the id pattern", () => {
    const a = newBuildId(1_000);
    const b = newBuildId(2_000);
    expect(a).toMatch(/^bld_[0-9a-z]{26}$/);
    expect(BUILD_ID_PATTERN.test(a)).toBe(true);
    expect(a < b).toBe(true);
    expect(newBuildId()).not.toBe(newBuildId());
  });
});
