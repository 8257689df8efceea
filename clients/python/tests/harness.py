"""Test harness: a real broker process, a worker on a thread, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator, TypeVar

import jobwire
import jobwire.aio
from jobwire import JobState

REPO = Path(os.environ.get("JOBWIRE_REPO", Path(__file__).resolve().parents[3]))
BROKER_MAIN = REPO / "server" / "dist" / "main.js"
# http:// in cleartext, https:// with JOBWIRE_TLS_CERT.
LISTENING = re.compile(r"jobwire listening on https?://(\S+):(\d+)")

# Embedded Postgres runs initdb on first start: allow for a slow machine.
BROKER_START_TIMEOUT = 120.0
BROKER_STOP_TIMEOUT = 30.0
# The longest any single wait in a test may take before it fails.
WAIT_TIMEOUT = 20.0

T = TypeVar("T")


@dataclass
class Broker:
    """A `node server/dist/main.js` process with its own data directory."""

    data_dir: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    address: str = ""
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Broker":
        if not BROKER_MAIN.exists():
            raise RuntimeError(f"{BROKER_MAIN} does not exist: build the broker first (npx tsc -b server)")
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)  # embedded Postgres in data_dir, never a shared database
        env.update(
            {
                "JOBWIRE_PORT": str(self.port),
                "JOBWIRE_DATA_DIR": str(self.data_dir),
                "JOBWIRE_REAPER_INTERVAL_MS": "200",
            }
        )
        env.update(self.env)
        self._ready.clear()
        self.proc = subprocess.Popen(
            ["node", str(BROKER_MAIN)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(BROKER_START_TIMEOUT) or not self.address:
            self.stop()
            raise RuntimeError("broker did not print its listening line:\n" + "\n".join(self.lines[-50:]))
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        log_path = self.data_dir / "broker.log"
        with open(log_path, "a", encoding="utf-8") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                self.lines.append(line.rstrip("\n"))
                m = LISTENING.search(line)
                if m and not self._ready.is_set():
                    host, port = m.group(1), int(m.group(2))
                    if host in ("0.0.0.0", "::", "[::]", ""):
                        host = "127.0.0.1"
                    self.port = port
                    self.address = f"{host}:{port}"
                    self._ready.set()
        self._ready.set()  # the process ended: unblock start()

    def stop(self) -> int | None:
        """SIGTERM, then wait; SIGKILL only if it will not exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(BROKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"broker did not exit within {BROKER_STOP_TIMEOUT}s of SIGTERM") from None


