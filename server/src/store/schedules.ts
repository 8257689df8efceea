import type pg from "pg";
import type { Fired, NewJob, Schedule } from "../model.js";
import { DEFAULT_MAX_ATTEMPTS } from "../config.js";
import * as sql from "./sql/schedules.js";

/** The store of recurring schedules; every statement is in sql/schedules.ts. */
export class ScheduleStore {
  constructor(
    private readonly pool: pg.Pool,
    /** JOBWIRE_DEFAULT_MAX_ATTEMPTS, for fired jobs whose template and queue set none. */
    private readonly defaultMaxAttempts = DEFAULT_MAX_ATTEMPTS,
  ) {}

  upsert(s: { name: string; cron: string; template: NewJob; paused: boolean; nextRunAt: Date | null }): Promise<Schedule> {
    return sql.upsertSchedule(this.pool, s);
  }

  delete(name: string): Promise<boolean> {
    return sql.deleteSchedule(this.pool, name);
  }

  list(): Promise<Schedule[]> {
    return sql.listSchedules(this.pool);
  }

  /** The database's clock, which every fire time is measured against. */
  now(): Promise<Date> {
    return sql.dbNow(this.pool);
  }

  msUntilNext(): Promise<number | null> {
    return sql.msUntilNextFire(this.pool);
  }

  fireDue(limit: number, next: (cron: string, firedAt: Date, now: Date) => Date | null): Promise<Fired[]> {
    return sql.fireDue(this.pool, this.defaultMaxAttempts, limit, next);
  }
}
