import { ScalarType, type DescField, type DescMessage, type DescService } from "@bufbuild/protobuf";
import type { GeneratedFile, Printable } from "@bufbuild/protoplugin";
import { DURATION, LEN, TIMESTAMP, isMillis, isSetExpr, messageOf, scalar, sortedFields, tag } from "./fields.js";
import type { FilePlan, Options } from "./plugin.js";
import { Refs } from "./refs.js";

/**
 * The codecs of one .proto file. Two shapes:
 *
 * - exact: the protobuf-es message types (`Job`, with $typeName, bigint
 *   seconds in Timestamps), written and read byte for byte as toBinary and
 *   fromBinary do, unknown fields skipped.
 * - plain: JavaScript-native interfaces (`JobPlain`): the same fields, but
 *   Timestamp and Duration as milliseconds in a field named `<name>Ms`, and
 *   no $typeName, for the broker's lease batches (built from its domain
 *   objects) and the worker's views. Times are written from milliseconds
 *   as protobuf-es's timestampFromMs does, and read back as whole
 *   milliseconds (sub-millisecond nanos dropped). Bytes are read as
 *   copies, so that a plain message never pins or exposes its input.
 *
 * Both are straight-line: one `if` per field when writing, one `case` per
 * tag when reading, nested messages written into their parent's buffer.
 */
export function emitFile(f: GeneratedFile, plan: FilePlan, opts: Options): void {
  const refs = new Refs(f, plan.file, opts);
  f.preamble(plan.file);
  for (const m of plan.exact) emitMessage(refs, m, false);
  for (const m of plan.plain) {
    emitPlainInterface(refs, m);
    emitMessage(refs, m, true);
  }
  if (plan.millis) emitMillis(refs, plan);
  for (const s of plan.services) emitServiceTable(refs, s);
}

/** Per-shape names: JobPlain's functions are writeJobPlain, readJobPlain, ... */
function suffix(plain: boolean): string {
  return plain ? "Plain" : "";
}

/** The property a field is held in: its local name, with Ms for times in plain shapes. */
function prop(fd: DescField, plain: boolean): string {
  return plain && isMillis(messageOf(fd)) ? `${fd.localName}Ms` : fd.localName;
}

function emitMessage(refs: Refs, m: DescMessage, plain: boolean): void {
  const { f } = refs;
  const name = refs.name(m) + suffix(plain);
  const type: Printable = plain ? name : refs.shape(m);
  const Writer = refs.runtime("Writer");
  const Reader = refs.runtime("Reader");
  const Codec = refs.runtime("Codec", true);

  f.print(f.jsDoc(`Writes ${m.typeName}'s fields, without a tag or length of its own.`));
  f.print(f.export("function", `write${name}`), "(w: ", Writer, ", m: ", type, "): void {");
  for (const fd of sortedFields(m)) f.print(...writeField(refs, fd, plain));
  f.print("}");
  f.print();

  const repeats = plain ? m.fields.filter((fd) => refs.opts.repeats.includes(`${m.typeName}.${fd.name}`)) : [];
  for (const fd of repeats) {
    f.print("const ", repeatName(refs, m, fd), " = new ", refs.runtime("RepeatedString"), "();");
  }
  f.print(f.jsDoc(`Reads ${m.typeName}'s fields up to end, into m when given (a field repeated on the wire merges, as protobuf does).`));
  f.print(f.export("function", `read${name}`), "(r: ", Reader, ", end: number, m: ", type, " = {");
  for (const line of defaults(refs, m, plain)) f.print("  ", ...line);
  f.print("}): ", type, " {");
  f.print("  while (r.pos < end) {");
  f.print("    const t = r.tag();");
  f.print("    switch (t) {");
  for (const fd of sortedFields(m)) {
    if (repeats.includes(fd)) f.print(`      case ${tag(fd.number, LEN)}: ${`m.${fd.localName}`} = ${repeatName(refs, m, fd)}.read(r); break;`);
    else for (const line of readField(refs, fd, plain)) f.print("      ", ...line);
  }
  f.print("      default:");
  f.print("        r.skip(t);");
  f.print("    }");
  f.print("  }");
  f.print("  r.done(end);");
  f.print("  return m;");
  f.print("}");
  f.print();

  f.print(f.jsDoc(`${m.typeName} as bytes; pass a Writer to write after bytes already in it (a frame header), or to size it.`));
  f.print(f.export("function", `encode${name}`), "(m: ", type, ", w = new ", Writer, "()): Uint8Array {");
  f.print("  const start = w.pos;");
  f.print("  write", name, "(w, m);");
  f.print("  return w.buf.subarray(start, w.pos);");
  f.print("}");
  f.print();
  f.print(f.export("function", `decode${name}`), "(bytes: Uint8Array): ", type, " {");
  f.print("  return read", name, "(new ", Reader, "(bytes), bytes.length);");
  f.print("}");
  f.print();
  const fields = sortedFields(m).map((fd) => fd.number).join(", ");
  f.print(f.export("const", `${name}Codec`), ": ", Codec, "<", type, "> = {");
  f.print("  typeName: ", f.string(m.typeName), ",");
  f.print("  fields: [", fields, "],");
  f.print("  encode: encode", name, ",");
  f.print("  decode: decode", name, ",");
  f.print("};");
  f.print();
}

