// Package jobwire is the Go client and worker runtime for jobwire, a gRPC job
// broker backed by Postgres.
//
//	import jobwire "github.com/jobwire/jobwire/clients/go"
//
// A [Client] enqueues jobs and looks them up. The broker listens on
// http://127.0.0.1:50051 by default:
//
//	client, err := jobwire.NewClient("http://127.0.0.1:50051", nil)
//	spec, err := jobwire.NewJSONJob("emails", "send_welcome", Welcome{UserID: 42})
//	res, err := client.Enqueue(ctx, spec)
//
// A [Worker] leases jobs from one or more queues and runs a handler per job
// type, concurrently, with automatic heartbeats, batched acks, retries and
// graceful shutdown:
//
//	w, err := jobwire.NewWorker(client, &jobwire.WorkerConfig{Queues: []string{"emails"}, Concurrency: 8})
//	jobwire.HandleJSON(w, "send_welcome", func(ctx context.Context, job *jobwire.Job, args Welcome) error {
//		return send(ctx, args.UserID)
//	})
//	err = w.Run(ctx) // returns after ctx is cancelled and in-flight jobs have finished
//
// Delivery is at least once: a job whose lease is lost is delivered again,
// so handlers must be idempotent.
//
// # Outcomes
//
// A handler's return value decides what happens to the attempt:
//
//   - nil: the job is acked and becomes COMPLETED, even if CancelJob was
//     called while it ran (the handler returned, so the work is done).
//   - an error wrapped with [Permanent]: the job goes straight to DEAD.
//   - any other error, or a panic: the attempt fails and the broker retries
//     it after the job's backoff, until max_attempts is spent.
//     [RetryAfter] sets the wait before that retry. After CancelJob, a
//     failed attempt ends the job CANCELLED instead.
//
// A job's context is cancelled when the job is cancelled through CancelJob
// (cause [ErrJobCancelled]), when its lease is lost ([ErrLeaseLost]), or when
// the worker's shutdown timeout runs out ([ErrWorkerShutdown]); see
// [context.Cause].
//
// # Errors
//
// A failed call returns an error whose text starts with its gRPC code in
// lower case, then the broker's message, as the TypeScript client writes it:
// "permission_denied: ci lacks scope admin (needed by AdminService/Replay)".
// [CodeOf] returns the code through any wrapping, errors.Is matches the
// sentinel of the code ([ErrPermissionDenied], [ErrUnauthenticated],
// [ErrNotFound], ...), and errors.As finds the [*Error] with the code and
// the message alone. Calls the broker could not serve right now
// (UNAVAILABLE: a refused connection, a failed TLS handshake, a draining
// broker, a connection that broke mid-call) are retried; every other code
// is the broker's answer and is returned at once.
//
// # Several brokers
//
// Broker replicas share one database, so any of them can serve any call.
// Give [NewClient] several base URLs separated by commas, or a host name
// with one DNS record per replica. Calls go to one broker until it fails,
// then move to the next at once: a unary call answered UNAVAILABLE is
// retried on the next broker, and a Worker whose Lease stream breaks
// reopens it on the next broker, and sends its owed acks and heartbeats
// there, instead of waiting for the dead broker to come back.
//
// # Tracing
//
// Enqueue starts a PRODUCER span and injects its context into the job's
// headers with the global OpenTelemetry propagator; the worker extracts it
// and runs each attempt in a CONSUMER span parented to the producer span.
// The consumer span's jobwire.job.outcome attribute says how the attempt
// ended: completed, retry, dead, cancelled, lease_lost or report_failed.
package jobwire
