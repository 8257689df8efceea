/**
 * An in-process stand-in for the broker, as thin as it can be, so that a
 * Worker's CPU per job is its own: no Postgres, no broker, no HTTP/2.
 *
 *   - The Lease stream: the Worker's client gets a leaseBatches function
 *     (the one the Worker reads its stream through) that hands out the
 *     pre-encoded jobs (jobs.ts) as fast as credit allows, each batch split
 *     by the client's own decodeRawLeaseResponse as the real transport does.
 *     Requests are encoded with the generated encodeLeaseRequest, as the lean
 *     stream encodes them, and read back as messages.
 *   - Acks on the stream (LeaseAck), as the broker takes them when its
 *     response header says jobwire-lease-acks: 1 (`acks: "stream"`, the
 *     default): each is answered by a LeaseAckResult in the next response,
 *     encoded here and read by the client's decoder, as a broker's would be.
 *   - Ack, Nack and Heartbeat calls: a connect-es Transport given to the
 *     client (ClientOptions.transport, public API) that answers at once;
 *     each Ack is encoded with the generated encodeAckRequest first, the
 *     cost the lean unary path has in a real worker (`acks: "unary"`, the
 *     worker's fallback for brokers that do not take acks on the stream).
 *
 * What is left out is the wire: gRPC framing, HTTP/2 and the socket. The
 * Lease stream cannot be fed through ClientOptions.transport without an
 * artefact (the client re-encodes every job of a connect-es LeaseResponse),
 * so leaseBatches is replaced on the client object; see the hook proposed
 * in docs/performance.md.
 */
