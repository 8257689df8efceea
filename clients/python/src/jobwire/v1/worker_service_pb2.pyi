import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from jobwire.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseRequest(_message.Message):
    __slots__ = ("open", "credit", "ack")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    open: LeaseOpen
    credit: LeaseCredit
    ack: LeaseAck
    def __init__(self, open: _Optional[_Union[LeaseOpen, _Mapping]] = ..., credit: _Optional[_Union[LeaseCredit, _Mapping]] = ..., ack: _Optional[_Union[LeaseAck, _Mapping]] = ...) -> None: ...

class LeaseOpen(_message.Message):
    __slots__ = ("queues", "worker_id", "max_in_flight", "lease_duration")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedScalarFieldContainer[str]
    worker_id: str
    max_in_flight: int
    lease_duration: _duration_pb2.Duration
    def __init__(self, queues: _Optional[_Iterable[str]] = ..., worker_id: _Optional[str] = ..., max_in_flight: _Optional[int] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LeaseCredit(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class LeaseAck(_message.Message):
    __slots__ = ("ack_id", "lease_tokens")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ack_id: int
    lease_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ack_id: _Optional[int] = ..., lease_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class LeaseAckResult(_message.Message):
    __slots__ = ("ack_id", "lost_lease_tokens", "error_code", "error_message")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    LOST_LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ack_id: int
    lost_lease_tokens: _containers.RepeatedScalarFieldContainer[str]
    error_code: int
    error_message: str
    def __init__(self, ack_id: _Optional[int] = ..., lost_lease_tokens: _Optional[_Iterable[str]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("jobs", "acks")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[LeasedJob]
    acks: _containers.RepeatedCompositeFieldContainer[LeaseAckResult]
    def __init__(self, jobs: _Optional[_Iterable[_Union[LeasedJob, _Mapping]]] = ..., acks: _Optional[_Iterable[_Union[LeaseAckResult, _Mapping]]] = ...) -> None: ...

class LeasedJob(_message.Message):
    __slots__ = ("job", "lease_token", "lease_expires_at")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    lease_token: str
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., lease_token: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("lease_tokens",)
    LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    lease_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("lost_lease_tokens",)
    LOST_LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    lost_lease_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lost_lease_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class NackRequest(_message.Message):
    __slots__ = ("lease_token", "error", "permanent", "retry_after")
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    lease_token: str
    error: str
    permanent: bool
    retry_after: _duration_pb2.Duration
    def __init__(self, lease_token: _Optional[str] = ..., error: _Optional[str] = ..., permanent: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class NackResponse(_message.Message):
    __slots__ = ("state", "run_at")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    state: _job_pb2.JobState
    run_at: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[_job_pb2.JobState, str]] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("lease_tokens", "extend_by")
    LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXTEND_BY_FIELD_NUMBER: _ClassVar[int]
    lease_tokens: _containers.RepeatedScalarFieldContainer[str]
    extend_by: _duration_pb2.Duration
    def __init__(self, lease_tokens: _Optional[_Iterable[str]] = ..., extend_by: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HeartbeatResult(_message.Message):
    __slots__ = ("lease_token", "lease_expires_at", "lost", "cancel_requested")
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    lease_token: str
    lease_expires_at: _timestamp_pb2.Timestamp
    lost: bool
    cancel_requested: bool
    def __init__(self, lease_token: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lost: _Optional[bool] = ..., cancel_requested: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HeartbeatResult]
    def __init__(self, results: _Optional[_Iterable[_Union[HeartbeatResult, _Mapping]]] = ...) -> None: ...
