package jobwire

import (
	"context"
	"slices"
	"time"

	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// QueueConfig is a queue's settings as the broker holds them. A nil field
// is unset, and the broker's default applies.
type QueueConfig struct {
	Queue string
	// Retry is the queue's retry policy; a job's own policy wins field by
	// field.
	Retry       *RetryPolicy
	MaxAttempts *int
	// LeaseDuration is the lease of jobs that ask for none.
	LeaseDuration *time.Duration
	// CompletedRetention is how long completed jobs stay as history; 0
	// deletes a job when it is acked.
	CompletedRetention *time.Duration
	// MaxRunning caps the queue's RUNNING jobs across every worker and
	// broker replica.
	MaxRunning *int
	// MaxRunningPerKey caps the RUNNING jobs of each concurrency key.
	MaxRunningPerKey *int
	// RateLimit caps how many of the queue's jobs start per period, and
	// RateLimitPerKey how many of each concurrency key's.
	RateLimit       *RateLimit
	RateLimitPerKey *RateLimit
	// Paused is set by PauseQueue and cleared by ResumeQueue.
	Paused bool
	// UpdatedAt is the last change; zero when the queue was never configured.
	UpdatedAt time.Time
}

// RetryPolicy shapes the wait before the next attempt after a failure:
// min(MaxBackoff, InitialBackoff * Multiplier^(attempt-1)), less up to
// Jitter of it at random. Zero fields (nil Jitter) are unset.
type RetryPolicy struct {
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	Jitter         *float64
}

// RateLimit lets at most Count jobs start in any window of Period, across
// every broker replica. A job held back waits; it is not failed and no
// attempt is charged.
type RateLimit struct {
	Count  int
	Period time.Duration
}

// QueueConfigField names a QueueConfig setting, for QueueConfigUpdate.Clear.
type QueueConfigField string

// The settings a QueueConfigUpdate can clear, named as in the proto.
const (
	QueueRetry              QueueConfigField = "retry"
	QueueMaxAttempts        QueueConfigField = "max_attempts"
	QueueLeaseDuration      QueueConfigField = "lease_duration"
	QueueCompletedRetention QueueConfigField = "completed_retention"
	QueueMaxRunning         QueueConfigField = "max_running"
	QueueMaxRunningPerKey   QueueConfigField = "max_running_per_key"
	QueueRateLimit          QueueConfigField = "rate_limit"
	QueueRateLimitPerKey    QueueConfigField = "rate_limit_per_key"
)

// QueueConfigUpdate is a change to a queue's settings. A non-nil field is
// set; a nil field keeps its value, so setting one field never clears
// another. A field named in Clear goes back to the broker's default.
//
//	client.SetQueueConfig(ctx, "emails", jobwire.QueueConfigUpdate{MaxRunning: new(5)})
//	client.SetQueueConfig(ctx, "emails", jobwire.QueueConfigUpdate{Clear: []jobwire.QueueConfigField{jobwire.QueueMaxRunning}})
type QueueConfigUpdate struct {
	Retry              *RetryPolicy
	MaxAttempts        *int
	LeaseDuration      *time.Duration
	CompletedRetention *time.Duration
	MaxRunning         *int
	MaxRunningPerKey   *int
	RateLimit          *RateLimit
	RateLimitPerKey    *RateLimit
	Clear              []QueueConfigField
}

var queueConfigFields = []QueueConfigField{
	QueueRetry, QueueMaxAttempts, QueueLeaseDuration, QueueCompletedRetention,
	QueueMaxRunning, QueueMaxRunningPerKey, QueueRateLimit, QueueRateLimitPerKey,
}

// request builds the SetQueueConfig request. Without Clear it sends only
// the fields set, and the broker keeps the others. With Clear it also sends
// an update_mask naming the fields set and the fields cleared, because with
// a mask the broker changes exactly the named fields.
func (u *QueueConfigUpdate) request(queue string) (*jobwirev1.SetQueueConfigRequest, error) {
	req := &jobwirev1.SetQueueConfigRequest{Queue: queue}
	var set []QueueConfigField
	if u.Retry != nil {
		req.Retry, set = u.Retry.proto(), append(set, QueueRetry)
	}
	if u.MaxAttempts != nil {
		req.MaxAttempts, set = int32Ptr(*u.MaxAttempts), append(set, QueueMaxAttempts)
	}
	if u.LeaseDuration != nil {
		req.LeaseDuration, set = durationpb.New(*u.LeaseDuration), append(set, QueueLeaseDuration)
	}
	if u.CompletedRetention != nil {
		req.CompletedRetention, set = durationpb.New(*u.CompletedRetention), append(set, QueueCompletedRetention)
	}
	if u.MaxRunning != nil {
		req.MaxRunning, set = int32Ptr(*u.MaxRunning), append(set, QueueMaxRunning)
	}
	if u.MaxRunningPerKey != nil {
		req.MaxRunningPerKey, set = int32Ptr(*u.MaxRunningPerKey), append(set, QueueMaxRunningPerKey)
	}
	if u.RateLimit != nil {
		req.RateLimit, set = u.RateLimit.proto(), append(set, QueueRateLimit)
	}
	if u.RateLimitPerKey != nil {
		req.RateLimitPerKey, set = u.RateLimitPerKey.proto(), append(set, QueueRateLimitPerKey)
	}
	if len(u.Clear) == 0 {
		return req, nil
	}
	paths := make([]string, 0, len(set)+len(u.Clear))
	for _, f := range set {
		paths = append(paths, string(f))
	}
	for _, f := range u.Clear {
		switch {
		case !slices.Contains(queueConfigFields, f):
			return nil, invalidArgument("QueueConfigUpdate.Clear names %q, which is not a queue setting", f)
		case slices.Contains(set, f):
			return nil, invalidArgument("QueueConfigUpdate both sets and clears %q", f)
		case !slices.Contains(paths, string(f)):
			paths = append(paths, string(f))
		}
	}
	req.UpdateMask = &fieldmaskpb.FieldMask{Paths: paths}
	return req, nil
}

// SetQueueConfig changes a queue's settings as u says and returns the
// whole config after the change.
func (c *Client) SetQueueConfig(ctx context.Context, queue string, u QueueConfigUpdate) (*QueueConfig, error) {
	req, err := u.request(queue)
	if err != nil {
		return nil, err
	}
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.SetQueueConfig), req)
	if err != nil {
		return nil, err
	}
	return queueConfigFromProto(res.GetConfig()), nil
}