/** The module-level cache of a field whose strings repeat from message to message. */
function repeatName(refs: Refs, m: DescMessage, fd: DescField): string {
  return `${refs.name(m)}_${fd.localName}Repeats`;
}

// ---- writing ---------------------------------------------------------------

function writeField(refs: Refs, fd: DescField, plain: boolean): Printable[] {
  const v = `m.${prop(fd, plain)}`;
  switch (fd.fieldKind) {
    case "scalar": {
      const s = scalar(fd.scalar);
      const t = tag(fd.number, s.wire);
      if (fd.oneof) return [`  if (m.${fd.oneof.localName}.case === "${fd.localName}") { w.tag(${t}); w.${s.method}(m.${fd.oneof.localName}.value); }`];
      const cond = fd.presence === 1 /* EXPLICIT */ ? `${v} !== undefined` : isSetExpr(fd.scalar, v);
      return [`  if (${cond}) { w.tag(${t}); w.${s.method}(${v}); }`];
    }
    case "enum": {
      const t = tag(fd.number, 0);
      if (fd.oneof) return [`  if (m.${fd.oneof.localName}.case === "${fd.localName}") { w.tag(${t}); w.int32(m.${fd.oneof.localName}.value); }`];
      const cond = fd.presence === 1 ? `${v} !== undefined` : `${v} !== 0`;
      return [`  if (${cond}) { w.tag(${t}); w.int32(${v}); }`];
    }
    case "message": {
      const t = tag(fd.number, LEN);
      if (fd.oneof) {
        const o = `m.${fd.oneof.localName}`;
        return [`  if (${o}.case === "${fd.localName}") { w.tag(${t}); const a = w.fork(); `, ...writeMessage(refs, fd.message, `${o}.value`, plain), `; w.join(a); }`];
      }
      return [`  if (${v} !== undefined) { w.tag(${t}); const a = w.fork(); `, ...writeMessage(refs, fd.message, v, plain), `; w.join(a); }`];
    }
    case "list": {
      if (fd.listKind === "message") {
        const t = tag(fd.number, LEN);
        return [`  for (const v of ${v}) { w.tag(${t}); const a = w.fork(); `, ...writeMessage(refs, fd.message, "v", plain), "; w.join(a); }"];
      }
      const method = fd.listKind === "enum" ? "int32" : scalar(fd.scalar).method;
      const wire = fd.listKind === "enum" ? 0 : scalar(fd.scalar).wire;
      if (fd.packed) {
        return [`  if (${v}.length !== 0) { w.tag(${tag(fd.number, LEN)}); const a = w.fork(); for (const v of ${v}) w.${method}(v); w.join(a); }`];
      }
      return [`  for (const v of ${v}) { w.tag(${tag(fd.number, wire)}); w.${method}(v); }`];
    }
    case "map": {
      const key = scalar(fd.mapKey);
      const keyExpr = key.ts === "string" ? "k" : key.ts === "bigint" ? "BigInt(k)" : key.ts === "boolean" ? 'k === "true"' : "Number(k)";
      const out: Printable[] = [
        `  for (const k in ${v}) { w.tag(${tag(fd.number, LEN)}); const a = w.fork(); w.tag(${tag(1, key.wire)}); w.${key.method}(${keyExpr}); `,
      ];
      const value = `${v}[k]!`;
      if (fd.mapKind === "message") {
        out.push(`w.tag(${tag(2, LEN)}); const b = w.fork(); `, ...writeMessage(refs, fd.message, value, plain), "; w.join(b); ");
      } else if (fd.mapKind === "enum") {
        out.push(`w.tag(${tag(2, 0)}); w.int32(${value}); `);
      } else {
        const s = scalar(fd.scalar);
        out.push(`w.tag(${tag(2, s.wire)}); w.${s.method}(${value}); `);
      }
      out.push("w.join(a); }");
      return out;
    }
  }
}

