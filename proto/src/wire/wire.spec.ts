import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { Reader } from "./reader.js";
import { Writer } from "./writer.js";

/**
 * The Writer and Reader against protobuf-es's BinaryWriter and
 * BinaryReader, one scalar type at a time. The generated specs cover the
 * types jobwire's messages use, through whole messages; this covers the
 * rest, so that a field of any type added to the .proto is coded right.
 */

const ints = [0, 1, -1, 127, 128, 300, -300, 2 ** 31 - 1, -(2 ** 31)];
const uints = [0, 1, 127, 128, 2 ** 31, 2 ** 32 - 1];
const longs = [0n, 1n, -1n, 127n, 128n, 2n ** 49n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)];
const ulongs = [0n, 1n, 2n ** 53n + 1n, 2n ** 64n - 1n];
const floats = [0, 1.5, -2.25, 3.4e38, Number.POSITIVE_INFINITY, Number.NaN];

type Case = [string, unknown[], (w: Writer, v: never) => void, (w: BinaryWriter, v: never) => void, (r: Reader) => unknown];
const cases: Case[] = [
  ["int32", ints, (w, v) => w.int32(v), (w, v) => w.int32(v), (r) => r.int32()],
  ["uint32", uints, (w, v) => w.uint32(v), (w, v) => w.uint32(v), (r) => r.uint32()],
  ["sint32", ints, (w, v) => w.sint32(v), (w, v) => w.sint32(v), (r) => r.sint32()],
  ["fixed32", uints, (w, v) => w.fixed32(v), (w, v) => w.fixed32(v), (r) => r.fixed32()],
  ["sfixed32", ints, (w, v) => w.sfixed32(v), (w, v) => w.sfixed32(v), (r) => r.sfixed32()],
  ["int64", longs, (w, v) => w.int64(v), (w, v) => w.int64(v), (r) => r.int64()],
  ["uint64", ulongs, (w, v) => w.uint64(v), (w, v) => w.uint64(v), (r) => r.uint64()],
  ["sint64", longs, (w, v) => w.sint64(v), (w, v) => w.sint64(v), (r) => r.sint64()],
  ["fixed64", ulongs, (w, v) => w.fixed64(v), (w, v) => w.fixed64(v), (r) => r.fixed64()],
  ["sfixed64", longs, (w, v) => w.sfixed64(v), (w, v) => w.sfixed64(v), (r) => r.sfixed64()],
  ["float", floats, (w, v) => w.float(v), (w, v) => w.float(v), (r) => r.float()],
  ["double", [...floats, 1e308, -0], (w, v) => w.double(v), (w, v) => w.double(v), (r) => r.double()],
  ["bool", [true, false], (w, v) => w.bool(v), (w, v) => w.bool(v), (r) => r.bool()],
  ["string", ["", "a", "x".repeat(42), "x".repeat(43), "ü".repeat(50), "😀".repeat(30), "a\ud800b", "\udc00"], (w, v) => w.string(v), (w, v) => w.string(v), (r) => r.string()],
  ["bytes", [new Uint8Array(0), new Uint8Array(200).fill(9)], (w, v) => w.bytes(v), (w, v) => w.bytes(v), (r) => r.bytes()],
];

describe("Writer and Reader", () => {
  it.each(cases)("write %s as BinaryWriter does, and read it back as BinaryReader does", (_name, values, write, reference, read) => {
    for (const v of values) {
      const w = new Writer(1); // grows from one byte
      write(w, v as never);
      const bytes = w.finish();
      const ref = new BinaryWriter();
      reference(ref, v as never);
      expect(bytes).toEqual(ref.finish());
      const back = read(new Reader(bytes));
      if (typeof v === "string") expect(back).toBe(new BinaryReader(bytes).string());
      else if (typeof v === "number" && _name === "float") expect(back).toBe(Math.fround(v));
      else expect(back).toEqual(v);
    }
  });

  it("refuses what protobuf-es refuses to write", () => {
    expect(() => new Writer().int32(2 ** 31)).toThrow(/int32/);
    expect(() => new Writer().int32(1.5)).toThrow(/int32/);
    expect(() => new Writer().uint32(-1)).toThrow(/uint32/);
    expect(() => new Writer().float(1e39)).toThrow(/float32/);
    expect(() => new Writer().uint64(-1n)).toThrow(/uint64/);
  });

  it("moves a nested body up when its length needs more than one byte", () => {
    for (const n of [0, 127, 128, 16_383, 16_384, 70_000]) {
      const w = new Writer();
      w.tag(10);
      const at = w.fork();
      w.bytes(new Uint8Array(n).fill(3));
      w.join(at);
      expect(w.finish()).toEqual(new BinaryWriter().tag(1, 2).fork().bytes(new Uint8Array(n).fill(3)).join().finish());
    }
  });

  it("throws on truncated input and illegal tags", () => {
    const bytes = new BinaryWriter().tag(1, 2).string("hello").tag(2, 0).uint64(2n ** 60n).finish();
    for (let cut = 1; cut < bytes.length; cut++) {
      const r = new Reader(bytes.subarray(0, cut));
      expect(() => {
        r.tag();
        r.string();
        r.tag();
        r.uint64();
      }).toThrow();
    }
    expect(() => new Reader(new Uint8Array([0])).tag()).toThrow(/illegal tag/);
    expect(() => new Reader(new Uint8Array([0x0f])).tag()).toThrow(/illegal tag/);
  });
});
