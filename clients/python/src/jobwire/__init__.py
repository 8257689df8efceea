"""jobwire: the Python client and worker runtime for the jobwire job broker.

    client = jobwire.Client("localhost:50051")
    client.enqueue("greet", {"name": "ada"}, queue="default")

    worker = jobwire.Worker("localhost:50051", queues=["default"], concurrency=4,
                            handlers={"greet": lambda job: print(job.payload)})
    worker.run()  # until SIGTERM / SIGINT or worker.stop()

The same for asyncio code lives in ``jobwire.aio``.
"""

__version__ = "0.1.0"

from ._requests import job_spec
from ._rpc import TLS
from .client import Client, JobPages
from .errors import JobwireError, PayloadError, PermanentError
from .model import (
    EnqueueResult,
    Identity,
    Job,
    JobError,
    JobState,
    QueueConfig,
    QueueHistory,
    QueueSample,
    QueueStats,
    RateLimit,
    ReplayResult,
    RetryPolicy,
    WorkerStream,
)
from .worker import LeasedJob, Worker

__all__ = [
    "TLS",
    "Client",
    "EnqueueResult",
    "Identity",
    "Job",
    "JobError",
    "JobPages",
    "JobState",
    "JobwireError",
    "LeasedJob",
    "PayloadError",
    "PermanentError",
    "QueueConfig",
    "QueueHistory",
    "QueueSample",
    "QueueStats",
    "RateLimit",
    "ReplayResult",
    "RetryPolicy",
    "Worker",
    "WorkerStream",
    "__version__",
    "job_spec",
]
