/**
 * PushQueue is an AsyncIterable fed by push(). It is the request side of the
 * Lease stream: connect-es reads from it, and the worker pushes `open` once
 * and `credit` as slots free. close() ends the iteration, which half-closes
 * the HTTP/2 request stream.
 *
 * Single consumer: every call to [Symbol.asyncIterator]() returns the same
 * iterator (connect-es asks for it again to call return() when a call ends).
 */
export class PushQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private closed = false;
  private iterator: AsyncIterator<T> | undefined;

  /** Queues a value. Returns false (and drops it) once the queue is closed. */
  push(value: T): boolean {
    if (this.closed) return false;
    const w = this.waiter;
    if (w !== undefined) {
      this.waiter = undefined;
      w({ value, done: false });
    } else {
      this.items.push(value);
    }
    return true;
  }

  /** Ends the iteration once the queued values are read. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const w = this.waiter;
    if (w !== undefined && this.items.length === 0) {
      this.waiter = undefined;
      w({ value: undefined, done: true });
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Values pushed and not yet read. */
  get size(): number {
    return this.items.length;
  }

  private finish(): void {
    this.closed = true;
    this.items.length = 0;
    const w = this.waiter;
    this.waiter = undefined;
    w?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    this.iterator ??= {
      next: () => {
        if (this.items.length > 0) {
          return Promise.resolve({ value: this.items.shift() as T, done: false });
        }
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this.waiter = resolve;
        });
      },
      return: () => {
        // The reader stopped early (the RPC ended): drop what is left.
        this.finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      // connect-es requires throw(): it aborts the request iterable with the
      // call's error. Like an async generator that does not catch, end and
      // rethrow.
      throw: (err?: unknown) => {
        this.finish();
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      },
    };
    return this.iterator;
  }
}
