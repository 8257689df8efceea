// Package testbroker starts a real jobwire broker (node server/dist/main.js,
// with embedded Postgres) for tests, and stops it with SIGTERM. Several
// brokers can share one database: start the first with its embedded
// Postgres, and the others with Options.DatabaseURL set to its DatabaseURL.
package testbroker

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits of the harness.
const (
	// StartTimeout bounds the wait for the "listening" line: the first start
	// runs initdb for the embedded Postgres, which takes a few seconds.
	StartTimeout = 2 * time.Minute
	// StopTimeout bounds the wait for the broker to drain and exit after
	// SIGTERM, before it (and its embedded Postgres) are killed.
	StopTimeout = 30 * time.Second
)

var listeningRE = regexp.MustCompile(`jobwire listening on (https?://[^\s]+)`)

// Options configure a broker.
type Options struct {
	// RepoRoot holds server/dist/main.js. Empty means $JOBWIRE_TEST_BROKER_ROOT
	// (another checkout's build of the broker), else FindRepoRoot().
	RepoRoot string
	// DataDir is the embedded Postgres directory. Empty means a new
	// temporary directory, removed by Stop.
	DataDir string
	// DatabaseURL, when set, is the Postgres the broker uses (DATABASE_URL)
	// instead of an embedded one; DataDir is then unused.
	DatabaseURL string
	// Host to listen on (JOBWIRE_HOST); empty means the broker's default,
	// 127.0.0.1. Any 127.x.y.z address works on Linux loopback, so two
	// brokers can share a port on different addresses.
	Host string
	// Port to listen on; 0 picks a free one.
	Port int
	// Env is added to the broker's environment (KEY=VALUE).
	Env []string
	// LogPath receives the broker's stdout and stderr. Empty means a file
	// in a temporary directory.
	LogPath string
}

// Broker is a running broker process.
type Broker struct {
	// URL is the broker's base URL, e.g. http://127.0.0.1:41234.
	URL     string
	Port    int
	DataDir string
	LogPath string
	// DatabaseURL is the Postgres the broker uses: Options.DatabaseURL, or
	// its embedded one, which other brokers can then share.
	DatabaseURL string

	cmd        *exec.Cmd
	ownDataDir bool
	exited     chan struct{}
	exitErr    error
	stopOnce   sync.Once
	stopErr    error
	killed     bool
}

// FindRepoRoot walks up from the working directory to the directory that
// holds server/package.json.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "server", "package.json")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbroker: no server/package.json above the working directory")
		}
		dir = parent
	}
}

