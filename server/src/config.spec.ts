import { describe, expect, it } from "vitest";
import { ConfigError, DEFAULT_PORT, loadConfig } from "./config.js";

describe("loadConfig", () => {
  it("has explicit defaults", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: DEFAULT_PORT, maxPayloadBytes: 1024 * 1024, maxMessageBytes: 4 * 1024 * 1024, databaseUrl: undefined });
  });

  it("reads env, and flags win over env", () => {
    const c = loadConfig({ JOBWIRE_PORT: "6000", DATABASE_URL: "postgres://x/y" }, ["--port", "7000", "--poll-interval-ms=250"]);
    expect(c).toMatchObject({ port: 7000, pollIntervalMs: 250, databaseUrl: "postgres://x/y" });
  });

  it("explains what is wrong", () => {
    expect(() => loadConfig({ JOBWIRE_PORT: "http" })).toThrow(new ConfigError('JOBWIRE_PORT must be an integer from 0 to 65535, got "http"'));
    expect(() => loadConfig({}, ["--nope", "1"])).toThrow(/unknown flag --nope/);
    expect(() => loadConfig({}, ["--port"])).toThrow(/needs a value/);
    expect(() => loadConfig({ JOBWIRE_LOG_LEVEL: "loud" })).toThrow(/one of debug, info, warn, error/);
    expect(() => loadConfig({ JOBWIRE_MAX_PAYLOAD_BYTES: "8000000" })).toThrow(/JOBWIRE_MAX_MESSAGE_BYTES \(4194304\) must leave 163840 bytes beside JOBWIRE_MAX_PAYLOAD_BYTES/);
  });

  it("keeps completed jobs 24 h by default; zero (delete at ack) is allowed, a negative retention is not", () => {
    expect(loadConfig({}).completedRetentionMs).toBe(24 * 3600_000);
    expect(loadConfig({ JOBWIRE_COMPLETED_RETENTION_MS: "0" }).completedRetentionMs).toBe(0);
    expect(() => loadConfig({ JOBWIRE_COMPLETED_RETENTION_MS: "-1" })).toThrow(/JOBWIRE_COMPLETED_RETENTION_MS must be an integer from 0/);
  });
});
