/**
 * Group commit for a batch operation: while one call to `run` is in flight,
 * later submissions wait and then go together in the next call. There is no
 * timer: an idle broker runs a submission at once, a busy one batches as
 * deep as its concurrency. Each submission gets back exactly its own slice
 * of results, or its own error.
 *
 * Every statement is all-or-nothing, so one submission whose values pass
 * validation but fail in SQL would fail every other submission in its
 * statement. Validation is meant to make that impossible; in case it does
 * not, a shared call that fails for any reason but `isSharedFault` (the
 * database being down, which would have failed each call alone as well) is
 * run again once per submission, so that only the guilty one gets the error.
 * (Before, one bad Enqueue among 800 concurrent ones failed 740 of them, and
 * one worker's bad ack tokens made 1,668 of 3,000 other jobs run again.)
 */
export class Coalescer<I, O> {
  private queue: Submission<I, O>[] = [];
  private inFlight = 0;

  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    /** Most items per call to run. */
    private readonly maxItems: number,
    /** Calls to run that may be in flight at once (keep below the pool size). */
    private readonly maxConcurrent = 2,
    /** True for an error that every submission would have hit alone. */
    private readonly isSharedFault: (err: unknown) => boolean = () => false,
  ) {}

  submit(items: I[]): Promise<O[]> {
    return new Promise((resolve, reject) => {
      this.queue.push({ items, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxConcurrent && this.queue.length > 0) {
      const batch = [this.queue.shift()!];
      let n = batch[0]!.items.length;
      while (this.queue.length > 0 && n + this.queue[0]!.items.length <= this.maxItems) {
        const next = this.queue.shift()!;
        n += next.items.length;
        batch.push(next);
      }
      this.inFlight++;
      void this.execute(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async execute(batch: Submission<I, O>[]): Promise<void> {
    const all = batch.length === 1 ? batch[0]!.items : batch.flatMap((b) => b.items);
    let out: O[];
    try {
      out = await this.run(all);
    } catch (err) {
      if (batch.length === 1 || this.isSharedFault(err)) {
        for (const b of batch) b.reject(err);
        return;
      }
      // One at a time, so that a statement's failure is its own submission's.
      for (const b of batch) await this.run(b.items).then(b.resolve, b.reject);
      return;
    }
    let at = 0;
    for (const b of batch) {
      b.resolve(out.slice(at, at + b.items.length));
      at += b.items.length;
    }
  }
}

interface Submission<I, O> {
  items: I[];
  resolve: (o: O[]) => void;
  reject: (e: unknown) => void;
}
