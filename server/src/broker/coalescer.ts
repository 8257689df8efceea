/**
 * Group commit for a batch operation: while one call to `run` is in flight,
 * later submissions wait and then go together in the next call. There is no
 * timer: an idle broker runs a submission at once, a busy one batches as
 * deep as its concurrency. Each submission gets back exactly its own slice
 * of results, or the error of the statement it rode in.
 *
 * Every statement is all-or-nothing, so each submission is too. Inputs are
 * validated before they get here, so what can fail a shared statement is
 * the database itself, which would have failed each call alone as well.
 */
export class Coalescer<I, O> {
  private queue: { items: I[]; resolve: (o: O[]) => void; reject: (e: unknown) => void }[] = [];
  private inFlight = 0;

  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    /** Most items per call to run. */
    private readonly maxItems: number,
    /** Calls to run that may be in flight at once (keep below the pool size). */
    private readonly maxConcurrent = 2,
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
      const all = batch.length === 1 ? batch[0]!.items : batch.flatMap((b) => b.items);
      this.run(all).then(
        (out) => {
          let at = 0;
          for (const b of batch) {
            b.resolve(out.slice(at, at + b.items.length));
            at += b.items.length;
          }
        },
        (err) => {
          for (const b of batch) b.reject(err);
        },
      ).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }
}
