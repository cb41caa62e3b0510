/*
 * Contender: MeshHook Replay itself, next to DBOS and the floor in bench/side-by-side.ts.
 *
 * The same workflows with the same expressions (common.ts): shape → tax → terminate (pure) and
 * shape → push (POST to the trial's target, Idempotency-Key) → terminate (http). The runs are
 * created before the clock starts (what the intake does after its checks: `startRun`, one
 * transaction each), as DBOS's workflows are enqueued before its executor launches; then
 * `workers` in-process Workers (src/worker/worker.ts, the production code path: hash-chained,
 * signed, recorded inputs) with `concurrency / workers` runs in flight each execute them.
 *
 * Clock: workers start → the last run's finishing batch committed (the worker's log callback,
 * performance.now()).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { openEnginePool, openPool } from '../../src/db/pool';
import { Keyring } from '../../src/security/keyring';
import { latestVersion, publishWorkflow, setAllowPrivateTargets } from '../../src/store/registry';
import { startRun } from '../../src/store/intake-start';
import { Worker } from '../../src/worker/worker';
import { HTTP_OUTPUT_EXPR, inputFor, PgCounters, postgresCpuMs, PURE_OUTPUT_EXPR, round, SHAPE_EXPR, TAX_EXPR, TrialResult, Variant } from './common';

const KEYS = Keyring.generate('side-by-side');

export interface EngineTrialOptions {
  /** a fresh database with the engine's migrations applied */
  databaseUrl: string;
  workflows: number;
  variant: Variant;
  targetUrl: string;
  /** runs in flight in all (split across the workers); default 8 */
  concurrency?: number;
  /** in-process workers; default 2 */
  workers?: number;
  pollMs?: number;
  adminUrl?: string;
  deadlineMs?: number;
  /** group commit across runs (the worker's default); false: one transaction per batch */
  groupCommit?: boolean;
}

function definition(variant: Variant, targetUrl: string): Record<string, unknown> {
  return variant === 'pure'
    ? {
        name: 'three-transforms',
        steps: [
          { id: 'shape', type: 'transform', expression: SHAPE_EXPR, next: 'tax' },
          { id: 'tax', type: 'transform', expression: TAX_EXPR, next: 'done' },
          { id: 'done', type: 'terminate', status: 'succeeded', output: PURE_OUTPUT_EXPR },
        ],
      }
    : {
        name: 'with-http',
        steps: [
          { id: 'shape', type: 'transform', expression: SHAPE_EXPR, next: 'push' },
          { id: 'push', type: 'http_call', method: 'POST', url: `${targetUrl}/orders`, body: 'steps.shape', next: 'done' },
          { id: 'done', type: 'terminate', status: 'succeeded', output: HTTP_OUTPUT_EXPR },
        ],
      };
}

export async function runEngineTrial(opts: EngineTrialOptions): Promise<TrialResult> {
  const o = { concurrency: 8, workers: 2, pollMs: 10, deadlineMs: 120_000, ...opts };
  const counters = await PgCounters.open(o.databaseUrl, o.adminUrl);
  try {
    // ── setup (not measured, not counted): the workflow and its runs
    const setup = openPool(o.databaseUrl, { max: 8 }, () => undefined);
    try {
      const p = await publishWorkflow(setup, KEYS, 'bench', definition(o.variant, o.targetUrl));
      await setAllowPrivateTargets(setup, KEYS.chainKey(), p.projectId, true);
      const version = await latestVersion(setup, p.projectId, p.workflowId);
      let next = 0;
      const create = async (): Promise<void> => {
        for (let i = next++; i < o.workflows; i = next++) {
          const input = inputFor(i);
          await startRun(setup, { chain: KEYS.chainKey(), runId: randomUUID(), projectId: p.projectId, projectSlug: 'bench', workflowSlug: p.workflow, version, deliveryId: `sbs-${i}`, input, at: new Date(), rawBody: JSON.stringify(input) });
        }
      };
      await Promise.all(Array.from({ length: 8 }, create));
    } finally {
      await setup.end();
    }
    const before = await counters.snapshot();

    // ── execution
    // as `meshhook worker` runs: the engine's role, under row-level security (a superuser would bypass it)
    // as `meshhook up` sizes it: 4 connections a worker (and 4 for an intake this bench has not)
    const pool = openEnginePool(o.databaseUrl, { max: 4 * (o.workers + 1) }, () => undefined);
    let onAll = (): void => undefined;
    const allDone = new Promise<void>((resolve) => (onAll = resolve));
    let lastDone = 0;
    const workers: Worker[] = [];
    const finished = (): number => workers.reduce((n, w) => n + w.stats.runsFinished, 0);
    const log = (): void => {
      if (finished() >= o.workflows) {
        lastDone = lastDone || performance.now();
        onAll();
      }
    };
    const each = Math.max(1, Math.round(o.concurrency / o.workers));
    for (let i = 0; i < o.workers; i++) {
      workers.push(new Worker({ pool, lockConnection: { connectionString: o.databaseUrl }, pollMs: o.pollMs, concurrency: each, id: `sbs-${i + 1}`, keyring: KEYS, log, groupCommit: o.groupCommit }));
    }
    const postmaster = await counters.postmaster();
    const cpuBefore = process.cpuUsage();
    const pgCpuBefore = postgresCpuMs(postmaster);
    const t0 = performance.now();
    for (const w of workers) w.start();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([allDone.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), o.deadlineMs)))]);
    clearTimeout(timer);
    const ms = (lastDone || performance.now()) - t0;
    const cpu = process.cpuUsage(cpuBefore);
    const pgCpuMs = postgresCpuMs(postmaster) - pgCpuBefore;
    await Promise.all(workers.map((w) => w.stop()));
    await pool.end();
    const after = await counters.snapshot();

    // ── the outcome, checked from the run views (after the counters)
    const check = openPool(o.databaseUrl, { max: 1 }, () => undefined);
    let succeeded = 0;
    let failed = 0;
    try {
      const { rows } = await check.query(`SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS ok, count(*) FILTER (WHERE status = 'failed')::int AS failed FROM runs`);
      succeeded = rows[0].ok;
      failed = rows[0].failed;
    } finally {
      await check.end();
    }
    const commits = after.commits - before.commits;
    const statements = after.statements - before.statements;
    const n = Math.max(1, succeeded);
    return {
      contender: 'engine',
      variant: o.variant,
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
      clock: 'in process: workers start → the last run finished',
      concurrency: each,
      executors: o.workers,
      topStatements: counters.statementsAvailable ? PgCounters.top(before, after, n) : [],
      details: {
        pollMs: o.pollMs,
        nodeCpuMs: round((cpu.user + cpu.system) / 1000, 0),
        pgCpuMs: round(pgCpuMs, 0),
        timedOut,
        batches: workers.reduce((k, w) => k + w.stats.batches, 0),
        conflicts: workers.reduce((k, w) => k + w.stats.conflicts, 0),
        errors: workers.reduce((k, w) => k + w.stats.errors, 0),
        countersSettled: before.settled && after.settled,
      },
    };
  } finally {
    await counters.close();
  }
}