/** The call that writes a nested message's fields (or a time, in plain shapes). */
function writeMessage(refs: Refs, m: DescMessage, v: string, plain: boolean): Printable[] {
  if (plain && isMillis(m)) return [refs.codec(m, `write${refs.name(m)}Millis`), `(w, ${v})`];
  return [refs.codec(m, `write${refs.name(m)}${suffix(plain)}`), `(w, ${v})`];
}

// ---- reading ---------------------------------------------------------------

/** The `case` lines that read one field. */
function readField(refs: Refs, fd: DescField, plain: boolean): Printable[][] {
  const v = `m.${prop(fd, plain)}`;
  switch (fd.fieldKind) {
    case "scalar": {
      const s = scalar(fd.scalar);
      const t = tag(fd.number, s.wire);
      // Plain messages own their bytes; exact ones view the input, as fromBinary's do.
      const method = readMethod(fd.scalar, plain);
      if (fd.oneof) return [[`case ${t}: m.${fd.oneof.localName} = { case: "${fd.localName}", value: r.${method}() }; break;`]];
      return [[`case ${t}: ${v} = r.${method}(); break;`]];
    }
    case "enum": {
      const t = tag(fd.number, 0);
      if (fd.oneof) return [[`case ${t}: m.${fd.oneof.localName} = { case: "${fd.localName}", value: r.int32() }; break;`]];
      return [[`case ${t}: ${v} = r.int32(); break;`]];
    }
    case "message": {
      const t = tag(fd.number, LEN);
      if (fd.oneof) {
        const o = `m.${fd.oneof.localName}`;
        const merge = plain && isMillis(fd.message) ? "" : `, ${o}.case === "${fd.localName}" ? ${o}.value : undefined`;
        return [[`case ${t}: ${o} = { case: "${fd.localName}", value: `, ...readMessage(refs, fd.message, merge, plain), " }; break;"]];
      }
      const merge = plain && isMillis(fd.message) ? "" : `, ${v}`;
      return [[`case ${t}: ${v} = `, ...readMessage(refs, fd.message, merge, plain), "; break;"]];
    }
    case "list": {
      if (fd.listKind === "message") {
        return [[`case ${tag(fd.number, LEN)}: ${v}.push(`, ...readMessage(refs, fd.message, "", plain), "); break;"]];
      }
      const method = fd.listKind === "enum" ? "int32" : readMethod(fd.scalar, plain);
      const wire = fd.listKind === "enum" ? 0 : scalar(fd.scalar).wire;
      const one = [`case ${tag(fd.number, wire)}: ${v}.push(r.${method}()); break;`];
      if (wire === LEN) return [one];
      // Either encoding is accepted, whatever the field's packed option, as protobuf requires.
      return [one, [`case ${tag(fd.number, LEN)}: { const e = r.sub(); while (r.pos < e) ${v}.push(r.${method}()); r.done(e); break; }`]];
    }
    case "map": {
      const key = scalar(fd.mapKey);
      const keyZero = key.ts === "bigint" ? "0n" : key.zero;
      const keyProp = key.ts === "bigint" || key.ts === "boolean" ? "String(k)" : "k";
      const head = `case ${tag(fd.number, LEN)}: { const e = r.sub(); let k: ${key.ts} = ${keyZero}; `;
      const loop = (valueRead: Printable[]): Printable[] => [
        `while (r.pos < e) { const u = r.tag(); if (u === ${tag(1, key.wire)}) k = r.${key.method}(); else if (u === ${tag(2, valueWire(fd))}) `,
        ...valueRead,
        "; else r.skip(u); } r.done(e); ",
      ];
      if (fd.mapKind === "message") {
        const vt: Printable[] = plain && isMillis(fd.message) ? ["number"] : typeOf(refs, fd.message, plain);
        const empty: Printable[] = plain && isMillis(fd.message) ? ["0"] : emptyMessage(refs, fd.message, plain);
        return [
          [
            head,
            "let v: ",
            ...vt,
            " | undefined; ",
            ...loop(["v = ", ...readMessage(refs, fd.message, "", plain)]),
            `${v}[${keyProp}] = v ?? `,
            ...empty,
            "; break; }",
          ],
        ];
      }
      const s = fd.mapKind === "enum" ? { method: "int32", zero: "0", ts: "number" } : { ...scalar(fd.scalar), method: readMethod(fd.scalar, plain) };
      const zero = s.zero === "EMPTY_BYTES" ? refs.runtime("EMPTY_BYTES") : s.zero;
      return [[head, `let v: ${s.ts} = `, zero, "; ", ...loop([`v = r.${s.method}()`]), `${v}[${keyProp}] = v; break; }`]];
    }
  }
}

