/**
 * The lean gRPC path, shared by the broker and the TypeScript client:
 * unary calls served and sent straight on node:http2, the worker's Lease
 * stream read as raw batches, and the pieces both ends share (framing,
 * grpc-timeout, statuses with their details). Everything else goes
 * through connect-es. docs/performance.md says what each part bought.
 */
export { PREFIX_BYTES, frame, unaryMessage, MessageSplitter } from "./envelope.js";
export { parseGrpcTimeout, grpcTimeout, MAX_TIMER_MS } from "./timeout.js";
export { errorTrailers, errorFromStatus, codeFromHttpStatus } from "./status.js";
export { leanUnaryHandler, type LeanService, type LeanServerOptions } from "./server.js";
export { withLeanUnary, type Http2Sessions, type LeanClientOptions } from "./client-unary.js";
export { leanStream, type LeanStreamOptions, type StreamCall } from "./client-stream.js";
