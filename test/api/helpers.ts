import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { JobwireError } from "@jobwire/client";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { expect } from "vitest";
import type { TestBroker } from "@jobwire/server/testing";

let n = 0;
/** A queue name no other test uses. */
export function uniqueQueue(prefix = "q"): string {
  return `${prefix}-${process.pid}-${n++}`;
}

export function json(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v));
}

export function ms(ms: number) {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) };
}

export type SpecInit = MessageInitShape<typeof JobSpecSchema>;

export async function enqueue(tb: TestBroker, ...specs: SpecInit[]): Promise<string[]> {
  const res = await tb.jobs.enqueue({ jobs: specs.map((s) => create(JobSpecSchema, { type: "t", ...s })) });
  return res.results.map((r) => r.jobId);
}

/**
 * Asserts the call fails with `code`, and that the message names `field`
 * when given. Takes connect-es calls (ConnectError) and JobwireClient calls
 * (JobwireError) alike.
 */
export async function expectCode(p: Promise<unknown>, code: Code, field?: string): Promise<ConnectError | JobwireError> {
  const err = await p.then(
    () => {
      throw new Error(`expected ${Code[code]}, but the call succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err instanceof ConnectError || err instanceof JobwireError, String(err)).toBe(true);
  const ce = err as ConnectError | JobwireError;
  expect(Code[ce.code], ce.message).toBe(Code[code]);
  if (field) expect(ce.rawMessage).toContain(field);
  return ce;
}

export async function stateOf(tb: TestBroker, id: string): Promise<string> {
  const { rows } = await tb.db.query<{ state: string }>("SELECT state::text FROM jobwire.jobs WHERE id = $1", [id]);
  return rows[0]?.state ?? "missing";
}
