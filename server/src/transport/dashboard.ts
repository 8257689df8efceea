import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The dashboard's static files: dashboard/dist, built by `npm run build`
 * (dashboard/build.mjs): index.html and assets/ with content-hashed names.
 * The whole bundle is about 30 KB, so it is read into memory once and
 * served from there; only files found in dist/ at load time can be served,
 * so no request path ever reaches the file system.
 *
 * The page calls the broker's RPCs over the Connect protocol with JSON, on
 * this same port (dashboard/src/api.ts).
 */

/**
 * Sent with every dashboard response. The bundle has no inline script or
 * style and fetches nothing from elsewhere, so everything is 'self'; no
 * page may frame it (clickjacking of the replay and pause buttons), and
 * Trusted Types refuse any HTML built from strings (the page builds DOM nodes).
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

export interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
  /** Hashed asset names never change content: browsers may keep them for good. */
  immutable: boolean;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
};

/** Where dist/ may be: where told (only there), else beside this install (the repository, the Docker image), or the installed @jobwire/dashboard package. */
export function dashboardCandidates(explicit?: string): string[] {
  if (explicit) return [path.resolve(explicit)];
  const out: string[] = [];
  // server/dist/transport/ (built) and server/src/transport/ (tests run from source) are both three levels below the root.
  out.push(fileURLToPath(new URL("../../../dashboard/dist", import.meta.url)));
  try {
    out.push(path.join(path.dirname(createRequire(import.meta.url).resolve("@jobwire/dashboard/package.json")), "dist"));
  } catch {
    // not installed as a package
  }
  return [...new Set(out)];
}

function load(dir: string): Map<string, StaticFile> | null {
  let index: Buffer;
  try {
    index = readFileSync(path.join(dir, "index.html"));
  } catch {
    return null;
  }
  const files = new Map<string, StaticFile>();
  const add = (urlPath: string, body: Buffer, immutable: boolean) => {
    const type = TYPES[path.extname(urlPath)] ?? "application/octet-stream";
    files.set(urlPath, { body, type, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`, immutable });
  };
  add("/index.html", index, false);
  let names: string[] = [];
  try {
    names = readdirSync(path.join(dir, "assets"));
  } catch {
    // an index without assets still loads; its page will say what is missing
  }
  for (const name of names) {
    const full = path.join(dir, "assets", name);
    if (statSync(full).isFile()) add(`/assets/${name}`, readFileSync(full), /-[A-Za-z0-9]{8,}\.[a-z]+$/.test(name));
  }
  return files;
}

/**
 * The built dashboard, loaded on first use. A rebuild while the broker runs
 * (development) is picked up: index.html's mtime is checked at each load of
 * the page, a stat of one file.
 */
export class DashboardFiles {
  private files: Map<string, StaticFile> | null = null;
  private dir: string | null = null;
  private mtimeMs = 0;

  constructor(private readonly candidates: string[]) {}

  /** The file for a URL path, or null; "/" is index.html. `built` is false when no dist/ was found. */
  get(urlPath: string): { built: boolean; file: StaticFile | null } {
    if (urlPath === "/" || urlPath === "/index.html" || !this.files) this.refresh();
    if (!this.files) return { built: false, file: null };
    const key = urlPath === "/" ? "/index.html" : urlPath;
    let file = this.files.get(key) ?? null;
    if (!file && key.startsWith("/assets/")) {
      // A newer build than the one in memory asks for its own asset names.
      this.refresh();
      file = this.files?.get(key) ?? null;
    }
    return { built: true, file };
  }

  /** The folder the files came from, once found (for logs). */
  where(): string | null {
    return this.dir;
  }

  private refresh(): void {
    for (const dir of this.candidates) {
      let mtimeMs: number;
      try {
        mtimeMs = statSync(path.join(dir, "index.html")).mtimeMs;
      } catch {
        continue;
      }
      if (this.files && dir === this.dir && mtimeMs === this.mtimeMs) return;
      const files = load(dir);
      if (!files) continue;
      this.files = files;
      this.dir = dir;
      this.mtimeMs = mtimeMs;
      return;
    }
    this.files = null;
    this.dir = null;
  }
}

/** GET / when dashboard/dist is missing: the broker works, its dashboard was just never built. */
export const NOT_BUILT_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jobwire: dashboard not built</title></head>
<body>
<h1>The jobwire dashboard was not built</h1>
<p>This broker is running, but it found no dashboard files (dashboard/dist). Build them with <code>npm run build</code>
in the jobwire repository, or <code>npm run build -w @jobwire/dashboard</code>, and reload this page.</p>
<p>Everything else works: gRPC, Connect, <a href="/metrics">/metrics</a>, <a href="/healthz">/healthz</a>.</p>
</body></html>
`;
