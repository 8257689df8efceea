package jobwire

import (
	"context"

	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Version is this client's version, reported as the instrumentation version
// of its spans.
const Version = "0.1.0"

const instrumentationName = "github.com/jobwire/jobwire/clients/go"

// Span attribute keys. The messaging.* keys follow the OpenTelemetry
// messaging semantic conventions; the jobwire.* keys are ours.
const (
	attrMessagingSystem        = attribute.Key("messaging.system")
	attrMessagingDestination   = attribute.Key("messaging.destination.name")
	attrMessagingOperationName = attribute.Key("messaging.operation.name")
	attrMessagingOperationType = attribute.Key("messaging.operation.type")
	attrMessagingMessageID     = attribute.Key("messaging.message.id")
	attrMessagingBatchCount    = attribute.Key("messaging.batch.message_count")
	attrJobAttempt             = attribute.Key("jobwire.job.attempt")
	attrJobType                = attribute.Key("jobwire.job.type")
	attrJobOutcome             = attribute.Key("jobwire.job.outcome")
	attrJobDuplicate           = attribute.Key("jobwire.job.duplicate")
	attrWorkerID               = attribute.Key("jobwire.worker.id")
)

// messagingSystem is the value of messaging.system on every span.
const messagingSystem = "jobwire"

// Outcomes recorded as jobwire.job.outcome on consumer spans: the shared
// vocabulary of test/conformance/scenarios.md, the same in every client.
const (
	// The handler returned and the broker accepted the ack.
	outcomeCompleted = "completed"
	// The handler failed; the broker accepted the nack and will try again.
	outcomeRetry = "retry"
	// The handler failed permanently or on its last attempt; the job is DEAD.
	outcomeDead = "dead"
	// CancelJob was called and the handler failed; the job is CANCELLED.
	outcomeCancelled = "cancelled"
	// The lease was gone before the outcome could be recorded (expired and
	// reclaimed, or refused as stale); the broker runs the job again.
	outcomeLeaseLost = "lease_lost"
	// The ack or nack could not reach the broker; the lease will expire and
	// the job run again.
	outcomeReportFailed = "report_failed"
)

func (c *Client) tracer() trace.Tracer {
	tp := c.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(instrumentationName, trace.WithInstrumentationVersion(Version))
}

func (c *Client) propagator() propagation.TextMapPropagator {
	if c.cfg.Propagator != nil {
		return c.cfg.Propagator
	}
	return otel.GetTextMapPropagator()
}

// startProducerSpan starts the PRODUCER span of an Enqueue call and injects
// its context into every spec's headers, so each job's consumer spans become
// its children. A batch is one span (one send); its jobs share that parent.
func (c *Client) startProducerSpan(ctx context.Context, specs []*jobwirev1.JobSpec) (context.Context, trace.Span) {
	queue := specs[0].GetQueue()
	for _, s := range specs[1:] {
		if s.GetQueue() != queue {
			queue = ""
			break
		}
	}
	name := "send"
	attrs := []attribute.KeyValue{
		attrMessagingSystem.String(messagingSystem),
		attrMessagingOperationName.String("send"),
		attrMessagingOperationType.String("send"),
	}
	if queue != "" {
		name = "send " + queue
		attrs = append(attrs, attrMessagingDestination.String(queue))
	}
	if len(specs) > 1 {
		attrs = append(attrs, attrMessagingBatchCount.Int(len(specs)))
	} else {
		attrs = append(attrs, attrJobType.String(specs[0].GetType()))
	}
	ctx, span := c.tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	prop := c.propagator()
	for _, s := range specs {
		if s.Headers == nil {
			s.Headers = map[string]string{}
		}
		prop.Inject(ctx, propagation.MapCarrier(s.Headers))
	}
	return ctx, span
}

func recordEnqueued(span trace.Span, results []EnqueueResult) {
	if len(results) == 1 {
		span.SetAttributes(attrMessagingMessageID.String(results[0].JobID), attrJobDuplicate.Bool(results[0].Duplicate))
	}
}

func endSpanWithError(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// endConsumerSpan records how the attempt ended and ends its span. A
// completed attempt has status OK; a failed handler's error and status were
// recorded when it returned. span is nil only for an activeJob a test built
// by hand.
func endConsumerSpan(span trace.Span, outcome string) {
	if span == nil {
		return
	}
	span.SetAttributes(attrJobOutcome.String(outcome))
	if outcome == outcomeCompleted {
		span.SetStatus(codes.Ok, "")
	}
	span.End()
}

// startConsumerSpan starts the CONSUMER span of one attempt, parented to the
// producer span whose context travels in the job's headers. A job without
// trace headers gets a new trace: the span is never parented to whatever
// span the worker's own context happens to carry.
func (c *Client) startConsumerSpan(ctx context.Context, job *Job, workerID string) (context.Context, trace.Span) {
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	ctx = c.propagator().Extract(ctx, propagation.MapCarrier(job.Headers))
	return c.tracer().Start(ctx, "process "+job.Queue,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attrMessagingSystem.String(messagingSystem),
			attrMessagingOperationName.String("process"),
			attrMessagingOperationType.String("process"),
			attrMessagingDestination.String(job.Queue),
			attrMessagingMessageID.String(job.ID),
			attrJobAttempt.Int(job.Attempt),
			attrJobType.String(job.Type),
			attrWorkerID.String(workerID),
		),
	)
}
