/**
 * Fuzz case N for a seed: which RPC, over which protocol, with which input.
 * Each case is built from its own PRNG, seeded with (seed, N), so any one
 * case can be rebuilt alone (`--replay N`) without the cases before it. The
 * RPC and protocol go round-robin, so every pair is covered early; the
 * family of input is drawn at random.
 */
import { gzipSync } from "node:zlib";
import { Rng } from "../common/rng.js";
import { poke, randomMessage, template, type Init } from "./generate.js";
import { mutateJson } from "./mutate-json.js";
import { mutateProto, randomProto } from "./mutate-proto.js";
import { PROTOCOLS, baseHeaders, compressionHeader, encodeMessage, enveloped, frame, type Protocol } from "./protocols.js";
import { RPCS, type Rpc } from "./rpcs.js";
import type { Pools } from "./values.js";
import { FLAG_COMPRESSED, FLAG_END_STREAM, FLAG_TRAILERS, envelope, gzip } from "./wire.js";

export interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** Half-sent: send only this many bytes of the body, wait holdMs, then abandon the request. */
  halfSend?: { bytes: number; holdMs: number };
}

export interface FuzzCase {
  index: number;
  rpc: Rpc;
  protocol: Protocol;
  family: string;
  description: string;
  request: FuzzRequest;
}

export const COMBOS: { rpc: Rpc; protocol: Protocol }[] = RPCS.flatMap((rpc) => PROTOCOLS.map((protocol) => ({ rpc, protocol })));

const FAMILIES: [string, number][] = [
  ["valid", 8],
  ["poke", 22],
  ["random message", 10],
  ["mutated", 25],
  ["random bytes", 7],
  ["envelope", 12],
  ["headers", 10],
  ["half-sent", 6],
];
const TOTAL_WEIGHT = FAMILIES.reduce((a, [, w]) => a + w, 0);

export const FAMILY_NAMES = FAMILIES.map(([n]) => n);

/** Restricts the families drawn (--family); the draw stays deterministic for a given list. */
let allowed: [string, number][] = FAMILIES;
let allowedWeight = TOTAL_WEIGHT;
export function restrictFamilies(names: string[]): void {
  const unknown = names.filter((n) => !FAMILY_NAMES.includes(n));
  if (unknown.length > 0) throw new Error(`unknown famil${unknown.length > 1 ? "ies" : "y"} ${unknown.join(", ")}; the families are: ${FAMILY_NAMES.join(", ")}`);
  allowed = FAMILIES.filter(([n]) => names.includes(n));
  allowedWeight = allowed.reduce((a, [, w]) => a + w, 0);
}

function family(rng: Rng): string {
  let x = rng.int(allowedWeight);
  for (const [name, w] of allowed) {
    if (x < w) return name;
    x -= w;
  }
  return "valid";
}

let bomb: Buffer | null = null;
/** 64 MiB of zeros, gzipped to about 64 KiB: decompressed, far past the 4 MiB message limit. */
function gzipBomb(): Buffer {
  bomb ??= gzipSync(Buffer.alloc(64 * 1024 * 1024));
  return bomb;
}

export function buildCase(seed: number, index: number, pools: Pools): FuzzCase {
  const rng = new Rng(seed, index);
  const { rpc, protocol } = COMBOS[index % COMBOS.length]!;
  const fam = family(rng);
  const c = build(rng, rpc, protocol, fam, pools);
  return { index, rpc, protocol, family: fam, ...c };
}

/** A valid request for pair `i` of COMBOS: the warm-up sends one per pair before the baseline RSS is read. */
export function warmupCase(seed: number, i: number, pools: Pools): FuzzCase {
  const rng = new Rng(seed, -1 - i);
  const { rpc, protocol } = COMBOS[i % COMBOS.length]!;
  return { index: -1 - i, rpc, protocol, family: "valid", ...build(rng, rpc, protocol, "valid", pools) };
}

