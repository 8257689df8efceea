import type { GeneratedFile } from "@bufbuild/protoplugin";
import { DURATION, TIMESTAMP } from "./fields.js";
import type { FilePlan, Options } from "./plugin.js";
import { Refs } from "./refs.js";

/**
 * The differential tests of one file's codecs: one line per codec, each
 * naming the protobuf-es schema it must agree with. The checks themselves
 * (random messages through both, byte-equal both ways, every field of the
 * schema carried) are in the hand-kept helpers the testing option names,
 * so a message added to buf.gen.yaml, or a field added to the .proto, is
 * tested without anyone writing a test.
 */
export function emitSpec(f: GeneratedFile, plan: FilePlan, opts: Options): void {
  const refs = new Refs(f, plan.file, opts, true);
  const helper = (name: string) => f.import(name, opts.testing);
  f.preamble(plan.file);
  for (const m of plan.exact) {
    f.print(helper("describeExact"), "(", refs.schema(m), ", ", refs.codec(m, `${refs.name(m)}Codec`), ");");
  }
  for (const m of plan.plain) {
    f.print(helper("describePlain"), "(", refs.schema(m), ", ", refs.codec(m, `${refs.name(m)}PlainCodec`), ");");
  }
  for (const [view, full] of plan.views) {
    if (plan.exact.includes(view)) {
      f.print(helper("describeView"), "(", refs.schema(view), ", ", refs.schema(full), ", ", refs.codec(view, `${refs.name(view)}Codec`), ', "exact");');
    }
    if (plan.plain.includes(view)) {
      f.print(helper("describeView"), "(", refs.schema(view), ", ", refs.schema(full), ", ", refs.codec(view, `${refs.name(view)}PlainCodec`), ', "plain");');
    }
  }
  if (plan.millis) {
    for (const m of plan.file.messages) {
      if (m.typeName !== TIMESTAMP && m.typeName !== DURATION) continue;
      const name = refs.name(m);
      f.print(helper("describeMillis"), "(", refs.schema(m), ", ", refs.codec(m, `write${name}Millis`), ", ", refs.codec(m, `read${name}Millis`), ");");
    }
  }
  for (const s of plan.services) {
    const service = f.import(f.importSchema(s).name, `${opts.shapes}/${s.file.name}_pb`);
    f.print(helper("describeServiceCodecs"), "(", service, ", ", f.import(`${s.name}Codecs`, `./${plan.file.name}_fast.js`), ");");
  }
}
