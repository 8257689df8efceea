import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * A throwaway CA, a server certificate for localhost and 127.0.0.1, and
 * client certificates, made with openssl at run time (node:crypto cannot
 * issue X.509). Nothing is committed; every run makes its own.
 */
export interface Certs {
  dir: string;
  caFile: string;
  ca: Buffer;
  serverCert: string;
  serverKey: string;
  /** Issues a client certificate with this subject (e.g. "/CN=worker-fleet/O=acme"). */
  client(subject: string): { cert: Buffer; key: Buffer; certFile: string; keyFile: string };
  /** Issues a new server certificate into the same files (for rotation); returns its SHA-256 fingerprint. */
  rotateServer(): string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

export function makeCerts(): Certs {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jobwire-certs-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(dir, ["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=jobwire test CA"]);
  writeFileSync(path.join(dir, "server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  let serial = 1;
  const issueServer = () => {
    openssl(dir, ["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(dir, ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", String(serial++), "-out", "server.crt", "-days", "1", "-extfile", "server.ext"]);
  };
  issueServer();
  let n = 0;
  return {
    dir,
    caFile: path.join(dir, "ca.crt"),
    ca: readFileSync(path.join(dir, "ca.crt")),
    serverCert: path.join(dir, "server.crt"),
    serverKey: path.join(dir, "server.key"),
    client(subject) {
      const name = `client${n++}`;
      openssl(dir, ["req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
      openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", String(1000 + n), "-out", `${name}.crt`, "-days", "1"]);
      const certFile = path.join(dir, `${name}.crt`);
      const keyFile = path.join(dir, `${name}.key`);
      return { cert: readFileSync(certFile), key: readFileSync(keyFile), certFile, keyFile };
    },
    rotateServer() {
      issueServer();
      return execFileSync("openssl", ["x509", "-in", "server.crt", "-noout", "-fingerprint", "-sha256"], { cwd: dir, encoding: "utf8" }).trim();
    },
  };
}
