/*
 * Contender: DBOS Transact (@dbos-inc/dbos-sdk 5.3) running the bench's 3-step
 * workflows (bench/contenders/dbos-workflows.ts) from a durable DBOS queue.
 *
 * One trial, on a fresh database that is also DBOS's system database:
 *   setup (not measured, not counted)
 *     DBOS.migrate(databaseUrl)                      creates/migrates the `dbos` schema (a no-op on a migrated template)
 *     DBOSClient: registerQueue('bench', { workerConcurrency: concurrency, minPollingIntervalMs: pollMs })
 *                 enqueue `workflows` workflows      durable ENQUEUED rows with their inputs, like the engine's startRun
 *     client closed, counters read once no backend is left
 *   execution (counted)
 *     executors=1  DBOS.launch() in this process; its queue runner dequeues and runs them
 *     executors=N  N child processes (dbos-child.ts), each DBOS.launch()ed with its own executor ID
 *     every workflow body reports when it is done; then DBOS.shutdown() (which waits until the
 *     running workflows' outcomes are recorded), counters read again once no backend is left.
 *
 * Why the queue and not DBOS.startWorkflow: the engine's runs are created durably first and then
 * claimed by whichever worker is free, with bounded concurrency. A DBOS queue is exactly that
 * (rows claimed by any executor, `workerConcurrency` in flight per executor), and an enqueued
 * workflow is durable from the moment it is enqueued. `DBOS.startWorkflow` without a queue also
 * records the workflow before running it, but runs it at once in the calling process, unbounded,
 * and binds it to that executor.
 *
 * Clock: DBOS stamps `started_at_epoch_ms` when a queue claims a workflow and `completed_at` when
 * it records the outcome, both from the database's now() (the transaction's start). `ms` is
 * max(completed_at) − min(started_at_epoch_ms): from the first workflow's start to the last one's
 * completion (it leaves out the last commit's own flush, a millisecond or two).
 *
 * Counters (bench/contenders/common.ts) cover the executors' whole life: launch (schema check,
 * recovery scan, queue discovery, LISTEN), the queue polls, the workflows, and shutdown. Launch and
 * shutdown are a few dozen statements per executor, fixed, so they fade over a few hundred workflows.
 *
 * DBOS is a singleton per process: an in-process trial refuses to run while DBOS is launched by
 * someone else; it launches, shuts down and relaunches fine trial after trial (setConfig again
 * before each launch, the registrations stay).
 */
import { fork, ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DBOS, DBOSClient } from '@dbos-inc/dbos-sdk';
import { Client } from 'pg';
import { databaseName, inputFor, PgCounters, postgresCpuMs, round, sleep, TrialResult, Variant } from './common';
import { configureDbos, DBOS_APP_NAME, DBOS_APP_VERSION, DBOS_QUEUE, DBOS_WORKFLOW_NAMES, executorHooks } from './dbos-workflows';

export interface DbosTrialOptions {
  /** a fresh database for this trial; DBOS's system database (schema `dbos`) goes in it */
  databaseUrl: string;
  workflows: number;
  variant: Variant;
  /** for the http variant: the step POSTs to `${targetUrl}/orders` */
  targetUrl?: string;
  /** workflows in flight per executor (the queue's workerConcurrency); default 8 (the engine bench's 2 workers × 4) */
  concurrency?: number;
  /** DBOS executors, one per process: 1 runs in this process, N > 1 forks N children; default 1 */
  executors?: number;
  /** the queue's minPollingIntervalMs; default 10, the engine's poll interval (DBOS's own default is 1000) */
  pollMs?: number;
  /** DBOS system-database pool per executor; default DBOS's (10) */
  poolSize?: number;
  /** where the counters are read (a database of the same server); default its `postgres` database */
  adminUrl?: string;
  /** give up waiting after this long; default 120000 */
  deadlineMs?: number;
  /** pure variant only: the transforms in the workflow's body with no step (DBOS's advice for deterministic code) instead of a step each */
  inline?: boolean;
}

const ENQUEUE_PARALLEL = 8;

const silentLogger = {
  info: () => undefined,
  debug: () => undefined,
  warn: (m: unknown) => console.warn('[dbos client]', m),
  error: (m: unknown) => console.error('[dbos client]', m),
};

interface Executors {
  /** resolves when every executor has launched; `spreadMs` between the first and the last */
  launch(): Promise<{ spreadMs: number }>;
  stop(): Promise<void>;
  /** kill whatever is left (after a failure) */
  abort(): Promise<void>;
}

