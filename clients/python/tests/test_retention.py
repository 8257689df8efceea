"""A queue with a retention of zero: acked jobs are deleted, against a real broker."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

import jobwire
from harness import fresh_queue, running, wait_until


def test_zero_retention_deletes_jobs_at_ack(broker, client):
    q = fresh_queue("retention")
    client.set_queue_config(q, completed_retention=0)
    done: list[str] = []
    job_id = client.enqueue("noop", {}, queue=q).id
    worker = jobwire.Worker(broker.address, [q], 1, {"noop": lambda job: done.append(job.id)})

    def gone() -> bool:
        try:
            client.get_job(job_id)
        except jobwire.JobwireError as err:
            return err.code == grpc.StatusCode.NOT_FOUND
        return False

    with running(worker):
        wait_until("the acked job to be deleted", gone)
    assert done == [job_id]


def test_negative_retention_is_refused(client):
    with pytest.raises(jobwire.JobwireError) as info:
        client.set_queue_config(fresh_queue("retention-bad"), completed_retention=duration_pb2.Duration(seconds=-1))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "completed_retention" in info.value.details
