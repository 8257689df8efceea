import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Config } from "@jobwire/server";
import { startTestBroker, type TestBroker } from "@jobwire/server/testing";

/** Tokens for the dashboard's auth tests, in the tokens file of the security contract (issue 12). */
export const ADMIN = { name: "ops-admin", token: "admin-secret-0123456789abcdef", scopes: ["read", "admin"], queues: ["*"] };
export const READER = { name: "ops-reader", token: "reader-secret-0123456789abcdef", scopes: ["read"], queues: ["*"] };
export const BILLING = { name: "billing-ops", token: "billing-secret-0123456789abcdef", scopes: ["read", "admin"], queues: ["billing.*"] };

export interface AuthBroker {
  tb: TestBroker;
  tokensFile: string;
  /** Rewrites the tokens file with these tokens (the broker reloads it when it changes). */
  writeTokens(tokens: (typeof ADMIN)[]): Promise<void>;
  stop(): Promise<void>;
}

/** A broker with JOBWIRE_AUTH_FILE set, or null with the reason when this broker does not do scoped tokens yet. */
export async function startAuthBroker(): Promise<{ broker: AuthBroker | null; missing: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-dash-auth-"));
  const tokensFile = path.join(dir, "tokens.json");
  const writeTokens = (tokens: (typeof ADMIN)[]) => writeFile(tokensFile, JSON.stringify({ tokens }, null, 2));
  await writeTokens([ADMIN, READER, BILLING]);
  let tb: TestBroker;
  try {
    tb = await startTestBroker({ authFile: tokensFile } as Partial<Config>);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    return { broker: null, missing: `the broker did not start with authFile: ${String(err)}` };
  }
  const broker = {
    tb,
    tokensFile,
    writeTokens,
    async stop() {
      await tb.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  const missing = await probe(tb);
  if (missing) {
    await broker.stop();
    return { broker: null, missing };
  }
  return { broker, missing: "" };
}

async function probe(tb: TestBroker): Promise<string> {
  const cfg = (await (await fetch(`${tb.url}/dashboard/config.json`)).json().catch(() => ({}))) as { authEnabled?: boolean };
  if (cfg.authEnabled !== true) return "GET /dashboard/config.json does not say authEnabled: true with JOBWIRE_AUTH_FILE set";
  const who = await whoAmI(tb, ADMIN.token);
  if (who.status !== 200) return `WhoAmI with a token from the tokens file answered HTTP ${who.status}`;
  if ((who.body as { name?: string }).name !== ADMIN.name) return `WhoAmI does not name the token: ${JSON.stringify(who.body)}`;
  const anonymous = await whoAmI(tb, "");
  if (anonymous.status !== 401) return `WhoAmI without a token answered HTTP ${anonymous.status}, not 401`;
  return "";
}

export async function whoAmI(tb: TestBroker, token: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${tb.url}/jobwire.v1.AdminService/WhoAmI`, {
    method: "POST",
    headers: { "content-type": "application/json", "connect-protocol-version": "1", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: "{}",
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}