function inProcessExecutor(o: Required<Pick<DbosTrialOptions, 'databaseUrl'>> & DbosTrialOptions, onSettled: (ok: boolean) => void): Executors {
  if (DBOS.isInitialized()) throw new Error('DBOS is already launched in this process: an in-process DBOS trial needs the singleton for itself');
  executorHooks.targetUrl = o.targetUrl ?? '';
  executorHooks.onSettled = onSettled;
  configureDbos({ databaseUrl: o.databaseUrl, executorId: 'bench-1', poolSize: o.poolSize });
  return {
    async launch() {
      await DBOS.launch();
      return { spreadMs: 0 };
    },
    async stop() {
      await DBOS.shutdown({ workflowCompletionTimeoutMS: 15_000 });
      executorHooks.onSettled = () => undefined;
    },
    async abort() {
      await DBOS.shutdown().catch(() => undefined);
      executorHooks.onSettled = () => undefined;
    },
  };
}

async function childExecutors(o: DbosTrialOptions, n: number, onSettled: (ok: boolean) => void): Promise<Executors> {
  const ts = __filename.endsWith('.ts');
  const entry = path.join(__dirname, ts ? 'dbos-child.ts' : 'dbos-child.js');
  const execArgv = ts && !process.execArgv.some((a) => a.includes('ts-node')) ? [...process.execArgv, '-r', 'ts-node/register'] : process.execArgv;
  const children: ChildProcess[] = [];
  const waiters = new Map<ChildProcess, Map<string, (m: Record<string, unknown>) => void>>();
  const failures: string[] = [];
  const expect = (c: ChildProcess, type: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      if (failures.length) return reject(new Error(failures.join('\n')));
      waiters.get(c)!.set(type, resolve);
      c.once('exit', (code) => reject(new Error(`DBOS executor child exited (${code}) while waiting for '${type}': ${failures.join('\n')}`)));
    });
  for (let i = 0; i < n; i++) {
    const c = fork(entry, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true' } });
    children.push(c);
    waiters.set(c, new Map());
    c.on('message', (m: Record<string, unknown>) => {
      if (m.type === 'settled') onSettled(Boolean(m.ok));
      else if (m.type === 'error') failures.push(String(m.message));
      const w = waiters.get(c)!.get(String(m.type));
      if (w) {
        waiters.get(c)!.delete(String(m.type));
        w(m);
      }
    });
  }
  const kill = async (): Promise<void> => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  try {
    await Promise.all(
      children.map((c, i) => {
        const ready = expect(c, 'ready');
        c.send({ type: 'config', databaseUrl: o.databaseUrl, executorId: `bench-${i + 1}`, targetUrl: o.targetUrl, poolSize: o.poolSize });
        return ready;
      }),
    );
  } catch (e) {
    await kill();
    throw e;
  }
  return {
    async launch() {
      const launched = children.map((c) => expect(c, 'launched'));
      for (const c of children) c.send({ type: 'launch' });
      const at = (await Promise.all(launched)).map((m) => Number(m.at));
      return { spreadMs: Math.max(...at) - Math.min(...at) };
    },
    async stop() {
      const exits = children.map((c) => new Promise<void>((resolve) => (c.exitCode !== null ? resolve() : c.once('exit', () => resolve()))));
      for (const c of children) if (c.connected) c.send({ type: 'stop' });
      await Promise.race([Promise.all(exits), sleep(30_000)]);
      await kill();
    },
    abort: kill,
  };
}

