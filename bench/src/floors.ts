/**
 * The floors under an unchanged resubmit, measured in the same run as it: the worker's own ref
 * lookup and registry read called directly (same code, same URLs), and the git server's own
 * answer to `git ls-remote` from a shell. What the resubmit costs beyond their sum is ours.
 */
import { lookupRemoteImage } from "@m1l0/registry";
import { resolveGitRevision } from "@m1l0/source";
import type { Services } from "./stack.js";
import { runCommand } from "./util.js";

export interface ResubmitFloors {
  /** resolveGitRevision: the worker's ref advertisement over isomorphic-git */
  refLookupMs: number;
  /** `git ls-remote <url> <ref>` from a shell: the git server's own floor (a process per request) */
  lsRemoteMs: number;
  /** lookupRemoteImage: the worker's manifest (+ image config) read, as warm as on a worker */
  registryLookupMs: number;
}

/** Same policy as the test kit's workers: the local git server lives on loopback. */
const POLICY = { allowHttp: true, allowDir: false, allowPrivateHosts: true, hostAllowlist: ["127.0.0.0/8"] };

/** One sample of each floor, for `source` (a git URL with `#ref`) and the image at `reference` (host/repository:tag). */
export async function measureResubmitFloors(services: Services, source: string, image: { repository: string; tag: string }): Promise<ResubmitFloors> {
  const refStarted = performance.now();
  const commit = await resolveGitRevision({ source, policy: POLICY });
  const refLookupMs = performance.now() - refStarted;
  if (!commit) throw new Error(`the git server did not name the ref of ${source}`);

  const [url = source, ref = "HEAD"] = source.split("#");
  const lsRemote = await runCommand("git", ["ls-remote", url, ref]);
  if (!lsRemote.stdout.startsWith(commit)) throw new Error(`git ls-remote ${url} ${ref} answered ${lsRemote.stdout.slice(0, 80)}, the worker's lookup ${commit}`);

  const registryStarted = performance.now();
  const remote = await lookupRemoteImage(
    { registry: services.registryHost, repository: image.repository, tag: image.tag },
    { auth: { username: services.registryUsername, password: services.registryPassword, serveraddress: services.registryHost }, plainHttp: true },
  );
  const registryLookupMs = performance.now() - registryStarted;
  if (!remote) throw new Error(`the registry has no ${image.repository}:${image.tag}`);
  return { refLookupMs, lsRemoteMs: lsRemote.ms, registryLookupMs };
}
