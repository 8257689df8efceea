/**
 * The three protocols the broker's one port serves, each the way a client
 * frames a request: gRPC (HTTP/2 only; plain, gzip-compressed, and JSON),
 * gRPC-Web, and Connect (binary and JSON), the last two over HTTP/1.1 and
 * HTTP/2.
 *
 * Plain gRPC unary calls take the broker's lean path (grpc-unary.ts);
 * compression, JSON and everything else go through connect-es, so both are
 * fuzzed.
 */
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import type { Init } from "./generate.js";
import type { Rpc } from "./rpcs.js";
import { FLAG_COMPRESSED, envelope, gzip, utf8 } from "./wire.js";

export interface Protocol {
  name: string;
  http: 1 | 2;
  family: "grpc" | "grpc-web" | "connect";
  json: boolean;
  gzip: boolean;
}

export const PROTOCOLS: Protocol[] = [
  { name: "grpc", http: 2, family: "grpc", json: false, gzip: false },
  { name: "grpc-gzip", http: 2, family: "grpc", json: false, gzip: true },
  { name: "grpc+json", http: 2, family: "grpc", json: true, gzip: false },
  { name: "grpc-web/h1", http: 1, family: "grpc-web", json: false, gzip: false },
  { name: "grpc-web/h2", http: 2, family: "grpc-web", json: false, gzip: false },
  { name: "connect+proto/h1", http: 1, family: "connect", json: false, gzip: false },
  { name: "connect+proto/h2", http: 2, family: "connect", json: false, gzip: false },
  { name: "connect+json/h1", http: 1, family: "connect", json: true, gzip: false },
  { name: "connect+json/h2", http: 2, family: "connect", json: true, gzip: false },
];

/** Connect unary calls send the bare message; everything else sends envelopes. */
export function enveloped(p: Protocol, rpc: Rpc): boolean {
  return p.family !== "connect" || rpc.streaming;
}

export function contentType(p: Protocol, rpc: Rpc): string {
  const codec = p.json ? "json" : "proto";
  if (p.family === "grpc") return p.json ? "application/grpc+json" : "application/grpc";
  if (p.family === "grpc-web") return `application/grpc-web+${codec}`;
  return rpc.streaming ? `application/connect+${codec}` : `application/${codec}`;
}

/** The header that names a compressed body or compressed envelopes. */
export function compressionHeader(p: Protocol, rpc: Rpc): string {
  if (p.family === "connect") return rpc.streaming ? "connect-content-encoding" : "content-encoding";
  return "grpc-encoding";
}

export function baseHeaders(p: Protocol, rpc: Rpc): Record<string, string> {
  const h: Record<string, string> = { "content-type": contentType(p, rpc) };
  if (p.family === "grpc") h.te = "trailers";
  if (p.family === "grpc-web") h["x-grpc-web"] = "1";
  if (p.family === "connect") h["connect-protocol-version"] = "1";
  if (p.gzip) h[compressionHeader(p, rpc)] = "gzip";
  return h;
}

/** One message in the protocol's codec; throws when protobuf-es cannot write it as JSON. */
export function encodeMessage(p: Protocol, rpc: Rpc, init: Init): Uint8Array {
  const msg = create(rpc.input, init as never);
  return p.json ? utf8.encode(toJsonString(rpc.input, msg)) : toBinary(rpc.input, msg);
}

/** The request body for these message payloads: enveloped (compressed when the protocol is) or bare. */
export function frame(p: Protocol, rpc: Rpc, payloads: Uint8Array[]): Buffer {
  if (!enveloped(p, rpc)) return Buffer.from(payloads[0] ?? new Uint8Array(0));
  return Buffer.concat(payloads.map((m) => (p.gzip ? envelope(gzip(m), FLAG_COMPRESSED) : envelope(m))));
}
