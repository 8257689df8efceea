"""jobwire: the Python client and worker runtime for the jobwire job broker.

    client = jobwire.Client("localhost:50051")
    client.enqueue("greet", {"name": "ada"}, queue="default")

    worker = jobwire.Worker("localhost:50051", queues=["default"], concurrency=4,
                            handlers={"greet": lambda job: print(job.payload)})
    worker.run()  # until SIGTERM / SIGINT or worker.stop()
"""

__version__ = "0.1.0"

from .client import Client, EnqueueResult, JobState, RetryPolicy, job_spec  # noqa: E402
from .errors import JobwireError, PayloadError, PermanentError  # noqa: E402
from .worker import Job, Worker  # noqa: E402

__all__ = [
    "Client",
    "EnqueueResult",
    "Job",
    "JobState",
    "JobwireError",
    "PayloadError",
    "PermanentError",
    "RetryPolicy",
    "Worker",
    "__version__",
    "job_spec",
]
