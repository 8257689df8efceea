/**
 * The signup flow from "Your First Queue" and "Putting It Together": the
 * request creates the account and enqueues the welcome email in the same
 * Postgres transaction, so both commit or neither does; a worker sends the
 * email later, idempotently, because delivery is at least once.
 *
 * The jobs live in the broker's own database (schema `jobwire`), which is
 * what makes the transactional enqueue possible: the application's tables
 * and the jobs table share one database.
 */
import { PermanentError, type Handler, injectTraceContext } from "@jobwire/client";
import type pg from "pg";

export const EMAIL_QUEUE = "emails";
export const WELCOME_EMAIL = "send_welcome_email";

export interface WelcomeEmailPayload {
  /** bigint ids travel as strings in JSON. */
  accountId: string;
}

/** The application's own table. */
export async function ensureSchema(db: pg.Pool): Promise<void> {
  await db.query(`
    CREATE TABLE IF NOT EXISTS accounts (
      id                    bigserial PRIMARY KEY,
      email                 text NOT NULL UNIQUE,
      created_at            timestamptz NOT NULL DEFAULT now(),
      -- Set once the welcome email went out; the worker checks it first.
      welcome_email_sent_at timestamptz
    )`);
}

/**
 * Creates the account and enqueues its welcome email atomically. If the
 * INSERT fails (say the email is taken) the job is never created; if the
 * transaction commits, the job exists and the broker wakes a worker.
 */
export async function signUp(db: pg.Pool, email: string): Promise<{ accountId: string; jobId: string }> {
  const client = await db.connect();
  try {
    await client.query("BEGIN");
    const account = await client.query<{ id: string }>("INSERT INTO accounts (email) VALUES ($1) RETURNING id", [email]);
    const accountId = account.rows[0]!.id;
    const payload: WelcomeEmailPayload = { accountId };
    const job = await client.query<{ job_id: string }>(
      `SELECT jobwire.enqueue(
         queue   => $1,
         type    => $2,
         payload => $3::jsonb,
         headers => $4::jsonb
       ) AS job_id`,
      // Trace context rides in the job's headers, so the worker's span joins
      // this request's trace.
      [EMAIL_QUEUE, WELCOME_EMAIL, JSON.stringify(payload), JSON.stringify(injectTraceContext())],
    );
    await client.query("COMMIT");
    return { accountId, jobId: String(job.rows[0]!.job_id) };
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

export interface Mailer {
  send(msg: { to: string; subject: string; body: string; idempotencyKey: string; signal: AbortSignal }): Promise<void>;
}

/** Prints instead of sending. */
export const consoleMailer: Mailer = {
  async send(msg) {
    console.log(`sent "${msg.subject}" to ${msg.to}`);
  },
};

/**
 * The send_welcome_email handler. Idempotent: it checks
 * welcome_email_sent_at before sending and sets it after, so a redelivered
 * job (a worker crashed, a lease expired) sends nothing twice.
 *
 * One gap remains: a crash after the send and before the UPDATE sends again
 * on redelivery. The idempotency key handed to the mailer closes it with
 * providers that deduplicate on one; claiming the row before sending would
 * close it too, but would lose the email if the send then failed for good.
 */
export function welcomeEmailHandler(db: pg.Pool, mailer: Mailer): Handler<WelcomeEmailPayload> {
  return async (job, ctx) => {
    const { accountId } = job.payload;
    const { rows } = await db.query<{ email: string; welcome_email_sent_at: Date | null }>(
      "SELECT email, welcome_email_sent_at FROM accounts WHERE id = $1",
      [accountId],
    );
    const account = rows[0];
    // Retrying cannot make a missing account appear: fail for good.
    if (account === undefined) throw new PermanentError(`account ${accountId} does not exist`);
    if (account.welcome_email_sent_at !== null) {
      console.log(`welcome email to ${account.email} already sent; nothing to do`);
      return;
    }
    await mailer.send({
      to: account.email,
      subject: "Welcome!",
      body: "Thanks for signing up.",
      idempotencyKey: `welcome-${accountId}`,
      signal: ctx.signal,
    });
    await db.query("UPDATE accounts SET welcome_email_sent_at = now() WHERE id = $1 AND welcome_email_sent_at IS NULL", [
      accountId,
    ]);
  };
}
