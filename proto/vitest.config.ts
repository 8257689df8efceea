import { defineConfig } from "vitest/config";

// The codec runtime's and the generated codecs' specs, which need no
// database: `npx vitest run --config proto/vitest.config.ts`.
export default defineConfig({
  test: {
    root: import.meta.dirname,
    include: ["src/**/*.spec.ts", "fast/**/*.spec.ts"],
    testTimeout: 60_000,
  },
});