function build(rng: Rng, rpc: Rpc, p: Protocol, fam: string, pools: Pools): { description: string; request: FuzzRequest } {
  const headers = baseHeaders(p, rpc);
  const req = (body: Buffer, description: string, extra: Partial<FuzzRequest> = {}) => ({
    description,
    request: { method: "POST", path: rpc.path, headers, body, ...extra },
  });
  const msgs: Init[] = template(rpc.name, rng, pools);
  const encodeAll = (list: Init[]) => list.map((m) => encodeMessage(p, rpc, m));
  const validPayloads = (): Uint8Array[] => {
    try {
      return encodeAll(msgs);
    } catch {
      return encodeAll(msgs.map(() => ({})));
    }
  };
  // For a stream, a family's change lands on one of its messages.
  const at = rng.int(msgs.length);

  switch (fam) {
    case "valid":
      return req(frame(p, rpc, validPayloads()), "a valid request");
    case "poke": {
      const what = poke(rng, rpc.input, msgs[at]!, pools);
      try {
        return req(frame(p, rpc, encodeAll(msgs)), `valid but ${rpc.streaming ? `message ${at}: ` : ""}${what}`);
      } catch {
        // protobuf-es will not write this value as JSON; mutate valid JSON instead.
        const payloads = validPayloads();
        const [m, d] = mutateJson(Buffer.from(payloads[at]!).toString("utf8"), rng);
        payloads[at] = m;
        return req(frame(p, rpc, payloads), `valid JSON, then ${d}`);
      }
    }
    case "random message": {
      const list = msgs.map(() => randomMessage(rng, rpc.input, pools, rng.bool(0.5)));
      try {
        return req(frame(p, rpc, encodeAll(list)), "a message with random fields drawn from the schema");
      } catch {
        return req(frame(p, rpc, validPayloads()), "a valid request (the random one could not be encoded)");
      }
    }
    case "mutated": {
      const payloads = validPayloads();
      const [m, d] = p.json ? mutateJson(Buffer.from(payloads[at]!).toString("utf8"), rng) : mutateProto(payloads[at]!, rng);
      payloads[at] = m;
      return req(frame(p, rpc, payloads), `valid ${p.json ? "JSON" : "protobuf"}${rpc.streaming ? ` (message ${at})` : ""}, then ${d}`);
    }
    case "random bytes": {
      const kind = rng.int(3);
      if (kind === 0) {
        const b = Buffer.from(rng.bytes(rng.int(512)));
        return req(b, `${b.length} random bytes as the whole body`);
      }
      const payload = kind === 1 ? rng.bytes(rng.int(256)) : randomProto(rng);
      return req(frame(p, rpc, [payload]), kind === 1 ? `${payload.length} random bytes as the message` : "random protobuf fields as the message");
    }
    case "envelope":
      return envelopeCase(rng, rpc, p, headers, validPayloads(), req);
    case "headers":
      return headerCase(rng, rpc, p, headers, frame(p, rpc, validPayloads()), req);
    default: {
      const body = frame(p, rpc, validPayloads());
      const bytes = rng.int(Math.max(1, body.length));
      const holdMs = rng.range(500, 2000);
      return req(body, `half-sent: ${bytes} of ${body.length} bytes, then silence for ${holdMs} ms, then abandoned`, { halfSend: { bytes, holdMs } });
    }
  }
}

type Req = (body: Buffer, description: string, extra?: Partial<FuzzRequest>) => { description: string; request: FuzzRequest };

function envelopeCase(rng: Rng, rpc: Rpc, p: Protocol, headers: Record<string, string>, payloads: Uint8Array[], req: Req) {
  const m = Buffer.from(payloads[0] ?? new Uint8Array(0));
  const enc = compressionHeader(p, rpc);
  if (!enveloped(p, rpc)) {
    // Connect unary: the body is the message; compression is Content-Encoding.
    switch (rng.int(4)) {
      case 0:
        return req(Buffer.alloc(0), "an empty body");
      case 1:
        headers[enc] = "gzip";
        return req(m, "content-encoding: gzip, body not compressed");
      case 2:
        headers[enc] = "gzip";
        return req(gzipBomb(), "content-encoding: gzip, 64 MiB of zeros compressed to 64 KiB");
      default:
        headers[enc] = rng.pick(["br", "zstd", "identity, gzip", "x-nope"]);
        return req(m, `content-encoding: ${headers[enc]}`);
    }
  }
  switch (rng.int(11)) {
    case 0:
      delete headers[enc];
      return req(envelope(m, FLAG_COMPRESSED), "compressed flag set, no encoding header");
    case 1: {
      const flags = rng.pick([FLAG_END_STREAM, FLAG_TRAILERS, 0xff, 0x04]);
      return req(envelope(m, flags), `envelope flags 0x${flags.toString(16)}`);
    }
    case 2: {
      const extra = rng.pick([1, 100, 65536]);
      return req(envelope(m, 0, m.length + extra), `envelope length says ${m.length + extra}, ${m.length} bytes follow`);
    }
    case 3:
      return req(Buffer.concat([envelope(m, 0, Math.max(0, m.length - 1)), Buffer.from([0x42])]), "envelope length one short of its message");
    case 4:
      return req(envelope(m, 0, 4 * 1024 * 1024 + 1), "envelope length 4 MiB + 1, a few bytes follow");
    case 5:
      return req(envelope(m, 0, 0xffffffff), "envelope length 2^32-1");
    case 6:
      return req(Buffer.alloc(0), "no envelope at all (empty body)");
    case 7:
      return req(Buffer.concat([envelope(m), envelope(m)]), rpc.streaming ? "the message twice" : "two messages on a unary call");
    case 8:
      return req(envelope(m).subarray(0, rng.range(1, 4)), "a partial envelope header");
    case 9:
      headers[enc] = "gzip";
      return req(envelope(gzipBomb(), FLAG_COMPRESSED), `${enc}: gzip, 64 MiB of zeros compressed to 64 KiB`);
    default:
      headers[enc] = rng.pick(["gzip", "br", "x-nope"]);
      return req(envelope(rng.bool() ? m : gzip(rng.bytes(32)).subarray(0, 20), FLAG_COMPRESSED), `${enc}: ${headers[enc]}, payload not valid for it`);
  }
}

