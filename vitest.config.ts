import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "proto/src/**/*.spec.ts",
      "proto/fast/**/*.spec.ts",
      "server/src/**/*.spec.ts",
      "clients/typescript/src/**/*.spec.ts",
      "test/**/*.test.ts",
    ],
    globalSetup: ["test/setup/global-setup.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    reporters: process.env.CI ? ["default", "junit"] : ["default"],
    outputFile: { junit: "test-results/vitest.xml" },
  },
});
