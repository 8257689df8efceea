import { describe, expect, it } from "vitest";
import { grpcTimeout, parseGrpcTimeout } from "./timeout.js";

describe("grpc-timeout", () => {
  it("writes at most 8 digits, in the finest unit that fits, rounded up", () => {
    expect(grpcTimeout(0.2)).toBe("1m");
    expect(grpcTimeout(1500)).toBe("1500m");
    expect(grpcTimeout(99_999_999)).toBe("99999999m");
    expect(grpcTimeout(100_000_000)).toBe("100000S");
    expect(grpcTimeout(100_000_001)).toBe("100001S");
    expect(grpcTimeout(40 * 24 * 3600 * 1000)).toBe("3456000S");
    expect(grpcTimeout(1e14)).toBe("27777778H");
    expect(grpcTimeout(1e20)).toBe("99999999H");
  });

  it("reads every unit, and refuses what is not a timeout", () => {
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
    expect(parseGrpcTimeout("150m")).toBe(150);
    expect(parseGrpcTimeout("2S")).toBe(2000);
    expect(parseGrpcTimeout("1M")).toBe(60_000);
    expect(parseGrpcTimeout("1H")).toBe(3_600_000);
    expect(parseGrpcTimeout("1500u")).toBeCloseTo(1.5);
    expect(parseGrpcTimeout("2000000n")).toBeCloseTo(2);
    for (const bad of ["soon", "", "123456789m", "1.5S", "-1m", "10"]) expect(parseGrpcTimeout(bad)).toBeInstanceOf(Error);
  });
});
