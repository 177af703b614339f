import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import type { HealthCheckRequestMessage, HealthCheckResponseMessage, ServingStatus } from "@m1l0/proto";
import type { Redis } from "ioredis";

/**
 * grpc.health.v1.Health for "" (the whole server) and each named service. Everything we
 * serve needs Redis, so all of them are NOT_SERVING while Redis does not answer a PING;
 * the probe runs in the background so Check answers at once.
 */
export class HealthReporter {
  private redisReachable = false;
  private shuttingDown = false;
  private probing = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly services: Set<string>;

  constructor(
    private readonly redis: Redis,
    serviceNames: string[],
    private readonly probeIntervalMs = 2_000,
  ) {
    this.services = new Set(["", ...serviceNames]);
  }

  async start(): Promise<void> {
    await this.probe();
    this.timer = setInterval(() => void this.probe(), this.probeIntervalMs);
    this.timer.unref();
  }

  /** Reports NOT_SERVING from now on (graceful shutdown) and stops probing. */
  stop(): void {
    this.shuttingDown = true;
    if (this.timer) clearInterval(this.timer);
    this.notify();
  }

  /** undefined for a service this server does not know. */
  statusOf(service: string): ServingStatus | undefined {
    if (!this.services.has(service)) return undefined;
    return this.redisReachable && !this.shuttingDown ? "SERVING" : "NOT_SERVING";
  }

  private async probe(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    const before = this.redisReachable;
    try {
      // a PING waits out the first connect and fails fast afterwards (producer connection)
      this.redisReachable = (await this.redis.ping()) === "PONG";
    } catch {
      this.redisReachable = false;
    } finally {
      this.probing = false;
    }
    if (before !== this.redisReachable) this.notify();
  }

  private notify(): void {
    for (const listener of this.listeners) listener();
  }

  handlers(): UntypedServiceImplementation {
    return {
      Check: (call: ServerUnaryCall<HealthCheckRequestMessage, HealthCheckResponseMessage>, callback: sendUnaryData<HealthCheckResponseMessage>) => {
        const service = call.request.service ?? "";
        const current = this.statusOf(service);
        if (current === undefined) {
          callback({ code: status.NOT_FOUND, details: `unknown service ${service}` });
          return;
        }
        callback(null, { status: current });
      },
      Watch: (call: ServerWritableStream<HealthCheckRequestMessage, HealthCheckResponseMessage>) => {
        const service = call.request.service ?? "";
        let last: ServingStatus | undefined;
        // per the health protocol, an unknown service is reported (SERVICE_UNKNOWN), not an error
        const send = () => {
          const current = this.statusOf(service) ?? "SERVICE_UNKNOWN";
          if (current === last) return;
          last = current;
          call.write({ status: current });
        };
        this.listeners.add(send);
        call.on("cancelled", () => this.listeners.delete(send));
        call.on("close", () => this.listeners.delete(send));
        send();
      },
    };
  }
}
