import { loadCatalog } from "@m1l0/catalog";
import { buildConfigSchema, type BuildConfig, type BuildRecord } from "@m1l0/config";
import { BuildStore, createRedis } from "@m1l0/queue";
import type { RegistryResolver } from "@m1l0/registry";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { NO_WEBHOOKS } from "@m1l0/webhooks";
import { FixedNetworkEgress } from "../../src/egress/index.js";
import type { PipelineDeps } from "../../src/pipeline.js";
import { FakeImageBuilder } from "./fake-builder.js";

/**
 * The pipeline's unit-test rig: the real store on the real Redis (a prefix of its own), a
 * fake image builder and registry resolver behind our own ports, dir sources in a temp dir.
 */
export interface PipelineFixture {
  redis: Redis;
  store: BuildStore;
  dir: string;
  /** a source folder with `files`, as a dir:// source */
  project(files: Record<string, string>): string;
  deps(overrides?: Partial<PipelineDeps>): PipelineDeps;
  /** a queued build record of `config`, as the API creates it */
  submit(config: Partial<BuildConfig> & { source: string }): Promise<{ id: string; config: BuildConfig }>;
  close(): Promise<void>;
}

export const fakeRegistry: RegistryResolver = {
  async resolve(config) {
    const tag = config.revision ?? "latest";
    return { registry: "registry.test", repository: config.repository, tag, reference: `registry.test/${config.repository}:${tag}`, auth: async () => ({ username: "u", password: "p", serveraddress: "registry.test" }) };
  },
};

export function pipelineFixture(): PipelineFixture {
  const redis = createRedis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", "producer");
  const prefix = `test:${randomUUID()}:`;
  const store = new BuildStore(redis, prefix);
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-pipeline-test-"));
  const catalog = loadCatalog(process.env.CATALOG_OVERRIDES_FILE ? { overridesFile: process.env.CATALOG_OVERRIDES_FILE } : {});
  return {
    redis,
    store,
    dir,
    project(files) {
      const root = path.join(dir, `project-${randomUUID().slice(0, 8)}`);
      mkdirSync(root);
      for (const [name, content] of Object.entries(files)) writeFileSync(path.join(root, name), content);
      return `dir://${root}`;
    },
    deps(overrides = {}) {
      return {
        store,
        builder: new FakeImageBuilder({ anyBase: true }),
        imageLabels: { "ai.m1l0.image-cache": "unit" },
        registry: { dockerhub: fakeRegistry, ecr: undefined },
        catalog,
        sourcePolicy: { allowHttp: false, allowDir: true, dirRoots: [dir] },
        gitCredentials: [],
        workDir: dir,
        workerId: "w-unit",
        egress: new FixedNetworkEgress("none"),
        notifier: NO_WEBHOOKS,
        logger: pino({ level: "silent" }),
        ...overrides,
      };
    },
    async submit(fields) {
      const id = `bld_unit_${randomUUID().slice(0, 8)}`;
      const config = buildConfigSchema.parse({ service: "dockerhub", repository: "m1l0/unit", entry: "main.py", revision: "v1", ...fields });
      const now = new Date().toISOString();
      const record: BuildRecord = { id, status: "queued", config, createdAt: now, updatedAt: now, timestamps: { queued: now }, attempts: 0 };
      await store.create(record);
      return { id, config };
    },
    async close() {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
