import { create } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { LeaseResponseSchema, type LeaseResponse } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type { Job, JobState, Lease } from "../model.js";

/**
 * A hand-written protobuf encoder for the broker's hottest message: the
 * jobs in a LeaseResponse.
 *
 * protobuf-es encodes by reflection, and in a burn-down profile its
 * toBinary of lease batches was the largest cost in the broker: ~46 µs per
 * job, a quarter of the broker's CPU. This writes the same bytes directly
 * from the domain Lease (lease-encoding.spec.ts checks byte equality with
 * toBinary for many shapes of job). The bytes ride in the message's unknown
 * fields, which protobuf-es writes out verbatim as field 1 occurrences, so
 * connect-es serializes the response as usual and clients see an ordinary
 * LeaseResponse.
 *
 * It must follow jobwire.v1.Job and LeasedJob: a field added there must be
 * added here, or the spec's equality check fails.
 */

const STATE_NUMBER: Record<JobState, number> = {
  scheduled: 1,
  available: 2,
  running: 3,
  retryable: 4,
  completed: 5,
  dead: 6,
  cancelled: 7,
};

class Writer {
  buf: Buffer;
  pos = 0;

  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** An unsigned varint of up to 2^53. */
  varint(v: number): void {
    this.room(10);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  /** int32 and int64 as protobuf writes them: negatives as 10-byte two's complement. */
  int(v: number): void {
    if (v >= 0) return this.varint(v);
    let big = BigInt.asUintN(64, BigInt(v));
    this.room(10);
    while (big > 0x7fn) {
      this.buf[this.pos++] = Number(big & 0x7fn) | 0x80;
      big >>= 7n;
    }
    this.buf[this.pos++] = Number(big);
  }

  tag(no: number, wire: WireType): void {
    this.varint((no << 3) | wire);
  }

  string(no: number, s: string): void {
    if (s === "") return;
    const n = Buffer.byteLength(s);
    this.tag(no, WireType.LengthDelimited);
    this.varint(n);
    this.room(n);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  bytes(no: number, b: Uint8Array): void {
    if (b.byteLength === 0) return;
    this.tag(no, WireType.LengthDelimited);
    this.varint(b.byteLength);
    this.room(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }

  intField(no: number, v: number): void {
    if (v === 0) return;
    this.tag(no, WireType.Varint);
    this.int(v);
  }

  bool(no: number, v: boolean): void {
    if (!v) return;
    this.tag(no, WireType.Varint);
    this.varint(1);
  }

  /**
   * Starts a nested message: its tag, and one byte reserved for its length
   * (the usual case). Returns where that byte is, for end(). A pair of calls
   * rather than a callback: a closure per nested message showed in the
   * broker's profile at several per job.
   */
  begin(no: number): number {
    this.tag(no, WireType.LengthDelimited);
    this.room(1);
    return this.pos++;
  }

  /** Ends the message begun at lenAt: writes its length, moving the body if the length needs more than a byte. */
  end(lenAt: number): void {
    const start = lenAt + 1;
    const len = this.pos - start;
    if (len < 0x80) {
      this.buf[lenAt] = len;
      return;
    }
    const extra = varintSize(len) - 1;
    this.room(extra);
    this.buf.copy(this.buf, start + extra, start, this.pos);
    this.pos = lenAt;
    this.varint(len);
    this.pos += len;
  }

  /** google.protobuf.Timestamp; seconds and nanos as timestampFromDate makes them. */
  time(no: number, d: Date | null): void {
    if (!d) return;
    const ms = d.getTime();
    const seconds = Math.floor(ms / 1000);
    const nanos = (ms - seconds * 1000) * 1_000_000;
    const at = this.begin(no);
    this.intField(1, seconds);
    this.intField(2, nanos);
    this.end(at);
  }

  /** google.protobuf.Duration from milliseconds, as msToDuration makes it. */
  duration(no: number, ms: number): void {
    const seconds = Math.floor(ms / 1000);
    const nanos = Math.round((ms - seconds * 1000) * 1e6);
    const at = this.begin(no);
    this.intField(1, seconds);
    this.intField(2, nanos);
    this.end(at);
  }

  take(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

function writeJob(w: Writer, j: Job): void {
  w.string(1, j.id);
  w.string(2, j.queue);
  w.string(3, j.type);
  w.bytes(4, j.payload);
  w.string(5, j.contentType);
  w.intField(6, STATE_NUMBER[j.state]);
  w.intField(7, j.priority);
  w.intField(8, j.attempt);
  w.intField(9, j.maxAttempts);
  w.time(10, j.runAt);
  w.time(11, j.createdAt);
  w.time(12, j.finishedAt);
  for (const k in j.headers) {
    const at = w.begin(13);
    w.string(1, k);
    w.string(2, j.headers[k]!);
    w.end(at);
  }
  w.string(14, j.idempotencyKey ?? "");
  for (const e of j.errors) {
    const at = w.begin(15);
    w.intField(1, e.attempt);
    w.string(2, e.message);
    w.time(3, e.at);
    w.string(4, e.workerId);
    w.end(at);
  }
  w.time(16, j.leaseExpiresAt);
  w.bool(17, j.cancelRequested);
  if (j.leaseMs !== null) w.duration(18, j.leaseMs);
  w.string(19, j.workerId ?? "");
}

function writeLeasedJob(w: Writer, l: Lease): void {
  const at = w.begin(1);
  writeJob(w, l.job);
  w.end(at);
  w.string(2, l.token);
  w.time(3, l.expiresAt);
}

/** The bytes of one LeasedJob message (without its own tag and length). */
export function encodeLeasedJob(l: Lease): Uint8Array {
  const w = new Writer(256 + l.job.payload.byteLength);
  writeLeasedJob(w, l);
  return w.take();
}

/** Field 1 of LeaseResponse (jobs), length-delimited: the one-byte tag 0x0a. */
const JOBS_TAG_BYTES = 1;

/**
 * A LeaseResponse whose jobs are pre-encoded; toBinary writes the same bytes
 * as for the ordinary message.
 *
 * All the jobs go into one buffer, as one unknown field: toBinary writes an
 * unknown field as its tag followed by its data verbatim, so the data is
 * every job's bytes (each with its tag and length) minus the first tag.
 * One entry per job cost an allocation and a copy per job, in this encoder
 * and again in protobuf-es.
 */
export function leaseResponse(leases: Lease[]): LeaseResponse {
  const res = create(LeaseResponseSchema, {});
  if (leases.length === 0) return res;
  let size = 0;
  for (const l of leases) size += 320 + l.job.payload.byteLength;
  const w = new Writer(size);
  for (const l of leases) {
    const at = w.begin(1);
    writeLeasedJob(w, l);
    w.end(at);
  }
  res.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: w.take().subarray(JOBS_TAG_BYTES) }];
  return res;
}
