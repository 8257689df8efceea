import { createContextKey } from "@connectrpc/connect";
import { NO_ACCESS, type Access } from "../broker/access.js";

/**
 * What the HTTP layer (server.ts) learns about a call before it is decoded,
 * handed to the handlers through connect's context values, on both the lean
 * unary path and connect-es.
 */

/** The caller's access, after authentication; NO_ACCESS unless set. */
export const ACCESS = createContextKey<Access>(NO_ACCESS, { description: "jobwire access" });

/** The caller's address as "host:port" ("" when unknown), shown by ListWorkers. */
export const PEER = createContextKey<string>("", { description: "jobwire peer" });
