import { create, createFileRegistry, type DescMessage } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  type Duration,
  type Timestamp,
} from "@bufbuild/protobuf/wkt";
import type { Job, JobError } from "@jobwire/proto/jobwire/v1/job_pb";
import { WorkerService, type LeasedJob } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { durationToMs, timestampToMs } from "./convert.js";

/**
 * Reading lease batches without protobuf-es reflection, the worker's
 * largest single cost in a burn-down profile.
 *
 * The Lease stream is read with a schema whose only field is `repeated
 * bytes jobs = 1`: the same bytes on the wire as `repeated LeasedJob`, so
 * protobuf-es just slices them. decodeLeasedJob then reads each LeasedJob
 * by hand into the same objects fromBinary would make (the spec checks
 * equality with fromBinary across many shapes of job, and that the decoder
 * knows every field of jobwire.v1.Job). Fields it does not know are
 * skipped, as any protobuf reader does, so a newer broker still works.
 */

const rawFile = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "jobwire/client/raw_lease.proto",
    package: "jobwire.client",
    syntax: "proto3",
    messageType: [
      {
        name: "RawLeaseResponse",
        field: [{ name: "jobs", number: 1, type: FieldDescriptorProto_Type.BYTES, label: FieldDescriptorProto_Label.REPEATED, jsonName: "jobs" }],
      },
    ],
  }),
  () => undefined,
);

export interface RawLeaseResponse {
  jobs: Uint8Array[];
}

/** WorkerService.Lease, answering with each LeasedJob still encoded. */
export const rawLeaseMethod = {
  ...WorkerService.method.lease,
  output: rawFile.getMessage("jobwire.client.RawLeaseResponse") as DescMessage,
} as unknown as typeof WorkerService.method.lease;

/** WorkerService with only its Lease method, answering raw batches; for createClient. */
export const RawLeaseService = {
  ...WorkerService,
  methods: [rawLeaseMethod],
  method: { lease: rawLeaseMethod },
} as unknown as { typeName: string; methods: (typeof rawLeaseMethod)[]; method: { lease: typeof rawLeaseMethod } } & typeof WorkerService;

/**
 * Node's UTF-8 decoder behind Buffer#toString, callable on any Uint8Array
 * without making a view first: about half the cost of TextDecoder on a
 * subarray for the short strings of a job (six per job). Both replace
 * malformed sequences with U+FFFD alike. TextDecoder where it is missing.
 */
const utf8Slice = (Buffer.prototype as unknown as { utf8Slice?: (this: Uint8Array, start: number, end: number) => string }).utf8Slice;

class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  /** A varint as a number (exact up to 2^53; the low 32 bits are right beyond). */
  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new Error("malformed varint in a lease batch");
  }

  /** A varint as a signed 64-bit bigint. */
  int64(): bigint {
    // Up to 7 bytes (49 bits) is a non-negative number exactly: one BigInt, not one per byte.
    const start = this.pos;
    let small = 0;
    let mul = 1;
    for (let i = 0; i < 7; i++) {
      const b = this.buf[this.pos++]!;
      small += (b & 0x7f) * mul;
      if (b < 0x80) return BigInt(small);
      mul *= 128;
    }
    this.pos = start;
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asIntN(64, result);
      shift += 7n;
    }
    throw new Error("malformed varint in a lease batch");
  }

  /** int32: negatives travel as 10-byte varints; keep the low 32 bits. */
  int32(): number {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start < 10) return v | 0;
    this.pos = start;
    return Number(BigInt.asIntN(32, this.int64()));
  }

  bytesView(): Uint8Array {
    const n = this.varint();
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(): string {
    const n = this.varint();
    const s = utf8Slice !== undefined ? utf8Slice.call(this.buf, this.pos, this.pos + n) : textDecoder.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }

  /** A nested message: returns where it ends; the caller reads fields until pos reaches it. */
  sub(): number {
    const n = this.varint(); // not "this.pos + this.varint()": that adds to the old pos
    const end = this.pos + n;
    if (end > this.end) throw new Error("truncated message in a lease batch");
    return end;
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        return;
      case 2: {
        const n = this.varint(); // not "this.pos += this.varint()": that adds to the old pos
        this.pos += n;
        return;
      }
      case 5:
        this.pos += 4;
        return;
      default:
        throw new Error(`unsupported wire type ${wire} in a lease batch`);
    }
  }
}

const textDecoder = new TextDecoder();

// Nested messages are read in place: each reader below takes the position
// where its message ends (from r.sub()), rather than a Reader of its own.

function seconds<T extends "google.protobuf.Timestamp" | "google.protobuf.Duration">(
  r: Reader,
  end: number,
  typeName: T,
): { $typeName: T; seconds: bigint; nanos: number } {
  let s = 0n;
  let nanos = 0;
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 0x08) s = r.int64();
    else if (tag === 0x10) nanos = r.int32();
    else r.skip(tag & 7);
  }
  return { $typeName: typeName, seconds: s, nanos };
}

