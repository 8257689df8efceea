import { Code, ConnectError } from "@connectrpc/connect";
import { BrokerError, type ErrorKind } from "../errors.js";
import type { Logger } from "../log.js";

/**
 * The one place where broker errors become gRPC statuses. A BrokerError
 * keeps its message (written for the client); anything else is a fault of
 * ours: it is logged with its cause and the client sees only INTERNAL.
 */
const CODES: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  internal: Code.Internal,
};

export function toConnectError(err: unknown, log: Logger, procedure: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof BrokerError) {
    if (err.kind === "internal") log.error("internal error", { procedure, err, cause: err.cause });
    else if (err.kind === "unavailable" && err.cause !== undefined) log.warn(err.message, { procedure, cause: err.cause });
    return new ConnectError(err.message, CODES[err.kind]);
  }
  log.error("unexpected error", { procedure, err });
  return new ConnectError("internal error", Code.Internal);
}
