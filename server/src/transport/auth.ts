import { timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/**
 * Bearer-token authentication for every RPC, streams included. Tokens are
 * compared in constant time; a missing or wrong token is UNAUTHENTICATED
 * and never says which.
 */
export function authInterceptor(tokens: string[]): Interceptor {
  const accepted = tokens.map((t) => Buffer.from(t));
  const ok = (presented: string) => {
    const p = Buffer.from(presented);
    let match = false;
    for (const a of accepted) if (a.length === p.length && timingSafeEqual(a, p)) match = true;
    return match;
  };
  return (next) => async (req) => {
    const header = req.header.get("authorization") ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m || !ok(m[1]!)) {
      throw new ConnectError("a valid bearer token is required (authorization: Bearer <token>)", Code.Unauthenticated);
    }
    return next(req);
  };
}
