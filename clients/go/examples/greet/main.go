// Command greet enqueues a "greet" job and runs a worker that processes it.
//
//	go run ./examples/greet                 # broker at http://127.0.0.1:50051
//	JOBWIRE_URL=http://10.0.0.5:50051,http://10.0.0.6:50051 go run ./examples/greet   # broker replicas
//	go run ./examples/greet -forever        # keep working until Ctrl-C / SIGTERM
//
// By default it stops (gracefully, the way SIGTERM would) once its own job
// has been processed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// Greeting is the payload of a "greet" job.
type Greeting struct {
	Name string `json:"name"`
}

func main() {
	forever := flag.Bool("forever", false, "keep working until interrupted")
	name := flag.String("name", "ada", "who to greet")
	flag.Parse()
	url := os.Getenv("JOBWIRE_URL")
	if url == "" {
		url = "http://127.0.0.1:50051"
	}

	// SIGTERM and Ctrl-C cancel ctx, which makes the worker shut down
	// gracefully: no new jobs, in-flight jobs finish, acks are flushed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client, err := jobwire.NewClient(url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	worker, err := jobwire.NewWorker(client, &jobwire.WorkerConfig{Queues: []string{"greetings"}, Concurrency: 4})
	if err != nil {
		log.Fatal(err)
	}
	var once sync.Once
	jobwire.HandleJSON(worker, "greet", func(ctx context.Context, job *jobwire.Job, g Greeting) error {
		if g.Name == "" {
			return jobwire.Permanent(errors.New("a greeting needs a name"))
		}
		fmt.Printf("hello, %s! (job %s, attempt %d)\n", g.Name, job.ID, job.Attempt)
		if !*forever {
			once.Do(stop)
		}
		return nil
	})

	enqueueCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	res, err := client.EnqueueJSON(enqueueCtx, "greetings", "greet", Greeting{Name: *name})
	cancel()
	if err != nil {
		log.Fatalf("enqueue: %v", err)
	}
	fmt.Printf("enqueued job %s\n", res.JobID)

	if err := worker.Run(ctx); err != nil {
		log.Fatalf("worker: %v", err)
	}
}
