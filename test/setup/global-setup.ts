import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setupTestServer } from "../../server/src/testing/index.js";

/** One Postgres for the whole run; each test file clones its own database from a migrated template. */
export default async function setup() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-test-"));
  const server = await setupTestServer(dir);
  return async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
