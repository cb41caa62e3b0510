/*
 * Contender: the raw SKIP LOCKED floor. The least a durable Postgres job queue
 * can do for the bench's 3-step workflow, in plain SQL:
 *
 *   floor_jobs(id, state jsonb, step int, status)
 *   claim   UPDATE floor_jobs SET status = 'running'
 *           WHERE id = (SELECT id FROM floor_jobs WHERE status = 'ready' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
 *           RETURNING id, state, step                                   one statement, one commit
 *   step    UPDATE floor_jobs SET state = $2, step = $3 [, status = 'succeeded']
 *           WHERE id = $1 AND step = $4 AND status = 'running'          one statement, one commit, per step
 *
 * `concurrency` pollers in this process, each on its own connection (synchronous_commit=on set
 * as a startup option, so it costs no statement), each claiming one job at a time and sleeping
 * `pollMs` when there is none. The steps are the engine's (shape, tax, terminate: the same
 * JMESPath expressions, common.ts `evaluate`), and each commits on its own, so the floor is as
 * durable per step as the engine: 4 statements and 4 commits per workflow plus idle polls.
 * What it leaves out: leases (a job whose poller dies stays 'running'), retries, history,
 * any replay or verification.
 *
 * Clock: from just before the pollers start (all jobs already inserted) until the last
 * job's terminate commit returned (performance.now()).
 */
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { evaluate, inputFor, PgCounters, postgresCpuMs, PURE_OUTPUT_EXPR, round, SHAPE_EXPR, sleep, TAX_EXPR, TrialResult } from './common';

export const FLOOR_SCHEMA = `
CREATE TABLE IF NOT EXISTS floor_jobs (
  id     bigint PRIMARY KEY,
  state  jsonb NOT NULL,
  step   integer NOT NULL DEFAULT 0,
  status text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'running', 'succeeded', 'failed'))
);
CREATE INDEX IF NOT EXISTS floor_jobs_ready ON floor_jobs (id) WHERE status = 'ready';
`;

export interface FloorTrialOptions {
  /** a fresh database for this trial (floor_jobs is created in it if missing) */
  databaseUrl: string;
  workflows: number;
  /** the floor runs the transform-only workflow */
  variant?: 'pure';
  /** pollers (each one job in flight); default 8, the engine bench's 2 workers × 4 */
  concurrency?: number;
  /** idle poll interval; default 10, the engine's */
  pollMs?: number;
  /** where the counters are read (a database of the same server); default its `postgres` database */
  adminUrl?: string;
  /** give up waiting after this long; default 120000 */
  deadlineMs?: number;
}

const CLAIM = `UPDATE floor_jobs SET status = 'running'
WHERE id = (SELECT id FROM floor_jobs WHERE status = 'ready' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, state, step`;
const ADVANCE = `UPDATE floor_jobs SET state = $2, step = $3 WHERE id = $1 AND step = $4 AND status = 'running'`;
const FINISH = `UPDATE floor_jobs SET state = $2, step = $3, status = 'succeeded' WHERE id = $1 AND step = $4 AND status = 'running'`;

interface JobState {
  input: unknown;
  steps: Record<string, unknown>;
  output?: unknown;
}

