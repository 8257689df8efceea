package backoff

import (
	"testing"
	"time"
)

func TestDelayStaysWithinEqualJitterBounds(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}
	want := []time.Duration{
		100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second, 2 * time.Second,
	}
	for n, ceiling := range want {
		for range 200 {
			d := p.Delay(n)
			if d < ceiling/2 || d > ceiling {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", n, d, ceiling/2, ceiling)
			}
		}
	}
}

func TestDelayDoesNotOverflowForLargeAttempts(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Minute}
	if d := p.Delay(1 << 20); d < 30*time.Second || d > time.Minute {
		t.Fatalf("Delay(huge) = %v, want within [30s, 1m]", d)
	}
}

func TestDelayIsJittered(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[p.Delay(0)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("50 delays took %d distinct values; want jitter", len(seen))
	}
}

func TestZeroPolicyNeverWaits(t *testing.T) {
	if d := (Policy{}).Delay(3); d != 0 {
		t.Fatalf("zero policy Delay = %v, want 0", d)
	}
}

func TestSleepStopsWhenDone(t *testing.T) {
	done := make(chan struct{})
	close(done)
	if (Policy{Initial: time.Hour, Max: time.Hour}).Sleep(done, 0) {
		t.Fatal("Sleep reported a full wait although done was closed")
	}
}
