import { timingSafeEqual } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../log.js";
import { Authenticator, RPC_SCOPES } from "./auth.js";
import { parseTokensFile, sha256, TokensFileError } from "./tokens-file.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-auth-"));
  dirs.push(dir);
  const f = path.join(dir, name);
  await writeFile(f, text);
  return f;
}

const SECRET = "billing-secret-0123456789";

describe("RPC_SCOPES", () => {
  it("names a scope for every RPC of every service, so a new RPC cannot go unguarded", () => {
    const rpcs = [JobService, WorkerService, AdminService].flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    for (const rpc of rpcs) expect(RPC_SCOPES[rpc], rpc).toBeDefined();
    const known = new Set([...rpcs, "grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]);
    for (const rpc of Object.keys(RPC_SCOPES)) expect(known.has(rpc), rpc).toBe(true);
  });
});

describe("the tokens file", () => {
  it("reads YAML and JSON, plain secrets and sha256 hashes", async () => {
    const yaml = await file(
      "tokens.yaml",
      `tokens:\n  - name: billing\n    token: "${SECRET}"\n    scopes: [enqueue, read]\n    queues: ["billing.*"]\n  - name: hashed\n    sha256: "${sha256("hashed-secret-0123456789").toString("hex")}"\n    scopes: [work]\ncertificates:\n  - name: fleet\n    subject: "CN=worker-fleet"\n    scopes: [work]\n`,
    );
    const a = await Authenticator.create({ tokens: [], file: yaml, metrics: false }, silentLogger);
    expect(a.identify(`Bearer ${SECRET}`, null)).toMatchObject({ name: "billing", queues: ["billing.*"] });
    expect(a.identify("Bearer hashed-secret-0123456789", null)!.has("work")).toBe(true);
    expect(a.identify("Bearer nope-nope-nope-nope", null)).toBeNull();
    const json = await file("tokens.json", JSON.stringify({ tokens: [{ name: "j", token: SECRET, scopes: ["admin"] }] }));
    const b = await Authenticator.create({ tokens: [], file: json, metrics: false }, silentLogger);
    expect(b.identify(`Bearer ${SECRET}`, null)).toMatchObject({ name: "j", queues: ["*"] });
  });

  it("refuses a file with a mistake, naming the entry and the field", () => {
    const bad = (doc: unknown) => () => parseTokensFile(doc, "f");
    expect(bad({ tokens: [{ name: "a", token: "short", scopes: ["read"] }] })).toThrow(/tokens\[0\]\.token: must be at least 16/);
    expect(bad({ tokens: [{ name: "a", token: SECRET, scopes: ["root"] }] })).toThrow(/tokens\[0\]\.scopes: "root" is not a scope/);
    expect(bad({ tokens: [{ name: "a", token: SECRET, sha256: "00", scopes: ["read"] }] })).toThrow(/exactly one of token and sha256/);
    expect(bad({ tokens: [{ name: "a", token: SECRET, scopes: ["read"], colour: 1 }] })).toThrow(/unknown key "colour"/);
    expect(bad({ certificates: [{ name: "c", scopes: ["work"] }] })).toThrow(/certificates\[0\]\.subject: is required/);
    expect(bad({ tokens: [{ name: "a", token: SECRET, scopes: ["read"] }, { name: "a", token: `${SECRET}x`, scopes: ["read"] }] })).toThrow(/used twice/);
    expect(bad([1])).toThrow(TokensFileError);
  });

  it("keeps the tokens in force when a reload finds the file broken", async () => {
    const f = await file("tokens.yaml", `tokens:\n  - name: a\n    token: "${SECRET}"\n    scopes: [read]\n`);
    const a = await Authenticator.create({ tokens: [], file: f, metrics: false }, silentLogger);
    await writeFile(f, "tokens: [ {");
    expect(await a.reload()).toBe(false);
    expect(a.identify(`Bearer ${SECRET}`, null)).not.toBeNull();
    await writeFile(f, `tokens:\n  - name: b\n    token: "${SECRET}-rotated"\n    scopes: [read]\n`);
    expect(await a.reload()).toBe(true);
    expect(a.identify(`Bearer ${SECRET}`, null)).toBeNull();
    expect(a.identify(`Bearer ${SECRET}-rotated`, null)).toMatchObject({ name: "b" });
  });
});

describe("checking a token", () => {
  it("compares against every known token every time, with timingSafeEqual, whatever matches", async () => {
    let comparisons = 0;
    const counting = (x: Buffer, y: Buffer) => {
      comparisons++;
      return timingSafeEqual(x, y);
    };
    const tokens = Array.from({ length: 5 }, (_, i) => `token-number-${i}-0123456789`);
    const a = await Authenticator.create({ tokens, file: undefined, metrics: false }, silentLogger, counting);
    for (const presented of [tokens[0]!, tokens[4]!, "token-number-0-012345678X", "x".repeat(40)]) {
      comparisons = 0;
      a.identify(`Bearer ${presented}`, null);
      expect(comparisons, presented).toBe(5);
    }
  });

  it("answers UNAUTHENTICATED without credentials, PERMISSION_DENIED naming the missing scope", async () => {
    const f = await file("t.yaml", `tokens:\n  - name: reader\n    token: "${SECRET}"\n    scopes: [read]\n`);
    const a = await Authenticator.create({ tokens: [], file: f, metrics: true }, silentLogger);
    expect(a.check("/jobwire.v1.AdminService/Replay", undefined, null)).toMatchObject({ ok: false, code: "unauthenticated" });
    expect(a.check("/jobwire.v1.AdminService/Replay", `Bearer ${SECRET}`, null)).toEqual({
      ok: false,
      code: "permission_denied",
      message: "token reader lacks scope admin (needed by AdminService.Replay)",
    });
    expect(a.check("/jobwire.v1.AdminService/ListJobs", `Bearer ${SECRET}`, null)).toMatchObject({ ok: true });
    expect(a.check("/metrics", undefined, null)).toMatchObject({ ok: false, code: "unauthenticated" });
    expect(a.check("/healthz", undefined, null)).toMatchObject({ ok: true });
  });
});