function headerCase(rng: Rng, rpc: Rpc, p: Protocol, headers: Record<string, string>, body: Buffer, req: Req) {
  switch (rng.int(9)) {
    case 0:
      headers["content-type"] = rng.pick([
        "",
        "text/plain",
        "application/grpc+xml",
        "application/grpc; charset=utf-16",
        "application/json; charset=utf-16",
        "application/connect+proto",
        "application/proto",
        "application/grpc-web-text",
        "multipart/form-data; boundary=x",
      ]);
      return req(body, `content-type: ${JSON.stringify(headers["content-type"])}`);
    case 1: {
      const name = p.family === "connect" ? "connect-timeout-ms" : "grpc-timeout";
      headers[name] = rng.pick(p.family === "connect" ? ["-1", "abc", "99999999999999999999", "0", "1.5", ""] : ["0S", "99999999H", "abc", "-1S", "1n", "123456789S", ""]);
      return req(body, `${name}: ${JSON.stringify(headers[name])}`);
    }
    case 2: {
      const method = rng.pick(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]);
      return req(body, `method ${method}`, { method });
    }
    case 3: {
      const path = rng.pick([
        rpc.path.toLowerCase(),
        `${rpc.path}/`,
        `${rpc.path}?x=1`,
        `/${rpc.path}`,
        rpc.path.replace(/\/[^/]+$/, "/Nope"),
        "/jobwire.v1.Nope/Enqueue",
        "/",
        `${rpc.path}%00`,
        `/${"a".repeat(8000)}`,
      ]);
      return req(body, `path ${path.length > 60 ? `${path.slice(0, 20)}… (${path.length} chars)` : path}`, { path });
    }
    case 4:
      headers.authorization = rng.pick(["Bearer x", "Bearer ", "Basic Zm9vOmJhcg==", "x".repeat(8000)]);
      return req(body, `authorization: ${headers.authorization!.slice(0, 20)}`);
    case 5:
      if (p.family === "connect") {
        headers["connect-protocol-version"] = rng.pick(["2", "0", ""]);
        return req(body, `connect-protocol-version: ${JSON.stringify(headers["connect-protocol-version"])}`);
      }
      delete headers.te;
      return req(body, "no te: trailers");
    case 6: {
      if (p.family === "connect" && !rpc.streaming) {
        // Connect GET: the message in the query string.
        const q = `?connect=v1&encoding=${p.json ? "json" : "proto"}&message=${encodeURIComponent(body.toString(p.json ? "utf8" : "base64url"))}${p.json ? "" : "&base64=1"}`;
        return req(Buffer.alloc(0), "Connect GET with the message in the query", { method: "GET", path: rpc.path + q });
      }
      headers["grpc-accept-encoding"] = "gzip";
      headers["grpc-encoding"] = "identity";
      return req(body, "grpc-encoding: identity");
    }
    case 7:
      headers["x-fuzz"] = "v".repeat(rng.pick([100, 16_000]));
      return req(body, `a ${headers["x-fuzz"]!.length}-byte header`);
    default:
      for (const k of Object.keys(headers)) delete headers[k];
      return req(body, "no headers at all");
  }
}
