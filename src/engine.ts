import { holdingOwnJournal, type CheckpointIndex } from './integrity/checkpoints';
import type { Pool } from 'pg';
import { migrate } from './db/migrate';
import { openEnginePool, openPool } from './db/pool';
import type { EngineFlags } from './domain/decider';
import { Scheduler } from './intake/scheduler';
import { startIntake } from './intake/server';
import type { Keyring } from './security/keyring';
import { Clock, systemClock } from './worker/clock';
import { Handover } from './worker/handover';
import { DEFAULT_CONCURRENCY, HANDED_PER_SLOT, Worker } from './worker/worker';

/*
 * The whole engine in one process: a pool, the schema, the webhook intake and
 * N workers. The CLI's `up`, the integration tests and the bench start it here.
 */

export interface EngineOptions {
  databaseUrl: string;
  /** the keys the database never holds: sealed secrets, project tokens */
  keyring: Keyring;
  /** in-process workers (default 2; 0 = intake only) */
  workers?: number;
  clock?: Clock;
  /** 0 (default) picks a free port */
  intakePort?: number;
  intakeHost?: string;
  pollMs?: number;
  /** runs each worker advances at once (default 4) */
  concurrency?: number;
  /** connections to Postgres, shared by the workers and the intake (default 4 a worker and 4 for the intake; src/worker/main.ts says why) */
  poolSize?: number;
  flags?: EngineFlags;
  bodyLimitBytes?: number;
  signatureToleranceSec?: number;
  /** a file outside the database every worker appends each head it commits to (a rolling checkpoint) */
  headJournal?: string;
  /** heads kept outside the database, read at start: a run rolled back behind one of them is refused */
  checkpoints?: CheckpointIndex | null;
  log?: (entry: Record<string, unknown>) => void;
  /** start the runs of workflows with a `schedule` at their ticks (src/intake/scheduler.ts); `meshhook up` does */
  schedules?: boolean;
}

export interface Engine {
  pool: Pool;
  intake: { url: string; port: number; close(): Promise<void> };
  workers: Worker[];
  /** stop intake, then workers (in-flight batches finish), then the pool; idempotent */
  stop(): Promise<void>;
}

export async function startEngine(opts: EngineOptions): Promise<Engine> {
  const log = opts.log ?? (() => undefined);
  const clock = opts.clock ?? systemClock;
  // migrations run as the URL's own role (the owner); everything after as meshhook_engine
  const owner = openPool(opts.databaseUrl, { max: 1 });
  try {
    const applied = await migrate(owner, { seal: opts.keyring.chainKey(), keys: opts.keyring.chainKeys() });
    if (applied.length) log({ level: 'info', msg: 'migrations applied', migrations: applied });
  } finally {
    await owner.end().catch(() => undefined);
  }
  const pool = openEnginePool(opts.databaseUrl, { max: opts.poolSize ?? 4 * ((opts.workers ?? 2) + 1) }, (e) =>
    log({ level: 'warn', msg: 'idle database connection lost', error: e.message }),
  );
  const workers: Worker[] = [];
  // runs the intake hands to the workers, shared by them: any of them with a free slot takes the next
  const handover = new Handover((opts.workers ?? 2) * (opts.concurrency ?? DEFAULT_CONCURRENCY) * HANDED_PER_SLOT);
  // read once for every worker of the process: the files given, and the journal the workers write
  const checkpoints = (opts.workers ?? 2) > 0 ? holdingOwnJournal(opts.checkpoints, opts.headJournal, opts.keyring.chainKeys()) : null;
  for (const problem of checkpoints?.problems ?? []) log({ level: 'warn', msg: 'checkpoint file', problem });
  try {
    for (let i = 0; i < (opts.workers ?? 2); i++) {
      workers.push(
        new Worker({
          pool,
          lockConnection: { connectionString: opts.databaseUrl },
          clock,
          pollMs: opts.pollMs,
          concurrency: opts.concurrency,
          id: `worker-${process.pid}-${i + 1}`,
          keyring: opts.keyring,
          headJournal: opts.headJournal,
          checkpoints,
          handover,
          log,
        }),
      );
    }
    const intake = await startIntake({
      pool,
      keyring: opts.keyring,
      flags: opts.flags,
      clock,
      port: opts.intakePort ?? 0,
      host: opts.intakeHost,
      bodyLimitBytes: opts.bodyLimitBytes,
      signatureToleranceSec: opts.signatureToleranceSec,
      headJournal: opts.headJournal,
      log,
      // a new run is carried on at once by a worker with a free slot, from the state the intake committed
      // (Worker.adopt); when none has one, a worker looks for it now instead of at the next poll
      onRunStarted: (_runId, started) => {
        if (workers.length === 0) return;
        // the worker with the most free slots (the first of them from a random start), to wake for it
        const first = Math.floor(Math.random() * workers.length);
        let w = workers[first];
        for (let i = 1; i < workers.length; i++) if (workers[(first + i) % workers.length].freeSlots > w.freeSlots) w = workers[(first + i) % workers.length];
        if (!started || !w.adopt(started)) w.poke();
      },
    });
    for (const w of workers) w.start();
    const scheduler = opts.schedules
      ? new Scheduler({ pool, keyring: opts.keyring, clock, flags: opts.flags, log, onRunStarted: () => workers[Math.floor(Math.random() * workers.length)]?.poke() })
      : null;
    scheduler?.start();
    let stopped: Promise<void> | null = null;
    return {
      pool,
      intake,
      workers,
      stop: () =>
        (stopped ??= (async () => {
          await scheduler?.stop();
          await intake.close().catch((e: Error) => log({ level: 'warn', msg: 'intake close failed', error: e.message }));
          await Promise.allSettled(workers.map((w) => w.stop()));
          await pool.end().catch(() => undefined);
        })()),
    };
  } catch (e) {
    await Promise.allSettled(workers.map((w) => w.stop()));
    await pool.end().catch(() => undefined);
    throw e;
  }
}
