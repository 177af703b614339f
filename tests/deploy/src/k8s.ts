import { ROOT_DIR } from "@m1l0/e2e";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { run } from "./run.js";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** `kubectl kustomize DIR` (offline rendering), parsed into objects. */
export async function renderKustomization(dir: string): Promise<K8sObject[]> {
  const text = await run("kubectl", ["kustomize", path.join(ROOT_DIR, dir)], { timeoutMs: 60_000 });
  return parseAllDocuments(text).map((document) => document.toJS() as K8sObject);
}

type SchemaValidator = ((data: unknown) => boolean) & { errors?: Array<{ instancePath: string; message?: string; keyword: string; params: unknown }> | null };

/** The kubernetes-models schema module of an object's apiVersion and kind, e.g. IoK8sApiAppsV1DaemonSet. */
async function schemaOf(object: K8sObject): Promise<SchemaValidator> {
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["core", object.apiVersion];
  const pascal = (text: string) => text.charAt(0).toUpperCase() + text.slice(1);
  const name = `IoK8sApi${pascal(group!.split(".")[0]!)}${pascal(version!)}${object.kind}`;
  const module = (await import(`kubernetes-models/_schemas/${name}`)) as { validate: SchemaValidator };
  return module.validate;
}

/**
 * Validates an object against its Kubernetes schema (kubernetes-models: the API's OpenAPI
 * definitions, compiled). Those schemas allow unknown fields, as the API server's
 * non-strict decoding does, so a misspelt field (`imagePullPolice`) would pass: every
 * object is therefore watched while it is validated, and a key the validator never read is
 * a field the schema does not define. Returns the problems, empty when the object is valid.
 */
export async function validateK8sObject(object: K8sObject): Promise<string[]> {
  const validate = await schemaOf(object);
  const read = new WeakMap<object, Set<PropertyKey>>();
  const watch = <T>(value: T): T => {
    if (value === null || typeof value !== "object") return value;
    const keys = new Set<PropertyKey>();
    read.set(value, keys);
    return new Proxy(value, {
      get(target, key, receiver) {
        keys.add(key);
        return watch(Reflect.get(target, key, receiver) as unknown);
      },
      ownKeys(target) {
        // a validator that enumerates (maps such as labels, data) reads every key
        for (const key of Reflect.ownKeys(target)) keys.add(key);
        return Reflect.ownKeys(target);
      },
    });
  };
  const problems: string[] = [];
  if (!validate(watch(object))) for (const error of validate.errors ?? []) problems.push(`${error.instancePath || "/"} ${error.message ?? error.keyword} ${JSON.stringify(error.params)}`);
  const walk = (value: unknown, where: string) => {
    if (value === null || typeof value !== "object") return;
    const keys = read.get(value);
    for (const [key, child] of Object.entries(value)) {
      if (!keys?.has(key)) problems.push(`${where}/${key} is not a field of ${object.apiVersion} ${object.kind}`);
      else walk(child, `${where}/${key}`);
    }
  };
  walk(object, "");
  return problems;
}
