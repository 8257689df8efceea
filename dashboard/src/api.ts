import type { DashboardConfig, Rpcs } from "./types.js";

/**
 * Calls go to the broker's own port over the Connect protocol with JSON
 * (POST /jobwire.v1.<Service>/<Method>), exactly what `buf curl` sends. A
 * JSON body needs a CORS preflight from any other origin, and the broker
 * answers none, so another site cannot make these calls with the user's
 * browser; the bearer token lives in sessionStorage, never in a cookie.
 */

/** A Connect error: code is the protocol's name for it ("permission_denied"). */
export class RpcError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Long enough for a Replay of 10,000 jobs on a busy database; a hung broker still gives an answer. */
const CALL_TIMEOUT_MS = 30_000;

let token: string | null = null;
let onUnauthenticated: (err: RpcError) => void = () => {};

export function setToken(t: string | null): void {
  token = t;
}

/** Called for every UNAUTHENTICATED answer (the page goes back to sign-in). */
export function whenUnauthenticated(fn: (err: RpcError) => void): void {
  onUnauthenticated = fn;
}

export async function rpc<M extends keyof Rpcs>(method: M, body: Rpcs[M][0], opts: { quiet401?: boolean } = {}): Promise<Rpcs[M][1]> {
  const headers: Record<string, string> = { "content-type": "application/json", "connect-protocol-version": "1" };
  if (token) headers.authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(`/jobwire.v1.${method}`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      credentials: "omit",
    });
  } catch (err) {
    throw new RpcError("unavailable", `the broker did not answer: ${(err as Error).message}`, 0);
  }
  const text = await res.text();
  let data: unknown = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text.slice(0, 200) };
  }
  if (!res.ok) {
    const e = data as { code?: string; message?: string };
    const err = new RpcError(e.code ?? `http_${res.status}`, e.message ?? res.statusText, res.status);
    if (err.code === "unauthenticated" && !opts.quiet401) onUnauthenticated(err);
    throw err;
  }
  return data as Rpcs[M][1];
}

/** "PERMISSION_DENIED: token ci lacks scope admin" from an RpcError, for people. */
export function describe(err: unknown): string {
  if (err instanceof RpcError) return `${err.code.toUpperCase()}: ${err.message}`;
  return String((err as Error)?.message ?? err);
}

export async function loadConfig(): Promise<DashboardConfig> {
  try {
    const res = await fetch("/dashboard/config.json", { credentials: "omit", signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
    if (!res.ok) throw new Error(res.statusText);
    const c = (await res.json()) as Partial<DashboardConfig>;
    return { authEnabled: Boolean(c.authEnabled), traceUrl: typeof c.traceUrl === "string" ? c.traceUrl : "" };
  } catch {
    // An older broker without config.json: no auth hint, no trace link. A 401 still leads to sign-in.
    return { authEnabled: false, traceUrl: "" };
  }
}
