// Package jobwire is the Go client and worker runtime for jobwire, a gRPC job
// broker backed by Postgres.
//
// A [Client] enqueues jobs and looks them up:
//
//	client, err := jobwire.NewClient("http://127.0.0.1:7070", nil)
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
//   - nil: the job is acked and becomes COMPLETED.
//   - an error wrapped with [Permanent]: the job goes straight to DEAD.
//   - any other error, or a panic: the attempt fails and the broker retries
//     it after the job's backoff, until max_attempts is spent.
//     [RetryAfter] sets the wait before that retry.
//
// A job's context is cancelled when the job is cancelled through CancelJob
// (cause [ErrJobCancelled]), when its lease is lost ([ErrLeaseLost]), or when
// the worker's shutdown timeout runs out ([ErrWorkerShutdown]); see
// [context.Cause].
//
// # Tracing
//
// Enqueue starts a PRODUCER span and injects its context into the job's
// headers with the global OpenTelemetry propagator; the worker extracts it
// and runs each attempt in a CONSUMER span parented to the producer span.
package jobwire
