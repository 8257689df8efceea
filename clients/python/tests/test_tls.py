"""TLS and mutual TLS (issue 12): both clients and both workers connect to a
TLS server trusting a given CA, and present a client certificate when one is
configured. The broker does not serve TLS yet, so the server here is the fake
broker on a real TLS port; the certificates are made at run time with
openssl, for 127.0.0.1 and localhost."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import grpc
import pytest

import jobwire
import jobwire.aio
from fakebroker import FakeBroker
from harness import arunning, await_event, running, wait_event


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and localhost, and
    a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=jobwire test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=jobwire test {name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-out", f"{name}.pem", *ext, cwd=d)  # fmt: skip
    return d


def tls_fake(pki: Path, require_client_cert: bool) -> FakeBroker:
    creds = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=require_client_cert,
    )
    return FakeBroker(tls=creds).start()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_threaded_client_and_worker_over_tls(pki, mutual):
    if mutual:  # files by path
        tls = jobwire.TLS(ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key")
    else:  # PEM bytes
        tls = jobwire.TLS(ca=(pki / "ca.pem").read_bytes())
    fake = tls_fake(pki, require_client_cert=mutual)
    try:
        with jobwire.Client(fake.address, tls=tls) as client:
            assert client.enqueue("t", {"a": 1}, queue="q").id == "new-0"
        fake.add_jobs(1)
        handled = threading.Event()
        with running(jobwire.Worker(fake.address, ["q"], 1, {"t": lambda job: handled.set()}, tls=tls)):
            wait_event(handled, "the handler, over TLS")
            fake.wait("the ack", lambda: len(fake.acked()) == 1)
    finally:
        fake.stop()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_aio_client_and_worker_over_tls(pki, mutual):
    tls = jobwire.TLS(
        ca=pki / "ca.pem",
        cert=pki / "client.pem" if mutual else None,
        key=pki / "client.key" if mutual else None,
        server_name="localhost",  # the certificate names both; this checks the override is passed
    )
    fake = tls_fake(pki, require_client_cert=mutual)

    async def scenario() -> None:
        async with jobwire.aio.Client(fake.address, tls=tls) as client:
            assert (await client.enqueue("t", None, queue="q")).id == "new-0"
        fake.add_jobs(1)
        handled = asyncio.Event()

        async def handler(job: jobwire.aio.LeasedJob) -> None:
            handled.set()

        worker = jobwire.aio.Worker(fake.address, ["q"], 1, {"t": handler}, tls=tls, install_signal_handlers=False)
        async with arunning(worker):
            await await_event(handled, "the handler, over TLS")
            await asyncio.get_running_loop().run_in_executor(
                None, fake.wait, "the ack", lambda: len(fake.acked()) == 1
            )

    try:
        asyncio.run(scenario())
    finally:
        fake.stop()


def test_mtls_server_refuses_a_client_without_a_certificate(pki):
    fake = tls_fake(pki, require_client_cert=True)
    try:
        with jobwire.Client(fake.address, tls=jobwire.TLS(ca=pki / "ca.pem"), timeout=2) as client:
            with pytest.raises(jobwire.JobwireError) as err:
                client.enqueue("t", {}, queue="q")
        assert err.value.code is grpc.StatusCode.UNAVAILABLE
        assert fake.enqueue_calls == 0
    finally:
        fake.stop()


def test_a_client_that_does_not_trust_the_ca_is_refused(pki, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=another CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=other)  # fmt: skip
    fake = tls_fake(pki, require_client_cert=False)
    try:
        with jobwire.Client(fake.address, tls=jobwire.TLS(ca=other / "ca.pem"), timeout=2) as client:
            with pytest.raises(jobwire.JobwireError) as err:
                client.enqueue("t", {}, queue="q")
        assert err.value.code is grpc.StatusCode.UNAVAILABLE
        assert fake.enqueue_calls == 0
    finally:
        fake.stop()


def test_cert_without_key_is_refused_up_front(pki):
    with pytest.raises(ValueError, match="together"):
        jobwire.TLS(ca=pki / "ca.pem", cert=pki / "client.pem")
