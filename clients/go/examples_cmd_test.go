package jobwire_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The examples/greet command, run as a user would, against the broker.
func TestExampleCommand_Greet(t *testing.T) {
	t.Parallel()
	url := brokerURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./examples/greet", "-name", "grace")
	cmd.Env = append(os.Environ(), "JOBWIRE_URL="+url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./examples/greet: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "enqueued job ") || !strings.Contains(string(out), "hello, grace! (job ") {
		t.Errorf("examples/greet printed:\n%s\nwant the enqueue and the greeting", out)
	}
}
