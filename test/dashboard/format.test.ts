import { describe, expect, it } from "vitest";
import { hexdump, relative, renderPayload, seconds, span, traceId, traceLink } from "../../dashboard/src/format.js";

/** The dashboard's formatting, on its own: what a job page shows for payloads, traces and times. */
const b64 = (s: string | Uint8Array) => Buffer.from(s).toString("base64");

describe("renderPayload", () => {
  it("pretty-prints JSON, whatever the content type says", () => {
    expect(renderPayload(b64('{"a":1,"b":[true]}'), "application/json")).toEqual({ kind: "json", text: '{\n  "a": 1,\n  "b": [\n    true\n  ]\n}' });
    expect(renderPayload(b64('{"a":1}'), "application/octet-stream").kind).toBe("json");
    expect(renderPayload(b64('{"a":1}'), "").kind).toBe("json");
  });

  it("shows text as text, and anything else, or invalid UTF-8, as hex", () => {
    expect(renderPayload(b64("hello\nworld"), "text/plain")).toEqual({ kind: "text", text: "hello\nworld" });
    expect(renderPayload(b64("not json {"), "application/json").kind).toBe("hex");
    const bytes = renderPayload(b64(new Uint8Array([0xc3, 0x28, 0x00])), "text/plain");
    expect(bytes).toEqual({ kind: "hex", text: `00000000  ${"c3 28 00".padEnd(47)}  .(.` });
    expect(renderPayload(undefined, "application/json").kind).toBe("empty");
  });

  it("reads URL-safe base64 too", () => {
    expect(renderPayload(Buffer.from([0xfb, 0xff]).toString("base64url"), "application/octet-stream").text).toContain("fb ff");
  });
});

describe("hexdump", () => {
  it("writes 16 bytes a line, and says how much it left out", () => {
    const out = hexdump(new Uint8Array(40).map((_, i) => 0x41 + (i % 26)), 32).split("\n");
    expect(out).toHaveLength(3);
    expect(out[0]).toBe("00000000  41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50  ABCDEFGHIJKLMNOP");
    expect(out[1]!.startsWith("00000010  51 52")).toBe(true);
    expect(out[2]).toBe("… 8 more bytes");
  });
});

describe("traces", () => {
  it("takes the trace id from a W3C traceparent, and nothing from a bad or empty one", () => {
    expect(traceId("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(traceId(" 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01 ")).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(traceId("00-00000000000000000000000000000000-00f067aa0ba902b7-01")).toBe("");
    expect(traceId("garbage")).toBe("");
    expect(traceId(undefined)).toBe("");
  });

  it("builds links from the template, only to http(s)", () => {
    expect(traceLink("http://localhost:16686/trace/{trace_id}", "abc")).toBe("http://localhost:16686/trace/abc");
    expect(traceLink("https://t.example/{trace_id}?q={trace_id}", "abc")).toBe("https://t.example/abc?q=abc");
    expect(traceLink("javascript:alert({trace_id})", "abc")).toBe("");
    expect(traceLink("", "abc")).toBe("");
  });
});

describe("times", () => {
  it("reads proto Durations and says spans and distances for people", () => {
    expect(seconds("12.500s")).toBe(12.5);
    expect(seconds(undefined)).toBe(0);
    expect(span(0.25)).toBe("250 ms");
    expect(span(90)).toBe("1.5 min");
    expect(span(7200)).toBe("2.0 h");
    const now = Date.parse("2026-01-01T12:00:00Z");
    expect(relative("2026-01-01T11:59:00Z", now)).toBe("1.0 min ago");
    expect(relative("2026-01-01T12:00:30Z", now)).toBe("in 30.0 s");
  });
});
