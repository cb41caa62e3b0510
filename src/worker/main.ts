/*
 * A worker as its own process: `node dist/worker/main.js`, or `meshhook worker` (the same worker, started by
 * the CLI with its flags and keys: startWorkerProcess below). Configured by env
 * (DATABASE_URL, MESHHOOK_WORKER_ID, MESHHOOK_POLL_MS, MESHHOOK_CONCURRENCY, MESHHOOK_POOL_MAX,
 * MESHHOOK_CLOCK_OFFSET_MS, MESHHOOK_GROUP_COMMIT=0 (one transaction per batch), MESHHOOK_FAILPOINTS, MESHHOOK_FAILPOINT_LOG,
 * MESHHOOK_HEAD_JOURNAL (the journal it writes, and holds runs to at start), MESHHOOK_CHECKPOINTS (more
 * journals and checkpoint files to hold runs to), and
 * MESHHOOK_INTAKE_PORT to serve the webhook intake from the same process) and
 * IPC messages ({ type: 'clock', offsetMs } | { type: 'stop' }). JSON log
 * lines on stdout. SIGTERM, SIGINT or 'stop' end it gracefully with exit 0.
 */
// first: loads pg without its probe for a Cloudflare runtime (see the file)
import '../db/load-pg';
import { openEnginePool } from '../db/pool';
import { Failpoints } from '../faults/failpoints';
import { Keyring } from '../security/keyring';
import { CheckpointIndex, holdingOwnJournal } from '../integrity/checkpoints';
import { existsSync } from 'node:fs';
import { ControlledClock } from './clock';
import { DEFAULT_POLL_MS, Worker } from './worker';

type Log = (entry: Record<string, unknown>) => void;

const jsonLog: Log = (entry) => {
  process.stdout.write(JSON.stringify({ at: new Date().toISOString(), pid: process.pid, ...entry }) + '\n');
};

export const DEFAULT_POOL_MAX = 4;

