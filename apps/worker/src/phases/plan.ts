import { resolveBaseImage } from "@m1l0/catalog";
import { BuilderError, type BuildConfig } from "@m1l0/config";
import { contextHasFile, type ExtraFile } from "@m1l0/context";
import { buildLabels, generateDockerfile, lastFilesystemStep, type DockerfileSpec } from "@m1l0/dockerfile";
import { detectLayouts, type DetectedLayouts } from "../layouts.js";
import { describeSource } from "@m1l0/source";
import { checkDockerfileBaseImages } from "../base-images.js";
import { BUILD_KEY_LABEL } from "../build-key.js";
import type { PipelineDeps } from "../pipeline.js";
import type { Attempt } from "./attempt.js";
import type { Fetched } from "./fetch.js";

/** Name of the generated Dockerfile inside the context; chosen not to clash with a user's. */
export const GENERATED_DOCKERFILE = ".m1l0.Dockerfile";

/** How the image is made: which Dockerfile, what is added to the context, which labels the build API adds. */
export interface Plan {
  dockerfile: string;
  extraFiles: ExtraFile[];
  /** the catalog base image (generated Dockerfiles only), as the daemon knows it */
  baseImage?: string;
  /** labels the build API puts on (a user's Dockerfile: one more step); generated ones carry theirs in a LABEL line */
  labels?: Record<string, string>;
  /** the layouts the generated Dockerfile installs (generated Dockerfiles only), for the record */
  layouts?: DetectedLayouts["names"];
  /** the generated Dockerfile's step after which the image's files are final (lastFilesystemStep) */
  filesFinalStep?: number;
}

export function resolveCatalogBase(deps: Pick<PipelineDeps, "catalog">, config: BuildConfig) {
  return resolveBaseImage(deps.catalog, {
    framework: config.framework,
    pyversion: config.pyversion,
    resource: config.resource,
    ...(config.version ? { version: config.version } : {}),
  });
}

/** The user's own Dockerfile when the request names one, else a generated one. */
export function planPhase(attempt: Attempt, fetched: Fetched): Promise<Plan> {
  return attempt.config.dockerfile ? planUserDockerfile(attempt, fetched, attempt.config.dockerfile) : planGenerated(attempt, fetched);
}

async function planUserDockerfile(attempt: Attempt, fetched: Fetched, dockerfile: string): Promise<Plan> {
  const { deps } = attempt;
  if (!(await contextHasFile(fetched.root, fetched.filter, dockerfile))) {
    throw new BuilderError("DOCKERFILE_NOT_FOUND", `dockerfile "${dockerfile}" was not found in the source (or is excluded by ignores)`);
  }
  void attempt.log.fetch(`using the source's own Dockerfile ${dockerfile}`);
  const images = await checkDockerfileBaseImages(fetched.root, dockerfile, deps.allowedBaseRegistries ?? ["docker.io"]);
  void attempt.log.fetch(`base images ${images.join(", ") || "(none)"}: allowed`);
  return { dockerfile, extraFiles: [], labels: { ...deps.imageLabels, ...(fetched.buildKey ? { [BUILD_KEY_LABEL]: fetched.buildKey } : {}) } };
}

async function planGenerated(attempt: Attempt, fetched: Fetched): Promise<Plan> {
  const { deps, config } = attempt;
  if (!(await contextHasFile(fetched.root, fetched.filter, config.entry))) {
    throw new BuilderError("ENTRY_NOT_FOUND", `entry file "${config.entry}" was not found in the source (or is excluded by ignores); set "entry" to the script that starts your project`);
  }
  const base = resolveCatalogBase(deps, config);
  const layouts = await detectLayouts(fetched.root, fetched.filter, base.publicImage);
  const labels = {
    ...buildLabels({
      config,
      buildId: attempt.buildId,
      source: describeSource(config.source),
      baseImage: base.publicImage,
      ...(fetched.commit ? { commit: fetched.commit } : {}),
      ...(fetched.buildKey ? { buildKey: fetched.buildKey } : {}),
    }),
    // the image cache's label too: one LABEL line, no extra build step
    ...deps.imageLabels,
  };
  void attempt.log.fetch(`base image ${base.publicImage}${base.image !== base.publicImage ? ` (served locally as ${base.image})` : ""}`);
  void attempt.log.fetch(layouts.description);
  const spec: DockerfileSpec = { baseImage: base.image, entry: config.entry, labels, ...layouts.spec, aptSources: deps.aptSources ?? [] };
  return {
    dockerfile: GENERATED_DOCKERFILE,
    baseImage: base.image,
    layouts: layouts.names,
    filesFinalStep: lastFilesystemStep(spec),
    extraFiles: [
      { name: GENERATED_DOCKERFILE, content: generateDockerfile(spec) },
      // The user's ignores are already applied while packing. This replacement makes the
      // daemon drop our Dockerfile (and itself) from the context before `COPY . ./`.
      { name: ".dockerignore", content: `${GENERATED_DOCKERFILE}\n.dockerignore\n` },
    ],
  };
}
