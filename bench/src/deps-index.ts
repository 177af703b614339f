import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import path from "node:path";

/**
 * A local Python package index (PEP 503 "simple" API over HTTP) serving one source distribution
 * that pip must build, so the generated Dockerfile's `pip install -r requirements.txt` does real,
 * costly work offline (there is no PyPI here). The sdist carries an in-tree PEP 517 build backend
 * (pure Python, no build requirements to download) whose build_wheel
 *   1. computes a SHA-256 hash chain of `iterations` steps (CPU work, like compiling), and
 *   2. generates `dataBytes` of incompressible data (SHAKE-256 output seeded by the chain),
 * and packs both into the wheel, which pip then installs into site-packages. So the pip layer
 * costs download + build + install time and weighs `dataBytes`, like a real dependency layer.
 */
export interface DependencySpec {
  iterations: number;
  dataBytes: number;
}

export const PACKAGE_NAME = "m1l0-bench-deps";
const DIST = "m1l0_bench_deps-1.0";

const BACKEND = String.raw`"""In-tree PEP 517 backend of the benchmark's dependency (see bench/src/deps-index.ts)."""
import base64, hashlib, json, os, zipfile

NAME, VERSION = "m1l0_bench_deps", "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
METADATA = f"Metadata-Version: 2.1\nName: m1l0-bench-deps\nVersion: {VERSION}\nSummary: generated benchmark dependency\n"
WHEEL = "Wheel-Version: 1.0\nGenerator: m1l0-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _params():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "params.json")) as handle:
        return json.load(handle)


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    target = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "METADATA"), "w") as handle:
        handle.write(METADATA)
    with open(os.path.join(target, "WHEEL"), "w") as handle:
        handle.write(WHEEL)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    params = _params()
    digest = params["seed"].encode()
    checkpoints = []
    for step in range(params["iterations"]):
        digest = hashlib.sha256(digest).digest()
        if step % 100000 == 0:
            checkpoints.append(digest.hex())
    data = hashlib.shake_256(digest).digest(params["dataBytes"]) if params["dataBytes"] else b""
    files = {
        f"{NAME}/__init__.py": f"CHAIN = {digest.hex()!r}\nCHECKPOINTS = {checkpoints!r}\n".encode(),
        f"{NAME}/table.bin": data,
        f"{DIST_INFO}/METADATA": METADATA.encode(),
        f"{DIST_INFO}/WHEEL": WHEEL.encode(),
    }
    record = []
    for name, content in files.items():
        hashed = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={hashed},{len(content)}")
    record.append(f"{DIST_INFO}/RECORD,,")
    files[f"{DIST_INFO}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel_name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w", zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return wheel_name
`;

const PYPROJECT = `[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n`;
const PKG_INFO = `Metadata-Version: 2.1\nName: ${PACKAGE_NAME}\nVersion: 1.0\nSummary: generated benchmark dependency\n`;

export interface PackageIndex {
  /** lines for requirements.txt: the index, the trusted host and the requirement */
  requirements: string;
  url: string;
  sdistBytes: number;
  close(): Promise<void>;
}

/** Writes the sdist under `dir` and serves it on `host` (an address the build containers can reach). */
export async function startPackageIndex(dir: string, host: string, spec: DependencySpec): Promise<PackageIndex> {
  const source = path.join(dir, DIST);
  mkdirSync(source, { recursive: true });
  writeFileSync(path.join(source, "backend.py"), BACKEND);
  writeFileSync(path.join(source, "pyproject.toml"), PYPROJECT);
  writeFileSync(path.join(source, "PKG-INFO"), PKG_INFO);
  writeFileSync(path.join(source, "params.json"), JSON.stringify({ seed: "m1l0-bench", iterations: spec.iterations, dataBytes: spec.dataBytes }));
  const sdistName = `${DIST}.tar.gz`;
  execFileSync("tar", ["-C", dir, "-czf", path.join(dir, sdistName), DIST]);
  const sdist = readFileSync(path.join(dir, sdistName));
  const sha256 = createHash("sha256").update(sdist).digest("hex");

  const server: Server = createServer((request, response) => {
    const url = (request.url ?? "/").split("?")[0]!;
    if (url === "/simple/" || url === "/simple") {
      response.writeHead(200, { "content-type": "text/html" }).end(`<!DOCTYPE html><html><body><a href="/simple/${PACKAGE_NAME}/">${PACKAGE_NAME}</a></body></html>`);
    } else if (url === `/simple/${PACKAGE_NAME}/` || url === `/simple/${PACKAGE_NAME}`) {
      response.writeHead(200, { "content-type": "text/html" }).end(`<!DOCTYPE html><html><body><a href="/files/${sdistName}#sha256=${sha256}">${sdistName}</a></body></html>`);
    } else if (url === `/files/${sdistName}`) {
      response.writeHead(200, { "content-type": "application/gzip", "content-length": sdist.length }).end(sdist);
    } else {
      response.writeHead(404).end("not found");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve());
  });
  const address = server.address();
  if (typeof address !== "object" || !address) throw new Error("the package index has no address");
  const url = `http://${host}:${address.port}/simple/`;
  return {
    url,
    sdistBytes: sdist.length,
    requirements: `--index-url ${url}\n--trusted-host ${host}\n${PACKAGE_NAME}==1.0\n`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
