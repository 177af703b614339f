import type { Catalog } from "@m1l0/catalog";
import { BuilderError } from "@m1l0/config";
import { disallowedBaseImages, extractBaseImages, normalizeImageReference, normalizeRegistryHost, UnresolvableDockerfile } from "@m1l0/dockerfile";
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";

/** A Dockerfile is text of a few KiB; a huge one is refused rather than buffered. */
const MAX_DOCKERFILE_BYTES = 1024 * 1024;

/**
 * The operator's ALLOWED_BASE_REGISTRIES, or by default docker.io plus every registry the catalog
 * and its overrides use (so the service's own generated Dockerfiles are always allowed).
 */
export function allowedBaseRegistries(setting: string, catalog: Catalog): string[] {
  const listed = setting.split(",").map((entry) => entry.trim()).filter(Boolean);
  if (listed.length > 0) return [...new Set(listed.map(normalizeRegistryHost))];
  const images = [...catalog.entries.map((entry) => entry.image.replaceAll(/\{[a-z]+\}/g, "1")), ...Object.keys(catalog.imageOverrides), ...Object.values(catalog.imageOverrides)];
  const registries = new Set(["docker.io"]);
  for (const image of images) {
    const normalized = normalizeImageReference(image);
    if (normalized) registries.add(normalized.registry);
  }
  return [...registries];
}

/**
 * Refuses a user-supplied Dockerfile that would make the daemon pull from a registry outside the
 * allowed list, or whose images cannot be determined with certainty; runs before the daemon is asked.
 * `relPath` was already checked to be a regular file inside `root` (contextHasFile).
 */
export async function checkDockerfileBaseImages(root: string, relPath: string, allowed: readonly string[]): Promise<string[]> {
  const handle = await open(path.join(root, relPath), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  let text: string;
  try {
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size > MAX_DOCKERFILE_BYTES) {
      throw new BuilderError("DOCKERFILE_ERROR", `dockerfile "${relPath}" must be a regular file of at most ${MAX_DOCKERFILE_BYTES} bytes`);
    }
    text = await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
  let images;
  try {
    images = extractBaseImages(text);
  } catch (error) {
    if (error instanceof UnresolvableDockerfile) {
      throw new BuilderError("BASE_IMAGE_NOT_ALLOWED", `cannot tell which base images dockerfile "${relPath}" uses (${error.message}); write FROM with a literal image or an ARG default`, { cause: error });
    }
    throw error;
  }
  const refused = disallowedBaseImages(images, allowed);
  if (refused.length > 0) {
    const first = refused[0]!;
    throw new BuilderError(
      "BASE_IMAGE_NOT_ALLOWED",
      `base image ${first.reference} (${first.via}, line ${first.line} of ${relPath}) is from registry ${first.registry}, which is not in the worker's ALLOWED_BASE_REGISTRIES (${allowed.join(", ")})`,
    );
  }
  return images.map((image) => image.reference);
}