/** The Reader method for a scalar: plain messages own their bytes, exact ones view the input as fromBinary's do. */
function readMethod(t: ScalarType, plain: boolean): string {
  return plain && t === ScalarType.BYTES ? "bytesCopy" : scalar(t).method;
}

function valueWire(fd: DescField & { fieldKind: "map" }): number {
  if (fd.mapKind === "message") return LEN;
  if (fd.mapKind === "enum") return 0;
  return scalar(fd.scalar).wire;
}

/** The call that reads a nested message up to r.sub(); merge is ", target" to read into an existing one. */
function readMessage(refs: Refs, m: DescMessage, merge: string, plain: boolean): Printable[] {
  if (plain && isMillis(m)) return [refs.codec(m, `read${refs.name(m)}Millis`), "(r, r.sub())"];
  return [refs.codec(m, `read${refs.name(m)}${suffix(plain)}`), `(r, r.sub()${merge})`];
}

/** An empty message, for a map entry without a value (protobuf-es makes one): read from zero bytes. */
function emptyMessage(refs: Refs, m: DescMessage, plain: boolean): Printable[] {
  return [refs.codec(m, `read${refs.name(m)}${suffix(plain)}`), "(r, r.pos)"];
}

function typeOf(refs: Refs, m: DescMessage, plain: boolean): Printable[] {
  return plain ? [refs.codecType(m, `${refs.name(m)}Plain`)] : [refs.shape(m)];
}

// ---- shapes ----------------------------------------------------------------

/** The literal of a message with every field at its default, in field order (one hidden class per message): one line per field. */
function defaults(refs: Refs, m: DescMessage, plain: boolean): Printable[][] {
  const out: Printable[][] = [];
  if (!plain) out.push([`$typeName: ${JSON.stringify(m.typeName)},`]);
  for (const member of m.members) {
    if (member.kind === "oneof") {
      out.push([`${member.localName}: { case: undefined },`]);
      continue;
    }
    const fd = member;
    let value: Printable;
    switch (fd.fieldKind) {
      case "scalar":
        if (fd.presence === 1) value = "undefined";
        else value = fd.scalar === ScalarType.BYTES ? refs.runtime("EMPTY_BYTES") : scalar(fd.scalar).zero;
        break;
      case "enum":
        value = fd.presence === 1 ? "undefined" : "0";
        break;
      case "message":
        value = "undefined";
        break;
      case "list":
        value = "[]";
        break;
      case "map":
        value = "{}";
        break;
    }
    out.push([`${prop(fd, plain)}: `, value, ","]);
  }
  return out;
}

function emitPlainInterface(refs: Refs, m: DescMessage): void {
  const { f } = refs;
  const name = `${refs.name(m)}Plain`;
  f.print(f.jsDoc(`${m.typeName} as plain JavaScript: times as milliseconds (<field>Ms), no $typeName.`));
  f.print(f.export("interface", name), " {");
  for (const member of m.members) {
    if (member.kind === "oneof") {
      const cases: Printable[] = [];
      for (const fd of member.fields) cases.push(`{ case: "${fd.localName}"; value: `, ...valueType(refs, fd), " } | ");
      f.print(`  ${member.localName}: `, ...cases, "{ case: undefined; value?: undefined };");
      continue;
    }
    const fd = member;
    const optional = fd.fieldKind === "message" || ((fd.fieldKind === "scalar" || fd.fieldKind === "enum") && fd.presence === 1);
    const t: Printable[] =
      fd.fieldKind === "list"
        ? [...valueType(refs, fd), "[]"]
        : fd.fieldKind === "map"
          ? [`{ [key: ${scalar(fd.mapKey).ts === "number" ? "number" : "string"}]: `, ...valueType(refs, fd), " }"]
          : valueType(refs, fd);
    f.print(`  ${prop(fd, true)}${optional ? "?" : ""}: `, ...t, ";");
  }
  f.print("}");
  f.print();
}

