import { readFile } from "node:fs/promises";
import type tls from "node:tls";

/**
 * The broker's TLS (JOBWIRE_TLS_CERT, JOBWIRE_TLS_KEY, and for mTLS
 * JOBWIRE_TLS_CLIENT_CA), read from PEM files when the server starts and
 * again on SIGHUP: the new certificate serves new connections, and open
 * streams keep theirs (tls.Server#setSecureContext), so a rotation drops
 * no worker.
 */
export interface TlsFiles {
  cert: string;
  key: string;
  /** Client certificates are required, and must chain to this CA. */
  clientCa?: string | undefined;
}

export async function readTls(files: TlsFiles): Promise<tls.SecureContextOptions> {
  const read = (what: string, file: string) =>
    readFile(file).catch((err: Error) => {
      throw new Error(`cannot read ${what} ${file}: ${err.message}`);
    });
  const [cert, key, ca] = await Promise.all([
    read("JOBWIRE_TLS_CERT", files.cert),
    read("JOBWIRE_TLS_KEY", files.key),
    files.clientCa ? read("JOBWIRE_TLS_CLIENT_CA", files.clientCa) : Promise.resolve(undefined),
  ]);
  return { cert, key, ...(ca ? { ca } : {}) };
}
