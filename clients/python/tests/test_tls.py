"""TLS and mutual TLS against the real broker (issue 12: JOBWIRE_TLS_CERT,
JOBWIRE_TLS_KEY and JOBWIRE_TLS_CLIENT_CA), in both runtimes: enqueue,
lease and ack over TLS and mTLS; a client certificate the tokens file maps
to a name is the caller's identity; a server certificate the client does not
trust fails the call promptly as UNAVAILABLE. The certificates are made at
run time with openssl (tests/pki.py), for 127.0.0.1 and localhost."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest

import jobwire
import jobwire.aio
from harness import (
    Broker,
    arunning,
    await_state,
    broker_with,
    fresh_queue,
    running,
    wait_event,
    wait_for_state,
    write_tokens_file,
)
from jobwire import JobState, JobwireError
from pki import Pki, require_openssl

# The client certificate the tokens file knows, and one it does not.
FLEET_CN = "jobwire test worker fleet"
STRANGER_CN = "jobwire test stranger"
OPS_TOKEN = "ops-secret-token-0123456789"
# A client's deadline in the refusal tests: the call must end by then with
# UNAVAILABLE, not hang for gRPC's 20 s connect timeout.
REFUSAL_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    require_openssl()
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki) -> Broker:
    """TLS only: any client that trusts the CA may connect; no auth."""
    with broker_with({"JOBWIRE_TLS_CERT": str(pki.server_cert), "JOBWIRE_TLS_KEY": str(pki.server_key)}) as b:
        yield b


@pytest.fixture(scope="module")
def mtls_broker(pki, tmp_path_factory) -> Broker:
    """Mutual TLS with a tokens file: the fleet's certificate stands in for a
    token; a token still works, and wins over the certificate."""
    pki.client(FLEET_CN)
    pki.client(STRANGER_CN)
    tokens = write_tokens_file(
        tmp_path_factory.mktemp("mtls-auth") / "tokens.yaml",
        tokens=[{"name": "ops", "token": OPS_TOKEN, "scopes": ["read", "admin"]}],
        certificates=[{"name": "worker-fleet", "subject": f"CN={FLEET_CN}", "scopes": ["enqueue", "work", "read"]}],
    )
    env = {
        "JOBWIRE_TLS_CERT": str(pki.server_cert),
        "JOBWIRE_TLS_KEY": str(pki.server_key),
        "JOBWIRE_TLS_CLIENT_CA": str(pki.ca),
        "JOBWIRE_AUTH_FILE": str(tokens),
    }
    with broker_with(env) as b:
        yield b


def client_tls(pki: Pki, cn: str | None, form: str) -> jobwire.TLS:
    """TLS options trusting the test CA, with the client certificate of cn;
    ``form`` picks how they are given: PEM bytes, str paths or Paths."""
    cert, key = pki.client(cn) if cn else (None, None)

    def give(path: Path | None) -> bytes | str | Path | None:
        if path is None:
            return None
        return {"bytes": path.read_bytes(), "str": str(path), "path": path}[form]

    return jobwire.TLS(ca=give(pki.ca), cert=give(cert), key=give(key))


@pytest.fixture(params=["tls", "mtls"])
def secured(request, pki) -> tuple[Broker, jobwire.TLS]:
    """The TLS broker with PEM bytes, or the mTLS one with paths."""
    if request.param == "tls":
        return request.getfixturevalue("tls_broker"), client_tls(pki, None, "bytes")
    return request.getfixturevalue("mtls_broker"), client_tls(pki, FLEET_CN, "path")


# -- threaded ------------------------------------------------------------------


def test_enqueue_lease_and_ack_over_tls(secured):
    broker, tls = secured
    q = fresh_queue("tls")
    handled = threading.Event()
    seen: list[object] = []

    def handler(job: jobwire.LeasedJob) -> None:
        seen.append(job.payload)
        handled.set()

    with jobwire.Client(broker.address, tls=tls) as client:
        job_id = client.enqueue("t", {"a": 1}, queue=q).id
        with running(jobwire.Worker(broker.address, [q], 1, {"t": handler}, tls=tls, shutdown_timeout=5.0)):
            wait_event(handled, "the handler, over TLS")
            # COMPLETED: the ack got through as well.
            job = wait_for_state(client, job_id, JobState.COMPLETED)
    assert job.attempt == 1 and seen == [{"a": 1}]


def test_a_client_certificate_in_the_tokens_file_is_the_callers_identity(mtls_broker, pki):
    with jobwire.Client(mtls_broker.address, tls=client_tls(pki, FLEET_CN, "str")) as client:
        me = client.who_am_i()
    assert me.auth_enabled and me.name == "worker-fleet"
    assert sorted(me.scopes) == ["enqueue", "read", "work"] and me.queues == ("*",)
    # The certificate's scopes hold: no admin.
    with jobwire.Client(mtls_broker.address, tls=client_tls(pki, FLEET_CN, "str")) as client:
        with pytest.raises(JobwireError) as caught:
            client.pause_queue(fresh_queue("tls_admin"))
    assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "worker-fleet lacks scope admin" in caught.value.details


def test_a_token_over_mtls_is_the_identity_rather_than_the_certificate(mtls_broker, pki):
    with jobwire.Client(mtls_broker.address, tls=client_tls(pki, FLEET_CN, "path"), token=OPS_TOKEN) as client:
        me = client.who_am_i()
    assert (me.name, sorted(me.scopes)) == ("ops", ["admin", "read"])


def test_a_client_certificate_the_tokens_file_does_not_know_is_unauthenticated(mtls_broker, pki):
    # The handshake succeeds (the CA signed it); the broker knows no name for it.
    with jobwire.Client(mtls_broker.address, tls=client_tls(pki, STRANGER_CN, "path")) as client:
        with pytest.raises(JobwireError) as caught:
            client.enqueue("t", {}, queue=fresh_queue("tls_stranger"))
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert str(caught.value).startswith("unauthenticated: ")


def assert_unavailable_promptly(call, what: str) -> JobwireError:
    """call() raises UNAVAILABLE, within REFUSAL_TIMEOUT and some slack: a
    refused handshake is retried like an unreachable broker, only for as
    long as the call's deadline."""
    began = time.monotonic()
    with pytest.raises(JobwireError) as caught:
        call()
    took = time.monotonic() - began
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE, caught.value
    assert took < REFUSAL_TIMEOUT + 5, f"{what} took {took:.1f}s to fail"
    return caught.value


