package main

import (
	"strings"
	"testing"
)

func TestSummarizeCountsTestsAndSubtests(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestA/sub","Elapsed":0}`,
		`{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0}`,
		`{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0}`,
		`{"Action":"skip","Package":"p","Test":"TestC","Elapsed":0}`,
		`{"Action":"fail","Package":"p","Elapsed":0}`,
		`# p`,
		`./x.go:1: undefined: y`,
	}, "\n")
	var out strings.Builder
	c := summarize(strings.NewReader(in), &out)
	if c.passed != 2 || c.failed != 1 || c.skipped != 1 || c.failedPackages != 1 || c.ok() {
		t.Errorf("counts = %+v", c)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; last != "go: 2 passed, 1 failed" {
		t.Errorf("last line = %q", last)
	}
	if !strings.Contains(out.String(), "=== RUN   TestA") || !strings.Contains(out.String(), "undefined: y") {
		t.Errorf("output not passed through:\n%s", out.String())
	}
}

func TestSummarizeFailsWhenNothingRan(t *testing.T) {
	if summarize(strings.NewReader(""), &strings.Builder{}).ok() {
		t.Error("an empty run counted as a success")
	}
}