@contextlib.contextmanager
def broker_data_dir() -> Iterator[Path]:
    """A fresh data directory for the broker's embedded Postgres.

    Not pytest's tmp_path: when the tests run as root, the broker runs
    Postgres as the `postgres` user, which cannot enter pytest's root-only
    (0700) temporary tree, and initdb fails. A directory directly under the
    system temp dir (world-traversable) works for both root and other users.
    """
    path = Path(tempfile.mkdtemp(prefix="jobwire-py-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def broker_with(env: dict[str, str]) -> Iterator[Broker]:
    """A broker of its own, started with ``env`` on top of the harness's
    settings (auth, TLS), and stopped with SIGTERM afterwards; it must exit 0."""
    with broker_data_dir() as data_dir:
        b = Broker(data_dir=data_dir, env=env).start()
        try:
            yield b
        finally:
            code = b.stop()
        assert code == 0, f"broker exited with {code} after SIGTERM:\n" + "\n".join(b.lines[-30:])


def write_tokens_file(path: Path, tokens: list[dict], certificates: list[dict] = ()) -> Path:
    """A tokens file for JOBWIRE_AUTH_FILE, in YAML as operators write it
    (security contract): each entry's name, token or sha256, scopes and
    queues; strings are JSON-quoted, which YAML reads as they are."""

    def entry(e: dict) -> list[str]:
        lines = [f"  - name: {json.dumps(e['name'])}"]
        for key in ("token", "sha256", "subject"):
            if key in e:
                lines.append(f"    {key}: {json.dumps(e[key])}")
        lines.append(f"    scopes: [{', '.join(e['scopes'])}]")
        if "queues" in e:
            lines.append(f"    queues: [{', '.join(json.dumps(q) for q in e['queues'])}]")
        return lines

    out = ["# written by the Python client's tests"]
    if tokens:
        out += ["tokens:", *(line for e in tokens for line in entry(e))]
    if certificates:
        out += ["certificates:", *(line for e in certificates for line in entry(e))]
    path.write_text("\n".join(out) + "\n")
    return path


def fresh_queue(scenario: str) -> str:
    return f"conf-{scenario.replace('_', '-')}-{uuid.uuid4().hex[:8]}"


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = WAIT_TIMEOUT, interval: float = 0.02) -> T:
    """Polls probe until it returns something truthy; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_state(client: jobwire.Client, job_id: str, *states: JobState, timeout: float = WAIT_TIMEOUT):
    """Polls GetJob until the job is in one of states; returns the job.

    Fails early if the job reaches a final state that was not asked for.
    """
    last = None

    def probe():
        nonlocal last
        last = client.get_job(job_id)
        if last.state in states:
            return last
        if JobState(last.state).final:
            raise AssertionError(
                f"job {job_id} ended {JobState(last.state).name}, expected {[s.name for s in states]}: {last}"
            )
        return None

    try:
        return wait_until(f"job {job_id} to reach {[s.name for s in states]}", probe, timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}; last seen: {last}") from None


def wait_event(event: threading.Event, what: str, timeout: float = WAIT_TIMEOUT) -> None:
    if not event.wait(timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_on_thread(worker: jobwire.Worker) -> tuple[threading.Thread, list[BaseException]]:
    """Starts worker.run() on a daemon thread; what it raises lands in the
    returned list for the caller to check."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as err:  # noqa: BLE001 - the caller checks
            errors.append(err)

    thread = threading.Thread(target=target, name="test-worker-run", daemon=True)
    thread.start()
    return thread, errors


@contextlib.contextmanager
def running(worker: jobwire.Worker, stop_timeout: float = 60.0) -> Iterator[jobwire.Worker]:
    """Runs worker.run() on a thread for the block, then stops it and checks
    that run() returned cleanly."""
    thread, errors = run_on_thread(worker)
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(stop_timeout)
    assert not thread.is_alive(), f"worker.run() did not return within {stop_timeout}s of stop()"
    if errors:
        raise errors[0]


# -- asyncio ---------------------------------------------------------------------


async def await_until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = WAIT_TIMEOUT) -> T:
    """The asyncio wait_until: awaits probe until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def await_state(client: jobwire.aio.Client, job_id: str, *states: JobState, timeout: float = WAIT_TIMEOUT):
    """wait_for_state through the asyncio client."""
    last = None

    async def probe():
        nonlocal last
        last = await client.get_job(job_id)
        if last.state in states:
            return last
        if last.state.final:
            raise AssertionError(f"job {job_id} ended {last.state}, expected {[s.name for s in states]}: {last}")
        return None

    try:
        return await await_until(f"job {job_id} to reach {[s.name for s in states]}", probe, timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}; last seen: {last}") from None


async def await_event(event: asyncio.Event, what: str, timeout: float = WAIT_TIMEOUT) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@contextlib.asynccontextmanager
async def arunning(worker: jobwire.aio.Worker, stop_timeout: float = 60.0) -> AsyncIterator[jobwire.aio.Worker]:
    """Runs worker.run() as a task for the block, then stops it and checks
    that run() returned cleanly."""
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        done, _ = await asyncio.wait({task}, timeout=stop_timeout)
    assert done, f"worker.run() did not return within {stop_timeout}s of stop()"
    task.result()
