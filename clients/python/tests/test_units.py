"""Pure unit tests: no broker, no network."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

import jobwire
from jobwire import _payload
from jobwire._backoff import Backoff
from jobwire._convert import duration_seconds, to_duration, to_timestamp
from jobwire.v1 import job_pb2, worker_service_pb2
from jobwire._lease_book import expiry as _expiry
from jobwire._worker_core import MAX_ERROR_BYTES
from jobwire._worker_core import error_message as _error_message


class TestPayload:
    def test_dicts_become_compact_json(self):
        assert _payload.encode({"name": "ada", "n": [1, 2]}) == (b'{"name":"ada","n":[1,2]}', "application/json")

    def test_unicode_stays_utf8(self):
        data, _ = _payload.encode({"name": "Ада"})
        assert data == '{"name":"Ада"}'.encode()

    def test_bytes_pass_through_as_octet_stream(self):
        assert _payload.encode(b"\x00\xff") == (b"\x00\xff", "application/octet-stream")
        assert _payload.encode(bytearray(b"x"), "image/png") == (b"x", "image/png")

    def test_unserialisable_payload_is_refused(self):
        with pytest.raises(TypeError, match="pass bytes"):
            _payload.encode({"when": dt.datetime.now()})
        with pytest.raises(TypeError):
            _payload.encode(float("nan"))

    @pytest.mark.parametrize(
        "ctype,json",
        [
            ("application/json", True),
            ("Application/JSON; charset=utf-8", True),
            ("application/cloudevents+json", True),
            ("", True),
            ("application/octet-stream", False),
            ("text/plain", False),
        ],
    )
    def test_is_json(self, ctype, json):
        assert _payload.is_json(ctype) is json

    def test_decode(self):
        assert _payload.decode(b'{"a":1}', "application/json") == {"a": 1}
        assert _payload.decode(b"", "application/json") is None
        assert _payload.decode(b"raw", "text/plain") == b"raw"

    def test_undecodable_json_is_a_permanent_error(self):
        with pytest.raises(jobwire.PermanentError, match="not valid JSON"):
            _payload.decode(b"{nope", "application/json")


class TestBackoff:
    def test_delays_grow_to_the_maximum_with_jitter_in_the_upper_half(self):
        b = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7))
        for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
            assert b.ceiling(attempt) == pytest.approx(ceiling)
            for _ in range(50):
                assert ceiling / 2 <= b.delay(attempt) <= ceiling

    def test_huge_attempt_counts_do_not_overflow(self):
        assert Backoff(initial=0.1, maximum=5).ceiling(10_000) == 5

    def test_invalid_settings_are_refused(self):
        with pytest.raises(ValueError):
            Backoff(initial=0, maximum=1)
        with pytest.raises(ValueError):
            Backoff(initial=2, maximum=1)


class TestConvert:
    def test_durations(self):
        assert to_duration(0.05) == duration_pb2.Duration(nanos=50_000_000)
        assert to_duration(dt.timedelta(minutes=1, milliseconds=5)) == duration_pb2.Duration(seconds=60, nanos=5_000_000)
        assert duration_seconds(to_duration(2.5)) == 2.5
        with pytest.raises(ValueError):
            to_duration(-1)
        with pytest.raises(TypeError):
            to_duration("1s")

    def test_naive_datetimes_are_utc(self):
        naive = to_timestamp(dt.datetime(2030, 1, 2, 3, 4, 5))
        aware = to_timestamp(dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
        assert naive == aware


class TestJobSpec:
    def test_options_map_onto_the_spec(self):
        spec = jobwire.job_spec(
            "email",
            {"to": "a@b"},
            queue="mail",
            delay=1.5,
            priority=3,
            max_attempts=4,
            lease_duration=dt.timedelta(seconds=90),
            retry=jobwire.RetryPolicy(initial_backoff=0.05, multiplier=3, jitter=0),
            idempotency_key="k",
            idempotency_ttl=60,
            headers={"tenant": "t1"},
        )
        assert (spec.queue, spec.type, spec.payload, spec.content_type) == ("mail", "email", b'{"to":"a@b"}', "application/json")
        assert spec.WhichOneof("schedule") == "delay" and spec.delay.seconds == 1 and spec.delay.nanos == 500_000_000
        assert spec.priority == 3 and spec.HasField("max_attempts") and spec.max_attempts == 4
        assert spec.lease_duration.seconds == 90
        assert spec.retry.initial_backoff.nanos == 50_000_000 and spec.retry.multiplier == 3
        assert spec.retry.HasField("jitter") and spec.retry.jitter == 0
        assert spec.idempotency_key == "k" and spec.idempotency_ttl.seconds == 60
        assert dict(spec.headers) == {"tenant": "t1"}

    def test_unset_options_stay_unset(self):
        spec = jobwire.job_spec("t")
        assert spec.payload == b"null"
        assert spec.WhichOneof("schedule") is None
        assert not spec.HasField("max_attempts") and not spec.HasField("retry") and not spec.HasField("lease_duration")

    def test_run_at_and_delay_exclude_each_other(self):
        with pytest.raises(ValueError):
            jobwire.job_spec("t", run_at=dt.datetime(2030, 1, 1), delay=1)

    def test_job_state_matches_the_proto_numbers(self):
        assert jobwire.JobState.COMPLETED == job_pb2.JOB_STATE_COMPLETED
        assert jobwire.JobState.DEAD.final and not jobwire.JobState.RETRYABLE.final


class TestWorkerHelpers:
    def test_error_messages(self):
        assert _error_message(ValueError("boom"), permanent=False) == "ValueError: boom"
        assert _error_message(ValueError(), permanent=False) == "ValueError"
        assert _error_message(jobwire.PermanentError("gone"), permanent=True) == "gone"
        long = _error_message(RuntimeError("é" * MAX_ERROR_BYTES), permanent=False)
        assert len(long.encode()) <= MAX_ERROR_BYTES

    def test_expiry_is_capped_by_the_known_lease_duration(self):
        now = 1_000_000.0
        leased = worker_service_pb2.LeasedJob(
            job=job_pb2.Job(lease_duration=duration_pb2.Duration(seconds=10)),
            lease_expires_at=timestamp_pb2.Timestamp(seconds=int(now) + 60),
        )
        # The broker's clock says 60s, the job asked for 10s: trust the shorter.
        assert _expiry(leased, now, None) == now + 10
        plain = worker_service_pb2.LeasedJob(lease_expires_at=timestamp_pb2.Timestamp(seconds=int(now) + 7))
        assert _expiry(plain, now, None) == now + 7
        assert _expiry(plain, now, duration_pb2.Duration(seconds=5)) == now + 5

    def test_worker_config_is_validated(self):
        with pytest.raises(ValueError):
            jobwire.Worker("x:1", [], 1)
        with pytest.raises(ValueError):
            jobwire.Worker("x:1", ["q"], 0)
        with pytest.raises(TypeError):
            jobwire.Worker("x:1", ["q"], 1, {"t": "not callable"})


class TestSetQueueConfigRequest:
    """Partial updates: only what is passed is sent; None clears through update_mask."""

    def build(self, **kw):
        from jobwire._requests import UNSET, set_queue_config_request

        args = {
            name: UNSET
            for name in (
                "retry",
                "max_attempts",
                "lease_duration",
                "completed_retention",
                "max_running",
                "max_running_per_key",
                "rate_limit",
                "rate_limit_per_key",
            )
        }
        args.update(kw)
        return set_queue_config_request("q", **args)

    def test_only_the_given_fields_are_present_and_no_mask(self):
        req = self.build(max_running=5)
        assert req.HasField("max_running") and req.max_running == 5
        for name in ("max_attempts", "max_running_per_key", "retry", "lease_duration", "rate_limit"):
            assert not req.HasField(name), name
        assert not req.HasField("update_mask")

    def test_zero_is_a_value_not_an_absence(self):
        req = self.build(completed_retention=0, max_running=0)
        assert req.HasField("completed_retention") and req.HasField("max_running")

    def test_none_clears_through_a_mask_that_names_every_change(self):
        req = self.build(max_running=None, max_attempts=3, rate_limit=jobwire.RateLimit(10, 1))
        assert sorted(req.update_mask.paths) == ["max_attempts", "max_running", "rate_limit"]
        assert not req.HasField("max_running")
        assert req.max_attempts == 3 and req.rate_limit.count == 10 and req.rate_limit.period.seconds == 1

    def test_nothing_to_change_is_refused(self):
        with pytest.raises(ValueError):
            self.build()


class TestTypedResults:
    def test_job_state_prints_its_name(self):
        assert str(jobwire.JobState.DEAD) == "DEAD" and f"{jobwire.JobState.DEAD}" == "DEAD"
        assert repr(jobwire.JobState.DEAD) == "JobState.DEAD"
        assert jobwire.JobState.of(99) is jobwire.JobState.UNSPECIFIED

    def test_job_from_proto(self):
        p = job_pb2.Job(
            id="7",
            queue="q",
            type="t",
            payload=b'{"a":1}',
            content_type="application/json",
            state=job_pb2.JOB_STATE_DEAD,
            attempt=2,
            max_attempts=2,
            errors=[job_pb2.JobError(attempt=1, message="boom", at=timestamp_pb2.Timestamp(seconds=10))],
            errors_dropped=3,
            lease_duration=duration_pb2.Duration(seconds=90),
            concurrency_key="tenant:1",
        )
        job = jobwire.Job.from_proto(p)
        assert job.state is jobwire.JobState.DEAD and job.payload == {"a": 1}
        assert job.errors == (jobwire.JobError(1, "boom", dt.datetime(1970, 1, 1, 0, 0, 10, tzinfo=dt.timezone.utc)),)
        assert job.errors_dropped == 3 and job.concurrency_key == "tenant:1"
        assert job.lease_duration == dt.timedelta(seconds=90)
        assert job.run_at is None and job.finished_at is None
        assert "DEAD" in repr(job) and "payload" not in repr(job)

    def test_a_bad_json_payload_raises_only_when_read(self):
        job = jobwire.Job.from_proto(job_pb2.Job(id="1", payload=b"{nope", content_type="application/json"))
        with pytest.raises(jobwire.PayloadError):
            _ = job.payload

    def test_queue_config_from_proto_keeps_unset_as_none(self):
        from jobwire.v1 import admin_service_pb2

        p = admin_service_pb2.QueueConfig(queue="q", max_running=0, paused=True)
        config = jobwire.QueueConfig.from_proto(p)
        assert config.max_running == 0 and config.max_attempts is None and config.rate_limit is None
        assert config.paused and config.retry is None


class TestAdminResults:
    def test_queue_history_from_proto(self):
        from google.protobuf import duration_pb2

        from jobwire.v1 import admin_service_pb2

        p = admin_service_pb2.GetQueueHistoryResponse(
            samples=[
                admin_service_pb2.QueueSample(
                    at=timestamp_pb2.Timestamp(seconds=2_000_000_000), queue="q", available=3, waiting=1, failed=2
                ),
                admin_service_pb2.QueueSample(queue="q"),
            ],
            interval=duration_pb2.Duration(seconds=10),
        )
        history = jobwire.QueueHistory.from_proto(p)
        assert history.interval == dt.timedelta(seconds=10)
        first, second = history.samples
        assert first == jobwire.QueueSample(
            at=dt.datetime.fromtimestamp(2_000_000_000, dt.timezone.utc), queue="q", available=3, waiting=1, failed=2
        )
        assert second.at is None and second.completed == 0

    def test_identity_from_proto(self):
        from jobwire.v1 import admin_service_pb2

        p = admin_service_pb2.WhoAmIResponse(auth_enabled=True, name="ci", scopes=["enqueue"], queues=["billing.*"])
        assert jobwire.Identity.from_proto(p) == jobwire.Identity(True, "ci", ("enqueue",), ("billing.*",))


class TestErrors:
    def test_text_starts_with_the_lower_case_code_name_as_the_other_clients_write_it(self):
        import grpc

        details = "ci lacks scope admin (needed by AdminService.PauseQueue)"
        err = jobwire.JobwireError(grpc.StatusCode.PERMISSION_DENIED, details, "PauseQueue")
        assert str(err) == "permission_denied: ci lacks scope admin (needed by AdminService.PauseQueue)"
        assert err.code is grpc.StatusCode.PERMISSION_DENIED and err.code_name == "PERMISSION_DENIED"
        assert (err.details, err.method) == (details, "PauseQueue")

    def test_cancelled_is_spelled_as_connect_spells_it_and_an_empty_message_leaves_the_code(self):
        import grpc

        assert str(jobwire.JobwireError(grpc.StatusCode.CANCELLED, "stopped")) == "canceled: stopped"
        assert str(jobwire.JobwireError(grpc.StatusCode.DEADLINE_EXCEEDED, "")) == "deadline_exceeded"
        assert str(jobwire.JobwireError(grpc.StatusCode.UNAVAILABLE, "x")) == "unavailable: x"

    def test_from_rpc_error_keeps_code_details_and_cause(self):
        import grpc

        class Failed(grpc.RpcError):
            def code(self) -> grpc.StatusCode:
                return grpc.StatusCode.NOT_FOUND

            def details(self) -> str:
                return "job 42 not found"

        cause = Failed()
        err = jobwire.JobwireError.from_rpc_error(cause, "GetJob")
        assert str(err) == "not_found: job 42 not found" and err.method == "GetJob" and err.__cause__ is cause

    def test_survives_pickling(self):
        import pickle

        import grpc

        err = pickle.loads(pickle.dumps(jobwire.JobwireError(grpc.StatusCode.ABORTED, "busy", "Ack")))
        assert (err.code, err.details, err.method, str(err)) == (grpc.StatusCode.ABORTED, "busy", "Ack", "aborted: busy")


def test_leased_job_carries_the_lease_expiry_the_broker_gave():
    from jobwire._lease_book import leased_job_fields, new_lease

    leased = worker_service_pb2.LeasedJob(
        job=job_pb2.Job(id="5", state=job_pb2.JOB_STATE_RUNNING),
        lease_token="5.tok",
        lease_expires_at=timestamp_pb2.Timestamp(seconds=2_000_000_000),
    )
    job = jobwire.LeasedJob(**leased_job_fields(new_lease(leased, None)))
    assert job.lease_expires_at == dt.datetime.fromtimestamp(2_000_000_000, dt.timezone.utc)
    assert job.state is jobwire.JobState.RUNNING and job.cancel_reason is None
