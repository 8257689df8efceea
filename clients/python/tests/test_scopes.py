"""Scoped tokens (issue 12): a broker started with a tokens file
(JOBWIRE_AUTH_FILE, YAML) refuses a call without a known token as
UNAUTHENTICATED, and one outside the token's scopes or queues as
PERMISSION_DENIED naming the scope or the queue; WhoAmI says who a token is;
a worker whose token may not lease stops instead of reconnecting forever.
Threaded and asyncio, against the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading

import grpc
import pytest

import jobwire
import jobwire.aio
from harness import (
    WAIT_TIMEOUT,
    Broker,
    arunning,
    await_state,
    broker_with,
    fresh_queue,
    run_on_thread,
    running,
    wait_event,
    wait_for_state,
    write_tokens_file,
)
from jobwire import JobState, JobwireError

CI = "ci-secret-token-0123456789"  # enqueue and read, every queue
BILLING = "billing-secret-token-0123456789"  # enqueue, work and read on billing.* only
OPERATOR = "operator-secret-token-0123456789"  # every scope
ALL_SCOPES = {"enqueue", "work", "read", "admin"}


@pytest.fixture(scope="module")
def scoped_broker(tmp_path_factory) -> Broker:
    tokens = write_tokens_file(
        tmp_path_factory.mktemp("auth") / "tokens.yaml",
        tokens=[
            {"name": "ci", "token": CI, "scopes": ["enqueue", "read"]},
            # The file may hold only the secret's SHA-256.
            {
                "name": "billing-producer",
                "sha256": hashlib.sha256(BILLING.encode()).hexdigest(),
                "scopes": ["enqueue", "work", "read"],
                "queues": ["billing.*"],
            },
            {"name": "operator", "token": OPERATOR, "scopes": sorted(ALL_SCOPES), "queues": ["*"]},
        ],
    )
    with broker_with({"JOBWIRE_AUTH_FILE": str(tokens)}) as b:
        yield b


def billing_queue(scenario: str) -> str:
    return "billing." + fresh_queue(scenario)


def assert_refused(err: JobwireError, code: grpc.StatusCode, pattern: str) -> None:
    """The error has the code, and its text is the lower-case code name then
    the broker's message, which matches pattern (a regular expression)."""
    assert err.code is code, err
    assert str(err) == f"{code.name.lower()}: {err.details}"
    assert re.search(pattern, err.details), f"{err.details!r} does not match {pattern!r}"


# The broker's words (README, "Authentication and TLS"): "<name> lacks scope
# <scope> (needed by <Service>/<Method>)". The security contract writes
# "token <name> ... (needed by <Service>.<Method>)"; either form passes, and
# the name, the scope and the RPC must be there.
def lacks_scope(name: str, scope: str, rpc: str) -> str:
    service, method = rpc.split(".")
    return rf"^(token )?{re.escape(name)} lacks scope {scope} \(needed by {service}[./]{method}\)$"


def outside_queues(name: str, queue: str, patterns: str) -> str:
    return rf"\b{re.escape(name)} may not touch queue {re.escape(queue)} \(its queues: {re.escape(patterns)}\)"


# -- threaded ------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "not-a-token-the-broker-knows"], ids=["none", "unknown"])
def test_a_call_without_a_known_token_is_unauthenticated(scoped_broker, token):
    with jobwire.Client(scoped_broker.address, token=token) as client:
        with pytest.raises(JobwireError) as enqueue:
            client.enqueue("t", {}, queue=fresh_queue("scopes_unauth"))
        # WhoAmI needs no scope, but it does need a caller.
        with pytest.raises(JobwireError) as who:
            client.who_am_i()
    assert_refused(enqueue.value, grpc.StatusCode.UNAUTHENTICATED, "token")
    assert enqueue.value.method == "Enqueue"
    assert_refused(who.value, grpc.StatusCode.UNAUTHENTICATED, "token")
    assert str(enqueue.value).startswith("unauthenticated: ")


