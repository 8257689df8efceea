/**
 * Payload encoding. The broker treats payloads as opaque bytes with a
 * content type; this client writes JSON by default and passes a Uint8Array
 * through untouched (as application/octet-stream unless told otherwise).
 */
export const JSON_CONTENT_TYPE = "application/json";
export const BYTES_CONTENT_TYPE = "application/octet-stream";

const decoder = new TextDecoder();

export interface EncodedPayload {
  bytes: Uint8Array;
  contentType: string;
}

export function encodePayload(payload: unknown, contentType?: string): EncodedPayload {
  if (payload instanceof Uint8Array) {
    return { bytes: payload, contentType: contentType ?? BYTES_CONTENT_TYPE };
  }
  const text = JSON.stringify(payload === undefined ? null : payload);
  // Buffer.from rather than TextEncoder: small strings are copied into a
  // shared pool instead of a new ArrayBuffer each (the payload's bytes are
  // the same; a Buffer is a Uint8Array).
  return { bytes: Buffer.from(text, "utf8"), contentType: contentType ?? JSON_CONTENT_TYPE };
}

/** True for application/json and +json media types (parameters ignored). */
export function isJsonContentType(ct: string): boolean {
  if (ct === JSON_CONTENT_TYPE || ct === "") return true;
  const base = ct.split(";")[0]?.trim().toLowerCase() ?? "";
  return base === "" || base === JSON_CONTENT_TYPE || base.endsWith("+json");
}

/**
 * Decodes JSON payloads; returns the bytes as they are for any other content
 * type. An empty JSON payload decodes to null. Malformed JSON throws a
 * SyntaxError (the worker turns that into a permanent failure: retrying
 * cannot fix the bytes).
 */
export function decodePayload(bytes: Uint8Array, contentType: string): unknown {
  if (!isJsonContentType(contentType)) return bytes;
  if (bytes.length === 0) return null;
  return JSON.parse(decoder.decode(bytes)) as unknown;
}
