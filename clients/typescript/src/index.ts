/**
 * @jobwire/client: the TypeScript client and worker runtime for jobwire.
 *
 * Producers and operators use JobwireClient; worker processes use Worker.
 * Handlers signal permanent failure by throwing PermanentError; any other
 * error is retried by the broker with backoff. Every failed call rejects
 * with a JobwireError whose message starts with the status code
 * ("permission_denied: ...") and whose `code` is that code.
 */
export {
  JobwireClient,
  DEFAULT_QUEUE,
  buildJobSpec,
  decodeJobPayload,
  toJobInfo,
  type ClientOptions,
  type EnqueueOptions,
  type EnqueueResult,
  type JobToEnqueue,
  type JobInfo,
  type JobErrorInfo,
  type JobRetryPolicy,
  type ReplayOptions,
  type ListJobsOptions,
} from "./client.js";
export type {
  QueueConfig,
  QueueConfigUpdate,
  QueueSetting,
  QueueStats,
  QueueHistory,
  QueueSample,
  RateLimit,
  WhoAmI,
  WorkerStream,
} from "./admin.js";
/** @deprecated The old name of QueueStats. */
export type { QueueStats as QueueStatsInfo } from "./admin.js";
export {
  Worker,
  DEFAULT_CONCURRENCY,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  type WorkerOptions,
  type WorkerJob,
  type JobContext,
  type Handler,
  type WorkerEvent,
} from "./worker.js";
export {
  Code,
  JobwireError,
  NotFoundError,
  InvalidArgumentError,
  FailedPreconditionError,
  UnavailableError,
  DeadlineExceededError,
  UnauthenticatedError,
  PermissionDeniedError,
  PermanentError,
  JobCancelledError,
  LeaseLostError,
  WorkerShutdownError,
  codeName,
  codeString,
  isTransient,
} from "./errors.js";
export type { JobStateName } from "./convert.js";
export type { CallOptions, RetryOptions } from "./retry.js";
export type { Logger } from "./logger.js";
export { consoleLogger, silentLogger } from "./logger.js";
export type { Outcome } from "./tracing.js";
export { ATTR as TRACE_ATTRIBUTES, TRACER_NAME, injectTraceContext } from "./tracing.js";
export { normalizeAddress, DEFAULT_ADDRESS, type TlsOptions } from "./transport.js";
