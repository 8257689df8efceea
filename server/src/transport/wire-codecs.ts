import { toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import type { RetryPolicy, JobSpec } from "@jobwire/proto/jobwire/v1/job_pb";
import { EnqueueResponseSchema, type EnqueueRequest, type EnqueueResponse } from "@jobwire/proto/jobwire/v1/job_service_pb";
import type { AckRequest } from "@jobwire/proto/jobwire/v1/worker_service_pb";

/**
 * Reading EnqueueRequest and writing EnqueueResponse without protobuf-es
 * reflection.
 *
 * Reading EnqueueRequest without protobuf-es reflection: in a bulk-enqueue
 * profile, reflective decoding (createZeroMessage, findNumber, unsafeSet)
 * was the broker's largest cost. This reads the same wire format with
 * protobuf-es's BinaryReader into the same objects fromBinary makes (the
 * spec compares the two across many shapes of job, and checks that every
 * field of JobSpec is known here). Unknown fields are skipped, as any
 * protobuf reader does, so a newer client still works; unlike fromBinary,
 * they are not kept.
 */

/** The field numbers of jobwire.v1.JobSpec this decoder reads (the spec compares them with the schema). */
export const DECODED_JOB_SPEC_FIELDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/**
 * Calls `field` for each field of a message: the nested message at the
 * reader's position (length-prefixed), or up to `end`.
 */
function fields(r: BinaryReader, field: (no: number, wire: WireType) => void, end?: number): void {
  if (end === undefined) {
    const len = r.uint32(); // read before r.pos, which it moves
    end = r.pos + len;
  }
  if (end > r.len) throw new Error("premature end of input");
  while (r.pos < end) {
    const [no, wire] = r.tag();
    field(no, wire);
  }
  if (r.pos !== end) throw new Error("premature end of a nested message");
}

function seconds(r: BinaryReader): { seconds: bigint; nanos: number } {
  let s = 0n;
  let nanos = 0;
  fields(r, (no, wire) => {
    if (no === 1 && wire === WireType.Varint) s = BigInt(r.int64());
    else if (no === 2 && wire === WireType.Varint) nanos = r.int32();
    else r.skip(wire, no);
  });
  return { seconds: s, nanos };
}

function timestamp(r: BinaryReader): Timestamp {
  return { $typeName: "google.protobuf.Timestamp", ...seconds(r) };
}

function duration(r: BinaryReader): Duration {
  return { $typeName: "google.protobuf.Duration", ...seconds(r) };
}

function retryPolicy(r: BinaryReader): RetryPolicy {
  const p: RetryPolicy = { $typeName: "jobwire.v1.RetryPolicy", multiplier: 0 };
  fields(r, (no, wire) => {
    if (no === 1 && wire === WireType.LengthDelimited) p.initialBackoff = duration(r);
    else if (no === 2 && wire === WireType.LengthDelimited) p.maxBackoff = duration(r);
    else if (no === 3 && wire === WireType.Bit64) p.multiplier = r.double();
    else if (no === 4 && wire === WireType.Bit64) p.jitter = r.double();
    else r.skip(wire, no);
  });
  return p;
}

function header(r: BinaryReader, into: Record<string, string>): void {
  let k = "";
  let v = "";
  fields(r, (no, wire) => {
    if (no === 1 && wire === WireType.LengthDelimited) k = r.string();
    else if (no === 2 && wire === WireType.LengthDelimited) v = r.string();
    else r.skip(wire, no);
  });
  into[k] = v;
}

function jobSpec(r: BinaryReader): JobSpec {
  const s: JobSpec = {
    $typeName: "jobwire.v1.JobSpec",
    queue: "",
    type: "",
    payload: new Uint8Array(0),
    contentType: "",
    schedule: { case: undefined },
    priority: 0,
    idempotencyKey: "",
    headers: {},
    concurrencyKey: "",
    orderingKey: "",
  };
  fields(r, (no, wire) => {
    if (wire === WireType.LengthDelimited) {
      switch (no) {
        case 1: s.queue = r.string(); return;
        case 2: s.type = r.string(); return;
        case 3: s.payload = r.bytes(); return;
        case 4: s.contentType = r.string(); return;
        case 5: s.schedule = { case: "runAt", value: timestamp(r) }; return;
        case 6: s.schedule = { case: "delay", value: duration(r) }; return;
        case 9: s.leaseDuration = duration(r); return;
        case 10: s.retry = retryPolicy(r); return;
        case 11: s.idempotencyKey = r.string(); return;
        case 12: s.idempotencyTtl = duration(r); return;
        case 13: header(r, s.headers); return;
        case 14: s.concurrencyKey = r.string(); return;
        case 15: s.orderingKey = r.string(); return;
      }
    } else if (wire === WireType.Varint) {
      if (no === 7) return void (s.priority = r.int32());
      if (no === 8) return void (s.maxAttempts = r.int32());
    }
    r.skip(wire, no);
  });
  return s;
}

/** Reads every occurrence of the repeated message or string field 1 of a top-level message. */
function repeatedField1(bytes: Uint8Array, read: (r: BinaryReader) => void): void {
  const r = new BinaryReader(bytes);
  fields(
    r,
    (no, wire) => {
      if (no === 1 && wire === WireType.LengthDelimited) read(r);
      else r.skip(wire, no);
    },
    bytes.length,
  );
}

/** An EnqueueRequest from its encoded bytes; the same object fromBinary(EnqueueRequestSchema, bytes) makes. */
export function decodeEnqueueRequest(bytes: Uint8Array): EnqueueRequest {
  const req: EnqueueRequest = { $typeName: "jobwire.v1.EnqueueRequest", jobs: [] };
  repeatedField1(bytes, (r) => req.jobs.push(jobSpec(r)));
  return req;
}

/**
 * An EnqueueResponse, byte for byte what toBinary(EnqueueResponseSchema, res)
 * writes. Job ids are decimal digits, so every length fits in one byte.
 */
export function encodeEnqueueResponse(res: EnqueueResponse): Uint8Array {
  let size = 0;
  for (const r of res.results) {
    if (r.jobId.length > 100 || !/^[0-9]*$/.test(r.jobId)) return toBinary(EnqueueResponseSchema, res);
    size += 2 + (r.jobId.length > 0 ? 2 + r.jobId.length : 0) + (r.duplicate ? 2 : 0);
  }
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const r of res.results) {
    const idLen = r.jobId.length;
    out[pos++] = 0x0a; // results = 1, length-delimited
    out[pos++] = (idLen > 0 ? 2 + idLen : 0) + (r.duplicate ? 2 : 0);
    if (idLen > 0) {
      out[pos++] = 0x0a; // job_id = 1
      out[pos++] = idLen;
      pos += out.write(r.jobId, pos, "latin1");
    }
    if (r.duplicate) {
      out[pos++] = 0x10; // duplicate = 2, varint
      out[pos++] = 1;
    }
  }
  return out;
}

/** An AckRequest (repeated string lease_tokens = 1); the same object fromBinary makes, unknown fields dropped. */
export function decodeAckRequest(bytes: Uint8Array): AckRequest {
  const req: AckRequest = { $typeName: "jobwire.v1.AckRequest", leaseTokens: [] };
  repeatedField1(bytes, (r) => req.leaseTokens.push(r.string()));
  return req;
}
