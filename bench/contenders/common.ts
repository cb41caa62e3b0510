/*
 * What the bench contenders (bench/contenders/*.ts) share: the result shape,
 * the step logic, and the Postgres counters every trial is charged with.
 *
 * The step logic is the engine bench's (bench/run.ts): the same JMESPath
 * expressions, evaluated the way src/domain/decider.ts evaluates them
 * (`search` over { ...body, input, steps }, then a JSON round trip), so a
 * contender's step does the same CPU work as an engine step.
 *
 * Counters, read from another database of the same server so reading them adds nothing:
 *   commits     pg_stat_database.xact_commit of the trial database. A backend publishes its
 *               counts when it goes idle (at most once a second) or exits, so a snapshot is
 *               only exact once no client backend is left in the database: snapshot() waits
 *               for that (the same rule as bench/run.ts).
 *   statements  sum(calls) of pg_stat_statements rows of the trial database (top-level
 *               statements, BEGIN and COMMIT included), exact at any moment. Needs the
 *               server started with shared_preload_libraries=pg_stat_statements (bench/side-by-side.ts
 *               arranges it on its embedded Postgres); without it `statements` is NaN
 *               (null in JSON) and `statementsSource` says 'unavailable'.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { search } from '@jmespath-community/jmespath';
import { Client } from 'pg';

export type Variant = 'pure' | 'http';

export interface TrialResult {
  contender: 'dbos' | 'floor' | 'engine';
  variant: Variant;
  /** workflows created for the trial */
  workflows: number;
  /** first workflow's start to last workflow's completion */
  ms: number;
  /** finished workflows per second over `ms` */
  wfPerSec: number;
  /** xact_commit delta of the trial database over the executors' whole life (start-up and shut-down included) */
  commits: number;
  /** pg_stat_statements calls over the same window; NaN when pg_stat_statements is not loaded */
  statements: number;
  commitsPerWf: number;
  statementsPerWf: number;
  // ── beyond the required shape
  /** workflows that finished successfully (should equal `workflows`) */
  succeeded: number;
  failed: number;
  statementsSource: 'pg_stat_statements' | 'unavailable';
  /** how `ms` was taken */
  clock: string;
  /** in-flight workflows per executor (DBOS queue workerConcurrency) or pollers (floor) */
  concurrency: number;
  executors: number;
  /** the most frequent statements of the window, calls and execution ms per workflow (pg_stat_statements only) */
  topStatements: { perWf: number; msPerWf?: number; query: string }[];
  /** contender-specific details (launch spread, HTTP hits, ...) */
  details: Record<string, unknown>;
}

// ───── the workflow steps, as in bench/run.ts

export const SHAPE_EXPR = '{id: input.order.id, total: input.order.sum}';
export const TAX_EXPR = '{id: steps.shape.id, gross: steps.shape.total}';
export const PURE_OUTPUT_EXPR = 'steps.tax';
export const HTTP_OUTPUT_EXPR = 'steps.push.body';

export interface OrderInput {
  order: { id: string; sum: number };
}

export function inputFor(i: number): OrderInput {
  return { order: { id: `o-${i}`, sum: i } };
}

/** Exactly how the engine evaluates an expression (src/domain/decider.ts `evaluate` + `contextOf`). */
export function evaluate(expr: string, input: unknown, steps: Record<string, unknown>): unknown {
  const body = input && typeof input === 'object' && !Array.isArray(input) ? (input as Record<string, unknown>) : {};
  const result = search({ ...body, input, steps } as never, expr);
  return result === undefined ? null : JSON.parse(JSON.stringify(result));
}

/** The engine's idempotency key shape (src/domain/decider.ts idempotencyKeyFor). */
export function idempotencyKeyFor(runId: string, step: string): string {
  return `mh_${createHash('sha256').update(`${runId}:${step}`).digest('hex').slice(0, 40)}`;
}

