/**
 * Requests as protobuf-es init objects: a realistic, valid template per RPC
 * (so that a single odd field gets past the rest of validation and reaches
 * SQL), fully random messages drawn from the descriptors, and "pokes" that
 * set one field somewhere in a template to an extreme value.
 */
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import type { Rng } from "../common/rng.js";
import { DOUBLES, DURATIONS, INT32, INT64, QUEUES, TIMESTAMPS, TYPES, UINT64, longString, stringFor, type Pools } from "./values.js";

export type Init = Record<string, any>;

const MAX_DEPTH = 4;
const utf8 = new TextEncoder();

function isDuration(m: DescMessage): boolean {
  return m.typeName === "google.protobuf.Duration";
}
function isTimestamp(m: DescMessage): boolean {
  return m.typeName === "google.protobuf.Timestamp";
}
function isFieldMask(m: DescMessage): boolean {
  return m.typeName === "google.protobuf.FieldMask";
}

function pair([seconds, nanos]: [bigint, number]): Init {
  return { seconds, nanos };
}

function scalar(rng: Rng, t: ScalarType, name: string, pools: Pools, extreme: boolean): unknown {
  switch (t) {
    case ScalarType.STRING:
      return stringFor(name, rng, pools, extreme);
    case ScalarType.BYTES:
      return extreme
        ? rng.pick([new Uint8Array(0), rng.bytes(16), utf8.encode("{not json"), utf8.encode(longString(rng)), new Uint8Array(1_048_577)])
        : utf8.encode(`{"n":${rng.int(1000)}}`);
    case ScalarType.BOOL:
      return rng.bool();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return extreme ? rng.pick(INT32) : rng.range(0, 10);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return extreme ? rng.pick([0, 1, 2 ** 32 - 1, 2 ** 31]) : rng.range(0, 10);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return extreme ? rng.pick(INT64) : BigInt(rng.range(0, 10));
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return extreme ? rng.pick(UINT64) : BigInt(rng.range(0, 10));
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return extreme ? rng.pick(DOUBLES) : rng.pick([0, 0.5, 1, 2]);
  }
}

function message(rng: Rng, desc: DescMessage, pools: Pools, extreme: boolean, depth: number): Init {
  if (isDuration(desc)) return pair(extreme ? rng.pick(DURATIONS) : [BigInt(rng.range(1, 5)), 0]);
  if (isTimestamp(desc)) return pair(extreme ? rng.pick(TIMESTAMPS) : rng.pick(TIMESTAMPS.slice(0, 3)));
  if (isFieldMask(desc)) return { paths: rng.pick([["retry"], ["max_attempts", "lease_duration"], ["nope"], ["retry.multiplier"], [""], ["max_running"]]) };
  return randomMessage(rng, desc, pools, extreme, depth + 1);
}

function singular(rng: Rng, f: DescField, pools: Pools, extreme: boolean, depth: number): unknown {
  switch (f.fieldKind) {
    case "scalar":
      return scalar(rng, f.scalar, f.localName, pools, extreme);
    case "enum":
      return extreme && rng.bool(0.3) ? rng.pick([99, -1, 2 ** 31 - 1]) : rng.pick(f.enum.values).number;
    case "message":
      return message(rng, f.message, pools, extreme, depth);
    default:
      return undefined;
  }
}

/** A value for field `f`: scalar, message, list or map. */
export function fieldValue(rng: Rng, f: DescField, pools: Pools, extreme: boolean, depth: number): unknown {
  switch (f.fieldKind) {
    case "list": {
      const n = extreme && rng.bool(0.05) ? 1001 : rng.int(4);
      // A long list holds ordinary values: 1001 extreme strings could be a gigabyte.
      if (n > 4) extreme = false;
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) {
        if (f.listKind === "scalar") out.push(scalar(rng, f.scalar, f.localName, pools, extreme));
        else if (f.listKind === "enum") out.push(extreme && rng.bool(0.3) ? 99 : rng.pick(f.enum.values).number);
        else out.push(depth >= MAX_DEPTH ? {} : message(rng, f.message, pools, extreme, depth));
      }
      return out;
    }
    case "map": {
      const out: Record<string, unknown> = {};
      const n = rng.int(3);
      for (let i = 0; i < n; i++) {
        const key = f.mapKey === ScalarType.STRING ? stringFor("key", rng, pools, extreme) : String(rng.int(10));
        out[key] = f.mapKind === "scalar" ? scalar(rng, f.scalar, "value", pools, extreme) : f.mapKind === "enum" ? 0 : {};
      }
      return out;
    }
    default:
      return depth >= MAX_DEPTH && f.fieldKind === "message" ? {} : singular(rng, f, pools, extreme, depth);
  }
}

/** Sets field `f` on `obj`, through its oneof when it has one. */
export function setField(obj: Init, f: DescField, value: unknown): void {
  if (f.oneof) obj[f.oneof.localName] = { case: f.localName, value };
  else obj[f.localName] = value;
}

function getField(obj: Init, f: DescField): unknown {
  if (f.oneof) {
    const o = obj[f.oneof.localName] as { case?: string; value?: unknown } | undefined;
    return o?.case === f.localName ? o.value : undefined;
  }
  return obj[f.localName];
}

/** A random message: each field set or not, each oneof one of its cases or none. */
export function randomMessage(rng: Rng, desc: DescMessage, pools: Pools, extreme: boolean, depth = 0): Init {
  const obj: Init = {};
  for (const f of desc.fields) {
    if (f.oneof) continue;
    if (rng.bool(0.5)) setField(obj, f, fieldValue(rng, f, pools, extreme, depth));
  }
  for (const o of desc.oneofs) {
    if (rng.bool(0.3)) continue;
    const f = rng.pick(o.fields);
    setField(obj, f, fieldValue(rng, f, pools, extreme, depth));
  }
  return obj;
}

