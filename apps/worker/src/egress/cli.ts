import Docker from "dockerode";
import type { Logger } from "pino";
import type { WorkerEnv } from "../env.js";
import { createBuildEgress } from "./index.js";
import { IptablesFirewall, removeRules } from "./firewall.js";

const USAGE = `usage: m1l0-worker egress <install|remove|remove-all|status>
  install     create the build network (BUILD_NETWORK) if missing and install its egress rules once
              (for deployments that install rules from a privileged init step)
  remove      remove the egress rules of BUILD_NETWORK's bridge (the network stays: docker network rm it)
  remove-all  remove every m1l0-egress rule and M1L0- chain on this host (all build networks)
  status      print the policy one build would get, installing the rules if they are missing
Stop the workers first: a running worker puts its rules back within BUILD_EGRESS_CHECK_SECONDS.`;

/** `node apps/worker/dist/main.js egress …`: the documented way to install and remove the rules. */
export async function egressCommand(args: string[], env: WorkerEnv, logger: Logger): Promise<number> {
  const [command] = args;
  const docker = new Docker({ socketPath: env.DOCKER_SOCKET });
  if (command === "remove-all") {
    for (const line of await removeRules(new IptablesFirewall())) console.log(`removed ${line}`);
    return 0;
  }
  if (command !== "install" && command !== "remove" && command !== "status") {
    console.error(USAGE);
    return 2;
  }
  const egress = createBuildEgress(env, docker, logger, new IptablesFirewall(), true);
  if (command === "remove") {
    const removed = await egress.remove();
    for (const line of removed) console.log(`removed ${line}`);
    if (removed.length === 0) console.log(`no egress rules of network ${env.BUILD_NETWORK} found (if the network is gone already, \`egress remove-all\` removes every m1l0-egress rule on this host)`);
    return 0;
  }
  const prepared = await egress.prepare();
  console.log(prepared.description);
  return 0;
}
