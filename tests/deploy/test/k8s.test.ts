import { describe, expect, it } from "vitest";
import { renderKustomization, validateK8sObject, type K8sObject } from "../src/k8s.js";

type Container = { name: string; env?: Array<{ name: string; value?: string }>; volumeMounts?: Array<{ name: string; mountPath: string }>; securityContext?: Record<string, unknown>; args?: string[] };
type PodSpec = { containers: Container[]; volumes?: Array<{ name: string; hostPath?: { path: string; type?: string }; secret?: unknown }>; securityContext?: Record<string, unknown> };
const podSpec = (object: K8sObject) => (object.spec as { template: { spec: PodSpec } }).template.spec;
const find = (objects: K8sObject[], kind: string, name: string) => {
  const object = objects.find((candidate) => candidate.kind === kind && candidate.metadata.name === name);
  if (!object) throw new Error(`no ${kind} ${name} rendered`);
  return object;
};
// variables that carry a secret: each must come from a file (its *_FILE form), never a value
const SECRET_VARIABLES = ["REDIS_URL", "API_TOKENS", "DOCKERHUB_TOKEN", "REGISTRY_CREDENTIALS", "GIT_CREDENTIALS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

describe("deploy/k8s: kustomize manifests, validated against the Kubernetes schemas", () => {
  it("the validator catches a wrong type, a missing required field and a misspelt field (so a pass means something)", async () => {
    const objects = await renderKustomization("deploy/k8s");
    const daemonSet = structuredClone(find(objects, "DaemonSet", "worker"));
    expect(await validateK8sObject(daemonSet)).toEqual([]);
    const worker = podSpec(daemonSet).containers[0] as unknown as Record<string, unknown>;
    worker.image = 42;
    worker.imagePullPolice = "Always";
    delete (daemonSet.spec as Record<string, unknown>).selector;
    const problems = (await validateK8sObject(daemonSet)).join("\n");
    expect(problems).toMatch(/^\/spec\/template\/spec\/containers\/0\/image type \{"type":"string"\}$/m);
    expect(problems).toMatch(/^\/spec required \{"missingProperty":"selector"\}$/m);
    expect(problems).toMatch(/containers\/0\/imagePullPolice is not a field/);
  });

  for (const variant of ["deploy/k8s", "deploy/k8s/dind"]) {
    it(`${variant}: every rendered object is valid`, async () => {
      const objects = await renderKustomization(variant);
      expect(objects.map((object) => `${object.kind}/${object.metadata.name.replace(/-[a-z0-9]{10}$/, "")}`).sort()).toEqual(
        ["ConfigMap/m1l0-config", "DaemonSet/worker", "Deployment/api", "Namespace/m1l0", "Secret/m1l0-secrets", "Service/api", "Service/redis", "StatefulSet/redis"].sort(),
      );
      for (const object of objects) expect(await validateK8sObject(object), `${object.kind}/${object.metadata.name}`).toEqual([]);
      for (const object of objects.filter((candidate) => candidate.kind !== "Namespace")) expect(object.metadata.namespace).toBe("m1l0");
      // secrets only through files
      for (const workload of objects.filter((object) => ["Deployment", "DaemonSet"].includes(object.kind))) {
        for (const container of podSpec(workload).containers) {
          for (const variable of container.env ?? []) expect(SECRET_VARIABLES, `${workload.kind}/${container.name} sets ${variable.name}`).not.toContain(variable.name);
        }
      }
    });
  }

  it("socket workers: a DaemonSet on builder nodes mounting the node's Docker socket (hostPath, type Socket)", async () => {
    const objects = await renderKustomization("deploy/k8s");
    const daemonSet = find(objects, "DaemonSet", "worker");
    const spec = podSpec(daemonSet) as PodSpec & { nodeSelector?: Record<string, string> };
    expect(spec.nodeSelector).toEqual({ "m1l0.ai/builder": "true" });
    expect(spec.volumes?.find((volume) => volume.name === "docker-socket")?.hostPath).toEqual({ path: "/var/run/docker.sock", type: "Socket" });
    expect(spec.containers[0]!.volumeMounts).toContainEqual({ name: "docker-socket", mountPath: "/var/run/docker.sock" });
    // the API: unprivileged, read-only root, no socket
    const api = podSpec(find(objects, "Deployment", "api"));
    expect(api.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(api.volumes?.some((volume) => volume.hostPath)).toBe(false);
    // Redis: a StatefulSet whose config (a secret file) turns AOF on with noeviction
    const redis = find(objects, "StatefulSet", "redis");
    expect(podSpec(redis).containers[0]!.args).toEqual(["/etc/redis/redis.conf"]);
    const secret = find(objects, "Secret", "m1l0-secrets") as K8sObject & { stringData: Record<string, string> };
    expect(secret.stringData["redis.conf"]).toMatch(/^appendonly yes$/m);
    expect(secret.stringData["redis.conf"]).toMatch(/^maxmemory-policy noeviction$/m);
  });

  it("DinD variant: a privileged dockerd sidecar per worker on a shared socket, no host socket", async () => {
    const objects = await renderKustomization("deploy/k8s/dind");
    const spec = podSpec(find(objects, "DaemonSet", "worker"));
    expect(spec.containers.map((container) => container.name)).toEqual(["worker", "dind"]);
    const [worker, dind] = spec.containers as [Container, Container];
    expect(spec.volumes?.some((volume) => volume.hostPath)).toBe(false);
    expect(worker.env).toContainEqual({ name: "DOCKER_SOCKET", value: "/var/run/dind/docker.sock" });
    expect(dind.securityContext).toEqual({ privileged: true });
    expect(dind.args).toContain("--host=unix:///var/run/dind/docker.sock");
    expect(worker.volumeMounts).toContainEqual({ name: "dind-socket", mountPath: "/var/run/dind" });
  });
});
