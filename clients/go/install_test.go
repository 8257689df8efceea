package jobwire_test

import (
	"archive/zip"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
)

const modulePath = "github.com/jobwire/jobwire/clients/go"

// What a user outside this repository does once it is published: `go get`
// the module into an empty module of their own, build a program against it
// and run it. The module is served, as the Go proxy would serve the
// published repository, from a file proxy built from this directory (the
// module zip holds exactly what a tagged `clients/go/vX.Y.Z` would); its
// dependencies come from the local module cache, so nothing is fetched
// from the network and no other module cache is touched.
func TestInstall_GoGetOutsideTheRepository(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module outside the repository")
	}
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	url := brokerURL(t)
	const version = "v0.1.0"
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	writeModuleToProxy(t, proxy, version)

	cacheOut, err := exec.Command(goBin, "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	localCache := filepath.Join(strings.TrimSpace(string(cacheOut)), "cache", "download")
	app := filepath.Join(tmp, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	const program = `package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := jobwire.NewClient(os.Getenv("JOBWIRE_URL"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	res, err := client.EnqueueJSON(ctx, "install-check", "hello", map[string]string{"from": "outside"})
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.GetJob(ctx, res.JobID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.GetType(), job.GetState())
}
`
	if err := os.WriteFile(filepath.Join(app, "main.go"), []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"GOPROXY=file://"+filepath.ToSlash(proxy)+",file://"+filepath.ToSlash(localCache),
		"GOMODCACHE="+filepath.Join(tmp, "modcache"),
		"GOFLAGS=-modcacherw",
		"GONOSUMDB="+modulePath, // the test copy is not in the checksum database
		"GOSUMDB=off",           // nor are cache copies checked again
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"JOBWIRE_URL="+url,
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"mod", "init", "example.com/app"},
		{"get", modulePath + "@" + version},
		{"run", "."},
	} {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir, cmd.Env = app, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[0] == "run" {
			if got := strings.TrimSpace(string(out)); got != "hello JOB_STATE_AVAILABLE" {
				t.Errorf("the program printed %q, want %q", got, "hello JOB_STATE_AVAILABLE")
			}
		}
	}
}

// writeModuleToProxy lays out this module at version in a GOPROXY file
// tree: <module>/@v/{list,<version>.info,<version>.mod,<version>.zip}.
func writeModuleToProxy(t *testing.T, proxy, version string) {
	t.Helper()
	root, err := testbroker.FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	modDir := filepath.Join(root, "clients", "go")
	dir := filepath.Join(proxy, filepath.FromSlash(modulePath), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]string{"Version": version, "Time": time.Now().UTC().Format(time.RFC3339)})
	for name, data := range map[string][]byte{"list": []byte(version + "\n"), version + ".info": info, version + ".mod": gomod} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	f, err := os.Create(filepath.Join(dir, version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	prefix := modulePath + "@" + version + "/"
	err = filepath.WalkDir(modDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(modDir, path)
		if d.IsDir() {
			// What the go command leaves out of a module zip: VCS and hidden
			// directories, vendor trees and nested modules.
			if path != modDir && (strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor" || fileExists(filepath.Join(path, "go.mod"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		w, err := zw.Create(prefix + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