export async function runFloorTrial(opts: FloorTrialOptions): Promise<TrialResult> {
  const o = { concurrency: 8, pollMs: 10, deadlineMs: 120_000, ...opts, variant: 'pure' as const };
  const counters = await PgCounters.open(o.databaseUrl, o.adminUrl);
  const pollers: Client[] = [];
  try {
    // ── setup (not measured, not counted): the table and the jobs
    const setup = new Client({ connectionString: o.databaseUrl });
    await setup.connect();
    try {
      await setup.query(FLOOR_SCHEMA);
      await setup.query(
        `INSERT INTO floor_jobs (id, state) SELECT i, jsonb_build_object('input', x.input, 'steps', '{}'::jsonb)
         FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(input, i)`,
        [JSON.stringify(Array.from({ length: o.workflows }, (_, i) => inputFor(i)))],
      );
    } finally {
      await setup.end();
    }
    const before = await counters.snapshot();

    // ── execution
    for (let i = 0; i < o.concurrency; i++) {
      const c = new Client({ connectionString: o.databaseUrl, options: '-c synchronous_commit=on' });
      c.on('error', () => undefined);
      await c.connect();
      pollers.push(c);
    }
    let finished = 0;
    let failed = 0;
    let conflicts = 0;
    let idlePolls = 0;
    let stop = false;
    let lastDone = 0;
    let onAll = (): void => undefined;
    const allDone = new Promise<void>((resolve) => (onAll = resolve));
    if (o.workflows === 0) onAll();

    const advance = async (c: Client, id: string, state: JobState, step: number, last: boolean): Promise<void> => {
      const res = await c.query(last ? FINISH : ADVANCE, [id, JSON.stringify(state), step + 1, step]);
      if (res.rowCount !== 1) {
        conflicts++;
        throw new Error(`job ${id} moved past step ${step}: another writer advanced it`);
      }
    };
    const poll = async (c: Client): Promise<void> => {
      while (!stop) {
        const { rows } = await c.query(CLAIM);
        if (rows.length === 0) {
          idlePolls++;
          await sleep(o.pollMs);
          continue;
        }
        const id = String(rows[0].id);
        const state = rows[0].state as JobState;
        let step = Number(rows[0].step);
        try {
          // shape
          state.steps.shape = evaluate(SHAPE_EXPR, state.input, state.steps);
          await advance(c, id, state, step++, false);
          // tax
          state.steps.tax = evaluate(TAX_EXPR, state.input, state.steps);
          await advance(c, id, state, step++, false);
          // terminate
          state.output = evaluate(PURE_OUTPUT_EXPR, state.input, state.steps);
          await advance(c, id, state, step++, true);
          finished++;
        } catch (e) {
          failed++;
          if (!stop) console.error(`[floor] ${(e as Error).message}`);
        }
        lastDone = performance.now();
        if (finished + failed >= o.workflows) onAll();
      }
    };

    const postmaster = await counters.postmaster();
    const cpuBefore = process.cpuUsage();
    const pgCpuBefore = postgresCpuMs(postmaster);
    const t0 = performance.now();
    const loops = pollers.map((c) => poll(c));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([allDone.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), o.deadlineMs)))]);
    clearTimeout(timer);
    const ms = (finished + failed >= o.workflows ? lastDone : performance.now()) - t0;
    const cpu = process.cpuUsage(cpuBefore);
    const pgCpuMs = postgresCpuMs(postmaster) - pgCpuBefore;
    stop = true;
    await Promise.allSettled(loops);
    await Promise.all(pollers.splice(0).map((c) => c.end().catch(() => undefined)));
    const after = await counters.snapshot();

    // ── the outcome, checked from the table (after the counters)
    const check = new Client({ connectionString: o.databaseUrl });
    await check.connect();
    let succeeded = 0;
    let sample: unknown = null;
    try {
      const { rows } = await check.query(`SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS n, min((state->'output')::text) AS sample FROM floor_jobs`);
      succeeded = rows[0].n;
      sample = rows[0].sample;
    } finally {
      await check.end();
    }
    const commits = after.commits - before.commits;
    const statements = after.statements - before.statements;
    const n = Math.max(1, succeeded);
    return {
      contender: 'floor',
      variant: 'pure',
      workflows: o.workflows,
      ms: round(ms, 1),
      wfPerSec: round(succeeded / (ms / 1000), 1),
      commits,
      statements,
      commitsPerWf: round(commits / n, 2),
      statementsPerWf: round(statements / n, 2),
      succeeded,
      failed,
      statementsSource: counters.statementsAvailable ? 'pg_stat_statements' : 'unavailable',
      clock: 'in process: pollers start → last terminate commit returned',
      concurrency: o.concurrency,
      executors: 1,
      topStatements: counters.statementsAvailable ? PgCounters.top(before, after, n) : [],
      details: { pollMs: o.pollMs, nodeCpuMs: round((cpu.user + cpu.system) / 1000, 0),
        pgCpuMs: round(pgCpuMs, 0), idlePolls, conflicts, timedOut, sampleOutput: sample, countersSettled: before.settled && after.settled },
    };
  } finally {
    await Promise.all(pollers.map((c) => c.end().catch(() => undefined)));
    await counters.close();
  }
}