function timestamp(r: Reader, end: number): Timestamp {
  return seconds(r, end, "google.protobuf.Timestamp");
}

function duration(r: Reader, end: number): Duration {
  return seconds(r, end, "google.protobuf.Duration");
}

function jobError(r: Reader, end: number): JobError {
  const e: JobError = { $typeName: "jobwire.v1.JobError", attempt: 0, message: "", workerId: "" };
  while (r.pos < end) {
    const tag = r.varint();
    switch (tag) {
      case 0x08:
        e.attempt = r.int32();
        break;
      case 0x12:
        e.message = r.string();
        break;
      case 0x1a:
        e.at = timestamp(r, r.sub());
        break;
      case 0x22:
        e.workerId = r.string();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return e;
}

function mapEntry(r: Reader, end: number, into: Record<string, string>): void {
  let k = "";
  let v = "";
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 0x0a) k = r.string();
    else if (tag === 0x12) v = r.string();
    else r.skip(tag & 7);
  }
  into[k] = v;
}

/** The field numbers of jobwire.v1.Job this decoder reads (the spec compares them with the schema). */
export const DECODED_JOB_FIELDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];

function job(r: Reader, end: number): Job {
  const j: Job = {
    $typeName: "jobwire.v1.Job",
    id: "",
    queue: "",
    type: "",
    payload: new Uint8Array(0),
    contentType: "",
    state: 0,
    priority: 0,
    attempt: 0,
    maxAttempts: 0,
    headers: {},
    idempotencyKey: "",
    errors: [],
    cancelRequested: false,
    workerId: "",
  };
  while (r.pos < end) {
    const tag = r.varint();
    switch (tag >>> 3) {
      case 1: j.id = r.string(); break;
      case 2: j.queue = r.string(); break;
      case 3: j.type = r.string(); break;
      // A copy, so the job does not pin the whole batch's buffer. A plain
      // Uint8Array with its own ArrayBuffer: handlers get it as rawPayload,
      // and a Buffer from Node's shared pool would differ in deep equality
      // and expose other jobs' bytes through .buffer.
      case 4: j.payload = r.bytesView().slice(); break;
      case 5: j.contentType = r.string(); break;
      case 6: j.state = r.int32(); break;
      case 7: j.priority = r.int32(); break;
      case 8: j.attempt = r.int32(); break;
      case 9: j.maxAttempts = r.int32(); break;
      case 10: j.runAt = timestamp(r, r.sub()); break;
      case 11: j.createdAt = timestamp(r, r.sub()); break;
      case 12: j.finishedAt = timestamp(r, r.sub()); break;
      case 13: mapEntry(r, r.sub(), j.headers); break;
      case 14: j.idempotencyKey = r.string(); break;
      case 15: j.errors.push(jobError(r, r.sub())); break;
      case 16: j.leaseExpiresAt = timestamp(r, r.sub()); break;
      case 17: j.cancelRequested = r.varint() !== 0; break;
      case 18: j.leaseDuration = duration(r, r.sub()); break;
      case 19: j.workerId = r.string(); break;
      default: r.skip(tag & 7);
    }
  }
  return j;
}

/** One LeasedJob, from its encoded bytes; the same object fromBinary(LeasedJobSchema, bytes) makes. */
export function decodeLeasedJob(bytes: Uint8Array): LeasedJob {
  const r = new Reader(bytes);
  const lj: LeasedJob = { $typeName: "jobwire.v1.LeasedJob", leaseToken: "" };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 0x0a) lj.job = job(r, r.sub());
    else if (tag === 0x12) lj.leaseToken = r.string();
    else if (tag === 0x1a) lj.leaseExpiresAt = timestamp(r, r.sub());
    else r.skip(tag & 7);
  }
  return lj;
}

/**
 * What the worker reads of every job it is handed, without building the
 * Job message: no Timestamp objects (times come as epoch milliseconds), no
 * BigInt, none of the fields only JobInfo shows. The LeasedJob's bytes are
 * kept, and decodeLeasedJob reads them whole if a handler asks for
 * job.info. Building the full message per job was a fifth of the worker's
 * garbage in a burn-down.
 */
export interface LeaseView {
  /** False when the LeasedJob had no job in it (a broker bug; the worker logs and skips it). */
  hasJob: boolean;
  token: string;
  id: string;
  queue: string;
  type: string;
  payload: Uint8Array;
  contentType: string;
  priority: number;
  attempt: number;
  maxAttempts: number;
  headers: Record<string, string>;
  createdAtMs: number | undefined;
  leaseExpiresAtMs: number | undefined;
  leaseDurationMs: number | undefined;
  cancelRequested: boolean;
  /**
   * The encoded LeasedJob, for job.info: a view into the lease batch, which
   * it keeps alive while the job is held. Above LAZY_INFO_MAX_BYTES the job
   * is decoded whole at once instead (full), so a large payload is not held
   * twice, once copied and once in the batch.
   */
  bytes: Uint8Array | undefined;
  full: Job | undefined;
}