/** The plain type of a field's value (an element, for lists and maps). */
function valueType(refs: Refs, fd: DescField): Printable[] {
  if (fd.enum) return [refs.shape(fd.enum)];
  if (fd.message) return isMillis(fd.message) ? ["number"] : [refs.codecType(fd.message, `${refs.name(fd.message)}Plain`)];
  if (fd.scalar !== undefined) return [scalar(fd.scalar).ts];
  throw new Error(`${String(fd)}: no value type`);
}

// ---- times as milliseconds -------------------------------------------------

/**
 * Timestamp and Duration from and to milliseconds, for plain shapes. The
 * field numbers come from the descriptor; the arithmetic is protobuf-es's:
 * a Timestamp's nanos are never negative (seconds round down), a Duration's
 * have the sign of its seconds. Reading gives whole milliseconds.
 */
function emitMillis(refs: Refs, plan: FilePlan): void {
  const { f } = refs;
  const m = plan.file.messages.find((x) => x.typeName === TIMESTAMP || x.typeName === DURATION);
  if (!m) return;
  const seconds = m.fields.find((x) => x.name === "seconds");
  const nanos = m.fields.find((x) => x.name === "nanos");
  if (seconds?.scalar !== ScalarType.INT64 || nanos?.scalar !== ScalarType.INT32) throw new Error(`${m.typeName}: unexpected fields`);
  const name = refs.name(m);
  const Writer = refs.runtime("Writer");
  const Reader = refs.runtime("Reader");
  const st = tag(seconds.number, 0);
  const nt = tag(nanos.number, 0);
  const timestamp = m.typeName === TIMESTAMP;
  f.print(f.jsDoc(timestamp ? "A Timestamp's fields from epoch milliseconds." : "A Duration's fields from milliseconds."));
  f.print(f.export("function", `write${name}Millis`), "(w: ", Writer, ", ms: number): void {");
  f.print(`  let seconds = Math.${timestamp ? "floor" : "trunc"}(ms / 1000);`);
  f.print("  let nanos = Math.round((ms - seconds * 1000) * 1_000_000);");
  f.print("  // Rounding can reach a whole second.");
  f.print("  if (nanos >= 1_000_000_000) {");
  f.print("    seconds += 1;");
  f.print("    nanos -= 1_000_000_000;");
  f.print("  }");
  if (!timestamp) {
    f.print("  if (nanos <= -1_000_000_000) {");
    f.print("    seconds -= 1;");
    f.print("    nanos += 1_000_000_000;");
    f.print("  }");
  }
  f.print(`  if (seconds !== 0) { w.tag(${st}); w.int64Number(seconds); }`);
  f.print(`  if (nanos !== 0) { w.tag(${nt}); w.int32(nanos); }`);
  f.print("}");
  f.print();
  f.print(f.jsDoc(`A ${name} as whole milliseconds (nanos below a millisecond dropped, as a Date drops them).`));
  f.print(f.export("function", `read${name}Millis`), "(r: ", Reader, ", end: number): number {");
  f.print("  let seconds = 0;");
  f.print("  let nanos = 0;");
  f.print("  while (r.pos < end) {");
  f.print("    const t = r.tag();");
  f.print(`    if (t === ${st}) seconds = r.int64Number();`);
  f.print(`    else if (t === ${nt}) nanos = r.int32();`);
  f.print("    else r.skip(t);");
  f.print("  }");
  f.print("  r.done(end);");
  f.print("  return seconds * 1000 + Math.floor(nanos / 1_000_000);");
  f.print("}");
  f.print();
}

// ---- services --------------------------------------------------------------

function emitServiceTable(refs: Refs, s: DescService): void {
  const { f } = refs;
  const ServiceCodecs = refs.runtime("ServiceCodecs", true);
  const service = f.import(f.importSchema(s).name, `${refs.opts.shapes}/${s.file.name}_pb`, true);
  f.print(f.jsDoc(`The codecs of ${s.typeName}'s unary RPCs, by method: the table the lean gRPC path (proto/src/grpc) looks up.`));
  f.print(f.export("const", `${s.name}Codecs`), ": ", ServiceCodecs, "<typeof ", service, "> = {");
  for (const method of s.methods) {
    if (method.methodKind !== "unary") continue;
    f.print(
      `  ${method.localName}: { input: `,
      refs.codec(method.input, `${refs.name(method.input)}Codec`),
      ", output: ",
      refs.codec(method.output, `${refs.name(method.output)}Codec`),
      " },",
    );
  }
  f.print("};");
  f.print();
}
