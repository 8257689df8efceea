"""The README's example runs, and a worker process stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness import WAIT_TIMEOUT, fresh_queue, wait_for_state
from jobwire import JobState

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "greeter.py"


def test_example_demo_runs(broker):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--address", broker.address, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for name in ("ada", "grace", "edsger"):
        assert f"hello, {name}" in done.stdout
    assert "COMPLETED" in done.stdout and "RETRYABLE" not in done.stdout


WORKER_SCRIPT = """
import sys, time, jobwire
def slow(job):
    print("started", job.id, flush=True)
    time.sleep(0.5)
    print("finished", job.id, flush=True)
jobwire.Worker(sys.argv[1], [sys.argv[2]], 2, {"slow": slow}).run()
print("run returned", flush=True)
"""


AIO_WORKER_SCRIPT = """
import asyncio, sys, jobwire.aio
async def slow(job):
    print("started", job.id, flush=True)
    await asyncio.sleep(0.5)
    print("finished", job.id, flush=True)
asyncio.run(jobwire.aio.Worker(sys.argv[1], [sys.argv[2]], 2, {"slow": slow}).run())
print("run returned", flush=True)
"""


@pytest.mark.parametrize("script", [WORKER_SCRIPT, AIO_WORKER_SCRIPT], ids=["threads", "asyncio"])
def test_sigterm_drains_a_worker_process(broker, client, script):
    """The real signal path: SIGTERM while a job runs; the job completes and
    the process exits 0."""
    q = fresh_queue("sigterm")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, broker.address, q],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("started"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        job_id = client.enqueue("slow", {}, queue=q).id
        assert started.wait(WAIT_TIMEOUT), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_TIMEOUT) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    out = "".join(lines)
    assert f"finished {job_id}" in out and "run returned" in out, out
    assert wait_for_state(client, job_id, JobState.COMPLETED).attempt == 1


def test_trace_enqueue_script_prints_the_producer_span(broker, client):
    import json

    script = Path(__file__).resolve().parents[1] / "scripts" / "trace_enqueue.py"
    q = fresh_queue("trace-script")
    done = subprocess.run(
        [sys.executable, str(script), "--address", broker.address, "--queue", q, "--type", "greet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    job = client.get_job(out["job_id"])
    assert job.queue == q
    # The flags byte varies (sampled, and "random" in trace context level 2).
    assert out["traceparent"].startswith(f"00-{out['trace_id']}-{out['producer_span_id']}-")
    assert job.headers["traceparent"] == out["traceparent"]
