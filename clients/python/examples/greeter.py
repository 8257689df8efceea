"""A runnable jobwire example: a producer and a worker for `greet` jobs.

Start a broker (from the repo root: npm start), then in two terminals:

    python examples/greeter.py worker            # runs until Ctrl-C / SIGTERM
    python examples/greeter.py enqueue ada grace # enqueues one job per name

or both at once, stopping when the jobs are done:

    python examples/greeter.py demo

The broker address comes from --address or JOBWIRE_ADDRESS (default
127.0.0.1:50051, the broker's default).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

import jobwire

QUEUE = "greetings"


def greet(job: jobwire.LeasedJob) -> None:
    name = job.payload["name"]
    if not name.strip():
        # Retrying will not make an empty name valid: straight to DEAD.
        raise jobwire.PermanentError("cannot greet an empty name")
    print(f"hello, {name} (job {job.id}, attempt {job.attempt})", flush=True)


def make_worker(address: str) -> jobwire.Worker:
    return jobwire.Worker(address, queues=[QUEUE], concurrency=4, handlers={"greet": greet})


def enqueue(address: str, names: list[str]) -> list[str]:
    with jobwire.Client(address) as client:
        results = client.enqueue_many({"type": "greet", "payload": {"name": n}, "queue": QUEUE} for n in names)
    for name, result in zip(names, results, strict=True):
        print(f"enqueued greet {name!r} as job {result.id}", flush=True)
    return [r.id for r in results]


def demo(address: str) -> None:
    """Enqueue three jobs, run a worker until they are done, stop it."""
    ids = enqueue(address, ["ada", "grace", "edsger"])
    worker = make_worker(address)
    with jobwire.Client(address) as client:

        def stop_when_done() -> None:
            pending = set(ids)
            while pending and not worker_done.wait(0.05):
                pending = {i for i in pending if not jobwire.JobState(client.get_job(i).state).final}
            worker.stop()

        worker_done = threading.Event()
        watcher = threading.Thread(target=stop_when_done, daemon=True)
        watcher.start()
        try:
            worker.run()
        finally:
            worker_done.set()
            watcher.join()
        states = {i: jobwire.JobState(client.get_job(i).state).name for i in ids}
    print(f"done: {states}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("JOBWIRE_ADDRESS", "127.0.0.1:50051"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a worker until SIGTERM or Ctrl-C")
    enq = sub.add_parser("enqueue", help="enqueue one greet job per name")
    enq.add_argument("names", nargs="+")
    sub.add_parser("demo", help="enqueue three jobs and process them")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "worker":
        make_worker(args.address).run()
    elif args.command == "enqueue":
        enqueue(args.address, args.names)
    else:
        demo(args.address)


if __name__ == "__main__":
    main()
