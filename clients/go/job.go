package jobwire

import (
	"encoding/json"
	"fmt"
	"time"

	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ContentTypeJSON is the content type of payloads made by the JSON helpers,
// and the broker's default.
const ContentTypeJSON = "application/json"

// Job is one leased attempt of a job, as a handler sees it.
type Job struct {
	ID          string
	Queue       string
	Type        string
	Payload     []byte
	ContentType string
	// Attempt counts the attempts that have started, this one included: 1 on
	// the first delivery.
	Attempt     int
	MaxAttempts int
	Headers     map[string]string
	// ConcurrencyKey and OrderingKey are the keys the job was enqueued with
	// (see WithConcurrencyKey and WithOrderingKey); empty when none.
	ConcurrencyKey string
	OrderingKey    string
	// Proto is the job as the broker sent it, for fields not copied above.
	Proto *jobwirev1.Job
}

func newJob(p *jobwirev1.Job) *Job {
	return &Job{
		ID:          p.GetId(),
		Queue:       p.GetQueue(),
		Type:        p.GetType(),
		Payload:     p.GetPayload(),
		ContentType: p.GetContentType(),
		Attempt:     int(p.GetAttempt()),
		MaxAttempts: int(p.GetMaxAttempts()),
		Headers:     p.GetHeaders(),

		ConcurrencyKey: p.GetConcurrencyKey(),
		OrderingKey:    p.GetOrderingKey(),
		Proto:          p,
	}
}

// DecodeJSON unmarshals the payload into v.
func (j *Job) DecodeJSON(v any) error {
	if err := json.Unmarshal(j.Payload, v); err != nil {
		return fmt.Errorf("jobwire: decode JSON payload of job %s (type %q): %w", j.ID, j.Type, err)
	}
	return nil
}

// JobOption sets an optional field of a JobSpec built by NewJSONJob or
// Client.EnqueueJSON.
type JobOption func(*jobwirev1.JobSpec)

// WithDelay makes the job due after d.
func WithDelay(d time.Duration) JobOption {
	return func(s *jobwirev1.JobSpec) { s.Schedule = &jobwirev1.JobSpec_Delay{Delay: durationpb.New(d)} }
}

// WithRunAt makes the job due at t.
func WithRunAt(t time.Time) JobOption {
	return func(s *jobwirev1.JobSpec) { s.Schedule = &jobwirev1.JobSpec_RunAt{RunAt: timestamppb.New(t)} }
}

// WithPriority sets the priority; higher runs sooner.
func WithPriority(p int32) JobOption {
	return func(s *jobwirev1.JobSpec) { s.Priority = p }
}

// WithMaxAttempts caps the attempts before the job becomes DEAD.
func WithMaxAttempts(n int32) JobOption {
	return func(s *jobwirev1.JobSpec) { s.MaxAttempts = &n }
}

// WithLeaseDuration sets how long each lease lasts unless heartbeated.
func WithLeaseDuration(d time.Duration) JobOption {
	return func(s *jobwirev1.JobSpec) { s.LeaseDuration = durationpb.New(d) }
}

// WithRetry overrides the queue's retry policy for this job. Zero arguments
// are left unset, so they fall back to the queue's policy.
func WithRetry(initial, maxBackoff time.Duration, multiplier float64) JobOption {
	return func(s *jobwirev1.JobSpec) {
		p := &jobwirev1.RetryPolicy{Multiplier: multiplier}
		if initial > 0 {
			p.InitialBackoff = durationpb.New(initial)
		}
		if maxBackoff > 0 {
			p.MaxBackoff = durationpb.New(maxBackoff)
		}
		s.Retry = p
	}
}

// WithIdempotencyKey makes a second enqueue with the same key on the same
// queue, within ttl (0: the broker default, 24h), return the first job.
func WithIdempotencyKey(key string, ttl time.Duration) JobOption {
	return func(s *jobwirev1.JobSpec) {
		s.IdempotencyKey = key
		if ttl > 0 {
			s.IdempotencyTtl = durationpb.New(ttl)
		}
	}
}

// WithHeader sets one header on the job.
func WithHeader(key, value string) JobOption {
	return func(s *jobwirev1.JobSpec) {
		if s.Headers == nil {
			s.Headers = map[string]string{}
		}
		s.Headers[key] = value
	}
}

// WithConcurrencyKey puts the job under a concurrency key, for example
// "tenant:42". Jobs of one queue sharing a key count together against the
// queue's MaxRunningPerKey and RateLimitPerKey, and the broker takes keys in
// turn, so one key's backlog does not starve another's. 1 to 255 bytes.
func WithConcurrencyKey(key string) JobOption {
	return func(s *jobwirev1.JobSpec) { s.ConcurrencyKey = key }
}

// WithOrderingKey puts the job under an ordering key, for example
// "account:42". Jobs of one queue sharing a key run one at a time, in
// enqueue order (run_at, then id). A job waiting for a retry keeps its place
// at the head of its key; one that completes, dies or is cancelled lets the
// next run. So a job that goes DEAD releases the key: the jobs behind it
// run without it, and replaying it later runs it after them. 1 to 255 bytes.
func WithOrderingKey(key string) JobOption {
	return func(s *jobwirev1.JobSpec) { s.OrderingKey = key }
}

// NewJSONJob returns a JobSpec whose payload is v encoded as JSON, with
// content type application/json.
func NewJSONJob(queue, jobType string, v any, opts ...JobOption) (*jobwirev1.JobSpec, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("jobwire: encode JSON payload for job type %q: %w", jobType, err)
	}
	spec := &jobwirev1.JobSpec{Queue: queue, Type: jobType, Payload: payload, ContentType: ContentTypeJSON}
	for _, opt := range opts {
		opt(spec)
	}
	return spec, nil
}
