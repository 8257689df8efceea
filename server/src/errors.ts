/**
 * The broker's one error type. The domain throws BrokerError with a kind; the
 * transport maps kinds to gRPC status codes in one place
 * (transport/errors.ts). `cause` is for logs and is never sent to clients.
 */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "unavailable"
  | "unauthenticated"
  | "permission_denied"
  | "internal";

export class BrokerError extends Error {
  override name = "BrokerError";
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The request field at fault, for invalid_argument (e.g. "jobs[3].queue"). */
    readonly field?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function invalid(field: string, message: string): BrokerError {
  return new BrokerError("invalid_argument", `${field}: ${message}`, field);
}
