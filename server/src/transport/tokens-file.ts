import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { SCOPES, type Scope } from "../broker/access.js";

/**
 * The tokens file (JOBWIRE_AUTH_FILE), JSON or YAML:
 *
 *   tokens:
 *     - name: billing-producer        # shown by WhoAmI and in logs, never the secret
 *       token: "a-secret-of-16+-chars" # or sha256: "<hex of the secret's SHA-256>"
 *       scopes: [enqueue, read]       # of enqueue, work, read, admin
 *       queues: ["billing.*"]         # glob patterns; default ["*"]
 *   certificates:                     # with mTLS, a client certificate stands in for a token
 *     - name: worker-fleet
 *       subject: "CN=worker-fleet"     # the certificate subject's CN, or its whole subject
 *       scopes: [work]
 *
 * Every entry is checked at load: a typo is an error naming the entry and
 * the field, not a token that silently does less (or more).
 */

/** A token, by the SHA-256 of its secret: the file may hold only the hash. */
export interface TokenEntry {
  name: string;
  sha256: Buffer;
  scopes: Scope[];
  queues: string[];
}

export interface CertificateEntry {
  name: string;
  /** "CN=..." matches the subject's CN; anything else, the whole subject as "CN=a, O=b". */
  subject: string;
  scopes: Scope[];
  queues: string[];
}

export interface TokensFile {
  tokens: TokenEntry[];
  certificates: CertificateEntry[];
}

export class TokensFileError extends Error {
  override name = "TokensFileError";
}

export const MIN_SECRET_LENGTH = 16;

export function sha256(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

export async function loadTokensFile(file: string): Promise<TokensFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new TokensFileError(`cannot read the tokens file ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  const json = /\.json$/i.test(path.extname(file));
  try {
    doc = json ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    // Where, not what: the parser's message quotes the line, which may hold a secret.
    const pos = (err as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    const at = pos ? ` at line ${pos.line}, column ${pos.col}` : "";
    throw new TokensFileError(`${file} is not valid ${json ? "JSON" : "YAML"}${at}`);
  }
  return parseTokensFile(doc, file);
}

export function parseTokensFile(doc: unknown, where = "the tokens file"): TokensFile {
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new TokensFileError(`${where}: expected an object with "tokens" and/or "certificates"`);
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== "tokens" && k !== "certificates") throw new TokensFileError(`${where}: unknown key "${k}" (expected tokens, certificates)`);
  }
  const tokens = list(o.tokens, `${where}: tokens`).map((e, i) => token(e, `${where}: tokens[${i}]`));
  const certificates = list(o.certificates, `${where}: certificates`).map((e, i) => certificate(e, `${where}: certificates[${i}]`));
  const names = new Set<string>();
  for (const e of [...tokens, ...certificates]) {
    if (names.has(e.name)) throw new TokensFileError(`${where}: the name ${e.name} is used twice`);
    names.add(e.name);
  }
  return { tokens, certificates };
}

function list(v: unknown, at: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new TokensFileError(`${at}: expected a list`);
  return v;
}

function entry(v: unknown, at: string, allowed: string[]): { name: string; scopes: Scope[]; queues: string[]; o: Record<string, unknown> } {
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new TokensFileError(`${at}: expected an object`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw new TokensFileError(`${at}: unknown key "${k}" (expected ${allowed.join(", ")})`);
  if (typeof o.name !== "string" || o.name.trim() === "") throw new TokensFileError(`${at}.name: is required`);
  const scopes = list(o.scopes, `${at}.scopes`);
  if (scopes.length === 0) throw new TokensFileError(`${at}.scopes: name at least one of ${SCOPES.join(", ")}`);
  for (const s of scopes) {
    if (typeof s !== "string" || !(SCOPES as readonly string[]).includes(s)) {
      throw new TokensFileError(`${at}.scopes: "${String(s)}" is not a scope (${SCOPES.join(", ")})`);
    }
  }
  const queues = o.queues === undefined ? ["*"] : list(o.queues, `${at}.queues`);
  if (queues.length === 0 || queues.some((q) => typeof q !== "string" || q === "")) {
    throw new TokensFileError(`${at}.queues: expected a list of queue name patterns (default ["*"])`);
  }
  return { name: o.name.trim(), scopes: [...new Set(scopes as Scope[])], queues: queues as string[], o };
}

function token(v: unknown, at: string): TokenEntry {
  const { name, scopes, queues, o } = entry(v, at, ["name", "token", "sha256", "scopes", "queues"]);
  if ((o.token === undefined) === (o.sha256 === undefined)) throw new TokensFileError(`${at}: give exactly one of token and sha256`);
  let digest: Buffer;
  if (o.token !== undefined) {
    if (typeof o.token !== "string" || o.token.length < MIN_SECRET_LENGTH) {
      throw new TokensFileError(`${at}.token: must be at least ${MIN_SECRET_LENGTH} characters`);
    }
    digest = sha256(o.token);
  } else {
    if (typeof o.sha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(o.sha256)) throw new TokensFileError(`${at}.sha256: must be 64 hex digits`);
    digest = Buffer.from(o.sha256, "hex");
  }
  return { name, sha256: digest, scopes, queues };
}

function certificate(v: unknown, at: string): CertificateEntry {
  const { name, scopes, queues, o } = entry(v, at, ["name", "subject", "scopes", "queues"]);
  if (typeof o.subject !== "string" || o.subject.trim() === "") throw new TokensFileError(`${at}.subject: is required (for example "CN=worker-fleet")`);
  return { name, subject: o.subject.trim(), scopes, queues };
}
