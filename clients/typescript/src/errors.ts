import { Code, ConnectError } from "@connectrpc/connect";

export { Code };

/**
 * JobwireError is every error a JobwireClient call (and a Worker's run())
 * rejects with. Its message starts with the status code's name, lower case
 * as connect and the Go client write it, so a log line says what kind of
 * failure it was:
 *
 *   permission_denied: token billing-producer lacks scope admin (needed by AdminService.Replay)
 *
 * `code` is the gRPC status code (the Code enum, re-exported here) the
 * broker answered or the transport produced, so callers can branch on it
 * without importing connect-es; `codeName` is the name as gRPC spells it
 * ("PERMISSION_DENIED"); `rawMessage` is the broker's text alone; `cause`
 * keeps the original ConnectError for logging.
 *
 * Subclasses exist for the codes callers usually handle:
 *   NotFoundError           the job (or queue) does not exist
 *   InvalidArgumentError    the request broke a documented limit
 *   FailedPreconditionError the job is in a state that forbids the call
 *                           (cancelling a completed job, acking a lost lease)
 *   UnavailableError        no broker could be reached, or it was draining,
 *                           or the connection broke mid-call; retried (on
 *                           the next broker, when there are several) before
 *                           it reaches you
 *   DeadlineExceededError   the call's timeoutMs passed
 *   UnauthenticatedError    no token, or one the broker does not know
 *   PermissionDeniedError   the token lacks the scope or the queue
 *
 * The generated clients (client.jobs, client.workers, client.admin) are the
 * raw connect-es API and reject with connect-es's ConnectError instead.
 */
export class JobwireError extends Error {
  override name = "JobwireError";
  readonly code: Code;
  /** The code's name as gRPC spells it, e.g. "NOT_FOUND". */
  readonly codeName: string;
  /** The broker's message, without the code in front. */
  readonly rawMessage: string;

  constructor(code: Code, rawMessage: string, options?: { cause?: unknown }) {
    super(rawMessage === "" ? codeString(code) : `${codeString(code)}: ${rawMessage}`, options);
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
export class UnauthenticatedError extends JobwireError {
  override name = "UnauthenticatedError";
}
export class PermissionDeniedError extends JobwireError {
  override name = "PermissionDeniedError";
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

/** The code as gRPC spells it: "PERMISSION_DENIED". */
export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/** The code as error messages start with it: "permission_denied" (connect's and the Go client's spelling). */
export function codeString(code: Code): string {
  // connect spells CANCELLED with one L, and so does the Go client.
  return code === Code.Canceled ? "canceled" : codeName(code).toLowerCase();
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
    case Code.Unauthenticated:
      return UnauthenticatedError;
    case Code.PermissionDenied:
      return PermissionDeniedError;
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

/**
 * Turns an error that means "the call never got through to a broker" into
 * UNAVAILABLE, and returns any other error (as a ConnectError) unchanged.
 *
 * A broker that dies in the middle of a call (SIGKILL, a crashed machine)
 * closes the connection; the lean gRPC calls (proto/src/grpc) report that
 * as UNAVAILABLE themselves. A connection that cannot be made at all comes
 * out of connect-node as INTERNAL or ABORTED when the cause is a reset or
 * a failed TLS handshake (only a refused or unresolvable one is
 * UNAVAILABLE already). Those never reached a broker's handler, exactly as
 * a refused connection did not, so they are retried the same way, on
 * another broker when there is one, and a caller who sees one sees
 * UNAVAILABLE (as gRPC's own clients report a failed handshake). A call
 * whose own signal was aborted is the caller's cancellation and stays
 * CANCELED. The Go client does the
 * same (clients/go/codes.go, asUnavailable).
 */
export function asUnavailable(err: unknown, signal?: AbortSignal): ConnectError {
  const ce = ConnectError.from(err);
  if (!isBrokenConnection(ce, signal)) return ce;
  const what = isTlsFailure(ce) ? "the TLS handshake with the broker failed" : "the connection to the broker broke mid-call";
  return new ConnectError(`${what} (${ce.rawMessage})`, Code.Unavailable, ce.metadata, undefined, ce);
}

function isBrokenConnection(ce: ConnectError, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted) return false;
  switch (ce.code) {
    case Code.Unknown:
    case Code.Internal:
    case Code.Aborted:
      // connect-node's words for a socket or TLS failure underneath (the
      // lean gRPC calls, proto/src/grpc, say UNAVAILABLE themselves).
      return causeCodes(ce).some(isConnectionCode);
    default:
      return false;
  }
}

function isTlsFailure(ce: ConnectError): boolean {
  return causeCodes(ce).some((c) => TLS_CODE.test(c));
}

/** Node's and OpenSSL's error codes: a socket that failed, or a certificate or handshake that did. */
const SOCKET_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ERR_SOCKET_CLOSED",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_ERROR",
]);
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_|UNABLE_TO_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH)/;

function isConnectionCode(code: string): boolean {
  return SOCKET_CODES.has(code) || TLS_CODE.test(code);
}

/** The `code` of the error and of each of its causes. */
function causeCodes(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err, depth = 0; e !== null && typeof e === "object" && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") out.push(code);
  }
  return out;
}
