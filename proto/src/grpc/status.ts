import { create, toBinary } from "@bufbuild/protobuf";
import { base64Decode, base64Encode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeGrpcStatus, encodeGrpcStatus } from "../../fast/jobwire/view/v1/status_fast.js";

/**
 * A call's outcome in gRPC's trailers (or, for a trailers-only response, its
 * headers): grpc-status, grpc-message percent-encoded, and the error's
 * details as a google.rpc.Status in grpc-status-details-bin (unpadded
 * base64). Written and read as connect-es does, so that a caller cannot
 * tell the lean path from connect-es's (test/api/grpc-unary.test.ts
 * compares them).
 */

export type HeaderRecord = Record<string, string | string[] | number | undefined>;

/** The status fields for a failed call, after the error's metadata (which they override). */
export function errorTrailers(err: ConnectError, into: HeaderRecord = {}): HeaderRecord {
  err.metadata.forEach((v, k) => {
    into[k] = v;
  });
  into["grpc-status"] = String(err.code);
  into["grpc-message"] = encodeURIComponent(err.rawMessage);
  if (err.details.length > 0) {
    const details = err.details.map((d) =>
      "desc" in d
        ? { $typeName: "google.protobuf.Any" as const, typeUrl: `type.googleapis.com/${d.desc.typeName}`, value: toBinary(d.desc, create(d.desc, d.value)) }
        : { $typeName: "google.protobuf.Any" as const, typeUrl: `type.googleapis.com/${d.type}`, value: d.value },
    );
    const status = encodeGrpcStatus({ $typeName: "jobwire.view.v1.GrpcStatus", code: err.code, message: err.rawMessage, details });
    into["grpc-status-details-bin"] = base64Encode(status, "std_raw");
  }
  return into;
}

/**
 * The error a response's status fields describe, or undefined for OK (or
 * when there are none). grpc-status-details-bin wins over grpc-status and
 * grpc-message when present, as in connect-es. metadata becomes the error's.
 */
export function errorFromStatus(get: (name: string) => string | undefined, metadata: Headers): ConnectError | undefined {
  const details = get("grpc-status-details-bin");
  if (details !== undefined) {
    let status: ReturnType<typeof decodeGrpcStatus>;
    try {
      status = decodeGrpcStatus(base64Decode(details));
    } catch (err) {
      return ConnectError.from(err, Code.DataLoss);
    }
    if (status.code === 0) return undefined;
    const e = new ConnectError(status.message, status.code, metadata);
    e.details = status.details.map((any) => ({ type: any.typeUrl.substring(any.typeUrl.lastIndexOf("/") + 1), value: any.value }));
    return e;
  }
  const grpcStatus = get("grpc-status");
  if (grpcStatus === undefined || grpcStatus === "0") return undefined;
  const code = Number.parseInt(grpcStatus, 10);
  if (!(code in Code)) return new ConnectError(`invalid grpc-status: ${grpcStatus}`, Code.Internal, metadata);
  return new ConnectError(decodeGrpcMessage(get("grpc-message")), code, metadata);
}

function decodeGrpcMessage(m: string | undefined): string {
  if (!m) return "";
  try {
    return decodeURIComponent(m);
  } catch {
    return m;
  }
}

/** A response without grpc-status: the HTTP status says what went wrong (gRPC's http-grpc-status-mapping). */
export function codeFromHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}