def test_a_call_outside_the_tokens_scopes_is_permission_denied_naming_the_scope(scoped_broker):
    q = fresh_queue("scopes_scope")
    with jobwire.Client(scoped_broker.address, token=CI) as client:
        job_id = client.enqueue("t", {}, queue=q).id  # enqueue: allowed
        assert client.get_job(job_id).state == JobState.AVAILABLE  # read: allowed
        with pytest.raises(JobwireError) as pause:
            client.pause_queue(q)
        with pytest.raises(JobwireError) as cancel:
            client.cancel_job(job_id)
    assert_refused(
        pause.value, grpc.StatusCode.PERMISSION_DENIED, lacks_scope("ci", "admin", "AdminService.PauseQueue")
    )
    assert pause.value.method == "PauseQueue"
    assert_refused(cancel.value, grpc.StatusCode.PERMISSION_DENIED, lacks_scope("ci", "admin", "JobService.CancelJob"))
    # Refused before it ran: the queue is not paused and the job not cancelled.
    with jobwire.Client(scoped_broker.address, token=OPERATOR) as operator:
        assert not operator.get_queue_config(q).paused
        assert operator.get_job(job_id).state == JobState.AVAILABLE


def test_a_queue_outside_the_tokens_patterns_is_permission_denied_naming_the_queue(scoped_broker):
    emails = fresh_queue("scopes_emails")
    with jobwire.Client(scoped_broker.address, token=BILLING) as client:
        assert client.enqueue("t", {}, queue=billing_queue("scopes_queue")).id
        with pytest.raises(JobwireError) as enqueue:
            client.enqueue("t", {}, queue=emails)
        with pytest.raises(JobwireError) as stats:
            client.get_queue_stats([emails])
    assert_refused(
        enqueue.value, grpc.StatusCode.PERMISSION_DENIED, outside_queues("billing-producer", emails, "billing.*")
    )
    assert_refused(
        stats.value, grpc.StatusCode.PERMISSION_DENIED, outside_queues("billing-producer", emails, "billing.*")
    )


def test_who_am_i_names_the_token_with_its_scopes_and_queues(scoped_broker):
    with jobwire.Client(scoped_broker.address, token=BILLING) as client:
        me = client.who_am_i()
    assert isinstance(me, jobwire.Identity)
    assert me.auth_enabled and me.name == "billing-producer"
    assert sorted(me.scopes) == ["enqueue", "read", "work"]
    assert me.queues == ("billing.*",)
    with jobwire.Client(scoped_broker.address, token=OPERATOR) as client:
        me = client.who_am_i()
    assert (me.name, set(me.scopes), me.queues) == ("operator", ALL_SCOPES, ("*",))


def test_who_am_i_on_a_broker_without_auth_allows_everything(client):
    me = client.who_am_i()
    assert me == jobwire.Identity(auth_enabled=False, name="", scopes=me.scopes, queues=("*",))
    assert set(me.scopes) == ALL_SCOPES


def test_a_scoped_token_enqueues_and_works_its_own_queues(scoped_broker):
    q = billing_queue("scopes_work")
    handled = threading.Event()
    with jobwire.Client(scoped_broker.address, token=BILLING) as client:
        job_id = client.enqueue("invoice", {"n": 1}, queue=q).id
        worker = jobwire.Worker(
            scoped_broker.address, [q], 1, {"invoice": lambda job: handled.set()}, token=BILLING, shutdown_timeout=5.0
        )
        with running(worker):
            wait_event(handled, "the handler to run")
            job = wait_for_state(client, job_id, JobState.COMPLETED)
    assert job.attempt == 1


def stopped_worker_error(worker: jobwire.Worker) -> BaseException:
    """Runs the worker, which must stop by itself within WAIT_TIMEOUT; what it raised."""
    thread, errors = run_on_thread(worker)
    thread.join(WAIT_TIMEOUT)
    if thread.is_alive():
        worker.stop()
        thread.join(WAIT_TIMEOUT)
        pytest.fail(f"worker.run() kept running for {WAIT_TIMEOUT}s on a broker that refuses its lease stream")
    assert len(errors) == 1, errors
    return errors[0]


