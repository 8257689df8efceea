package jobwire

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// Partial updates: without Clear only the fields set are sent, and no mask,
// so the broker keeps every other field; with Clear the mask names exactly
// the fields set and the fields cleared.
func TestQueueConfigUpdateRequest(t *testing.T) {
	req, err := (&QueueConfigUpdate{MaxAttempts: new(3)}).request("q")
	if err != nil {
		t.Fatal(err)
	}
	if req.GetQueue() != "q" || req.MaxAttempts == nil || *req.MaxAttempts != 3 {
		t.Errorf("request = %v, want queue q with max_attempts 3", req)
	}
	if req.MaxRunning != nil || req.Retry != nil || req.LeaseDuration != nil || req.RateLimit != nil || req.UpdateMask != nil {
		t.Errorf("request = %v, want nothing but max_attempts set and no update_mask", req)
	}

	req, err = (&QueueConfigUpdate{
		LeaseDuration: new(45 * time.Second),
		RateLimit:     &RateLimit{Count: 10, Period: time.Second},
		Clear:         []QueueConfigField{QueueMaxRunning, QueueRetry, QueueMaxRunning},
	}).request("q")
	if err != nil {
		t.Fatal(err)
	}
	want := &fieldmaskpb.FieldMask{Paths: []string{"lease_duration", "rate_limit", "max_running", "retry"}}
	if !slices.Equal(req.GetUpdateMask().GetPaths(), want.GetPaths()) {
		t.Errorf("update_mask = %v, want %v", req.GetUpdateMask().GetPaths(), want.GetPaths())
	}
	if req.GetLeaseDuration().AsDuration() != 45*time.Second || req.GetRateLimit().GetCount() != 10 || req.MaxRunning != nil {
		t.Errorf("request = %v", req)
	}

	for _, bad := range []QueueConfigUpdate{
		{MaxRunning: new(1), Clear: []QueueConfigField{QueueMaxRunning}},
		{Clear: []QueueConfigField{"paused"}},
	} {
		if _, err := bad.request("q"); CodeOf(err) != CodeInvalidArgument {
			t.Errorf("request(%+v) error = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}

func TestQueueConfigFromProtoKeepsUnsetFieldsNil(t *testing.T) {
	cfg := queueConfigFromProto(nil)
	if cfg.MaxRunning != nil || cfg.LeaseDuration != nil || cfg.Retry != nil || !cfg.UpdatedAt.IsZero() {
		t.Errorf("empty config = %+v, want every field unset", cfg)
	}
}
