/**
 * Five-field cron expressions (minute hour day-of-month month day-of-week),
 * evaluated in UTC.
 *
 * Each field takes *, a number, a range a-b, a list a,b,c, and steps (*\/5,
 * 10-50/10); months and weekdays also take names (JAN-DEC, SUN-SAT), and
 * weekday 7 is Sunday too. As in every cron since Vixie's: when both
 * day-of-month and day-of-week are restricted, a day matches if either
 * does. Macros: @yearly (@annually), @monthly, @weekly, @daily (@midnight),
 * @hourly.
 */
export class CronError extends Error {
  override name = "CronError";
}

interface Field {
  name: string;
  min: number;
  max: number;
  names?: string[];
}

const FIELDS: Field[] = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day of month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"] },
  { name: "day of week", min: 0, max: 7, names: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] },
];

const MACROS: Record<string, string> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

export interface Cron {
  minutes: Set<number>;
  hours: Set<number>;
  days: Set<number>;
  months: Set<number>;
  weekdays: Set<number>;
  /** Whether day-of-month / day-of-week were restricted (not "*"). */
  daysRestricted: boolean;
  weekdaysRestricted: boolean;
}

function parseValue(raw: string, f: Field): number {
  const upper = raw.toUpperCase();
  const named = f.names?.indexOf(upper) ?? -1;
  const offset = f.name === "month" ? 1 : 0;
  const n = named >= 0 ? named + offset : /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < f.min || n > f.max) {
    throw new CronError(`${f.name}: "${raw}" is not a value from ${f.min} to ${f.max}${f.names ? " or a name" : ""}`);
  }
  return n;
}

function parseField(text: string, f: Field): { values: Set<number>; restricted: boolean } {
  const values = new Set<number>();
  for (const part of text.split(",")) {
    if (part === "") throw new CronError(`${f.name}: empty list item in "${text}"`);
    const [range, stepText, extra] = part.split("/");
    if (extra !== undefined) throw new CronError(`${f.name}: "${part}" has more than one step`);
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) throw new CronError(`${f.name}: step "${stepText}" must be a positive whole number`);
    let lo: number;
    let hi: number;
    if (range === "*") {
      lo = f.min;
      hi = f.name === "day of week" ? 6 : f.max;
    } else if (range!.includes("-")) {
      const [a, b] = range!.split("-");
      lo = parseValue(a!, f);
      hi = parseValue(b!, f);
      if (hi < lo) throw new CronError(`${f.name}: range "${range}" runs backwards`);
    } else {
      lo = parseValue(range!, f);
      hi = stepText === undefined ? lo : f.name === "day of week" ? 6 : f.max;
    }
    for (let v = lo; v <= hi; v += step) values.add(f.name === "day of week" && v === 7 ? 0 : v);
  }
  return { values, restricted: text !== "*" && !text.startsWith("*/") };
}

export function parseCron(expression: string): Cron {
  const text = expression.trim();
  const expanded = MACROS[text.toLowerCase()] ?? text;
  if (expanded.startsWith("@")) throw new CronError(`unknown macro "${text}"; use @yearly, @monthly, @weekly, @daily or @hourly`);
  const parts = expanded.split(/\s+/);
  if (parts.length !== 5) throw new CronError(`needs 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}`);
  const [mi, h, dom, mo, dow] = parts.map((p, i) => parseField(p, FIELDS[i]!));
  return {
    minutes: mi!.values,
    hours: h!.values,
    days: dom!.values,
    months: mo!.values,
    weekdays: dow!.values,
    daysRestricted: dom!.restricted,
    weekdaysRestricted: dow!.restricted,
  };
}

function dayMatches(c: Cron, d: Date): boolean {
  const dom = c.days.has(d.getUTCDate());
  const dow = c.weekdays.has(d.getUTCDay());
  if (c.daysRestricted && c.weekdaysRestricted) return dom || dow;
  if (c.daysRestricted) return dom;
  if (c.weekdaysRestricted) return dow;
  return true;
}

/** Searching past this many years means the expression can never fire (say, Feb 30). */
const HORIZON_YEARS = 8;

/** The first fire time strictly after `after`, or null if there is none. */
export function nextFire(c: Cron, after: Date): Date | null {
  const t = new Date(after.getTime());
  t.setUTCSeconds(0, 0);
  t.setUTCMinutes(t.getUTCMinutes() + 1);
  const limit = after.getUTCFullYear() + HORIZON_YEARS;
  // Each step jumps to the start of the next candidate unit, so the loop runs
  // at most a few hundred times for any expression.
  while (t.getUTCFullYear() <= limit) {
    if (!c.months.has(t.getUTCMonth() + 1)) {
      t.setUTCMonth(t.getUTCMonth() + 1, 1);
      t.setUTCHours(0, 0, 0, 0);
      continue;
    }
    if (!dayMatches(c, t)) {
      t.setUTCDate(t.getUTCDate() + 1);
      t.setUTCHours(0, 0, 0, 0);
      continue;
    }
    if (!c.hours.has(t.getUTCHours())) {
      t.setUTCHours(t.getUTCHours() + 1, 0, 0, 0);
      continue;
    }
    if (!c.minutes.has(t.getUTCMinutes())) {
      t.setUTCMinutes(t.getUTCMinutes() + 1, 0, 0);
      continue;
    }
    return t;
  }
  return null;
}
