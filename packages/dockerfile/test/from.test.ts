import { describe, expect, it } from "vitest";
import { disallowedBaseImages, extractBaseImages, normalizeImageReference, UnresolvableDockerfile } from "../src/index.js";

const repos = (text: string) => extractBaseImages(text).map((image) => image.repository);

describe("normalizeImageReference", () => {
  it.each([
    ["python:3.11", "docker.io", "docker.io/library/python"],
    ["python", "docker.io", "docker.io/library/python"],
    ["library/python:3.11-slim", "docker.io", "docker.io/library/python"],
    ["pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime", "docker.io", "docker.io/pytorch/pytorch"],
    ["docker.io/python", "docker.io", "docker.io/library/python"],
    ["index.docker.io/library/python", "docker.io", "docker.io/library/python"],
    ["registry-1.docker.io/team/app", "docker.io", "docker.io/team/app"],
    ["ghcr.io/org/img:1", "ghcr.io", "ghcr.io/org/img"],
    ["GHCR.IO/org/img", "ghcr.io", "ghcr.io/org/img"],
    ["127.0.0.1:5000/m1l0/base", "127.0.0.1:5000", "127.0.0.1:5000/m1l0/base"],
    ["localhost/img", "localhost", "localhost/img"],
    ["localhost:5000/img", "localhost:5000", "localhost:5000/img"],
    ["evil.com/python", "evil.com", "evil.com/python"],
    ["m1l0-local/python:3.11-bookworm", "docker.io", "docker.io/m1l0-local/python"],
    [`python@sha256:${"a".repeat(64)}`, "docker.io", "docker.io/library/python"],
    [`quay.io/a/b:tag@sha256:${"b".repeat(64)}`, "quay.io", "quay.io/a/b"],
  ])("%s → %s", (reference, registry, repository) => {
    expect(normalizeImageReference(reference)).toEqual({ registry, repository });
  });

  it.each(["", "Python:3", "python:", ":3.11", "evil.com/", "a//b", "python:3.11 extra", "-python", "a/B", "python@sha256:short", "http://evil.com/x", "python:tag:tag"])(
    "refuses %j",
    (reference) => expect(normalizeImageReference(reference)).toBeNull(),
  );
});

