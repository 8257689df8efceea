import { timingSafeEqual } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { Access, FULL_ACCESS, NO_ACCESS, type Scope } from "../broker/access.js";
import type { Logger } from "../log.js";
import { loadTokensFile, sha256, type CertificateEntry, type TokensFile } from "./tokens-file.js";

/**
 * Who is calling, and whether the RPC is within their scopes: decided from
 * the request's headers and TLS peer certificate, before its body is read,
 * so that an unauthenticated or unauthorized call costs no decoding and runs
 * no SQL. The queue-level part of access is the broker's (broker/access.ts).
 *
 * Credentials: a bearer token from JOBWIRE_AUTH_TOKENS (every scope) or the
 * tokens file (JOBWIRE_AUTH_FILE: transport/tokens-file.ts), or, with mTLS,
 * a client certificate whose subject the file maps to scopes. A token is
 * checked by the SHA-256 of what was presented against every known token's
 * SHA-256 with timingSafeEqual, always all of them, so neither which token
 * matched nor how much of one matched shows in the time taken.
 */

/** The scope each RPC needs ("any": any authenticated caller). auth.spec checks every RPC of every service is here. */
export const RPC_SCOPES: Readonly<Record<string, readonly Scope[] | "any">> = {
  "jobwire.v1.JobService/Enqueue": ["enqueue"],
  "jobwire.v1.JobService/GetJob": ["read", "enqueue"],
  "jobwire.v1.JobService/CancelJob": ["admin"],
  "jobwire.v1.WorkerService/Lease": ["work"],
  "jobwire.v1.WorkerService/Ack": ["work"],
  "jobwire.v1.WorkerService/Nack": ["work"],
  "jobwire.v1.WorkerService/Heartbeat": ["work"],
  "jobwire.v1.AdminService/Replay": ["admin"],
  "jobwire.v1.AdminService/ListJobs": ["read"],
  "jobwire.v1.AdminService/GetQueueStats": ["read"],
  "jobwire.v1.AdminService/SetQueueConfig": ["admin"],
  "jobwire.v1.AdminService/GetQueueConfig": ["read"],
  "jobwire.v1.AdminService/PauseQueue": ["admin"],
  "jobwire.v1.AdminService/ResumeQueue": ["admin"],
  "jobwire.v1.AdminService/SetSchedule": ["admin"],
  "jobwire.v1.AdminService/DeleteSchedule": ["admin"],
  "jobwire.v1.AdminService/ListSchedules": ["read"],
  "jobwire.v1.AdminService/ListWorkers": ["read"],
  "jobwire.v1.AdminService/GetQueueHistory": ["read"],
  "jobwire.v1.AdminService/WhoAmI": "any",
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "any",
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "any",
};

export interface AuthOptions {
  /** JOBWIRE_AUTH_TOKENS: every scope, every queue. */
  tokens: string[];
  /** JOBWIRE_AUTH_FILE. */
  file: string | undefined;
  /** JOBWIRE_METRICS_AUTH: /metrics needs the read scope. */
  metrics: boolean;
}

export type Verdict = { ok: true; access: Access } | { ok: false; code: "unauthenticated" | "permission_denied"; message: string };

interface Known {
  digest: Buffer;
  access: Access;
}

