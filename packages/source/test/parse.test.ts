import { BuilderError } from "@m1l0/config";
import { describe, expect, it } from "vitest";
import { describeSource, fetchSource, parseGitSource } from "../src/index.js";
import { rejection } from "./helpers.js";

describe("parseGitSource", () => {
  it("splits Docker's url#ref:subdir convention", () => {
    expect(parseGitSource("https://git.example.com/team/repo.git")).toEqual({ url: "https://git.example.com/team/repo.git" });
    expect(parseGitSource("https://git.example.com/team/repo.git#main")).toEqual({ url: "https://git.example.com/team/repo.git", ref: "main" });
    expect(parseGitSource("https://git.example.com/team/repo.git#v1.2:models/mnist")).toEqual({
      url: "https://git.example.com/team/repo.git",
      ref: "v1.2",
      subdir: "models/mnist",
    });
    expect(parseGitSource("https://git.example.com/repo.git#:./models/")).toEqual({ url: "https://git.example.com/repo.git", subdir: "models" });
    expect(parseGitSource("https://git.example.com/repo.git#feature/x")).toEqual({ url: "https://git.example.com/repo.git", ref: "feature/x" });
    const sha = "0123456789abcdef0123456789abcdef01234567";
    expect(parseGitSource(`https://h/r.git#${sha}:sub`)).toEqual({ url: "https://h/r.git", ref: sha, subdir: "sub" });
  });

  it("rejects subdirectories leaving the repository, bad refs and embedded credentials", () => {
    const bad = ["https://h/r.git#main:../x", "https://h/r.git#main:a/../../x", "https://h/r.git#ma..in", "https://h/r.git#-rf", "https://user:secret@h/r.git"];
    for (const source of bad) {
      let caught: unknown;
      try {
        parseGitSource(source);
      } catch (error) {
        caught = error;
      }
      expect(caught, source).toBeInstanceOf(BuilderError);
      expect((caught as BuilderError).code).toBe("VALIDATION_FAILED");
      expect((caught as BuilderError).message).not.toContain("secret");
    }
  });
});

describe("describeSource", () => {
  it("drops credentials and query strings but keeps the ref", () => {
    expect(describeSource("https://user:tok3n@git.example.com/r.git?private_token=abc#main:sub")).toBe("https://git.example.com/r.git#main:sub");
    expect(describeSource("s3://bucket/path/app.tar.gz?versionId=1")).toBe("s3://bucket/path/app.tar.gz");
    expect(describeSource("dir:///srv/projects/mnist")).toBe("dir:///srv/projects/mnist");
    expect(describeSource("not a url //user:pw@host?x=1")).toBe("not a url //host");
  });
});

describe("fetchSource dispatch", () => {
  it("refuses unsupported schemes", async () => {
    const error = await rejection(fetchSource({ source: "ftp://host/repo.tar.gz", workDir: "/nonexistent", policy: { allowHttp: true, allowDir: true } }));
    expect(error.code).toBe("SOURCE_NOT_ALLOWED");
    expect(error.message).toContain("unsupported source scheme ftp");
  });
});
