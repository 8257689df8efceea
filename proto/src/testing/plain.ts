import type { DescField, DescMessage } from "@bufbuild/protobuf";

/**
 * The plain shape of a protobuf-es message, and back, by reflection: what
 * a generated plain codec must agree with. Times become `<name>Ms`, whole
 * milliseconds as a Date reads them; milliseconds become a Timestamp with
 * non-negative nanos, or a Duration whose nanos have its seconds' sign.
 */

const TIMESTAMP = "google.protobuf.Timestamp";
const DURATION = "google.protobuf.Duration";

function isMillis(m: DescMessage | undefined): boolean {
  return m?.typeName === TIMESTAMP || m?.typeName === DURATION;
}

function messageOf(f: DescField): DescMessage | undefined {
  if (f.fieldKind === "message") return f.message;
  if (f.fieldKind === "list" && f.listKind === "message") return f.message;
  if (f.fieldKind === "map" && f.mapKind === "message") return f.message;
  return undefined;
}

function prop(f: DescField): string {
  return isMillis(messageOf(f)) ? `${f.localName}Ms` : f.localName;
}

type Any = Record<string, unknown>;

function msOf(t: { seconds: bigint; nanos: number } | undefined): number | undefined {
  return t === undefined ? undefined : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1_000_000);
}

function timeOf(typeName: string, ms: number): { seconds: bigint; nanos: number } {
  const seconds = typeName === TIMESTAMP ? Math.floor(ms / 1000) : Math.trunc(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1_000_000) };
}

/** The plain shape of an exact message. */
export function plainOf(schema: DescMessage, m: Any): Any {
  const out: Any = {};
  const value = (f: DescField, v: unknown): unknown => {
    const sub = messageOf(f);
    if (sub === undefined) return v;
    if (isMillis(sub)) return msOf(v as never);
    return plainOf(sub, v as Any);
  };
  for (const member of schema.members) {
    if (member.kind === "oneof") {
      const o = m[member.localName] as { case: string | undefined; value?: unknown };
      const f = member.fields.find((x) => x.localName === o.case);
      out[member.localName] = f === undefined ? { case: undefined } : { case: o.case, value: value(f, o.value) };
      continue;
    }
    const f = member;
    const v = m[f.localName];
    if (f.fieldKind === "list") out[prop(f)] = (v as unknown[]).map((x) => value(f, x));
    else if (f.fieldKind === "map") out[prop(f)] = Object.fromEntries(Object.entries(v as Any).map(([k, x]) => [k, value(f, x)]));
    else out[prop(f)] = v === undefined ? undefined : value(f, v);
  }
  return out;
}

/** The exact init shape of a plain message (for create()). */
export function exactOf(schema: DescMessage, p: Any): Any {
  const out: Any = {};
  const value = (f: DescField, v: unknown): unknown => {
    const sub = messageOf(f);
    if (sub === undefined) return v;
    if (isMillis(sub)) return timeOf(sub.typeName, v as number);
    return exactOf(sub, v as Any);
  };
  for (const member of schema.members) {
    if (member.kind === "oneof") {
      const o = p[member.localName] as { case: string | undefined; value?: unknown };
      const f = member.fields.find((x) => x.localName === o.case);
      if (f !== undefined) out[member.localName] = { case: o.case, value: value(f, o.value) };
      continue;
    }
    const f = member;
    const v = p[prop(f)];
    if (v === undefined) continue;
    if (f.fieldKind === "list") out[f.localName] = (v as unknown[]).map((x) => value(f, x));
    else if (f.fieldKind === "map") out[f.localName] = Object.fromEntries(Object.entries(v as Any).map(([k, x]) => [k, value(f, x)]));
    else out[f.localName] = value(f, v);
  }
  return out;
}
