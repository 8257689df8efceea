import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

/** Wire types, as in the protobuf encoding spec. */
export const VARINT = 0;
export const I64 = 1;
export const LEN = 2;
export const I32 = 5;

/** The Writer and Reader method for each scalar type, and its wire type. */
const SCALARS: Record<ScalarType, { method: string; wire: number; zero: string; ts: string }> = {
  [ScalarType.DOUBLE]: { method: "double", wire: I64, zero: "0", ts: "number" },
  [ScalarType.FLOAT]: { method: "float", wire: I32, zero: "0", ts: "number" },
  [ScalarType.INT64]: { method: "int64", wire: VARINT, zero: "0n", ts: "bigint" },
  [ScalarType.UINT64]: { method: "uint64", wire: VARINT, zero: "0n", ts: "bigint" },
  [ScalarType.INT32]: { method: "int32", wire: VARINT, zero: "0", ts: "number" },
  [ScalarType.FIXED64]: { method: "fixed64", wire: I64, zero: "0n", ts: "bigint" },
  [ScalarType.FIXED32]: { method: "fixed32", wire: I32, zero: "0", ts: "number" },
  [ScalarType.BOOL]: { method: "bool", wire: VARINT, zero: "false", ts: "boolean" },
  [ScalarType.STRING]: { method: "string", wire: LEN, zero: '""', ts: "string" },
  [ScalarType.BYTES]: { method: "bytes", wire: LEN, zero: "EMPTY_BYTES", ts: "Uint8Array" },
  [ScalarType.UINT32]: { method: "uint32", wire: VARINT, zero: "0", ts: "number" },
  [ScalarType.SFIXED32]: { method: "sfixed32", wire: I32, zero: "0", ts: "number" },
  [ScalarType.SFIXED64]: { method: "sfixed64", wire: I64, zero: "0n", ts: "bigint" },
  [ScalarType.SINT32]: { method: "sint32", wire: VARINT, zero: "0", ts: "number" },
  [ScalarType.SINT64]: { method: "sint64", wire: VARINT, zero: "0n", ts: "bigint" },
};

export function scalar(t: ScalarType) {
  return SCALARS[t];
}

/** A tag as the number the Writer writes and the Reader's switch compares: (field << 3) | wire. */
export function tag(no: number, wire: number): number {
  return no * 8 + wire;
}

/**
 * The test for "set" of an implicit-presence scalar, as protobuf-es's
 * toBinary decides it: not "", not empty bytes, not false, not 0 (so -0 is
 * skipped and NaN is written), not 0n.
 */
export function isSetExpr(t: ScalarType, v: string): string {
  switch (t) {
    case ScalarType.STRING:
      return `${v} !== ""`;
    case ScalarType.BYTES:
      return `${v}.length !== 0`;
    case ScalarType.BOOL:
      return v;
    default:
      return `${v} !== ${SCALARS[t].zero}`;
  }
}

export const TIMESTAMP = "google.protobuf.Timestamp";
export const DURATION = "google.protobuf.Duration";

/** Messages that plain shapes carry as epoch or span milliseconds. */
export function isMillis(m: DescMessage | undefined): m is DescMessage {
  return m !== undefined && (m.typeName === TIMESTAMP || m.typeName === DURATION);
}

/** The message a field refers to, directly, as a list element or as a map value. */
export function messageOf(f: DescField): DescMessage | undefined {
  switch (f.fieldKind) {
    case "message":
      return f.message;
    case "list":
      return f.listKind === "message" ? f.message : undefined;
    case "map":
      return f.mapKind === "message" ? f.message : undefined;
    default:
      return undefined;
  }
}

/** Fields in the order toBinary writes them: by number. */
export function sortedFields(m: DescMessage): DescField[] {
  return [...m.fields].sort((a, b) => a.number - b.number);
}

/** Refuses what the generated code does not handle, rather than writing something subtly wrong. */
export function checkSupported(m: DescMessage): void {
  for (const f of m.fields) {
    const where = `${m.typeName}.${f.name}`;
    if ("delimitedEncoding" in f && f.delimitedEncoding) throw new Error(`${where}: group (delimited) encoding is not supported`);
    if (f.presence === 3 /* LEGACY_REQUIRED */) throw new Error(`${where}: required fields are not supported`);
    if ("longAsString" in f && f.longAsString) {
      throw new Error(`${where}: jstype = JS_STRING is not supported`);
    }
    if (f.fieldKind === "enum" && !f.enum.open) throw new Error(`${where}: closed enums are not supported`);
    if (f.fieldKind === "list" && f.listKind === "enum" && !f.enum.open) throw new Error(`${where}: closed enums are not supported`);
    if (f.fieldKind === "map" && f.mapKind === "enum" && !f.enum.open) throw new Error(`${where}: closed enums are not supported`);
  }
}
