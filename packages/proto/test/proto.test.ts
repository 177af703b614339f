import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  HEALTH_PROTO_PATH,
  IMAGE_BUILDER_PROTO_PATH,
  IMAGE_BUILDER_SERVICE_NAME,
  buildRequestToConfigInput,
  healthServiceDefinition,
  imageBuilderServiceDefinition,
  loadProtoDefinitions,
} from "../src/index.js";

interface FieldDescriptor {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}

const definitions = loadProtoDefinitions();

function fieldsOf(message: string): Array<[string, number, string]> {
  const entry = definitions[`m1l0_services.imagebuilder.v1.${message}`] as { type: { field: FieldDescriptor[] } } | undefined;
  if (!entry) throw new Error(`message ${message} is not defined`);
  return entry.type.field.map((field) => [field.name, field.number, field.label === "LABEL_REPEATED" ? `repeated ${field.typeName}` : field.type === "TYPE_STRING" ? "string" : field.typeName]);
}

describe("the wire contract", () => {
  it("ships its .proto files next to the code", () => {
    expect(existsSync(IMAGE_BUILDER_PROTO_PATH)).toBe(true);
    expect(existsSync(HEALTH_PROTO_PATH)).toBe(true);
  });

  it("keeps the original names and field numbers", () => {
    expect(fieldsOf("BuildConfig").map(([name, number]) => `${number}:${name}`)).toEqual(
      ["namespace", "name", "framework", "version", "pyversion", "resource", "entry", "revision", "source", "service", "repository", "dockerfile"].map((name, index) => `${index + 1}:${name}`),
    );
    expect(fieldsOf("BuildIgnores")).toEqual([["value", 1, "string"]]);
    expect(fieldsOf("BuildTags")).toEqual([["name", 1, "string"], ["value", 2, "string"]]);
    expect(fieldsOf("BuildRequest")).toEqual([
      ["id", 1, "string"],
      ["config", 2, "BuildConfig"],
      ["ignores", 3, "repeated BuildIgnores"],
      ["tags", 4, "repeated BuildTags"],
    ]);
    expect(fieldsOf("PushRequest")).toEqual([
      ["id", 1, "string"],
      ["config", 2, "BuildConfig"],
      ["tags", 3, "repeated BuildTags"],
    ]);
    expect(fieldsOf("FindRequest")).toEqual([["id", 1, "string"]]);
    expect(fieldsOf("FindResponse")).toEqual([["id", 1, "string"], ["image", 2, "string"], ["repository", 3, "string"]]);
    expect(fieldsOf("BuildResponse")).toEqual([["body", 1, "string"]]);
    expect(fieldsOf("PushResponse")).toEqual([["body", 1, "string"]]);
  });

  it("defines the service's methods with their streaming shape", () => {
    const service = imageBuilderServiceDefinition(definitions);
    expect(Object.fromEntries(Object.entries(service).map(([name, method]) => [name, [method.path, method.requestStream, method.responseStream]]))).toEqual({
      Build: [`/${IMAGE_BUILDER_SERVICE_NAME}/Build`, false, true],
      Push: [`/${IMAGE_BUILDER_SERVICE_NAME}/Push`, false, true],
      Find: [`/${IMAGE_BUILDER_SERVICE_NAME}/Find`, false, false],
    });
    expect(Object.keys(healthServiceDefinition(definitions))).toEqual(["Check", "Watch"]);
  });

  it("decodes an empty BuildRequest with defaults so absent fields are empty, not undefined", () => {
    const method = imageBuilderServiceDefinition(definitions).Build!;
    const decoded = method.requestDeserialize(Buffer.alloc(0)) as Record<string, unknown>;
    expect(decoded).toEqual({ id: "", config: null, ignores: [], tags: [] });
  });
});

describe("buildRequestToConfigInput", () => {
  it("drops empty strings so defaults apply and maps tags and ignores to the REST shape", () => {
    const input = buildRequestToConfigInput({
      id: "abc",
      config: { namespace: "", name: "mnist", framework: "python", version: "", pyversion: "3.11", resource: "", entry: "", revision: "v1", source: "https://h/r.git", service: "dockerhub", repository: "m1l0/mnist", dockerfile: "" },
      tags: [{ name: "Project", value: "mnist" }, { name: "Empty", value: "" }],
      ignores: [{ value: "*.md" }, { value: "data" }],
    });
    expect(input).toEqual({
      name: "mnist",
      framework: "python",
      pyversion: "3.11",
      revision: "v1",
      source: "https://h/r.git",
      service: "dockerhub",
      repository: "m1l0/mnist",
      tags: [{ Key: "Project", Value: "mnist" }, { Key: "Empty", Value: "" }],
      ignores: ["*.md", "data"],
    });
  });

  it("gives an empty object for a request without config, so validation names the required fields", () => {
    expect(buildRequestToConfigInput({ id: "x", config: null, tags: [], ignores: [] })).toEqual({});
  });
});
