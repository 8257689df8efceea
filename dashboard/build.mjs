// Builds the dashboard into dist/: index.html and dist/assets/ with
// content-hashed names (app-<hash>.js, app-<hash>.css), so the broker can let
// browsers cache assets for good and serve index.html uncached. esbuild
// bundles and minifies; nothing is fetched at run time (no CDN), and the
// page needs no inline script or style, so the broker's CSP stays strict.
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "dist");
const assets = path.join(dist, "assets");

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: path.join(here, "src/main.ts"), style: path.join(here, "src/style.css") },
  outdir: assets,
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => path.basename(p));
const js = outputs.find((f) => f.startsWith("app-") && f.endsWith(".js"));
const css = outputs.find((f) => f.startsWith("style-") && f.endsWith(".css"));
if (!js || !css) throw new Error(`esbuild wrote ${outputs.join(", ")}: no app-*.js or style-*.css`);

const icon = await readFile(path.join(here, "src/favicon.svg"));
const iconName = `favicon-${createHash("sha256").update(icon).digest("hex").slice(0, 8)}.svg`;
await writeFile(path.join(assets, iconName), icon);

const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>jobwire</title>
<link rel="icon" href="/assets/${iconName}" type="image/svg+xml">
<link rel="stylesheet" href="/assets/${css}">
<script type="module" src="/assets/${js}"></script>
</head>
<body>
<noscript>The jobwire dashboard needs JavaScript.</noscript>
</body>
</html>
`;
await writeFile(path.join(dist, "index.html"), html);

let total = 0;
let totalGz = 0;
const lines = [];
for (const f of [js, css, iconName]) {
  const buf = await readFile(path.join(assets, f));
  const gz = gzipSync(buf).length;
  total += buf.length;
  totalGz += gz;
  lines.push(`  ${f.padEnd(28)} ${(buf.length / 1024).toFixed(1).padStart(6)} KB  (${(gz / 1024).toFixed(1)} KB gzip)`);
}
const index = (await stat(path.join(dist, "index.html"))).size;
total += index;
console.log(`dashboard: dist/ ${(total / 1024).toFixed(1)} KB, ${(totalGz / 1024).toFixed(1)} KB gzipped assets`);
console.log(lines.join("\n"));
