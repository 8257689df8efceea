"""The worker rides out a broker restart: the broker drains (ending the
Lease stream with UNAVAILABLE) and comes back on the same port and data."""

from __future__ import annotations

import threading

import jobwire
from harness import Broker, broker_data_dir, fresh_queue, running, wait_event, wait_for_state, wait_until
from jobwire import JobState
from jobwire._backoff import Backoff


def test_worker_reconnects_after_broker_restart_without_losing_its_ack():
    q = fresh_queue("reconnect")
    started = threading.Event()
    release = threading.Event()
    handled: list[str] = []

    def handler(job: jobwire.LeasedJob) -> None:
        handled.append(job.payload["step"])
        if job.payload["step"] == "during":
            started.set()
            release.wait(30)

    with broker_data_dir() as data_dir:
        broker = Broker(data_dir=data_dir).start()
        try:
            worker = jobwire.Worker(
                broker.address,
                [q],
                2,
                {"step": handler},
                reconnect_backoff=Backoff(initial=0.05, maximum=0.5),
            )
            with running(worker):
                with jobwire.Client(broker.address) as client:
                    during = client.enqueue("step", {"step": "during"}, queue=q).id
                wait_event(started, "the first job to start")

                assert broker.stop() == 0  # drains: the Lease stream ends UNAVAILABLE
                release.set()  # the job finishes while the broker is down: its ack is owed
                broker = Broker(data_dir=data_dir, port=broker.port).start()

                with jobwire.Client(broker.address) as client:
                    job = wait_for_state(client, during, JobState.COMPLETED)
                    assert job.attempt == 1 and list(job.errors) == []
                    after = client.enqueue("step", {"step": "after"}, queue=q).id
                    wait_for_state(client, after, JobState.COMPLETED)
                wait_until("both handlers to have run", lambda: handled == ["during", "after"])
        except BaseException:
            # Shown by pytest with the failure.
            print(f"broker output (alive: {broker.proc.poll() is None}):", *broker.lines, sep="\n")
            raise
        finally:
            broker.stop()