function intEnv(env: NodeJS.ProcessEnv, name: string, fallback: number | undefined): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, not "${raw}"`);
  return n;
}

/** Everything a worker process runs with; workerSettingsFromEnv reads them as the comment at the top says. */
export interface WorkerSettings {
  databaseUrl: string;
  keyring: Keyring;
  /** default: one the Worker makes up */
  id?: string;
  pollMs: number;
  /** runs in flight at once (default: the Worker's, 4) */
  concurrency?: number;
  /** connections to Postgres (default 4, 8 with the intake in the process) */
  poolMax?: number;
  clockOffsetMs: number;
  /** serve the webhook intake from this process too */
  intakePort?: number;
  headJournal?: string;
  checkpointFiles: string[];
  failpoints: Failpoints;
  ignoreLocks: boolean;
  groupCommit: boolean;
  log: Log;
}

/** The settings from env; what `given` holds (the CLI's flags, its keys and database) wins. */
export function workerSettingsFromEnv(env: NodeJS.ProcessEnv, given: Partial<WorkerSettings> = {}): WorkerSettings {
  const databaseUrl = given.databaseUrl ?? env.DATABASE_URL;
  if (!databaseUrl) throw new Error('DATABASE_URL is not set');
  return {
    databaseUrl,
    keyring: given.keyring ?? Keyring.required(env),
    id: given.id ?? (env.MESHHOOK_WORKER_ID || undefined),
    pollMs: given.pollMs ?? intEnv(env, 'MESHHOOK_POLL_MS', DEFAULT_POLL_MS)!,
    concurrency: given.concurrency ?? intEnv(env, 'MESHHOOK_CONCURRENCY', undefined),
    poolMax: given.poolMax ?? intEnv(env, 'MESHHOOK_POOL_MAX', undefined),
    clockOffsetMs: given.clockOffsetMs ?? intEnv(env, 'MESHHOOK_CLOCK_OFFSET_MS', 0)!,
    intakePort: given.intakePort ?? intEnv(env, 'MESHHOOK_INTAKE_PORT', undefined),
    headJournal: given.headJournal ?? (env.MESHHOOK_HEAD_JOURNAL || undefined),
    checkpointFiles: given.checkpointFiles ?? (env.MESHHOOK_CHECKPOINTS ?? '').split(',').filter(Boolean),
    failpoints: given.failpoints ?? Failpoints.fromEnv(env),
    ignoreLocks: given.ignoreLocks ?? env.MESHHOOK_UNSAFE_IGNORE_LOCKS === '1',
    groupCommit: given.groupCommit ?? env.MESHHOOK_GROUP_COMMIT !== '0',
    log: given.log ?? jsonLog,
  };
}

export interface WorkerProcess {
  worker: Worker;
  clock: ControlledClock;
  /** the intake's URL when this process serves it */
  intakeUrl?: string;
  /** intake, then the worker (its batches in flight commit), then the pool; idempotent, never exits the process */
  stop(why: string): Promise<void>;
}

/** Start one worker (and the intake, when asked) in this process. */
export async function startWorkerProcess(s: WorkerSettings): Promise<WorkerProcess> {
  const { log } = s;
  const clock = new ControlledClock(s.clockOffsetMs);
  // a small pool: a worker's runs mostly wait on their targets, not on Postgres, and every connection costs
  // the server a process, a login and cold caches (about 13 ms and 10 ms more for its first calls here).
  // Measured (npm run bench:recovery, three runs against two): fresh workers with 4 connections each had
  // every run moving again in 0.47–0.56 s against 0.68–0.86 s with 10, and working time with the crash
  // ÷ without fell from 1.30–1.32× to 1.20–1.27×. The intake, when in this process, gets 4 more.
  const pool = openEnginePool(s.databaseUrl, { max: s.poolMax ?? (s.intakePort === undefined ? DEFAULT_POOL_MAX : 2 * DEFAULT_POOL_MAX) }, (e) =>
    log({ level: 'warn', msg: 'idle database connection lost', error: e.message }),
  );
  const keyring = s.keyring;
  // heads kept outside the database (MESHHOOK_CHECKPOINTS=file,file: journals, checkpoint files): a run rolled
  // back behind one of them is refused rather than carried on from the earlier state
  const checkpoints = holdingOwnJournal(
    s.checkpointFiles.length ? CheckpointIndex.load(s.checkpointFiles.filter((f) => existsSync(f)), keyring.chainKeys()) : null,
    s.headJournal,
    keyring.chainKeys(),
  );
  for (const problem of checkpoints?.problems ?? []) log({ level: 'warn', msg: 'checkpoint file', problem });
  const worker = new Worker({
    pool,
    lockConnection: { connectionString: s.databaseUrl },
    clock,
    failpoints: s.failpoints,
    keyring,
    headJournal: s.headJournal,
    checkpoints,
    id: s.id,
    pollMs: s.pollMs,
    concurrency: s.concurrency,
    ignoreLocks: s.ignoreLocks,
    groupCommit: s.groupCommit,
    log,
  });

  // the intake in the worker's own process: one process to kill takes both down, as in `meshhook up`,
  // and the start of a run passes the same failpoints as the worker's steps
  let intake;
  try {
    intake =
      s.intakePort === undefined
        ? null
        : // loaded only when asked for: a plain worker starts without the HTTP server's modules
          await (require('../intake/server') as typeof import('../intake/server')).startIntake({
            pool,
            keyring,
            clock,
            port: s.intakePort,
            failpoints: s.failpoints,
            log,
            headJournal: s.headJournal,
            onRunStarted: (_runId, started) => {
              if (!started || !worker.adopt(started)) worker.poke();
            },
          });
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw e;
  }

  let stopping: Promise<void> | null = null;
  const stop = (why: string): Promise<void> =>
    (stopping ??= (async () => {
      log({ level: 'info', worker: worker.id, msg: 'stopping', why });
      await intake?.close().catch(() => undefined);
      await worker.stop();
      await pool.end().catch(() => undefined);
      log({ level: 'info', worker: worker.id, msg: 'stopped', stats: worker.stats });
    })());

  worker.start();
  log({ level: 'info', worker: worker.id, msg: 'worker running', pollMs: s.pollMs, concurrency: s.concurrency, intake: intake?.url });
  return { worker, clock, intakeUrl: intake?.url, stop };
}

async function main(): Promise<void> {
  // the handlers first: a signal while starting ends the start gracefully too, as it did before
  let running: WorkerProcess | null = null;
  let stopAsked: string | null = null;
  const stop = (why: string): void => {
    if (!running) {
      stopAsked ??= why;
      return;
    }
    void running.stop(why).then(() => {
      process.disconnect?.();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('message', (m: unknown) => {
    const msg = m as { type?: string; offsetMs?: number };
    if (msg?.type === 'clock' && typeof msg.offsetMs === 'number' && running) {
      running.clock.setOffset(msg.offsetMs);
      jsonLog({ level: 'info', worker: running.worker.id, msg: 'clock moved', offsetMs: running.clock.offset });
      running.worker.poke();
    } else if (msg?.type === 'stop') {
      stop('stop message');
    }
  });
  // the parent going away must not leave an orphan polling forever
  process.on('disconnect', () => stop('parent disconnected'));

  running = await startWorkerProcess(workerSettingsFromEnv(process.env));
  if (stopAsked) return stop(stopAsked);
  process.send?.({ type: 'ready', pid: process.pid, workerId: running.worker.id, intakeUrl: running.intakeUrl });
}

// run as a program (node dist/worker/main.js); `meshhook worker` imports startWorkerProcess instead
if (require.main === module) {
  main().catch((e: Error) => {
    jsonLog({ level: 'error', msg: 'worker failed to start', error: e.message });
    process.exit(1);
  });
}