def test_a_server_certificate_the_client_does_not_trust_fails_promptly(tls_broker, tmp_path):
    other = Pki.create(tmp_path / "other", "another CA")
    with jobwire.Client(tls_broker.address, tls=jobwire.TLS(ca=other.ca), timeout=REFUSAL_TIMEOUT) as client:
        err = assert_unavailable_promptly(lambda: client.enqueue("t", {}, queue="q"), "an untrusted certificate")
    # gRPC's words name the handshake, so the log says what went wrong.
    assert "handshake" in err.details.lower() or "certificate" in err.details.lower(), err.details


def test_mtls_refuses_a_client_without_a_certificate(mtls_broker, pki):
    tls = client_tls(pki, None, "path")
    with jobwire.Client(mtls_broker.address, tls=tls, timeout=REFUSAL_TIMEOUT) as client:
        assert_unavailable_promptly(lambda: client.enqueue("t", {}, queue="q"), "a missing client certificate")


def test_a_plaintext_client_cannot_talk_to_a_tls_broker(tls_broker):
    with jobwire.Client(tls_broker.address, timeout=REFUSAL_TIMEOUT) as client:
        assert_unavailable_promptly(lambda: client.enqueue("t", {}, queue="q"), "a plaintext client")


# -- asyncio -------------------------------------------------------------------


def test_aio_enqueue_lease_and_ack_over_tls(secured):
    broker, tls = secured
    q = fresh_queue("aio_tls")

    async def handler(job: jobwire.aio.LeasedJob) -> None:
        pass

    async def scenario() -> jobwire.Job:
        async with jobwire.aio.Client(broker.address, tls=tls) as client:
            job_id = (await client.enqueue("t", None, queue=q)).id
            worker = jobwire.aio.Worker(broker.address, [q], 1, {"t": handler}, tls=tls, install_signal_handlers=False)
            async with arunning(worker):
                return await await_state(client, job_id, JobState.COMPLETED)

    assert asyncio.run(scenario()).attempt == 1


def test_aio_certificate_identity_and_untrusted_server(mtls_broker, pki, tmp_path):
    other = Pki.create(tmp_path / "other", "another CA")
    fleet_cert, fleet_key = pki.client(FLEET_CN)
    # localhost is in the broker's certificate too: server_name is passed through.
    fleet = jobwire.TLS(ca=pki.ca, cert=fleet_cert, key=fleet_key, server_name="localhost")
    untrusting = jobwire.TLS(ca=other.ca, cert=fleet_cert, key=fleet_key)

    async def scenario() -> tuple[jobwire.Identity, JobwireError, float]:
        async with jobwire.aio.Client(mtls_broker.address, tls=fleet) as client:
            me = await client.who_am_i()
        async with jobwire.aio.Client(mtls_broker.address, tls=untrusting, timeout=REFUSAL_TIMEOUT) as client:
            began = time.monotonic()
            with pytest.raises(JobwireError) as caught:
                await client.enqueue("t", {}, queue="q")
        return me, caught.value, time.monotonic() - began

    me, refused, took = asyncio.run(scenario())
    assert (me.auth_enabled, me.name) == (True, "worker-fleet")
    assert refused.code is grpc.StatusCode.UNAVAILABLE, refused
    assert took < REFUSAL_TIMEOUT + 5, f"an untrusted certificate took {took:.1f}s to fail"


# -- options ---------------------------------------------------------------------


def test_tls_options_are_checked_up_front(pki, tmp_path):
    cert, key = pki.client(FLEET_CN)
    with pytest.raises(ValueError, match="together"):
        jobwire.TLS(ca=pki.ca, cert=cert)
    with pytest.raises(ValueError, match="cannot read"):
        jobwire.TLS(ca=tmp_path / "missing.pem")
    # A str is a path; PEM text belongs in bytes.
    with pytest.raises(ValueError, match="encode"):
        jobwire.TLS(ca=pki.ca.read_text())
    # Bytes are PEM, not a path.
    with pytest.raises(ValueError, match="not PEM"):
        jobwire.TLS(ca=str(pki.ca).encode())
    # Read at construction: the files can go afterwards.
    copy = tmp_path / "ca-copy.pem"
    copy.write_bytes(pki.ca.read_bytes())
    tls = jobwire.TLS(ca=copy, cert=str(cert), key=key.read_bytes())
    copy.unlink()
    assert isinstance(tls.credentials(), grpc.ChannelCredentials)
    assert "BEGIN" not in repr(tls)
