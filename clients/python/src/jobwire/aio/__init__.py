"""jobwire for asyncio: the client and the worker runtime on grpc.aio.

    client = jobwire.aio.Client("localhost:50051")
    await client.enqueue("greet", {"name": "ada"}, queue="default")

    async def greet(job: jobwire.aio.LeasedJob) -> None:
        await say_hello(job.payload["name"])

    worker = jobwire.aio.Worker("localhost:50051", ["default"], concurrency=50,
                                handlers={"greet": greet})
    await worker.run()  # until SIGTERM / SIGINT or worker.stop()

Results are the same dataclasses as the threaded client's (jobwire.Job,
jobwire.JobState, ...).
"""

from .client import AsyncJobPages, Client
from .worker import AsyncHandler, LeasedJob, Worker

__all__ = ["AsyncHandler", "AsyncJobPages", "Client", "LeasedJob", "Worker"]
