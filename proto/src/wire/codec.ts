import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";

/**
 * A generated codec for one message (proto/fast/). Exact codecs read and
 * write the protobuf-es shape, byte for byte as toBinary and fromBinary do;
 * plain ones read and write JavaScript-native shapes (times as epoch
 * milliseconds, no BigInt for them, no $typeName).
 */
export interface Codec<T> {
  /** The message it codes, as in the .proto. */
  readonly typeName: string;
  /** The field numbers it carries; the generated specs compare them with the schema. */
  readonly fields: readonly number[];
  encode(message: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

/** The codecs of one RPC's request and response. */
export interface MethodCodecs<I = unknown, O = unknown> {
  readonly input: Codec<I>;
  readonly output: Codec<O>;
}

type CodecsOf<M> = M extends { input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? MethodCodecs<MessageShape<I>, MessageShape<O>>
  : never;

/**
 * Codecs for a service's RPCs, by method local name (enqueue, ack): the
 * generated table the lean gRPC path looks up. A method without an entry
 * goes through protobuf-es reflection.
 */
export type ServiceCodecs<S extends DescService> = {
  readonly [K in keyof S["method"]]?: CodecsOf<S["method"][K]>;
};
