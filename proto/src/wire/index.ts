/**
 * The runtime of the generated codecs in proto/fast/: a varint Writer and
 * Reader, a cache for strings that repeat, and the Codec types. Kept by hand; everything that knows a
 * message's layout is generated from the .proto by
 * tools/protoc-gen-jobwire-fast.
 */
export { Writer, varintSize } from "./writer.js";
export { EMPTY_BYTES, Reader, RepeatedString } from "./reader.js";
export type { Codec, MethodCodecs, ServiceCodecs } from "./codec.js";
