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
  internal: Code.Internal,
};

export function toConnectError(err: unknown, log: Logger, procedure: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof BrokerError) {
    if (err.kind === "internal") log.error("internal error", { procedure, err, cause: err.cause });
    return new ConnectError(err.message, CODES[err.kind]);
  }
  if (isDatabaseDown(err)) {
    log.warn("database unavailable", { procedure, err });
    return new ConnectError("the job store is unavailable; retry", Code.Unavailable);
  }
  log.error("unexpected error", { procedure, err });
  return new ConnectError("internal error", Code.Internal);
}

/** Connection-level failures (refused, reset, Postgres shutting down) are worth a retry by the client. */
function isDatabaseDown(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const code = (err as { code?: string }).code ?? "";
  return (
    ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "57P01", "57P02", "57P03", "08000", "08003", "08006"].includes(code) ||
    /Connection terminated|timeout exceeded when trying to connect/i.test((err as Error).message ?? "")
  );
}