// GetQueueConfig returns a queue's whole config. A queue nobody configured
// has every field nil.
func (c *Client) GetQueueConfig(ctx context.Context, queue string) (*QueueConfig, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.GetQueueConfig), &jobwirev1.GetQueueConfigRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	return queueConfigFromProto(res.GetConfig()), nil
}

// PauseQueue stops every broker replica from leasing the queue's jobs,
// within a second. Enqueues still succeed, and jobs already running finish
// (their acks, nacks and heartbeats work). Idempotent.
func (c *Client) PauseQueue(ctx context.Context, queue string) (*QueueConfig, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.PauseQueue), &jobwirev1.PauseQueueRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	return queueConfigFromProto(res.GetConfig()), nil
}

// ResumeQueue lets a paused queue's jobs be leased again. Idempotent.
func (c *Client) ResumeQueue(ctx context.Context, queue string) (*QueueConfig, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.ResumeQueue), &jobwirev1.ResumeQueueRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	return queueConfigFromProto(res.GetConfig()), nil
}

func int32Ptr(n int) *int32 {
	v := int32(n)
	return &v
}

func (p *RetryPolicy) proto() *jobwirev1.RetryPolicy {
	out := &jobwirev1.RetryPolicy{Multiplier: p.Multiplier, Jitter: p.Jitter}
	if p.InitialBackoff > 0 {
		out.InitialBackoff = durationpb.New(p.InitialBackoff)
	}
	if p.MaxBackoff > 0 {
		out.MaxBackoff = durationpb.New(p.MaxBackoff)
	}
	return out
}

func (r *RateLimit) proto() *jobwirev1.RateLimit {
	return &jobwirev1.RateLimit{Count: int32(r.Count), Period: durationpb.New(r.Period)}
}

func queueConfigFromProto(p *jobwirev1.QueueConfig) *QueueConfig {
	if p == nil {
		return &QueueConfig{}
	}
	out := &QueueConfig{
		Queue:              p.GetQueue(),
		LeaseDuration:      durationOrNil(p.GetLeaseDuration()),
		CompletedRetention: durationOrNil(p.GetCompletedRetention()),
		Paused:             p.GetPaused(),
	}
	if r := p.GetRetry(); r != nil {
		out.Retry = &RetryPolicy{
			InitialBackoff: r.GetInitialBackoff().AsDuration(),
			MaxBackoff:     r.GetMaxBackoff().AsDuration(),
			Multiplier:     r.GetMultiplier(),
			Jitter:         r.Jitter,
		}
	}
	if p.MaxAttempts != nil {
		out.MaxAttempts = new(int(*p.MaxAttempts))
	}
	if p.MaxRunning != nil {
		out.MaxRunning = new(int(*p.MaxRunning))
	}
	if p.MaxRunningPerKey != nil {
		out.MaxRunningPerKey = new(int(*p.MaxRunningPerKey))
	}
	if r := p.GetRateLimit(); r != nil {
		out.RateLimit = &RateLimit{Count: int(r.GetCount()), Period: r.GetPeriod().AsDuration()}
	}
	if r := p.GetRateLimitPerKey(); r != nil {
		out.RateLimitPerKey = &RateLimit{Count: int(r.GetCount()), Period: r.GetPeriod().AsDuration()}
	}
	if t := p.GetUpdatedAt(); t != nil {
		out.UpdatedAt = t.AsTime()
	}
	return out
}

func durationOrNil(d *durationpb.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	return new(d.AsDuration())
}
