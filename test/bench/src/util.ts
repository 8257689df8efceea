/** Small helpers shared by the bench process's modules. */

export class ScenarioError extends Error {
  override name = "ScenarioError";
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ScenarioError(`${what} within ${Math.round(ms / 1000)} s`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The environment of every process the bench starts: no tracing exporters, no auth, no stray addresses. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("OTEL_") || k === "JOBWIRE_AUTH_TOKENS" || k === "JOBWIRE_ADDRESS" || k === "DATABASE_URL") continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}
