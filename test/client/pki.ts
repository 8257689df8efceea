/**
 * A throwaway CA with a server certificate (for 127.0.0.1 and
 * broker.jobwire.test) and a client certificate (CN=ts-client), made at run
 * time with the machine's openssl (node:crypto makes keys, not X.509
 * certificates). Valid for a day; EC P-256 keys.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export interface TestPki {
  dir: string;
  /** PEM files, for the broker's JOBWIRE_TLS_* variables. */
  files: { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string };
  /** The same PEMs, read, for the client's tls options. */
  ca: Buffer;
  clientCert: Buffer;
  clientKey: Buffer;
}

export const SERVER_NAME = "broker.jobwire.test";

export function makeTestPki(): TestPki {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jobwire-pki-"));
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

  openssl("req", "-x509", ...newKey, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=jobwire test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  const issue = (name: string, cn: string, ext: string) => {
    writeFileSync(f(`${name}.ext`), ext);
    openssl("req", ...newKey, "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`), "-subj", `/CN=${cn}`);
    openssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial",
      "-out", f(`${name}.pem`), "-days", "1", "-extfile", f(`${name}.ext`));
  };
  issue("server", "127.0.0.1", `subjectAltName=IP:127.0.0.1,DNS:${SERVER_NAME}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n`);
  issue("client", "ts-client", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n");

  const files = {
    ca: f("ca.pem"),
    serverCert: f("server.pem"),
    serverKey: f("server.key"),
    clientCert: f("client.pem"),
    clientKey: f("client.key"),
  };
  return { dir, files, ca: readFileSync(files.ca), clientCert: readFileSync(files.clientCert), clientKey: readFileSync(files.clientKey) };
}
