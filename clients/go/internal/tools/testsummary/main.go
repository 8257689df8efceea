// Command testsummary reads `go test -json` events on stdin, prints the
// tests' output as `go test -v` would, and ends with the line
//
//	go: N passed, N failed
//
// counting test functions and subtests. It exits 1 when a test or a package
// failed (a build error fails its package without failing any test), or when
// no test ran at all.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// counts is what a test run came to.
type counts struct {
	passed, failed, skipped, failedPackages int
}

func (c counts) ok() bool { return c.failed == 0 && c.failedPackages == 0 && c.passed > 0 }

// summarize copies the run's output from r to w and counts its results.
func summarize(r io.Reader, w io.Writer) counts {
	var c counts
	in := bufio.NewScanner(r)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(w)
	defer out.Flush()
	for in.Scan() {
		line := in.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
			// Not an event: build or vet output on the same stream.
			out.Write(line)
			out.WriteByte('\n')
			continue
		}
		switch ev.Action {
		case "output", "build-output":
			out.WriteString(ev.Output)
		case "pass":
			if ev.Test != "" {
				c.passed++
			}
		case "fail", "build-fail":
			if ev.Test != "" {
				c.failed++
			} else {
				c.failedPackages++
			}
		case "skip":
			if ev.Test != "" {
				c.skipped++
			}
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(out, "testsummary: reading go test output: %v\n", err)
		c.failedPackages++
	}
	if c.skipped > 0 {
		fmt.Fprintf(out, "(%d skipped)\n", c.skipped)
	}
	fmt.Fprintf(out, "go: %d passed, %d failed\n", c.passed, c.failed)
	return c
}

func main() {
	if !summarize(os.Stdin, os.Stdout).ok() {
		os.Exit(1)
	}
}
