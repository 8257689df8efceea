import { Code, ConnectError } from "@connectrpc/connect";

export { Code };

/**
 * JobwireError is every error a JobwireClient call rejects with. `code` is
 * the gRPC status code the broker answered (or the transport produced), so
 * callers can branch on it without importing connect-es; `cause` keeps the
 * original ConnectError for logging.
 *
 * Subclasses exist for the codes callers usually handle:
 *   NotFoundError           the job (or queue) does not exist
 *   InvalidArgumentError    the request broke a documented limit
 *   FailedPreconditionError the job is in a state that forbids the call
 *                           (cancelling a completed job, acking a lost lease)
 *   UnavailableError        the broker could not be reached, or is draining;
 *                           retried automatically before it reaches you
 *   DeadlineExceededError   the call's timeoutMs passed
 */
export class JobwireError extends Error {
  override name = "JobwireError";
  readonly code: Code;
  /** The code's name as gRPC spells it, e.g. "NOT_FOUND". */
  readonly codeName: string;
  /** The broker's message without the "[code]" prefix ConnectError adds. */
  readonly rawMessage: string;

  constructor(code: Code, rawMessage: string, options?: { cause?: unknown }) {
    super(`[${codeName(code)}] ${rawMessage}`, options);
    this.code = code;
    this.codeName = codeName(code);
    this.rawMessage = rawMessage;
  }
}

export class NotFoundError extends JobwireError {
  override name = "NotFoundError";
}
export class InvalidArgumentError extends JobwireError {
  override name = "InvalidArgumentError";
}
export class FailedPreconditionError extends JobwireError {
  override name = "FailedPreconditionError";
}
export class UnavailableError extends JobwireError {
  override name = "UnavailableError";
}
export class DeadlineExceededError extends JobwireError {
  override name = "DeadlineExceededError";
}

/**
 * Throw PermanentError from a handler to fail the job for good: the worker
 * nacks it with `permanent`, and the broker moves it to DEAD at once instead
 * of retrying. Any other thrown value is treated as transient.
 */
export class PermanentError extends Error {
  override name = "PermanentError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * The reason a handler's ctx.signal aborts with when CancelJob was called on
 * its job. A handler that rethrows it ends the job CANCELLED.
 */
export class JobCancelledError extends Error {
  override name = "JobCancelledError";
}

/**
 * The reason ctx.signal aborts with when the worker lost the job's lease
 * (it expired, and the job may already run elsewhere). The result of the
 * attempt is discarded.
 */
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
}

/**
 * The reason ctx.signal aborts with when the worker's shutdown timeout
 * passed before the handler finished. The attempt is nacked and retried.
 */
export class WorkerShutdownError extends Error {
  override name = "WorkerShutdownError";
}

const CODE_NAMES: Record<number, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/** Turns whatever an RPC threw into a JobwireError of the right subclass. */
export function toJobwireError(err: unknown): JobwireError {
  if (err instanceof JobwireError) return err;
  const ce = ConnectError.from(err);
  const Cls = errorClass(ce.code);
  return new Cls(ce.code, ce.rawMessage, { cause: err });
}

function errorClass(code: Code): typeof JobwireError {
  switch (code) {
    case Code.NotFound:
      return NotFoundError;
    case Code.InvalidArgument:
      return InvalidArgumentError;
    case Code.FailedPrecondition:
      return FailedPreconditionError;
    case Code.Unavailable:
      return UnavailableError;
    case Code.DeadlineExceeded:
      return DeadlineExceededError;
    default:
      return JobwireError;
  }
}

/**
 * True for errors worth retrying: the broker was unreachable or draining.
 * DEADLINE_EXCEEDED is not retried, because the call may have taken effect
 * and the caller's deadline is spent anyway.
 */
export function isTransient(err: unknown): boolean {
  const code = err instanceof JobwireError ? err.code : err instanceof ConnectError ? err.code : undefined;
  return code === Code.Unavailable;
}
