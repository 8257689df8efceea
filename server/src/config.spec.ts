import { describe, expect, it } from "vitest";
import { ConfigError, DEFAULT_PORT, loadConfig, settingNames } from "./config.js";

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
    expect(() => loadConfig({}, ["--nope", "1"])).toThrow(/Unknown option '--nope'; known flags: --host, --port/);
    expect(() => loadConfig({}, ["--port"])).toThrow(/argument missing/);
    expect(() => loadConfig({ DATABASE_URL: "not-a-url" })).toThrow(/DATABASE_URL must be a Postgres URL/);
    expect(() => loadConfig({ DATABASE_URL: "mysql://u@h/db" })).toThrow(/got a mysql:\/\/ URL/);
    expect(() => loadConfig({ JOBWIRE_LOG_LEVEL: "loud" })).toThrow(/one of debug, info, warn, error/);
    expect(() => loadConfig({ JOBWIRE_MAX_PAYLOAD_BYTES: "8000000" })).toThrow(/JOBWIRE_MAX_MESSAGE_BYTES \(4194304\) must leave 163840 bytes beside JOBWIRE_MAX_PAYLOAD_BYTES/);
  });

  it("keeps completed jobs 24 h by default; zero (delete at ack) is allowed, a negative retention is not", () => {
    expect(loadConfig({}).completedRetentionMs).toBe(24 * 3600_000);
    expect(loadConfig({ JOBWIRE_COMPLETED_RETENTION_MS: "0" }).completedRetentionMs).toBe(0);
    expect(() => loadConfig({ JOBWIRE_COMPLETED_RETENTION_MS: "-1" })).toThrow(/JOBWIRE_COMPLETED_RETENTION_MS must be an integer from 0/);
  });
});

describe("the README", () => {
  it("lists every setting that --help lists", async () => {
    const { readFile } = await import("node:fs/promises");
    const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
    const table = readme.slice(readme.indexOf("## Configuration"));
    for (const name of settingNames()) expect(table, name).toContain(`| \`${name}\` |`);
  });
});
