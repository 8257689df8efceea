"""Bearer tokens against a broker started with JOBWIRE_AUTH_TOKENS: the
client's unary calls and the worker's Lease stream, Ack and Heartbeat all
carry ``authorization: Bearer <token>``, and calls without it are refused."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

import jobwire
import jobwire.aio
from harness import WAIT_TIMEOUT, Broker, arunning, await_state, broker_data_dir, fresh_queue, run_on_thread, running, wait_event, wait_for_state
from jobwire import JobState, JobwireError

# The broker wants tokens of at least 16 characters.
TOKEN = "python-client-test-token"


@pytest.fixture(scope="module")
def auth_broker() -> Broker:
    """A broker of its own: the session's accepts calls without a token."""
    with broker_data_dir() as data_dir:
        b = Broker(data_dir=data_dir, env={"JOBWIRE_AUTH_TOKENS": f"another-valid-token-here,{TOKEN}"}).start()
        try:
            yield b
        finally:
            code = b.stop()
        assert code == 0, f"broker exited with {code} after SIGTERM:\n" + "\n".join(b.lines[-30:])


@pytest.mark.parametrize("token", [None, "python-client-wrong-token"])
def test_enqueue_without_a_valid_token_is_unauthenticated(auth_broker, token):
    with jobwire.Client(auth_broker.address, token=token) as client:
        with pytest.raises(JobwireError) as caught:
            client.enqueue("auth", {}, queue=fresh_queue("auth_refused"))
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.method == "Enqueue"
    # The text names the code in lower case, as the TypeScript and Go clients' do.
    assert str(caught.value) == f"unauthenticated: {caught.value.details}"


def test_token_admits_the_client_and_the_worker(auth_broker):
    q = fresh_queue("auth")
    handled = threading.Event()
    seen: list[object] = []

    def handler(job: jobwire.LeasedJob) -> None:
        seen.append(job.payload)
        handled.set()

    with jobwire.Client(auth_broker.address, token=TOKEN) as client:
        job_id = client.enqueue("auth", {"n": 1}, queue=q).id
        worker = jobwire.Worker(auth_broker.address, [q], 1, {"auth": handler}, token=TOKEN, shutdown_timeout=5.0)
        with running(worker):
            wait_event(handled, "the handler to run")
            # COMPLETED means the Ack, a unary call of the worker's, got through too.
            job = wait_for_state(client, job_id, JobState.COMPLETED)
        assert job.attempt == 1 and list(job.errors) == []
        assert seen == [{"n": 1}]


def test_token_applies_to_a_channel_passed_in(auth_broker):
    channel = grpc.insecure_channel(auth_broker.address)
    try:
        with jobwire.Client(auth_broker.address, channel=channel, token=TOKEN) as client:
            job_id = client.enqueue("auth", None, queue=fresh_queue("auth_channel")).id
            assert client.get_job(job_id).state == JobState.AVAILABLE
        # The caller's channel is left as it was, without the token; and the
        # client did not close it.
        with jobwire.Client(auth_broker.address, channel=channel) as bare:
            with pytest.raises(JobwireError) as caught:
                bare.get_job(job_id)
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()


def test_worker_without_a_token_stops_with_unauthenticated(auth_broker):
    worker = jobwire.Worker(auth_broker.address, [fresh_queue("auth_worker")], 1, {"auth": lambda job: None})
    thread, errors = run_on_thread(worker)
    thread.join(WAIT_TIMEOUT)
    if thread.is_alive():
        worker.stop()
        thread.join(WAIT_TIMEOUT)
        pytest.fail(f"worker.run() kept running for {WAIT_TIMEOUT}s on a broker that refuses it")
    assert len(errors) == 1 and isinstance(errors[0], JobwireError), errors
    assert errors[0].code is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["", "two words", "tab\there", "caf\u00e9"])
def test_a_token_the_broker_could_never_accept_is_refused_up_front(token):
    with pytest.raises(ValueError, match="token"):
        jobwire.Client("127.0.0.1:1", token=token)
    with pytest.raises(ValueError, match="token"):
        jobwire.Worker("127.0.0.1:1", ["q"], token=token)


def test_aio_token_admits_the_client_and_the_worker_and_its_absence_is_refused(auth_broker):
    q = fresh_queue("auth_aio")
    seen: list[object] = []

    async def handler(job: jobwire.aio.LeasedJob) -> None:
        seen.append(job.payload)

    async def scenario() -> jobwire.Job:
        async with jobwire.aio.Client(auth_broker.address) as bare:
            with pytest.raises(JobwireError) as caught:
                await bare.enqueue("auth", {}, queue=q)
            assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        async with jobwire.aio.Client(auth_broker.address, token=TOKEN) as client:
            job_id = (await client.enqueue("auth", {"n": 2}, queue=q)).id
            worker = jobwire.aio.Worker(
                auth_broker.address, [q], 1, {"auth": handler}, token=TOKEN, install_signal_handlers=False
            )
            async with arunning(worker):
                return await await_state(client, job_id, JobState.COMPLETED)

    job = asyncio.run(scenario())
    assert job.attempt == 1 and seen == [{"n": 2}]


def test_aio_worker_without_a_token_stops_with_unauthenticated(auth_broker):
    worker = jobwire.aio.Worker(
        auth_broker.address, [fresh_queue("auth_aio_worker")], 1, {}, install_signal_handlers=False
    )
    with pytest.raises(JobwireError) as caught:
        asyncio.run(asyncio.wait_for(worker.run(), WAIT_TIMEOUT))
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
