import { describe, expect, it } from "vitest";
import { grpcTimeout } from "./grpc-unary.js";

describe("grpcTimeout", () => {
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
});