/** Short text for a value in a case's description. */
export function show(v: unknown): string {
  if (typeof v === "string") return v.length > 40 ? `"${v.slice(0, 12)}…" (${v.length} chars)` : JSON.stringify(v);
  if (typeof v === "bigint") return `${v}`;
  if (v instanceof Uint8Array) return `bytes(${v.length})`;
  if (Array.isArray(v)) return v.length > 3 ? `[${v.length} items]` : `[${v.map(show).join(", ")}]`;
  if (v && typeof v === "object") {
    const o = v as Init;
    if ("seconds" in o && Object.keys(o).length <= 2) return `{seconds: ${o.seconds}, nanos: ${o.nanos ?? 0}}`;
    if ("case" in o) return `${o.case}: ${show(o.value)}`;
    const keys = Object.keys(o);
    return keys.length > 4 ? `{${keys.length} fields}` : `{${keys.map((k) => `${k}: ${show(o[k])}`).join(", ")}}`;
  }
  return String(v);
}

/**
 * Sets one field somewhere in `obj` (descending into message fields and
 * list elements) to an extreme value; returns the path and the value, for
 * the case's description.
 */
export function poke(rng: Rng, desc: DescMessage, obj: Init, pools: Pools, depth = 0): string {
  if (desc.fields.length === 0) return "(no fields)";
  const f = rng.pick(desc.fields);
  const name = f.localName;
  if (f.fieldKind === "message" && !isDuration(f.message) && !isTimestamp(f.message) && !isFieldMask(f.message) && depth < 3 && rng.bool(0.7)) {
    const child = (getField(obj, f) as Init | undefined) ?? {};
    const path = poke(rng, f.message, child, pools, depth + 1);
    setField(obj, f, child);
    return `${name}.${path}`;
  }
  if (f.fieldKind === "list" && f.listKind === "message" && depth < 3 && rng.bool(0.7)) {
    const list = (getField(obj, f) as Init[] | undefined) ?? [];
    if (list.length === 0) list.push({});
    const i = rng.int(list.length);
    const path = poke(rng, f.message, list[i]!, pools, depth + 1);
    setField(obj, f, list);
    return `${name}[${i}].${path}`;
  }
  const value = fieldValue(rng, f, pools, true, depth);
  setField(obj, f, value);
  return `${name} = ${show(value)}`;
}

/** A realistic, valid request for each RPC; streams get a list of messages. */
export function template(rpcName: string, rng: Rng, pools: Pools): Init[] {
  const queue = rng.pick(QUEUES.slice(0, 3));
  const id = pools.jobIds.length ? rng.pick(pools.jobIds) : "1";
  const token = pools.tokens.length ? rng.pick(pools.tokens) : "1.6f1c1b46-8c1e-4d0a-9f64-4a4f5b7d2c11";
  const job = () => ({ queue, type: rng.pick(TYPES), payload: utf8.encode(`{"n":${rng.int(1000)}}`) });
  switch (rpcName) {
    case "JobService/Enqueue":
      return [{ jobs: Array.from({ length: rng.range(1, 3) }, job) }];
    case "JobService/GetJob":
    case "JobService/CancelJob":
      return [{ id }];
    case "WorkerService/Lease": {
      const open = { msg: { case: "open", value: { queues: [queue], workerId: "fuzz", maxInFlight: rng.range(1, 4), leaseDuration: { seconds: 2n } } } };
      return [open, ...Array.from({ length: rng.int(3) }, () => ({ msg: { case: "credit", value: { count: 1 } } }))];
    }
    case "WorkerService/Ack":
      return [{ leaseTokens: [token] }];
    case "WorkerService/Nack":
      return [{ leaseToken: token, error: "fuzz", permanent: rng.bool(0.2) }];
    case "WorkerService/Heartbeat":
      return [{ leaseTokens: [token], extendBy: { seconds: 2n } }];
    case "AdminService/Replay":
      return [rng.bool() ? { jobIds: [id], dryRun: rng.bool() } : { filter: { queue }, limit: 10, dryRun: true }];
    case "AdminService/ListJobs":
      return [{ queue, pageSize: 10 }];
    case "AdminService/GetQueueStats":
      return [{ queues: [queue] }];
    case "AdminService/SetQueueConfig":
      return [{ queue, retry: { initialBackoff: { seconds: 1n }, maxBackoff: { seconds: 10n }, multiplier: 2 }, maxAttempts: 5 }];
    case "AdminService/SetSchedule":
      return [{ schedule: { name: `fz-${rng.int(5)}`, cron: "0 3 * * *", job: job() } }];
    case "AdminService/DeleteSchedule":
      return [{ name: `fz-${rng.int(5)}` }];
    case "AdminService/ListSchedules":
    case "AdminService/WhoAmI":
      return [{}];
    default:
      if (rpcName.startsWith("reflection.")) {
        const req = rng.pick([
          { messageRequest: { case: "listServices", value: "" } },
          { messageRequest: { case: "fileContainingSymbol", value: "jobwire.v1.JobService" } },
          { messageRequest: { case: "fileByFilename", value: "jobwire/v1/job.proto" } },
        ]);
        return Array.from({ length: rng.range(1, 2) }, () => req);
      }
      if (rpcName.startsWith("AdminService/")) return [{ queue }];
      return [{}];
  }
}
