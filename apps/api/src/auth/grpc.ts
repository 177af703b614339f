import type { Metadata, UntypedHandleCall, UntypedServiceImplementation } from "@grpc/grpc-js";
import { BuilderError } from "@m1l0/config";
import { toServiceError, type ErrorLogger } from "../grpc/errors.js";
import type { Authenticator, Principal } from "./principal.js";

const principals = new WeakMap<object, Principal>();

/** The authenticated caller of a call that went through requireCallAuth. */
export function principalOf(call: object): Principal {
  const principal = principals.get(call);
  if (!principal) throw new BuilderError("UNAUTHENTICATED", "this call was not authenticated");
  return principal;
}

/** The single `authorization` metadata value; several values count as malformed. */
function authorizationOf(metadata: Metadata): string | undefined {
  const values = metadata.get("authorization");
  if (values.length === 0) return undefined;
  if (values.length > 1) return "(several authorization values)";
  const [value] = values;
  return typeof value === "string" ? value : "(binary authorization value)";
}

/**
 * Wraps every method of a service: metadata `authorization: Bearer <token>` or the call ends
 * with UNAUTHENTICATED before the handler runs. Generic over the handler object, so a method
 * added to the service later is covered without anyone remembering to.
 */
export function requireCallAuth(handlers: UntypedServiceImplementation, authenticator: Authenticator, logger: ErrorLogger): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const guarded = (call: { metadata: Metadata; emit(event: "error", error: unknown): boolean }, callback?: (error: unknown) => void) => {
      let principal: Principal;
      try {
        principal = authenticator.authenticate(authorizationOf(call.metadata));
      } catch (error) {
        const serviceError = toServiceError(error, logger);
        if (typeof callback === "function") callback(serviceError);
        else call.emit("error", serviceError);
        return;
      }
      principals.set(call, principal);
      return (handler as (call: unknown, callback?: unknown) => unknown)(call, callback);
    };
    wrapped[name] = guarded as unknown as UntypedHandleCall;
  }
  return wrapped;
}