/*
 * POST a JSON body as the engine's http client does (src/worker/http-client.ts: node:http, a
 * keep-alive connection, a timeout); the step's recorded output. It was global fetch (undici)
 * until 2026-12-08, which costs DBOS's http step more CPU a request than the engine's
 * node:http client costs the engine: the same client on both sides now.
 */
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 64 });
export function postJson(url: string, body: unknown, idempotencyKey: string): Promise<{ status: number; body: unknown }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent: keepAlive,
        timeout: 10_000,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'idempotency-key': idempotencyKey },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 400) return reject(new Error(`POST ${url} answered ${status}`));
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            if (String(res.headers['content-type'] ?? '').includes('json')) parsed = JSON.parse(text);
          } catch (e) {
            return reject(e as Error);
          }
          resolve({ status, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`POST ${url} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

// ───── small helpers

export const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

/*
 * CPU one database server has used so far (ms), read from /proc: its
 * postmaster, every process the postmaster started, and what the postmaster
 * has collected from those that already exited. The difference over a
 * trial's window is what the trial cost Postgres: with node's own CPU it says
 * which side of the two shared cores a contender is waiting on. Other
 * clusters on the machine are left out. NaN where /proc is not there.
 */
export function postgresCpuMs(postmaster: number): number {
  const fields = (pid: string): string[] | null => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // after "pid (comm) ": state ppid ... utime stime cutime cstime (the 14th to 17th fields of the line)
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    } catch {
      return null; // gone meanwhile
    }
  };
  const own = fields(String(postmaster));
  if (!own) return NaN;
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const f = fields(pid);
    if (f && Number(f[1]) === postmaster) ticks += Number(f[11]) + Number(f[12]);
  }
  // USER_HZ is 100 on every Linux this runs on
  return ticks * 10;
}

export function round(x: number, digits = 2): number {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : x;
}

export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.slice(1)) || 'postgres';
}

/** The same server's `postgres` database (or `maintenance`), where the counters are read. */
export function siblingUrl(url: string, database = 'postgres'): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

// ───── counters

export interface CounterSnapshot {
  commits: number;
  statements: number;
  /** calls and execution time (ms) per pg_stat_statements entry (queryid), for the breakdown */
  byQuery: Map<string, { calls: number; ms: number; query: string }>;
}

export class PgCounters {
  private constructor(
    private readonly admin: Client,
    readonly database: string,
    private readonly oid: number,
    readonly statementsAvailable: boolean,
  ) {}

  /** `adminUrl`: a database of the same server other than the trial's (default: `postgres`). */
  static async open(databaseUrl: string, adminUrl?: string): Promise<PgCounters> {
    const database = databaseName(databaseUrl);
    if (database === 'postgres' && !adminUrl) throw new Error('a trial needs a database of its own: the counters are read from `postgres`');
    const admin = new Client({ connectionString: adminUrl ?? siblingUrl(databaseUrl) });
    await admin.connect();
    const { rows } = await admin.query('SELECT oid::int AS oid FROM pg_database WHERE datname = $1', [database]);
    if (!rows[0]) {
      await admin.end();
      throw new Error(`database ${database} does not exist`);
    }
    // only when the server preloads the library: never create an extension that cannot work
    const { rows: preload } = await admin.query(`SELECT current_setting('shared_preload_libraries') ~ 'pg_stat_statements' AS loaded`);
    let available = false;
    if (preload[0].loaded) {
      try {
        await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
        await admin.query('SELECT 1 FROM pg_stat_statements LIMIT 1');
        available = true;
      } catch {
        available = false;
      }
    }
    return new PgCounters(admin, database, rows[0].oid, available);
  }

  /** Client backends connected to the trial database right now. */
  async backends(): Promise<number> {
    const { rows } = await this.admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, [this.database]);
    return rows[0].n;
  }

  /**
   * Read the counters. With `settled` (the default) first wait until no client
   * backend is left in the database, so xact_commit includes everything.
   */
  async snapshot(settled = true, timeoutMs = 10_000): Promise<CounterSnapshot & { settled: boolean }> {
    let quiet = !settled;
    if (settled) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        if ((await this.backends()) === 0) {
          quiet = true;
          break;
        }
        await sleep(10);
      }
    }
    await this.admin.query('SELECT pg_stat_clear_snapshot()');
    const { rows } = await this.admin.query('SELECT coalesce(xact_commit, 0)::bigint AS n FROM pg_stat_database WHERE datname = $1', [this.database]);
    const byQuery = new Map<string, { calls: number; ms: number; query: string }>();
    let statements = NaN;
    if (this.statementsAvailable) {
      const res = await this.admin.query(`SELECT queryid::text AS id, calls::bigint AS calls, total_exec_time AS ms, query FROM pg_stat_statements WHERE dbid = $1`, [this.oid]);
      statements = 0;
      for (const r of res.rows) {
        const calls = Number(r.calls);
        statements += calls;
        const prev = byQuery.get(r.id);
        byQuery.set(r.id, { calls: (prev?.calls ?? 0) + calls, ms: (prev?.ms ?? 0) + Number(r.ms), query: r.query });
      }
    }
    return { commits: Number(rows[0]?.n ?? 0), statements, byQuery, settled: quiet };
  }

  /** The statements of a window by calls per workflow, with the time Postgres spent executing each (ms per workflow, nested statements included). */
  static top(before: CounterSnapshot, after: CounterSnapshot, perWf: number, n = 12): { perWf: number; msPerWf: number; query: string }[] {
    const out: { perWf: number; msPerWf: number; query: string }[] = [];
    for (const [id, a] of after.byQuery) {
      const b = before.byQuery.get(id);
      const d = a.calls - (b?.calls ?? 0);
      const ms = a.ms - (b?.ms ?? 0);
      if (d > 0) out.push({ perWf: round(d / Math.max(1, perWf), 3), msPerWf: round(ms / Math.max(1, perWf), 3), query: a.query.replace(/\s+/g, ' ').slice(0, 140) });
    }
    return out.sort((x, y) => y.perWf - x.perWf).slice(0, n);
  }

  /** The server's postmaster process (the parent of this connection's backend), for postgresCpuMs. */
  async postmaster(): Promise<number> {
    const { rows } = await this.admin.query('SELECT pg_backend_pid() AS pid');
    try {
      const stat = readFileSync(`/proc/${rows[0].pid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      return NaN;
    }
  }

  async close(): Promise<void> {
    await this.admin.end().catch(() => undefined);
  }
}
