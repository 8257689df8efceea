import type { DescEnum, DescFile, DescMessage } from "@bufbuild/protobuf";
import type { GeneratedFile, Printable } from "@bufbuild/protoplugin";
import type { Options } from "./plugin.js";

/**
 * Names and imports for one generated file: the runtime, protoc-gen-es's
 * types and schemas (from the package that publishes them, so that the
 * compiled files resolve them wherever they are built to), and the codecs
 * of messages that other generated files hold.
 */
export class Refs {
  constructor(
    readonly f: GeneratedFile,
    readonly file: DescFile,
    readonly opts: Options,
    /** True for a spec file, which imports even its own .proto's codecs. */
    readonly external = false,
  ) {}

  runtime(name: string, typeOnly = false): Printable {
    return this.f.import(name, this.opts.runtime, typeOnly);
  }

  /** The name protoc-gen-es gives a message's or enum's type (Job, JobSpec, Timestamp). */
  name(desc: DescMessage | DescEnum): string {
    return this.f.importShape(desc).name;
  }

  shape(desc: DescMessage | DescEnum): Printable {
    return this.f.import(this.name(desc), shapesPath(desc.file, this.opts), true);
  }

  schema(desc: DescMessage): Printable {
    return this.f.import(this.f.importSchema(desc).name, shapesPath(desc.file, this.opts));
  }

  /** A generated function or constant of the codecs for desc, imported when another file holds it. */
  codec(desc: DescMessage, name: string): Printable {
    if (desc.file === this.file && !this.external) return name;
    return this.f.import(name, `./${desc.file.name}_fast.js`);
  }

  codecType(desc: DescMessage, name: string): Printable {
    if (desc.file === this.file && !this.external) return name;
    return this.f.import(name, `./${desc.file.name}_fast.js`, true);
  }
}

export function shapesPath(file: DescFile, opts: Options): string {
  // protobuf-es publishes the well-known types itself.
  if (file.name.startsWith("google/protobuf/")) return "@bufbuild/protobuf/wkt";
  return `${opts.shapes}/${file.name}_pb`;
}