import { create, type DescMessage, type DescMethodUnary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport, type UnaryResponse } from "@connectrpc/connect";
import type { JobwireClient } from "@jobwire/client";
import { encodeAckRequest, encodeLeaseRequest, writeLeaseAckResult } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { decodeRawLeaseResponse } from "@jobwire/proto/fast/jobwire/view/v1/lease_fast";
import { JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { LeaseAckResultSchema, type AckRequest, type HeartbeatRequest, type LeaseRequest } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { Writer } from "@jobwire/proto/wire";
import { type EncodedJobs, indexOfToken } from "./jobs.js";

type LeaseBatches = JobwireClient["leaseBatches"];
export type AckPath = "stream" | "unary";
/** LeaseResponse.acks: field 2, length-delimited. */
const ACKS_TAG = (2 << 3) | 2;

export class InProcessBroker {
  /** The next job to hand out, and the end of the current run. */
  private next = 0;
  private end = 0;
  /**
   * Acks per job index, counted as they come (a parse per token, ~0.1 us)
   * rather than keeping the token lists: holding 200,000 tokens grew the
   * old generation and doubled the GC time the Worker was charged.
   */
  readonly ackCount: Uint8Array;
  /** Acks of tokens these jobs do not have. */
  foreignAcks = 0;
  /** Acks taken on the stream (LeaseAck) and not answered yet. */
  private ackAnswers: bigint[] = [];
  acked = 0;
  ackCalls = 0;
  batches = 0;
  nacks = 0;
  heartbeats = 0;
  private onAcked: (() => void) | undefined;
  private target = 0;

  constructor(
    private readonly jobs: EncodedJobs,
    readonly acks: AckPath = "stream",
  ) {
    this.ackCount = new Uint8Array(jobs.count);
  }

  /** Feeds jobs first .. first + n - 1; resolves once every one of them was acked. */
  run(first: number, n: number): Promise<void> {
    if (first + n > this.jobs.count) throw new Error(`only ${this.jobs.count} jobs were encoded`);
    this.next = first;
    this.end = first + n;
    this.target = this.acked + n;
    const done = new Promise<void>((resolve) => {
      this.onAcked = resolve;
      this.checkDone();
    });
    this.poke();
    return done;
  }

  private checkDone(): void {
    if (this.onAcked !== undefined && this.acked >= this.target) {
      const done = this.onAcked;
      this.onAcked = undefined;
      done();
    }
  }

  /** Wakes the open stream's generator: credit came, or a run was queued. */
  private wake: (() => void) | undefined;
  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  readonly leaseBatches: LeaseBatches = (requests, call) => this.stream(requests, call);

  private async *stream(requests: AsyncIterable<LeaseRequest>, call: Parameters<LeaseBatches>[1]): AsyncIterable<Uint8Array[]> {
    let credit = 0;
    let max = 0;
    let ended = false;
    let failure: Error | undefined;
    const poke = () => this.poke();
    void (async () => {
      try {
        for await (const r of requests) {
          encodeLeaseRequest(r);
          switch (r.msg.case) {
            case "open":
              max = r.msg.value.maxInFlight;
              credit = max;
              break;
            case "credit":
              credit = Math.min(max, credit + r.msg.value.count);
              break;
            case "ack":
              this.count(r.msg.value.leaseTokens);
              this.ackAnswers.push(r.msg.value.ackId);
              break;
            default:
              throw new Error(`the in-process broker does not answer LeaseRequest "${r.msg.case}" (teach test/bench/src/budget/in-process.ts)`);
          }
          poke();
        }
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
      }
      ended = true;
      poke();
    })();
    const header = new Headers({ "content-type": "application/grpc+proto" });
    if (this.acks === "stream") header.set("jobwire-lease-acks", "1");
    call.onHeader?.(header);
    const { buf, offsets } = this.jobs;
    for (;;) {
      if (failure !== undefined) throw failure;
      if (ended || call.signal?.aborted) return;
      const n = Math.min(credit, this.end - this.next);
      if (n > 0 || this.ackAnswers.length > 0) {
        let frame = buf.subarray(offsets[this.next]!, offsets[this.next + n]!);
        if (this.ackAnswers.length > 0) frame = this.withAckAnswers(frame);
        this.next += n;
        credit -= n;
        if (n > 0) this.batches++;
        // What the client's transport does with each response (transport.ts).
        const r = decodeRawLeaseResponse(frame);
        if (r.acks.length > 0) call.onAcks?.(r.acks);
        this.checkDone();
        yield r.jobs;
        continue;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** The response's jobs, then a LeaseAckResult (no lost tokens) for every ack taken since the last one. */
  private withAckAnswers(jobs: Uint8Array): Uint8Array {
    const w = new Writer(jobs.length + 16 * this.ackAnswers.length);
    w.need(jobs.length);
    w.buf.set(jobs, 0);
    w.pos = jobs.length;
    for (const ackId of this.ackAnswers) {
      w.tag(ACKS_TAG);
      const at = w.fork();
      writeLeaseAckResult(w, create(LeaseAckResultSchema, { ackId }));
      w.join(at);
    }
    this.ackAnswers = [];
    return w.buf.subarray(0, w.pos);
  }

  private count(tokens: string[]): void {
    for (const t of tokens) {
      const k = indexOfToken(t);
      if (k >= 0 && k < this.ackCount.length) this.ackCount[k] = Math.min(255, this.ackCount[k]! + 1);
      else this.foreignAcks++;
    }
    this.acked += tokens.length;
    this.ackCalls++;
  }

  /** Ack, Nack and Heartbeat, answered in place. */
  readonly transport: Transport = {
    unary: async <I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      _signal: AbortSignal | undefined,
      _timeoutMs: number | undefined,
      _header: unknown,
      input: MessageInitShape<I>,
    ): Promise<UnaryResponse<I, O>> => {
      let out: MessageInitShape<O>;
      switch (method.name) {
        case "Ack": {
          const req = input as unknown as AckRequest;
          encodeAckRequest(req);
          this.count(req.leaseTokens);
          this.checkDone();
          out = {} as MessageInitShape<O>;
          break;
        }
        case "Nack":
          this.nacks++;
          out = { state: JobState.RETRYABLE } as unknown as MessageInitShape<O>;
          break;
        case "Heartbeat": {
          this.heartbeats++;
          const expires = Date.now() + 30_000;
          const at = { seconds: BigInt(Math.floor(expires / 1000)), nanos: 0 };
          out = { results: (input as unknown as HeartbeatRequest).leaseTokens.map((t) => ({ leaseToken: t, leaseExpiresAt: at })) } as unknown as MessageInitShape<O>;
          break;
        }
        default:
          throw new ConnectError(`the in-process broker does not answer ${method.name}`, Code.Unimplemented);
      }
      return { stream: false, service: method.parent, method, header: new Headers(), trailer: new Headers(), message: create(method.output, out) };
    },
    stream: async () => {
      throw new ConnectError("the in-process broker feeds the Lease stream through leaseBatches", Code.Unimplemented);
    },
  };

  /** Attaches the stand-in to a client made with `transport`: the Lease stream comes from here too. */
  attach(client: JobwireClient): void {
    Object.defineProperty(client, "leaseBatches", { value: this.leaseBatches });
  }
}