def test_a_worker_whose_token_lacks_work_stops_with_permission_denied(scoped_broker):
    worker = jobwire.Worker(scoped_broker.address, [fresh_queue("scopes_nowork")], 1, {"t": lambda job: None}, token=CI)
    err = stopped_worker_error(worker)
    assert isinstance(err, JobwireError), err
    assert_refused(err, grpc.StatusCode.PERMISSION_DENIED, lacks_scope("ci", "work", "WorkerService.Lease"))
    assert err.method == "Lease"


def test_a_worker_outside_its_tokens_queues_stops_with_permission_denied(scoped_broker):
    emails = fresh_queue("scopes_worker_emails")
    worker = jobwire.Worker(scoped_broker.address, [emails], 1, {"t": lambda job: None}, token=BILLING)
    err = stopped_worker_error(worker)
    assert isinstance(err, JobwireError), err
    assert_refused(err, grpc.StatusCode.PERMISSION_DENIED, outside_queues("billing-producer", emails, "billing.*"))


# -- asyncio -------------------------------------------------------------------


def test_aio_unauthenticated_and_permission_denied(scoped_broker):
    q = fresh_queue("scopes_aio")

    async def scenario() -> tuple[JobwireError, JobwireError, JobwireError]:
        async with jobwire.aio.Client(scoped_broker.address) as bare:
            with pytest.raises(JobwireError) as unauth:
                await bare.enqueue("t", {}, queue=q)
        async with jobwire.aio.Client(scoped_broker.address, token=CI) as ci:
            await ci.enqueue("t", {}, queue=q)
            with pytest.raises(JobwireError) as scope:
                await ci.pause_queue(q)
        async with jobwire.aio.Client(scoped_broker.address, token=BILLING) as billing:
            with pytest.raises(JobwireError) as queue:
                await billing.enqueue("t", {}, queue=q)
        return unauth.value, scope.value, queue.value

    unauth, scope, queue = asyncio.run(scenario())
    assert_refused(unauth, grpc.StatusCode.UNAUTHENTICATED, "token")
    assert_refused(scope, grpc.StatusCode.PERMISSION_DENIED, lacks_scope("ci", "admin", "AdminService.PauseQueue"))
    assert_refused(queue, grpc.StatusCode.PERMISSION_DENIED, outside_queues("billing-producer", q, "billing.*"))


def test_aio_who_am_i(scoped_broker):
    async def scenario() -> jobwire.Identity:
        async with jobwire.aio.Client(scoped_broker.address, token=CI) as client:
            return await client.who_am_i()

    me = asyncio.run(scenario())
    assert (me.auth_enabled, me.name, sorted(me.scopes), me.queues) == (True, "ci", ["enqueue", "read"], ("*",))


def test_aio_a_scoped_token_enqueues_and_works_its_own_queues(scoped_broker):
    q = billing_queue("scopes_aio_work")

    async def handler(job: jobwire.aio.LeasedJob) -> None:
        pass

    async def scenario() -> jobwire.Job:
        async with jobwire.aio.Client(scoped_broker.address, token=BILLING) as client:
            job_id = (await client.enqueue("invoice", {"n": 2}, queue=q)).id
            worker = jobwire.aio.Worker(
                scoped_broker.address, [q], 1, {"invoice": handler}, token=BILLING, install_signal_handlers=False
            )
            async with arunning(worker):
                return await await_state(client, job_id, JobState.COMPLETED)

    assert asyncio.run(scenario()).attempt == 1


def test_aio_a_worker_whose_token_lacks_work_stops_with_permission_denied(scoped_broker):
    worker = jobwire.aio.Worker(
        scoped_broker.address, [fresh_queue("scopes_aio_nowork")], 1, {}, token=CI, install_signal_handlers=False
    )
    with pytest.raises(JobwireError) as caught:
        asyncio.run(asyncio.wait_for(worker.run(), WAIT_TIMEOUT))
    assert_refused(caught.value, grpc.StatusCode.PERMISSION_DENIED, lacks_scope("ci", "work", "WorkerService.Lease"))