export const LAZY_INFO_MAX_BYTES = 16 * 1024;

/**
 * A Timestamp or Duration as whole milliseconds, as timestampToMs and
 * durationToMs (convert.ts) read the decoded message.
 */
function millis(r: Reader, end: number): number {
  let s = 0;
  let nanos = 0;
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 0x08) {
      const start = r.pos;
      s = r.varint();
      // A negative int64 is a 10-byte varint: read it exactly.
      if (r.pos - start === 10) {
        r.pos = start;
        s = Number(r.int64());
      }
    } else if (tag === 0x10) nanos = r.int32();
    else r.skip(tag & 7);
  }
  return s * 1000 + Math.floor(nanos / 1_000_000);
}

/**
 * Strings that repeat from job to job (queue, type, content type): the last
 * one decoded in each slot is reused when the bytes match, instead of
 * decoding and allocating the same short string per job.
 */
class RepeatCache {
  private bytes = new Uint8Array(0);
  private text = "";

  read(r: Reader): string {
    const n = r.varint();
    const start = r.pos;
    r.pos += n;
    const last = this.bytes;
    if (n === last.length) {
      const buf = r.buf;
      let i = 0;
      while (i < n && buf[start + i] === last[i]) i++;
      if (i === n) return this.text;
    }
    const sub = r.buf.subarray(start, start + n);
    this.text = utf8Slice !== undefined ? utf8Slice.call(r.buf, start, start + n) : textDecoder.decode(sub);
    // At most 64 bytes kept: longer strings are decoded every time.
    this.bytes = n <= 64 ? sub.slice() : new Uint8Array(0);
    return this.text;
  }
}

const queueCache = new RepeatCache();
const typeCache = new RepeatCache();
const contentTypeCache = new RepeatCache();

function viewJob(r: Reader, end: number, v: LeaseView): void {
  v.hasJob = true;
  while (r.pos < end) {
    const tag = r.varint();
    switch (tag >>> 3) {
      case 1: v.id = r.string(); break;
      case 2: v.queue = queueCache.read(r); break;
      case 3: v.type = typeCache.read(r); break;
      // A copy, for the reasons given in job() above.
      case 4: v.payload = r.bytesView().slice(); break;
      case 5: v.contentType = contentTypeCache.read(r); break;
      case 7: v.priority = r.int32(); break;
      case 8: v.attempt = r.int32(); break;
      case 9: v.maxAttempts = r.int32(); break;
      case 11: v.createdAtMs = millis(r, r.sub()); break;
      case 13: mapEntry(r, r.sub(), v.headers); break;
      case 17: v.cancelRequested = r.varint() !== 0; break;
      case 18: v.leaseDurationMs = millis(r, r.sub()); break;
      default: r.skip(tag & 7);
    }
  }
}

/** The worker's view of one LeasedJob (see LeaseView); the same values decodeLeasedJob would give. */
export function decodeLease(bytes: Uint8Array): LeaseView {
  if (bytes.length > LAZY_INFO_MAX_BYTES) return viewOf(decodeLeasedJob(bytes));
  const r = new Reader(bytes);
  const v: LeaseView = {
    hasJob: false,
    token: "",
    id: "",
    queue: "",
    type: "",
    payload: EMPTY,
    contentType: "",
    priority: 0,
    attempt: 0,
    maxAttempts: 0,
    headers: {},
    createdAtMs: undefined,
    leaseExpiresAtMs: undefined,
    leaseDurationMs: undefined,
    cancelRequested: false,
    bytes,
    full: undefined,
  };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 0x0a) viewJob(r, r.sub(), v);
    else if (tag === 0x12) v.token = r.string();
    else if (tag === 0x1a) v.leaseExpiresAtMs = millis(r, r.sub());
    else r.skip(tag & 7);
  }
  return v;
}

const EMPTY = new Uint8Array(0);

function viewOf(lj: LeasedJob): LeaseView {
  const j = lj.job;
  return {
    hasJob: j !== undefined,
    token: lj.leaseToken,
    id: j?.id ?? "",
    queue: j?.queue ?? "",
    type: j?.type ?? "",
    payload: j?.payload ?? EMPTY,
    contentType: j?.contentType ?? "",
    priority: j?.priority ?? 0,
    attempt: j?.attempt ?? 0,
    maxAttempts: j?.maxAttempts ?? 0,
    headers: j?.headers ?? {},
    createdAtMs: timestampToMs(j?.createdAt),
    leaseExpiresAtMs: timestampToMs(lj.leaseExpiresAt),
    leaseDurationMs: durationToMs(j?.leaseDuration),
    cancelRequested: j?.cancelRequested ?? false,
    bytes: undefined,
    full: j,
  };
}

/** The whole Job behind a view, for JobInfo. */
export function fullJob(v: LeaseView): Job {
  return v.full ?? decodeLeasedJob(v.bytes!).job!;
}