// Start launches a broker and waits until it listens.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	root := cmp.Or(opts.RepoRoot, os.Getenv("JOBWIRE_TEST_BROKER_ROOT"))
	if root == "" {
		var err error
		if root, err = FindRepoRoot(); err != nil {
			return nil, err
		}
	}
	mainJS := filepath.Join(root, "server", "dist", "main.js")
	if _, err := os.Stat(mainJS); err != nil {
		return nil, fmt.Errorf("testbroker: %s is missing; build the broker first (npx tsc -b server): %w", mainJS, err)
	}
	b := &Broker{DataDir: opts.DataDir, LogPath: opts.LogPath, DatabaseURL: opts.DatabaseURL, exited: make(chan struct{})}
	env := []string{
		"JOBWIRE_PORT=" + strconv.Itoa(opts.Port),
		"JOBWIRE_REAPER_INTERVAL_MS=200",
	}
	if opts.Host != "" {
		env = append(env, "JOBWIRE_HOST="+opts.Host)
	}
	if opts.DatabaseURL != "" {
		env = append(env, "DATABASE_URL="+opts.DatabaseURL)
	} else {
		// The embedded Postgres gets a port picked here, so that its URL is
		// known and other brokers can share the database.
		pgPort, err := freePort()
		if err != nil {
			return nil, err
		}
		b.DatabaseURL = fmt.Sprintf("postgres://jobwire@127.0.0.1:%d/jobwire", pgPort)
		env = append(env, "JOBWIRE_EMBEDDED_PG_PORT="+strconv.Itoa(pgPort))
	}
	if b.DataDir == "" && opts.DatabaseURL == "" {
		dir, err := TempDir()
		if err != nil {
			return nil, err
		}
		b.DataDir, b.ownDataDir = filepath.Join(dir, "data"), true
		if b.LogPath == "" {
			b.LogPath = filepath.Join(dir, "broker.log")
		}
	}
	if b.DataDir != "" {
		env = append(env, "JOBWIRE_DATA_DIR="+b.DataDir)
	}
	if b.LogPath == "" {
		f, err := os.CreateTemp("", "jobwire-broker-*.log")
		if err != nil {
			return nil, err
		}
		b.LogPath = f.Name()
		f.Close()
	}
	logFile, err := os.OpenFile(b.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command("node", mainJS)
	cmd.Dir = root
	// A DATABASE_URL of the caller's environment must not turn the broker
	// into a client of some shared database.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "DATABASE_URL=") })
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, opts.Env...)
	cmd.Stderr = logFile
	// Its own process group, so that a broker that will not exit can be
	// killed together with the embedded Postgres it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("testbroker: start node: %w", err)
	}
	b.cmd = cmd

	// Copy stdout to the log, watching for the listening line. The pipe is
	// drained until the broker exits, so it never blocks on a full pipe.
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if !sent {
				if m := listeningRE.FindStringSubmatch(line); m != nil {
					found <- m[1]
					sent = true
				}
			}
		}
		_, _ = io.Copy(logFile, stdout)
		b.exitErr = cmd.Wait()
		logFile.Close()
		close(b.exited)
	}()

	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	select {
	case url := <-found:
		b.URL = url
		if _, portStr, ok := cutLast(url, ":"); ok {
			b.Port, _ = strconv.Atoi(portStr)
		}
		return b, nil
	case <-b.exited:
		err := fmt.Errorf("testbroker: broker exited before listening (%v); log:\n%s", b.exitErr, b.LogTail(4000))
		_ = b.Stop() // removes a temporary data directory
		return nil, err
	case <-timer.C:
		err := fmt.Errorf("testbroker: broker did not listen within %v; log:\n%s", StartTimeout, b.LogTail(4000))
		_ = b.Stop()
		return nil, err
	case <-ctx.Done():
		_ = b.Stop()
		return nil, ctx.Err()
	}
}

// TempDir makes a temporary directory to hold a broker's data directory.
// Remove it when done.
//
// os.MkdirTemp (and t.TempDir) make directories 0700. A broker running as
// root runs its embedded Postgres as the postgres user, which must be able
// to reach the data directory inside, or initdb fails; so this one is 0755.
func TempDir() (string, error) {
	dir, err := os.MkdirTemp("", "jobwire-go-test-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago, for
// brokers that must share one port on different loopback addresses.
func FreePort() (int, error) { return freePort() }

func cutLast(s, sep string) (string, string, bool) {
	for i := len(s) - len(sep); i >= 0; i-- {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

// Stop sends SIGTERM and waits for the broker to drain and exit; after
// StopTimeout it kills the broker's process group. A temporary data
// directory is removed.
func (b *Broker) Stop() error {
	b.stopOnce.Do(func() {
		b.stopErr = b.stop()
		if b.ownDataDir {
			_ = os.RemoveAll(filepath.Dir(b.DataDir))
		}
	})
	return b.stopErr
}

func (b *Broker) stop() error {
	if b.cmd == nil || b.cmd.Process == nil {
		return nil
	}
	select {
	case <-b.exited:
		if b.killed {
			// What the broker left behind (an embedded Postgres) goes too.
			_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
			return nil
		}
		return fmt.Errorf("testbroker: broker had already exited: %v", b.exitErr)
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-b.exited:
		if b.exitErr != nil {
			return fmt.Errorf("testbroker: broker exited with %v after SIGTERM", b.exitErr)
		}
		return nil
	case <-timer.C:
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
		return fmt.Errorf("testbroker: broker did not exit within %v of SIGTERM; killed it", StopTimeout)
	}
}

// Kill sends SIGKILL to the broker process alone, as a crash would, and
// waits for it to exit. An embedded Postgres it started lives on, so that
// brokers sharing its database carry on; Stop ends it.
func (b *Broker) Kill() error {
	b.killed = true
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("testbroker: kill the broker: %w", err)
	}
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-b.exited:
		return nil
	case <-timer.C:
		return fmt.Errorf("testbroker: broker did not exit within %v of SIGKILL", StopTimeout)
	}
}

// Exited is closed when the broker process has exited.
func (b *Broker) Exited() <-chan struct{} { return b.exited }

// LogTail returns up to the last n bytes of the broker's log.
func (b *Broker) LogTail(n int) string {
	data, err := os.ReadFile(b.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
