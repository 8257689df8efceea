package jobwire_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

type Welcome struct {
	UserID int `json:"user_id"`
}

func sendWelcomeEmail(ctx context.Context, userID int) error { return nil }

func ExampleClient_EnqueueJSON() {
	ctx := context.Background()
	client, err := jobwire.NewClient("http://127.0.0.1:50051", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	res, err := client.EnqueueJSON(ctx, "emails", "send_welcome", Welcome{UserID: 42},
		jobwire.WithMaxAttempts(5),
		jobwire.WithDelay(time.Minute),
		jobwire.WithIdempotencyKey("welcome-42", 0),
	)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("enqueued %s (duplicate: %v)", res.JobID, res.Duplicate)
}

func ExampleWorker() {
	client, err := jobwire.NewClient("http://127.0.0.1:50051", nil)
	if err != nil {
		log.Fatal(err)
	}
	worker, err := jobwire.NewWorker(client, &jobwire.WorkerConfig{Queues: []string{"emails"}, Concurrency: 8})
	if err != nil {
		log.Fatal(err)
	}
	jobwire.HandleJSON(worker, "send_welcome", func(ctx context.Context, job *jobwire.Job, w Welcome) error {
		return sendWelcomeEmail(ctx, w.UserID) // an error retries; jobwire.Permanent(err) gives up
	})

	// SIGTERM cancels ctx: the worker stops taking jobs, lets in-flight
	// ones finish, flushes its acks and returns.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := worker.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
