import { BuilderError } from "@m1l0/config";
import { untar } from "@m1l0/testkit";
import { createHash } from "node:crypto";
import type { ImageBuilder, ImageBuildRequest, LocalImage, PullRequest, PushRequest, RunRequest, RunResult } from "../../src/builder.js";

/**
 * A fake of the image builder port for unit tests: an in-memory daemon that reads the
 * context, walks the Dockerfile step by step like the classic builder (FROM must name an
 * image it holds, `RUN exit N` fails, unknown instructions are Dockerfile errors) and pushes
 * to and pulls from a FakeRegistry. builder.conformance.test.ts holds it to the real one.
 */
const FILE_INSTRUCTIONS = new Set(["RUN", "COPY", "ADD", "WORKDIR"]);
const INSTRUCTIONS = new Set(["FROM", "RUN", "COPY", "ADD", "LABEL", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD"]);

interface FakeImage extends LocalImage {
  id: string;
  labels: Record<string, string>;
}

const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

/** What the fake daemons push to: reference → image, with its digest. */
export class FakeRegistry {
  readonly images = new Map<string, FakeImage & { digest: string }>();
}

export interface FakeBuilderOptions {
  /** images the daemon holds from the start, as if pulled (base images) */
  baseImages?: string[];
  registry?: FakeRegistry;
  /** any FROM is held, as pulled (tests that do not care which base image the catalog names) */
  anyBase?: boolean;
}

export class FakeImageBuilder implements ImageBuilder {
  readonly images = new Map<string, FakeImage>();
  readonly registry: FakeRegistry;
  /** every call, in order, without contexts and credentials' secrets */
  readonly calls: Array<{ method: keyof ImageBuilder; reference: string; labels?: Record<string, string>; cacheFrom?: string[] }> = [];
  /** set to make every call fail as a stopped daemon does */
  down = false;
  /** the next build fails with this error (once) */
  failNextBuild: BuilderError | undefined;
  /** the next push fails with this error (once) */
  failNextPush: BuilderError | undefined;
  /** holds every build until it is released (to observe a build in progress, or abort it) */
  gate: Promise<void> | undefined;
  /**
   * what `python3` does in a run (the import check); unset: the image has no python3 (exit 127).
   * Gets the image's context files, as the generated Dockerfile copies them to its workdir.
   */
  python: ((request: RunRequest, files: ReadonlyMap<string, Buffer>) => RunResult | Promise<RunResult>) | undefined;
  /** what the build reports as a step's image (a RUN step can print a line that looks like the builder's); unset: the step's own */
  reportStepImage: ((step: number, imageId: string) => string) | undefined;
  /** the context files of each image built here */
  readonly files = new Map<string, ReadonlyMap<string, Buffer>>();

  private readonly anyBase: boolean;

  constructor(options: FakeBuilderOptions = {}) {
    this.anyBase = options.anyBase ?? false;
    this.registry = options.registry ?? new FakeRegistry();
    for (const reference of options.baseImages ?? []) this.images.set(reference, { id: sha256(`base ${reference}`), origin: "pulled", contentId: sha256(`layers of ${reference}`), labels: {} });
  }

  private checkUp(): void {
    if (this.down) throw new BuilderError("DAEMON_UNREACHABLE", "the worker's Docker daemon (fake) is unreachable: connect ENOENT");
  }

  async ping(): Promise<void> {
    this.checkUp();
  }

  async contentId(reference: string): Promise<string | undefined> {
    this.checkUp();
    return this.images.get(reference)?.contentId;
  }

  async inspect(reference: string): Promise<LocalImage | undefined> {
    this.checkUp();
    const image = this.images.get(reference);
    return image ? { origin: image.origin, contentId: image.contentId } : undefined;
  }

  async build(request: ImageBuildRequest): Promise<{ imageId: string }> {
    this.checkUp();
    this.calls.push({ method: "build", reference: request.tag, ...(request.labels ? { labels: request.labels } : {}), ...(request.cacheFrom ? { cacheFrom: request.cacheFrom } : {}) });
    const chunks: Buffer[] = [];
    for await (const chunk of request.context) chunks.push(Buffer.from(chunk as Buffer));
    await this.gate;
    request.signal?.throwIfAborted();
    const failure = this.failNextBuild;
    this.failNextBuild = undefined;
    if (failure) throw failure;
    const files = untar(Buffer.concat(chunks));
    const dockerfile = files.get(request.dockerfile)?.toString("utf8");
    if (dockerfile === undefined) throw new BuilderError("DOCKERFILE_ERROR", `Dockerfile error: Cannot locate specified Dockerfile: ${request.dockerfile}`);
    // one step per instruction: continuation lines (a trailing backslash) are joined
    const steps = dockerfile
      .replace(/\\\n/g, " ")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith("#"));
    let content = "";
    let labels: Record<string, string> = {};
    // what COPY and ADD could take: every file of the context
    const contextContent = [...files].sort(([a], [b]) => a.localeCompare(b)).map(([name, body]) => `${name}\n${body.toString("base64")}`).join("\n");
    for (const [index, step] of steps.entries()) {
      const [instruction = "", ...rest] = step.split(/\s+/);
      const keyword = instruction.toUpperCase();
      const argument = rest.join(" ");
      const line = `Step ${index + 1}/${steps.length} : ${keyword} ${argument}`;
      request.onLine(line);
      if (!INSTRUCTIONS.has(keyword)) throw new BuilderError("DOCKERFILE_ERROR", `Dockerfile error: dockerfile parse error line ${index + 1}: unknown instruction: ${keyword}`);
      if (keyword === "FROM") {
        if (this.anyBase && !this.images.has(argument)) this.images.set(argument, { id: sha256(`base ${argument}`), origin: "pulled", contentId: sha256(`layers of ${argument}`), labels: {} });
        const base = this.images.get(argument);
        if (!base) throw new BuilderError("BASE_IMAGE_UNAVAILABLE", `base image ${argument} is not available to the build daemon (pull access denied for ${argument}); ask the operator to make it pullable or pre-load it`);
        content = base.contentId;
        labels = { ...base.labels };
        this.images.set(base.id, base);
        request.onStepImage?.(index + 1, this.reportStepImage?.(index + 1, base.id) ?? base.id);
        continue;
      }
      const exit = /^exit (\d+)$|^(false)$/.exec(argument);
      if (keyword === "RUN" && exit && (exit[1] ?? "1") !== "0") {
        const code = exit[1] ?? "1";
        request.onLine(`ERROR: The command '/bin/sh -c ${argument}' returned a non-zero code: ${code}`);
        throw new BuilderError("BUILD_FAILED", `build failed at "${line}": The command '/bin/sh -c ${argument}' returned a non-zero code: ${code}`);
      }
      if (keyword === "LABEL") {
        for (const [, key = "", value = ""] of argument.matchAll(/("[^"]*"|[^\s="]+)=("[^"]*"|\S+)/g)) labels[key.replace(/^"|"$/g, "")] = value.replace(/^"|"$/g, "");
      }
      // like the classic builder, only steps that change files change the layers; the rest is metadata
      if (FILE_INSTRUCTIONS.has(keyword)) content = sha256(`${content}\n${step}${keyword === "COPY" || keyword === "ADD" ? `\n${contextContent}` : ""}`);
      const image: FakeImage = { id: sha256(`${content}\n${index}\n${JSON.stringify(labels)}`), origin: "built", contentId: content, labels: { ...labels } };
      this.images.set(image.id, image);
      this.stepImage(request, index + 1, image.id, files);
    }
    labels = { ...labels, ...request.labels };
    const id = sha256(`${content}\n${JSON.stringify(labels)}`);
    // like the classic builder: steps reused from a pulled cachefrom image are restored, not built here
    const restored = (request.cacheFrom ?? []).some((reference) => this.images.get(reference)?.origin === "pulled");
    this.images.set(request.tag, { id, origin: restored ? "pulled" : "built", contentId: content, labels });
    this.files.set(request.tag, files);
    return { imageId: id };
  }

  /** Reports a step's image, which runs like the finished one (the fake's files are the context's). */
  private stepImage(request: ImageBuildRequest, step: number, id: string, files: ReadonlyMap<string, Buffer>): void {
    this.files.set(id, files);
    request.onStepImage?.(step, this.reportStepImage?.(step, id) ?? id);
  }

  async push(request: PushRequest): Promise<{ digest: string }> {
    this.checkUp();
    this.calls.push({ method: "push", reference: request.reference });
    request.signal?.throwIfAborted();
    const failure = this.failNextPush;
    this.failNextPush = undefined;
    if (failure) throw failure;
    const image = this.images.get(request.reference);
    if (!image) throw new BuilderError("PUSH_FAILED", `push to ${request.registry} failed: An image does not exist locally with the tag: ${request.reference}`);
    const digest = sha256(`manifest of ${image.id}`);
    this.registry.images.set(request.reference, { ...image, digest });
    request.onLine(`${request.reference.split(":").at(-1)}: digest: ${digest}`);
    return { digest };
  }

  /** Runs `sh -c` scripts of echo, exit, sleep, touch and `ls /sys/class/net` as busybox would in the sandbox; python3 through `python`. */
  async run(request: RunRequest): Promise<RunResult> {
    this.checkUp();
    this.calls.push({ method: "run", reference: request.image });
    request.signal?.throwIfAborted();
    if (!this.images.has(request.image)) throw new Error(`create of a run of ${request.image} failed: No such image: ${request.image}`);
    const [program = "", ...args] = request.command;
    if (program === "python3" && this.python) return this.python(request, this.files.get(request.image) ?? new Map());
    const notFound = { exitCode: 127, stdout: "", stderr: `exec: "${program}": executable file not found in $PATH`, timedOut: false };
    if (program !== "sh" || args[0] !== "-c" || args[1] === undefined) return notFound;
    const result = { exitCode: 0, stdout: "", stderr: "", timedOut: false };
    const env = request.env ?? {};
    for (const statement of args[1].split(";").map((text) => text.trim().replace(/\$(\w+)/g, (_, name: string) => env[name] ?? ""))) {
      const [command = "", ...words] = statement.split(/\s+/);
      if (command === "exit") return { ...result, exitCode: Number(words[0] ?? "0") };
      if (command === "echo") {
        const toStderr = words.at(-1) === ">&2";
        const text = `${(toStderr ? words.slice(0, -1) : words).join(" ").replace(/^["']|["']$/g, "")}\n`;
        if (toStderr) result.stderr += text;
        else result.stdout += text;
        result.exitCode = 0;
      } else if (command === "sleep") {
        const ms = Number(words[0]) * 1000;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(ms, request.timeoutMs));
          request.signal?.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
        });
        request.signal?.throwIfAborted();
        if (ms >= request.timeoutMs) return { ...result, exitCode: -1, timedOut: true };
        result.exitCode = 0;
      } else if (command === "touch") {
        const file = words[0] ?? "";
        const writable = file.startsWith("/tmp/");
        if (!writable) result.stderr += `touch: ${file}: Read-only file system\n`;
        result.exitCode = writable ? 0 : 1;
      } else if (command === "ls" && words[0] === "/sys/class/net") {
        // the sandbox has no network: the loopback interface only
        result.stdout += "lo\n";
        result.exitCode = 0;
      } else {
        result.stderr += `sh: ${command}: not found\n`;
        result.exitCode = 127;
      }
    }
    return result;
  }

  async pull(request: PullRequest): Promise<void> {
    this.checkUp();
    this.calls.push({ method: "pull", reference: request.reference });
    request.signal?.throwIfAborted();
    const image = this.registry.images.get(request.reference);
    if (!image) throw new Error(`pull of ${request.reference} failed: manifest unknown`);
    this.images.set(request.reference, { id: image.id, origin: "pulled", contentId: image.contentId, labels: image.labels });
  }
}