describe("extractBaseImages", () => {
  it("finds a plain FROM, with --platform and AS, and skips scratch", () => {
    expect(repos("FROM python:3.11\nRUN pip install x\n")).toEqual(["docker.io/library/python"]);
    expect(repos("FROM --platform=linux/amd64 ghcr.io/a/b:1 AS build\nFROM scratch\nCOPY --from=build /x /x\n")).toEqual(["ghcr.io/a/b"]);
    expect(repos("from Scratch\n")).toEqual([]);
  });

  it("follows stage names only after they are defined", () => {
    expect(repos("FROM python AS base\nFROM base\nFROM BASE AS again\n")).toEqual(["docker.io/library/python"]);
    // "builder" used before any stage has that name is an image on Docker Hub
    expect(repos("FROM builder\nFROM python AS builder\n")).toEqual(["docker.io/library/builder", "docker.io/library/python"]);
  });

  it("substitutes global ARG defaults, including ${VAR:-x} and ${VAR:+x} and ARGs built from ARGs", () => {
    const text = [
      "ARG REGISTRY=evil.example.com",
      'ARG IMAGE="${REGISTRY}/team/base" TAG=1.0',
      "ARG UNSET",
      "FROM $IMAGE:${TAG}",
      "FROM ${UNSET:-python}:3.11",
      "FROM ${TAG:+quay.io/x/y}",
    ].join("\n");
    expect(repos(text)).toEqual(["evil.example.com/team/base", "docker.io/library/python", "quay.io/x/y"]);
  });

  it("ignores ARGs declared after the first FROM (they are stage-scoped, not visible to FROM)", () => {
    expect(() => extractBaseImages("FROM python AS a\nARG X=evil.com/x\nFROM $X\n")).toThrow(UnresolvableDockerfile);
  });

  it("joins line continuations, skipping comments and blank lines inside them", () => {
    expect(repos("FROM \\\n  # a comment\n\n  evil.com/img:1 \\\n  AS x\n")).toEqual(["evil.com/img"]);
    // a FROM hidden in a continued RUN is part of the RUN, as Docker reads it
    expect(repos("FROM python\nRUN echo \\\nFROM evil.com/x\n")).toEqual(["docker.io/library/python"]);
  });

  it("honours the escape parser directive", () => {
    expect(repos("# escape=`\nFROM `\n  evil.com/img\n")).toEqual(["evil.com/img"]);
    // with the backtick escape a trailing backslash does not continue the line
    expect(() => extractBaseImages("# escape=`\nFROM python \\\nAS x\n")).toThrow(UnresolvableDockerfile);
    // a directive after a blank line is just a comment
    expect(repos("\n# escape=`\nFROM python \\\n  AS x\n")).toEqual(["docker.io/library/python"]);
  });

  it("reports a syntax directive's frontend image and COPY --from images", () => {
    const images = extractBaseImages("# syntax=docker/dockerfile:1\nFROM python AS a\nCOPY --from=evil.com/tools:1 /bin/x /x\nCOPY --from=a /y /y\nCOPY --from=0 /z /z\n");
    expect(images.map((image) => [image.via, image.repository, image.line])).toEqual([
      ["syntax", "docker.io/docker/dockerfile", 1],
      ["FROM", "docker.io/library/python", 2],
      ["COPY --from", "evil.com/tools", 3],
    ]);
  });

  it("is case-insensitive for instructions and tolerates CRLF and a BOM", () => {
    expect(repos("\uFEFFfRoM quay.io/a/b\r\nRUN true\r\n")).toEqual(["quay.io/a/b"]);
  });

  const refused: Array<[string, string]> = [
    ["no FROM at all", "RUN echo hi\n"],
    ["an empty FROM", "FROM\n"],
    ["an undefined ARG", "FROM $NOPE\n"],
    ["an ARG without default", "ARG X\nFROM ${X}\n"],
    ["an ARG re-declared without default", "ARG X=python\nARG X\nFROM $X\n"],
    ["a substring expansion", "ARG X=python\nFROM ${X:0:3}\n"],
    ["a pattern replacement", "ARG X=python\nFROM ${X/py/evil.com\\/}\n"],
    ["a non-colon default form (unsupported by the classic builder)", "FROM ${X-python}\n"],
    ["a nested expansion", "ARG A=python\nFROM ${X:-${A}}\n"],
    ["a $( command substitution", "FROM $(echo python)\n"],
    ["an unterminated brace", "FROM ${X\n"],
    ["an image that expands to two words", 'ARG X="python evil"\nFROM $X\n'],
    ["an unknown FROM flag", "FROM --network=host python\n"],
    ["a FROM with extra words", "FROM python AS a b\n"],
    ["a FROM with 'AS' missing", "FROM python builder\n"],
    ["an invalid stage name", "FROM python AS -x\n"],
    ["an uppercase image", "FROM Python\n"],
    ["a quoted image", 'FROM "python"\n'],
    ["an escaped character in the image", "FROM pyth\\on\n"],
    ["a URL as image", "FROM https://evil.com/x\n"],
    ["a repeated directive", "# escape=`\n# escape=\\\nFROM python\n"],
    ["an invalid escape directive", "# escape=x\nFROM python\n"],
    ["ONBUILD COPY --from", "FROM python\nONBUILD COPY --from=evil.com/x / /\n"],
    ["RUN --mount=from=", "FROM python\nRUN --mount=type=bind,from=evil.com/x,target=/x true\n"],
    ["COPY --from with a variable", "FROM python\nARG X=evil.com/x\nCOPY --from=$X / /\n"],
    ["an unterminated quote in ARG", 'ARG X="python\nFROM $X\n'],
    ["an invalid ARG name", "ARG 1X=python\nFROM python\n"],
    ["an over-long reference", `FROM ${"a".repeat(600)}\n`],
  ];
  it.each(refused)("refuses %s", (_label, text) => {
    expect(() => extractBaseImages(text)).toThrow(UnresolvableDockerfile);
  });
});

describe("disallowedBaseImages", () => {
  it("keeps only images whose registry is not allowed (docker.io spellings are one registry)", () => {
    const images = extractBaseImages("FROM python\nFROM index.docker.io/library/debian\nFROM ghcr.io/a/b\nFROM 127.0.0.1:5000/x\n");
    expect(disallowedBaseImages(images, ["DOCKER.IO", "127.0.0.1:5000"]).map((image) => image.reference)).toEqual(["ghcr.io/a/b"]);
    expect(disallowedBaseImages(images, ["registry-1.docker.io", "ghcr.io", "127.0.0.1:5000"])).toEqual([]);
    // a port is part of the registry
    expect(disallowedBaseImages(images, ["docker.io", "ghcr.io", "127.0.0.1"]).map((image) => image.registry)).toEqual(["127.0.0.1:5000"]);
  });
});
