import { RpcError, loadConfig, rpc, setToken } from "./api.js";
import type { DashboardConfig } from "./types.js";

/**
 * Who is signed in. The token stays in sessionStorage: it lasts as long as
 * the tab, is never sent anywhere but this broker's RPCs (as a bearer
 * header, never a cookie), and is gone when the tab closes.
 */
export type Scope = "enqueue" | "work" | "read" | "admin";
const ALL_SCOPES: Scope[] = ["enqueue", "work", "read", "admin"];
const TOKEN_KEY = "jobwire.token";

export interface Who {
  authEnabled: boolean;
  name: string;
  scopes: Scope[];
  queues: string[];
}

export let config: DashboardConfig = { authEnabled: false, traceUrl: "" };
export let who: Who | null = null;

function storedToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** The answer to WhoAmI, or what a broker without WhoAmI (UNIMPLEMENTED) implies. */
async function whoAmI(withToken: boolean): Promise<Who> {
  try {
    const r = await rpc("AdminService/WhoAmI", {}, { quiet401: true });
    return {
      authEnabled: Boolean(r.authEnabled),
      name: r.name ?? "",
      scopes: (r.scopes ?? []).filter((s): s is Scope => (ALL_SCOPES as string[]).includes(s)),
      queues: r.queues ?? [],
    };
  } catch (err) {
    if (err instanceof RpcError && err.code === "unimplemented") {
      // The broker still enforces every call; the buttons just cannot know in advance.
      return { authEnabled: config.authEnabled || withToken, name: withToken ? "token" : "anonymous", scopes: [...ALL_SCOPES], queues: ["*"] };
    }
    throw err;
  }
}

/** Reads the config and the stored token. Resolves to false when the user must sign in. */
export async function start(): Promise<boolean> {
  config = await loadConfig();
  const t = storedToken();
  setToken(t);
  if (config.authEnabled && !t) return false;
  try {
    who = await whoAmI(Boolean(t));
    return true;
  } catch (err) {
    if (err instanceof RpcError && err.code === "unauthenticated") {
      forget();
      return false;
    }
    throw err;
  }
}

/** Tries a token; keeps it only if the broker accepts it. */
export async function signIn(token: string): Promise<void> {
  setToken(token);
  try {
    who = await whoAmI(true);
  } catch (err) {
    setToken(storedToken());
    if (err instanceof RpcError && err.code === "unauthenticated") throw new Error("The broker did not accept this token.");
    throw err;
  }
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage refused (a private window's quota): the token still works until reload.
  }
}

export function forget(): void {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
  setToken(null);
  who = null;
}

export function signedIn(): boolean {
  return who !== null;
}

function globMatch(pattern: string, s: string): boolean {
  const re = new RegExp(`^${pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
  return re.test(s);
}

/** Whether the signed-in caller holds `scope`, on `queue` when one is named. */
export function can(scope: Scope, queue?: string): boolean {
  if (!who) return false;
  if (!who.scopes.includes(scope)) return false;
  if (queue === undefined) return true;
  return who.queues.some((p) => globMatch(p, queue));
}

/** Why a button is disabled, for its tooltip. */
export function needs(scope: Scope, queue?: string): string {
  if (!who) return "sign in first";
  if (!who.scopes.includes(scope)) return `${who.name || "this token"} lacks scope ${scope}`;
  return `${who.name || "this token"} may not touch queue ${queue ?? ""}`;
}
