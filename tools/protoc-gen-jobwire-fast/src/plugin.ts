import { ScalarType, getOption, type DescExtension, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import type { GenExtension } from "@bufbuild/protobuf/codegenv2";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import type { MessageOptions } from "@bufbuild/protobuf/wkt";
import { createEcmaScriptPlugin, type Schema } from "@bufbuild/protoplugin";
import { emitFile } from "./emit.js";
import { checkSupported, isMillis, messageOf } from "./fields.js";
import { emitSpec } from "./spec.js";

/**
 * protoc-gen-jobwire-fast: straight-line protobuf encoders and decoders for
 * the messages on jobwire's hot path, generated from the .proto so that no
 * wire layout is written by hand. buf.gen.yaml says which messages, and
 * scripts/generate.sh runs it. For each .proto that holds one of them it
 * writes `<name>_fast.ts` (the codecs) and `<name>_fast.spec.ts` (their
 * differential tests against protobuf-es reflection).
 *
 * Options:
 *   service=T       exact codecs for every message of service T's RPCs, and
 *                   a table of its unary methods' codecs (TServiceCodecs)
 *   message=T       an exact codec for message T
 *   plain=T         a plain codec for message T (see emit.ts)
 *   repeats=T.f     plain decoders reuse the last string of field f of T while
 *                   its bytes repeat (a worker's queue, type, content type)
 *   view_option=E   the MessageOptions extension naming the message a view reads
 *   runtime=P       import path of the hand-kept runtime, from the output root
 *   shapes=P        package of protoc-gen-es's output, for the message types
 *   testing=P       import path of the differential test helpers, from the output root
 */
export interface Options {
  services: string[];
  messages: string[];
  plain: string[];
  repeats: string[];
  viewOption: string | undefined;
  runtime: string;
  shapes: string;
  testing: string;
}

function parseOptions(raw: { key: string; value: string }[]): Options {
  const o: Options = { services: [], messages: [], plain: [], repeats: [], viewOption: undefined, runtime: "", shapes: "", testing: "" };
  for (const { key, value } of raw) {
    switch (key) {
      case "service":
        o.services.push(value);
        break;
      case "message":
        o.messages.push(value);
        break;
      case "plain":
        o.plain.push(value);
        break;
      case "repeats":
        o.repeats.push(value);
        break;
      case "view_option":
        o.viewOption = value;
        break;
      case "runtime":
        o.runtime = value;
        break;
      case "shapes":
        o.shapes = value;
        break;
      case "testing":
        o.testing = value;
        break;
      default:
        throw new Error(`unknown option ${key}`);
    }
  }
  if (o.runtime === "" || o.shapes === "" || o.testing === "") throw new Error("the options runtime, shapes and testing are required");
  return o;
}

/** What one .proto file gets: its messages with exact codecs, with plain codecs, and its services' tables. */
export interface FilePlan {
  file: DescFile;
  exact: DescMessage[];
  plain: DescMessage[];
  services: DescService[];
  /** Messages of this file that view another (the view_option), with the message they view. */
  views: Map<DescMessage, DescMessage>;
  /** Timestamp or Duration, when a plain shape elsewhere reads or writes it as milliseconds. */
  millis: boolean;
}

function generateTs(schema: Schema<Options>): void {
  const opts = schema.options;
  const messages = new Map<string, DescMessage>();
  const services = new Map<string, DescService>();
  const extensions = new Map<string, DescExtension>();
  for (const file of schema.allFiles) {
    for (const t of nestedTypes(file)) {
      if (t.kind === "message") messages.set(t.typeName, t);
      else if (t.kind === "service") services.set(t.typeName, t);
      else if (t.kind === "extension") extensions.set(t.typeName, t);
    }
  }
  const find = <T>(map: Map<string, T>, name: string, what: string): T => {
    const v = map.get(name);
    if (v === undefined) throw new Error(`no ${what} ${name} in the input`);
    return v;
  };

  // Exact codecs: the roots and every message they contain.
  const exact = new Set<DescMessage>();
  const addExact = (m: DescMessage): void => {
    if (exact.has(m)) return;
    checkSupported(m);
    exact.add(m);
    for (const f of m.fields) {
      const sub = messageOf(f);
      if (sub) addExact(sub);
    }
  };
  const tables: DescService[] = [];
  for (const name of opts.services) {
    const s = find(services, name, "service");
    tables.push(s);
    for (const method of s.methods) {
      addExact(method.input);
      addExact(method.output);
    }
  }
  for (const name of opts.messages) addExact(find(messages, name, "message"));

  // Plain codecs: the same, except that Timestamp and Duration become milliseconds.
  const plain = new Set<DescMessage>();
  const millis = new Set<DescMessage>();
  const addPlain = (m: DescMessage): void => {
    if (plain.has(m)) return;
    checkSupported(m);
    plain.add(m);
    for (const f of m.fields) {
      const sub = messageOf(f);
      if (isMillis(sub)) millis.add(sub);
      else if (sub) addPlain(sub);
    }
  };
  for (const name of opts.plain) addPlain(find(messages, name, "message"));
  for (const name of opts.repeats) {
    const dot = name.lastIndexOf(".");
    const m = find(messages, name.slice(0, dot), "message");
    const f = m.fields.find((x) => x.name === name.slice(dot + 1));
    if (!plain.has(m) || f?.fieldKind !== "scalar" || f.scalar !== ScalarType.STRING || f.oneof) {
      throw new Error(`repeats=${name}: not a singular string field of a message with a plain codec`);
    }
  }

  const viewOf = (m: DescMessage): DescMessage | undefined => {
    if (opts.viewOption === undefined) return undefined;
    const ext = find(extensions, opts.viewOption, "extension");
    if (ext.extendee.typeName !== "google.protobuf.MessageOptions" || ext.fieldKind !== "scalar") {
      throw new Error(`${opts.viewOption} must be a MessageOptions string extension`);
    }
    const target: unknown = getOption(m, ext as GenExtension<MessageOptions, string>);
    if (typeof target !== "string" || target === "") return undefined;
    return find(messages, target, "message (named by a view)");
  };

  // One plan per .proto, in the order of the input, types in declaration order: reproducible output.
  for (const file of schema.allFiles) {
    const plan: FilePlan = { file, exact: [], plain: [], services: [], views: new Map(), millis: false };
    for (const t of nestedTypes(file)) {
      if (t.kind === "message") {
        if (exact.has(t)) plan.exact.push(t);
        if (plain.has(t)) plan.plain.push(t);
        if (millis.has(t)) plan.millis = true;
        const full = exact.has(t) || plain.has(t) ? viewOf(t) : undefined;
        if (full) plan.views.set(t, full);
      } else if (t.kind === "service" && tables.includes(t)) {
        plan.services.push(t);
      }
    }
    if (plan.exact.length === 0 && plan.plain.length === 0 && !plan.millis) continue;
    emitFile(schema.generateFile(`${file.name}_fast.ts`), plan, opts);
    emitSpec(schema.generateFile(`${file.name}_fast.spec.ts`), plan, opts);
  }
}

export const plugin = createEcmaScriptPlugin<Options>({
  name: "protoc-gen-jobwire-fast",
  version: "v1",
  parseOptions,
  generateTs,
});