export async function runDbosTrial(opts: DbosTrialOptions): Promise<TrialResult> {
  const o = { concurrency: 8, executors: 1, pollMs: 10, deadlineMs: 120_000, ...opts };
  if (o.variant === 'http' && !o.targetUrl) throw new Error('the http variant needs targetUrl');
  if (o.inline && o.variant !== 'pure') throw new Error('inline is a pure-variant option');
  const workflowName = o.inline ? DBOS_WORKFLOW_NAMES.pureInline : DBOS_WORKFLOW_NAMES[o.variant];
  // workflow IDs (and so the http step's Idempotency-Keys) unique across trials on one server
  const idPrefix = `${databaseName(o.databaseUrl)}-${o.variant}`;
  const counters = await PgCounters.open(o.databaseUrl, o.adminUrl);
  let executors: Executors | null = null;
  try {
    // ── setup: schema, queue, the enqueued workflows (not measured, not counted)
    await DBOS.migrate(o.databaseUrl);
    const client = await DBOSClient.create({ systemDatabaseUrl: o.databaseUrl, applicationName: DBOS_APP_NAME, logger: silentLogger });
    try {
      await client.registerQueue(DBOS_QUEUE, { workerConcurrency: o.concurrency, minPollingIntervalMs: o.pollMs });
      let next = 0;
      const enqueue = async (): Promise<void> => {
        for (let i = next++; i < o.workflows; i = next++) {
          await client.enqueue({ queueName: DBOS_QUEUE, workflowName, appVersion: DBOS_APP_VERSION, workflowID: `${idPrefix}-${i}` }, inputFor(i));
        }
      };
      await Promise.all(Array.from({ length: ENQUEUE_PARALLEL }, enqueue));
    } finally {
      await client.destroy();
    }

    // ── execution
    let settled = 0;
    let bodiesFailed = 0;
    let onAll = (): void => undefined;
    const allSettled = new Promise<void>((resolve) => (onAll = resolve));
    const onSettled = (ok: boolean): void => {
      settled++;
      if (!ok) bodiesFailed++;
      if (settled >= o.workflows) onAll();
    };
    if (o.workflows === 0) onAll();
    executors = o.executors <= 1 ? inProcessExecutor(o, onSettled) : await childExecutors(o, o.executors, onSettled);
    const before = await counters.snapshot();
    const postmaster = await counters.postmaster();
    const cpuBefore = process.cpuUsage();
    const pgCpuBefore = postgresCpuMs(postmaster);
    const { spreadMs } = await executors.launch();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([allSettled.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), o.deadlineMs)))]);
    clearTimeout(timer);
    await executors.stop();
    executors = null;
    const cpu = process.cpuUsage(cpuBefore);
    const pgCpuMs = postgresCpuMs(postmaster) - pgCpuBefore;
    const after = await counters.snapshot();

    // ── the clock and the outcome, from DBOS's own rows (read after the counters)
    const c = new Client({ connectionString: o.databaseUrl });
    await c.connect();
    let row: Record<string, string | null>;
    try {
      ({
        rows: [row],
      } = await c.query(
        `SELECT count(*) FILTER (WHERE status = 'SUCCESS')::int AS succeeded,
                count(*) FILTER (WHERE status NOT IN ('SUCCESS', 'ENQUEUED', 'PENDING'))::int AS failed,
                min(started_at_epoch_ms)::text AS first_start, max(completed_at)::text AS last_completion,
                count(DISTINCT executor_id)::int AS executors_used
         FROM dbos.workflow_status WHERE name = $1`,
        [workflowName],
      ));
    } finally {
      await c.end();
    }
    const succeeded = Number(row.succeeded);
    const ms = row.first_start && row.last_completion ? Number(row.last_completion) - Number(row.first_start) : NaN;
    const commits = after.commits - before.commits;
    const statements = after.statements - before.statements;
    const n = Math.max(1, succeeded);
    return {
      contender: 'dbos',
      variant: o.variant,
      workflows: o.workflows,
      ms: round(ms, 1),
      wfPerSec: round(succeeded / (ms / 1000), 1),
      commits,
      statements,
      commitsPerWf: round(commits / n, 2),
      statementsPerWf: round(statements / n, 2),
      succeeded,
      failed: Number(row.failed),
      statementsSource: counters.statementsAvailable ? 'pg_stat_statements' : 'unavailable',
      clock: 'database: max(completed_at) − min(started_at_epoch_ms) of dbos.workflow_status',
      concurrency: o.concurrency,
      executors: o.executors,
      topStatements: counters.statementsAvailable ? PgCounters.top(before, after, n) : [],
      details: {
        queue: { name: DBOS_QUEUE, workerConcurrency: o.concurrency, minPollingIntervalMs: o.pollMs },
        workflow: workflowName,
        executorsUsed: Number(row.executors_used),
        launchSpreadMs: spreadMs,
        /** CPU this process used from launch to shutdown (the executor itself only when executors = 1) */
        nodeCpuMs: round((cpu.user + cpu.system) / 1000, 0),
        pgCpuMs: round(pgCpuMs, 0),
        bodiesFailed,
        timedOut,
        countersSettled: before.settled && after.settled,
        dbosVersion: dbosVersion(),
      },
    };
  } finally {
    if (executors) await executors.abort();
    await counters.close();
  }
}

export function dbosVersion(): string {
  try {
    // the package does not export its package.json: find it from its entry point (dist/src/index.js)
    const file = path.join(path.dirname(require.resolve('@dbos-inc/dbos-sdk')), '..', '..', 'package.json');
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
