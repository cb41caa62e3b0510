/*
 * A worker as its own process: `node dist/worker/main.js`. Configured by env
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

const log = (entry: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify({ at: new Date().toISOString(), pid: process.pid, ...entry }) + '\n');
};

const DEFAULT_POOL_MAX = 4;

function intEnv(name: string, fallback: number | undefined): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, not "${raw}"`);
  return n;
}

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set');
  const clock = new ControlledClock(intEnv('MESHHOOK_CLOCK_OFFSET_MS', 0));
  const intakePort = intEnv('MESHHOOK_INTAKE_PORT', undefined);
  // a small pool: a worker's runs mostly wait on their targets, not on Postgres, and every connection costs
  // the server a process, a login and cold caches (about 13 ms and 10 ms more for its first calls here).
  // Measured (npm run bench:recovery, three runs against two): fresh workers with 4 connections each had
  // every run moving again in 0.47–0.56 s against 0.68–0.86 s with 10, and working time with the crash
  // ÷ without fell from 1.30–1.32× to 1.20–1.27×. The intake, when in this process, gets 4 more.
  const pool = openEnginePool(url, { max: intEnv('MESHHOOK_POOL_MAX', intakePort === undefined ? DEFAULT_POOL_MAX : 2 * DEFAULT_POOL_MAX) }, (e) => log({ level: 'warn', msg: 'idle database connection lost', error: e.message }));
  const failpoints = Failpoints.fromEnv();
  const keyring = Keyring.required();
  // heads kept outside the database (MESHHOOK_CHECKPOINTS=file,file: journals, checkpoint files): a run rolled
  // back behind one of them is refused rather than carried on from the earlier state
  const checkpointFiles = (process.env.MESHHOOK_CHECKPOINTS ?? '').split(',').filter(Boolean);
  const checkpoints = holdingOwnJournal(
    checkpointFiles.length ? CheckpointIndex.load(checkpointFiles.filter((f) => existsSync(f)), keyring.chainKeys()) : null,
    process.env.MESHHOOK_HEAD_JOURNAL || undefined,
    keyring.chainKeys(),
  );
  for (const problem of checkpoints?.problems ?? []) log({ level: 'warn', msg: 'checkpoint file', problem });
  const worker = new Worker({
    pool,
    lockConnection: { connectionString: url },
    clock,
    failpoints,
    keyring,
    headJournal: process.env.MESHHOOK_HEAD_JOURNAL || undefined,
    checkpoints,
    id: process.env.MESHHOOK_WORKER_ID || undefined,
    pollMs: intEnv('MESHHOOK_POLL_MS', DEFAULT_POLL_MS),
    concurrency: intEnv('MESHHOOK_CONCURRENCY', undefined),
    ignoreLocks: process.env.MESHHOOK_UNSAFE_IGNORE_LOCKS === '1',
    groupCommit: process.env.MESHHOOK_GROUP_COMMIT !== '0',
    log,
  });

  // the intake in the worker's own process: one process to kill takes both down, as in `meshhook up`,
  // and the start of a run passes the same failpoints as the worker's steps
  const intake =
    intakePort === undefined
      ? null
      : // loaded only when asked for: a plain worker starts without the HTTP server's modules
        await (require('../intake/server') as typeof import('../intake/server')).startIntake({ pool, keyring, clock, port: intakePort, failpoints, log, headJournal: process.env.MESHHOOK_HEAD_JOURNAL || undefined, onRunStarted: () => worker.poke() });

  let stopping: Promise<void> | null = null;
  const stop = (why: string): Promise<void> =>
    (stopping ??= (async () => {
      log({ level: 'info', worker: worker.id, msg: 'stopping', why });
      await intake?.close().catch(() => undefined);
      await worker.stop();
      await pool.end().catch(() => undefined);
      log({ level: 'info', worker: worker.id, msg: 'stopped', stats: worker.stats });
      process.disconnect?.();
      process.exit(0);
    })());

  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('message', (m: unknown) => {
    const msg = m as { type?: string; offsetMs?: number };
    if (msg?.type === 'clock' && typeof msg.offsetMs === 'number') {
      clock.setOffset(msg.offsetMs);
      log({ level: 'info', worker: worker.id, msg: 'clock moved', offsetMs: clock.offset });
      worker.poke();
    } else if (msg?.type === 'stop') {
      void stop('stop message');
    }
  });
  // the parent going away must not leave an orphan polling forever
  process.on('disconnect', () => void stop('parent disconnected'));

  worker.start();
  log({ level: 'info', worker: worker.id, msg: 'worker running', pollMs: intEnv('MESHHOOK_POLL_MS', DEFAULT_POLL_MS), intake: intake?.url });
  process.send?.({ type: 'ready', pid: process.pid, workerId: worker.id, intakeUrl: intake?.url });
}

main().catch((e: Error) => {
  log({ level: 'error', msg: 'worker failed to start', error: e.message });
  process.exit(1);
});
