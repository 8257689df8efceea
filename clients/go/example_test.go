package jobwire_test

// Runnable examples: go test runs each against the broker the test harness
// starts (its URL is in JOBWIRE_URL) and checks its output.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// brokerAddress is where the examples find the broker: JOBWIRE_URL, or the
// broker's default address.
func brokerAddress() string {
	return cmp.Or(os.Getenv("JOBWIRE_URL"), "http://127.0.0.1:50051")
}

type Greeting struct {
	Name string `json:"name"`
}

// Enqueue a job, and run a worker that processes it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := jobwire.NewClient(brokerAddress(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	res, err := client.EnqueueJSON(ctx, "onboarding", "greet", Greeting{Name: "ada"})
	if err != nil {
		log.Fatal(err)
	}

	worker, err := jobwire.NewWorker(client, &jobwire.WorkerConfig{Queues: []string{"onboarding"}, Concurrency: 4})
	if err != nil {
		log.Fatal(err)
	}
	jobwire.HandleJSON(worker, "greet", func(ctx context.Context, job *jobwire.Job, g Greeting) error {
		fmt.Printf("hello, %s (attempt %d)\n", g.Name, job.Attempt)
		worker.Stop() // one job is enough here; Run returns once its ack is sent
		return nil
	})
	if err := worker.Run(ctx); err != nil {
		log.Fatal(err)
	}

	job, err := client.GetJob(ctx, res.JobID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.GetState())
	// Output:
	// hello, ada (attempt 1)
	// JOB_STATE_COMPLETED
}

type Welcome struct {
	UserID int `json:"user_id"`
}

// An idempotency key makes a second enqueue return the first job.
func ExampleClient_EnqueueJSON() {
	ctx := context.Background()
	client, err := jobwire.NewClient(brokerAddress(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	enqueue := func() jobwire.EnqueueResult {
		res, err := client.EnqueueJSON(ctx, "emails", "send_welcome", Welcome{UserID: 42},
			jobwire.WithMaxAttempts(5),
			jobwire.WithDelay(time.Hour),
			jobwire.WithIdempotencyKey("welcome-42", 0),
		)
		if err != nil {
			log.Fatal(err)
		}
		return res
	}
	first, again := enqueue(), enqueue()
	fmt.Println("same job:", again.JobID == first.JobID, "duplicate:", again.Duplicate)

	job, err := client.GetJob(ctx, first.JobID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.GetType(), job.GetState(), job.GetMaxAttempts())
	// Output:
	// same job: true duplicate: true
	// send_welcome JOB_STATE_SCHEDULED 5
}

type Report struct {
	Month string `json:"month"`
}

// A handler's error retries the job after its backoff; jobwire.Permanent
// would send it to DEAD at once. SIGTERM (or Ctrl-C) stops the worker
// gracefully: no new jobs, in-flight ones finish, acks are sent.
func ExampleWorker() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := jobwire.NewClient(brokerAddress(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	worker, err := jobwire.NewWorker(client, &jobwire.WorkerConfig{Queues: []string{"reports"}, Concurrency: 8})
	if err != nil {
		log.Fatal(err)
	}
	jobwire.HandleJSON(worker, "monthly", func(ctx context.Context, job *jobwire.Job, r Report) error {
		if job.Attempt == 1 {
			fmt.Printf("attempt 1 for %s: the database is busy\n", r.Month)
			return errors.New("database busy") // retried after the backoff
		}
		fmt.Printf("attempt %d for %s: done\n", job.Attempt, r.Month)
		stop() // as SIGTERM would
		return nil
	})

	if _, err := client.EnqueueJSON(ctx, "reports", "monthly", Report{Month: "2026-11"},
		jobwire.WithRetry(10*time.Millisecond, 0, 0)); err != nil {
		log.Fatal(err)
	}
	if err := worker.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// attempt 1 for 2026-11: the database is busy
	// attempt 2 for 2026-11: done
}

// Every error from a call names its gRPC code, and CodeOf returns it.
func ExampleCodeOf() {
	client, err := jobwire.NewClient(brokerAddress(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	_, err = client.GetJob(context.Background(), "9223372036854775807")
	if jobwire.CodeOf(err) == jobwire.CodeNotFound {
		fmt.Println("no such job:", jobwire.CodeOf(err))
	}
	// Output:
	// no such job: not_found
}

// errors.Is matches a failed call against the sentinel of its code, and
// errors.As finds the *jobwire.Error with the code and the broker's message.
func Example_errorHandling() {
	client, err := jobwire.NewClient(brokerAddress(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	_, err = client.GetJob(context.Background(), "9223372036854775807")
	switch {
	case errors.Is(err, jobwire.ErrNotFound):
		fmt.Println("no such job")
	case errors.Is(err, jobwire.ErrPermissionDenied), errors.Is(err, jobwire.ErrUnauthenticated):
		log.Fatal("check the token: ", err)
	}
	var e *jobwire.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code())
	}
	// Output:
	// no such job
	// not_found
}

// WhoAmI says which token or client certificate the broker sees, with what
// scopes on which queues. This broker runs without authentication.
func ExampleClient_WhoAmI() {
	client, err := jobwire.NewClient(brokerAddress(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	me, err := client.WhoAmI(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(me.AuthEnabled, me.Scopes, me.Queues)
	// Output:
	// false [enqueue work read admin] [*]
}

// Broker replicas on one database: calls go to the first until it fails,
// then to the next.
func ExampleNewClient_severalBrokers() {
	client, err := jobwire.NewClient("http://10.0.0.1:50051,http://10.0.0.2:50051", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	fmt.Println(client.Brokers())
	fmt.Println(client.CurrentBroker())
	// Output:
	// [http://10.0.0.1:50051 http://10.0.0.2:50051]
	// http://10.0.0.1:50051
}