export class Authenticator {
  private known: Known[] = [];
  private certificates: { entry: CertificateEntry; access: Access }[] = [];
  private watcher: FSWatcher | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly opts: AuthOptions,
    private readonly log: Logger,
    /** timingSafeEqual; a test can count the comparisons. */
    private readonly equal: (a: Buffer, b: Buffer) => boolean = timingSafeEqual,
  ) {}

  static async create(opts: AuthOptions, log: Logger, equal?: (a: Buffer, b: Buffer) => boolean): Promise<Authenticator> {
    const a = new Authenticator(opts, log, equal);
    a.apply(opts.file ? await loadTokensFile(opts.file) : { tokens: [], certificates: [] });
    return a;
  }

  /** Authentication is on when any token or certificate mapping is configured. */
  get enabled(): boolean {
    return this.known.length > 0 || this.certificates.length > 0;
  }

  /**
   * Re-reads the tokens file. A file that no longer parses leaves the
   * tokens in force as they were, and says why: a typo must not lock every
   * client out, nor let anyone in.
   */
  async reload(): Promise<boolean> {
    if (!this.opts.file) return true;
    try {
      this.apply(await loadTokensFile(this.opts.file));
      this.log.info("tokens file reloaded", { file: this.opts.file, tokens: this.known.length, certificates: this.certificates.length });
      return true;
    } catch (err) {
      this.log.error("tokens file not reloaded; the tokens in force are unchanged", { file: this.opts.file, err: (err as Error).message });
      return false;
    }
  }

  /** Reloads when the file changes (debounced: editors write in several steps), as well as on SIGHUP (app.ts). */
  watchFile(): void {
    if (!this.opts.file || this.watcher) return;
    try {
      this.watcher = watch(this.opts.file, () => {
        if (this.reloadTimer) clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => void this.reload(), 200);
        this.reloadTimer.unref();
      });
      this.watcher.on("error", (err) => this.log.warn("cannot watch the tokens file; reload it with SIGHUP", { err: err.message }));
      this.watcher.unref();
    } catch (err) {
      this.log.warn("cannot watch the tokens file; reload it with SIGHUP", { err: (err as Error).message });
    }
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
  }

  private apply(file: TokensFile): void {
    const known: Known[] = this.opts.tokens.map((t, i) => ({ digest: sha256(t), access: new Access(`JOBWIRE_AUTH_TOKENS[${i + 1}]`, new Set(FULL_ACCESS.scopes), ["*"]) }));
    for (const t of file.tokens) known.push({ digest: t.sha256, access: new Access(t.name, new Set(t.scopes), t.queues) });
    this.known = known;
    this.certificates = file.certificates.map((entry) => ({ entry, access: new Access(entry.name, new Set(entry.scopes), entry.queues, "certificate") }));
  }

  /** Who the caller is: by bearer token first, else by client certificate; null when neither is known. */
  identify(authorization: string | undefined, peer: PeerCertificate | null): Access | null {
    if (!this.enabled) return FULL_ACCESS;
    if (authorization !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(authorization);
      if (!m) return null;
      const presented = sha256(m[1]!);
      let found: Access | null = null;
      for (const k of this.known) if (this.equal(k.digest, presented) && found === null) found = k.access;
      return found;
    }
    if (peer?.subject) {
      const cn = peer.subject.CN;
      const whole = subjectString(peer);
      for (const c of this.certificates) {
        const s = c.entry.subject;
        if (s === whole || (s.startsWith("CN=") && !s.includes(",") && s.slice(3) === cn)) return c.access;
      }
    }
    return null;
  }

  /**
   * The verdict for a request to `path` ("/pkg.Service/Method", or a plain
   * HTTP path), before its body is read. Plain HTTP paths other than
   * /metrics (with JOBWIRE_METRICS_AUTH) are open: the dashboard's page and
   * files, /healthz, /readyz.
   */
  check(path: string, authorization: string | undefined, peer: PeerCertificate | null): Verdict {
    const rpc = path.startsWith("/") ? path.slice(1) : path;
    const needs = RPC_SCOPES[rpc] ?? (path === "/metrics" && this.opts.metrics ? (["read"] as const) : undefined);
    if (needs === undefined) return { ok: true, access: this.enabled ? NO_ACCESS : FULL_ACCESS };
    const access = this.identify(authorization, peer);
    if (access === null) {
      return {
        ok: false,
        code: "unauthenticated",
        message:
          authorization === undefined
            ? "a bearer token is required (authorization: Bearer <token>), or a client certificate the broker knows"
            : "the bearer token is not one this broker knows",
      };
    }
    if (needs === "any" || needs.some((s) => access.has(s))) return { ok: true, access };
    return {
      ok: false,
      code: "permission_denied",
      message: `${access.label} lacks scope ${needs.join(" or ")} (needed by ${rpc.replace(/^jobwire\.v1\./, "").replace("/", ".")})`,
    };
  }
}

function subjectString(peer: PeerCertificate): string {
  return Object.entries(peer.subject)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : v}`)
    .join(", ");
}
