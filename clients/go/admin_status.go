package jobwire

import (
	"context"
	"time"

	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
)

// QueueStats counts one queue's jobs by state.
type QueueStats struct {
	Queue     string
	Scheduled int64
	Available int64
	Running   int64
	Retryable int64
	Completed int64
	Dead      int64
	Cancelled int64
	// OldestAvailableAge is how long the oldest AVAILABLE job has been due;
	// zero when none is waiting.
	OldestAvailableAge time.Duration
	// Paused is set by PauseQueue: no broker replica leases the queue's jobs.
	Paused bool
}

// GetQueueStats returns the named queues' counts, or every queue's when
// none is named.
func (c *Client) GetQueueStats(ctx context.Context, queues ...string) ([]QueueStats, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.GetQueueStats), &jobwirev1.GetQueueStatsRequest{Queues: queues})
	if err != nil {
		return nil, err
	}
	out := make([]QueueStats, len(res.GetQueues()))
	for i, q := range res.GetQueues() {
		out[i] = QueueStats{
			Queue:              q.GetQueue(),
			Scheduled:          q.GetScheduled(),
			Available:          q.GetAvailable(),
			Running:            q.GetRunning(),
			Retryable:          q.GetRetryable(),
			Completed:          q.GetCompleted(),
			Dead:               q.GetDead(),
			Cancelled:          q.GetCancelled(),
			OldestAvailableAge: q.GetOldestAvailableAge().AsDuration(),
			Paused:             q.GetPaused(),
		}
	}
	return out, nil
}

// WorkerStream is one open Lease stream, as the broker replica serving it
// sees it.
type WorkerStream struct {
	// WorkerID is the id the worker opened the stream with
	// (WorkerConfig.WorkerID).
	WorkerID    string
	Queues      []string
	MaxInFlight int
	// Credit is how many jobs the broker may still send on the stream, and
	// JobsHeld how many it sent whose credit has not come back yet.
	Credit      int
	JobsHeld    int
	ConnectedAt time.Time
	// BrokerID names the broker replica serving the stream, and Peer is the
	// worker's address as that broker sees it.
	BrokerID string
	Peer     string
}

// ListWorkers returns the open Lease streams on every broker replica: all
// of them, or those leasing from queue when it is not empty.
func (c *Client) ListWorkers(ctx context.Context, queue string) ([]WorkerStream, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.ListWorkers), &jobwirev1.ListWorkersRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	out := make([]WorkerStream, len(res.GetWorkers()))
	for i, w := range res.GetWorkers() {
		out[i] = WorkerStream{
			WorkerID:    w.GetWorkerId(),
			Queues:      w.GetQueues(),
			MaxInFlight: int(w.GetMaxInFlight()),
			Credit:      int(w.GetCredit()),
			JobsHeld:    int(w.GetJobsHeld()),
			BrokerID:    w.GetBrokerId(),
			Peer:        w.GetPeer(),
		}
		if t := w.GetConnectedAt(); t != nil {
			out[i].ConnectedAt = t.AsTime()
		}
	}
	return out, nil
}

// QueueSample is one queue at one moment, with the counts of the interval
// that ended then.
type QueueSample struct {
	At    time.Time
	Queue string
	// Available is the jobs AVAILABLE at At; Waiting those SCHEDULED or
	// RETRYABLE.
	Available int64
	Waiting   int64
	Running   int64
	Dead      int64
	// Enqueued, Completed (acked) and Failed (failed attempts) count the
	// interval that ended at At.
	Enqueued  int64
	Completed int64
	Failed    int64
}

// QueueHistory is a broker replica's recent samples of its queues, the
// data behind the dashboard's charts.
type QueueHistory struct {
	// Samples are oldest first.
	Samples []QueueSample
	// Interval is the time between two samples (10s on the broker today).
	Interval time.Duration
}

// GetQueueHistory returns the samples of queue, or of every queue when it
// is empty. Each replica keeps what it sampled since it started, so a
// broker that just started has few or none.
func (c *Client) GetQueueHistory(ctx context.Context, queue string) (*QueueHistory, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.GetQueueHistory), &jobwirev1.GetQueueHistoryRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	out := &QueueHistory{Samples: make([]QueueSample, len(res.GetSamples())), Interval: res.GetInterval().AsDuration()}
	for i, s := range res.GetSamples() {
		out.Samples[i] = QueueSample{
			At:        s.GetAt().AsTime(),
			Queue:     s.GetQueue(),
			Available: s.GetAvailable(),
			Waiting:   s.GetWaiting(),
			Running:   s.GetRunning(),
			Dead:      s.GetDead(),
			Enqueued:  s.GetEnqueued(),
			Completed: s.GetCompleted(),
			Failed:    s.GetFailed(),
		}
	}
	return out, nil
}
