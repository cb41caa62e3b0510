/*
 * npm run chaos -- --seed N --minutes M
 *
 * The engine tried from outside, as an operator would break it: the real
 * `meshhook up` (embedded Postgres, intake, in-process workers) in its own
 * process group, signed webhooks flowing through the real intake at a steady
 * rate, and at random times (from the seed) one of
 *   - SIGKILL of the whole process group (node and postmaster die together),
 *   - SIGKILL of the node process only (the postmaster is orphaned),
 *   - SIGKILL of the postmaster (then the operator stops `up` with SIGTERM),
 *   - SIGKILL of the postmaster, left to `up`, which must start it again itself,
 * each followed by `up` again on the same data directory. The order service the
 * workflow calls honours Idempotency-Key like Stripe (a known key with other
 * bytes is refused) and now and then answers 503 so retries happen under fire.
 * A sender retries every unacknowledged delivery with the same id and bytes, as
 * a webhook provider does.
 *
 * When the time is up the kills stop, the backlog drains, and every invariant is
 * checked: one run per acknowledged delivery and no other run, every run
 * finished and succeeded (none stuck), one effect per idempotency key, every
 * attempt under a key with identical bytes, `meshhook verify --all` and
 * `meshhook rebuild` clean, and a last Ctrl-C leaving no process or state
 * behind. It prints one line of figures and exits 1 when anything is off.
 * `--plant-duplicates` shows the check failing: the order service ignores keys. `--plant-stale-send` shows the
 * stale-send check failing: once the runs are done, one run's recorded request is sent again, key and bytes
 * unchanged, as a worker held up past its run's answer would.
 *
 * `--topology split|mixed` adds separate `meshhook worker` processes (split: `up --workers 0` beside them; mixed:
 * up's in-process workers too, so runs its intake hands over race with another process's claims) and the faults
 * that go with them: a worker process SIGKILLed, SIGSTOPped past every timeout (alone, or across a database
 * crash), up's node killed; `--after-ack` and `startup` kill up right after a 202 or while it starts; `--only`
 * names the faults; `--delay-step` adds a timer and call timeouts; `--journals` head journals held to at start.
 * A request reaching the order service after its run recorded the answer counts as a stale send.
 * Runs the built CLI: `npm run build` first (npm run chaos does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'pg';
import { isAlive, postmasterPidIn } from '../src/db/postgres';
import { idempotencyKeyFor } from '../src/domain/decider';
import { deliver } from '../src/intake/sign';
import { TargetService, type RecordedRequest } from '../support/target-service';

const BIN = path.resolve(__dirname, '../bin/meshhook.js');
const PROJECT = 'chaos';
const WORKFLOW = 'order-sync';

const { values: opts } = parseArgs({
  options: {
    seed: { type: 'string', default: '1' },
    minutes: { type: 'string', default: '1' },
    rate: { type: 'string', default: '20' },
    workers: { type: 'string', default: '2' },
    // who runs the workers: 'up' (its in-process workers only), 'split' (`up --workers 0`, the intake only, and
    // --worker-processes separate `meshhook worker`s), 'mixed' (up's in-process workers and the separate ones, so a
    // run up's intake hands to its own workers races with another process's claims)
    topology: { type: 'string', default: 'up' },
    'worker-processes': { type: 'string' },
    // some kills land right after the intake answered 202 (up's node process or whole group, at once)
    'after-ack': { type: 'boolean', default: false },
    // a delay step before the call, and a call timeout the slow answers sometimes exceed
    'delay-step': { type: 'boolean', default: false },
    // each process keeps a head journal and holds runs to every process's journal at start; verify reads them all
    journals: { type: 'boolean', default: false },
    // only these faults (comma-separated of worker, intake, startup, pause, pause-db, group, node, postmaster, database, after-ack,
    // term-kill, twice, second-up, db-at-ack, worker-term, cut)
    only: { type: 'string' },
    'pin-pg-port': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    // shows the check can fail: the order service stops honouring Idempotency-Key, so a call
    // repeated after a kill becomes a second order and the run must end in failure
    'plant-duplicates': { type: 'boolean', default: false },
    'plant-stale-send': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(
    'usage: npm run chaos -- [--seed N] [--minutes M] [--rate webhooks/s] [--workers n] [--topology up|split|mixed] [--worker-processes n] [--after-ack] [--delay-step] [--journals] [--only fault,…] [--pin-pg-port] [--keep] [--plant-duplicates] [--plant-stale-send]',
  );
  process.exit(0);
}
const seed = Number(opts.seed);
const minutes = Number(opts.minutes);
const rate = Number(opts.rate);
const topology = opts.topology as 'up' | 'split' | 'mixed';
const workers = topology === 'split' ? 0 : Number(opts.workers);
const workerProcesses = topology === 'up' ? 0 : Number(opts['worker-processes'] ?? (topology === 'split' ? 2 : 1));
if (![seed, minutes, rate, workers, workerProcesses].every((n) => Number.isFinite(n) && n >= 0) || rate === 0) {
  console.error('--seed, --minutes, --rate, --workers and --worker-processes take non-negative numbers (rate > 0)');
  process.exit(2);
}
if (!['up', 'split', 'mixed'].includes(topology) || (topology !== 'up' && workerProcesses === 0)) {
  console.error('--topology is up, split or mixed (split and mixed need --worker-processes > 0)');
  process.exit(2);
}

/** mulberry32: the same seed gives the same kinds, gaps and hiccups */
function prng(s: number): () => number {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(seed);
const between = (lo: number, hi: number) => lo + random() * (hi - lo);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const home = mkdtempSync(path.join(os.tmpdir(), `meshhook-chaos-${seed}-`));
const say = (line: string) => console.log(`[chaos ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${line}`);
const t0 = Date.now();

// ───── the `meshhook up` under test

interface Up {
  child: ChildProcess;
  exited: Promise<number | null>;
  logFile: string;
  intakeUrl: string;
  databaseUrl: string;
}
let current: Up | null = null;
let starts = 0;
/** the embedded Postgres keeps its port across restarts of up when worker processes hold its URL */
let pgPort = 0;
const failedStarts: string[] = [];

function readState(): { pid?: number; intakeUrl?: string; databaseUrl?: string } {
  try {
    return JSON.parse(readFileSync(path.join(home, 'state.json'), 'utf8'));
  } catch {
    return {};
  }
}

const journalFiles = (): string[] => (opts.journals ? ['up', ...Array.from({ length: workerProcesses }, (_, i) => `worker-${i}`)].map((n) => path.join(home, `journal-${n}.jsonl`)) : []);
function journalEnv(who: string): Record<string, string> {
  if (!opts.journals) return {};
  for (const f of journalFiles()) if (!existsSync(f)) writeFileSync(f, '', { mode: 0o600 });
  return { MESHHOOK_HEAD_JOURNAL: path.join(home, `journal-${who}.jsonl`), MESHHOOK_CHECKPOINTS: journalFiles().join(',') };
}

/** startups killed on purpose (the 'startup' fault): the start that many milliseconds in is SIGKILLed, node or group */
let killStartAfter: { ms: number; group: boolean } | null = null;
let startupKills = 0;

async function startUp(): Promise<Up> {
  for (let attempt = 1; ; attempt++) {
    starts++;
    const logFile = path.join(home, `up-${starts}.log`);
    const log = createWriteStream(logFile);
    const pgPortArgs = pgPort ? ['--pg-port', String(pgPort)] : [];
    const child = spawn(process.execPath, [BIN, 'up', '--data-dir', home, '--port', '0', '--realtime-port', '0', '--workers', String(workers), ...pgPortArgs], {
      env: { ...process.env, DATABASE_URL: '', MESHHOOK_HOME: home, ...journalEnv('up') },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so the whole group can be killed at once
    });
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let code: number | null | undefined;
    void exited.then((c) => (code = c));
    if (killStartAfter) {
      const k = killStartAfter;
      killStartAfter = null;
      await sleep(k.ms);
      if (code === undefined) {
        process.kill(k.group ? -child.pid! : child.pid!, 'SIGKILL');
        startupKills++;
        await exited;
        say(`killed up (${k.group ? 'whole group' : 'node'}) ${k.ms} ms into its start; starting again`);
        attempt--;
        continue;
      }
    }
    const deadline = Date.now() + 60_000;
    while (code === undefined && Date.now() < deadline) {
      const s = readState();
      if (s.pid === child.pid && s.intakeUrl && s.databaseUrl) return { child, exited, logFile, intakeUrl: s.intakeUrl, databaseUrl: s.databaseUrl };
      await sleep(50);
    }
    if (code === undefined) process.kill(-child.pid!, 'SIGKILL');
    await exited;
    const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
    failedStarts.push(`start ${starts}: ${code === undefined ? 'not up within 60 s' : `exited ${code}`}: ${tail}`);
    say(`meshhook up failed to start (${failedStarts[failedStarts.length - 1]})`);
    if (attempt === 3) throw new Error('meshhook up failed to start three times in a row on the same data directory');
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

const postmasterPid = (): number | null => postmasterPidIn(path.join(home, 'pgdata'));

type KillKind = 'group' | 'node' | 'postmaster' | 'database';
const kills: Record<KillKind, number> = { group: 0, node: 0, postmaster: 0, database: 0 };

/** one fault, then `up` again on the same data directory (or, for 'database', `up` brings Postgres back itself) */
async function killAndRestart(kind: KillKind): Promise<void> {
  if (kind === 'database') {
    // the postmaster dies under a running `up`, which must start it again on the same data without help
    const up = current!;
    const pm = postmasterPid();
    if (!pm || !isAlive(pm)) throw new Error('no postmaster to kill');
    const said = () => (existsSync(up.logFile) ? readFileSync(up.logFile, 'utf8') : '');
    const backBefore = said().split('Postgres is back').length;
    process.kill(pm, 'SIGKILL');
    kills.database++;
    const deadline = Date.now() + 40_000;
    while (Date.now() < deadline && said().split('Postgres is back').length === backBefore && up.child.exitCode === null) await sleep(100);
    if (said().split('Postgres is back').length > backBefore) {
      say('killed (database); meshhook up started Postgres again');
      return;
    }
    failedStarts.push(`meshhook up did not bring a killed Postgres back within 40 s: ${said().trim().split('\n').slice(-3).join(' | ')}`);
    kind = 'group';
  }
  const up = current!;
  current = null;
  const pid = up.child.pid!;
  if (kind === 'group') process.kill(-pid, 'SIGKILL');
  else if (kind === 'node') process.kill(pid, 'SIGKILL');
  else {
    const pm = postmasterPid();
    if (!pm || !isAlive(pm)) throw new Error('no postmaster to kill');
    process.kill(pm, 'SIGKILL');
    // the operator notices the database is gone and stops `up`
    await sleep(between(200, 1500));
    process.kill(pid, 'SIGTERM');
    const stopped = await Promise.race([up.exited.then(() => true), sleep(20_000).then(() => false)]);
    if (!stopped) {
      failedStarts.push('SIGTERM after a postmaster crash did not stop meshhook up within 20 s');
      process.kill(-pid, 'SIGKILL');
    }
  }
  kills[kind]++;
  await up.exited;
  say(`killed (${kind}); starting again`);
  await sleep(between(0, 1000));
  current = await startUp();
}

// ───── separate `meshhook worker` processes (topologies split and mixed)

interface WorkerProc {
  slot: number;
  child: ChildProcess;
  exited: Promise<number | null>;
  logFile: string;
  /** killed or stopped on purpose: its exit is no finding */
  killed: boolean;
}
const workerProcs: Array<WorkerProc | null> = [];
let workerStarts = 0;
/** worker processes that exited without being killed, with their last lines */
const workerExits: string[] = [];
let stoppingWorkers = false;
const pkills = { worker: 0, intake: 0, pause: 0, 'after-ack': 0, 'term-kill': 0, twice: 0, 'second-up': 0, 'db-at-ack': 0, 'worker-term': 0, cut: 0 };
let pausedMs = 0;

function startWorker(slot: number): WorkerProc {
  workerStarts++;
  const logFile = path.join(home, `worker-${slot}-${workerStarts}.log`);
  const log = createWriteStream(logFile);
  const child = spawn(process.execPath, [BIN, 'worker'], {
    env: { ...process.env, DATABASE_URL: '', MESHHOOK_HOME: home, MESHHOOK_WORKER_ID: `proc-${slot}-${workerStarts}`, ...journalEnv(`worker-${slot}`) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const w: WorkerProc = { slot, child, exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))), logFile, killed: false };
  workerProcs[slot] = w;
  // a worker that ends on its own (it found no database while up was down) is started again, and noted
  void w.exited.then(async (code) => {
    if (w.killed || stoppingWorkers) return;
    const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-2).join(' | ') : '';
    workerExits.push(`worker ${slot} exited ${code} on its own${current ? ' while up was up' : ''}: ${tail}`);
    await sleep(500);
    if (!stoppingWorkers && workerProcs[slot] === w) startWorker(slot);
  });
  return w;
}

async function killWorker(): Promise<void> {
  const slot = Math.floor(random() * workerProcesses);
  const w = workerProcs[slot]!;
  w.killed = true;
  process.kill(w.child.pid!, 'SIGKILL');
  pkills.worker++;
  await w.exited;
  say(`killed worker ${slot}; starting it again`);
  await sleep(between(0, 1000));
  startWorker(slot);
}

/** SIGSTOP a worker process (or up itself) for longer than the call's timeout, then SIGCONT: it must not act on what it knew before */
async function pauseOne(): Promise<void> {
  const pickUp = topology === 'mixed' && random() < 0.4;
  const pid = pickUp ? current!.child.pid! : workerProcs[Math.floor(random() * workerProcesses)]!.child.pid!;
  const ms = Math.round(between(6000, 12000));
  process.kill(pid, 'SIGSTOP');
  pkills.pause++;
  pausedMs += ms;
  say(`stopped ${pickUp ? 'up' : `worker pid ${pid}`} for ${ms} ms`);
  await sleep(ms);
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    /* gone meanwhile */
  }
}

/**
 * SIGSTOP a worker process, kill the postmaster under it (up starts it again), let the other workers take its runs
 * over, then SIGCONT: the woken worker's lock and connections are gone and what it knew is stale
 */
async function pauseAcrossDatabaseCrash(): Promise<void> {
  const w = workerProcs[Math.floor(random() * workerProcesses)]!;
  const pid = w.child.pid!;
  process.kill(pid, 'SIGSTOP');
  const t = Date.now();
  pkills.pause++;
  await sleep(between(100, 1500));
  await killAndRestart('database');
  await sleep(between(3000, 8000));
  pausedMs += Date.now() - t;
  say(`worker pid ${pid} stopped across a database crash for ${Date.now() - t} ms`);
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    /* gone meanwhile */
  }
}

/** the next delivery acknowledged with 202 kills up's node process as soon as the answer is read */
let killOnAck: (() => void) | null = null;
async function killAfterAck(): Promise<void> {
  const up = current!;
  const acked = new Promise<void>((resolve) => (killOnAck = resolve));
  const fired = await Promise.race([acked.then(() => true), sleep(10_000).then(() => false)]);
  killOnAck = null;
  if (!fired) return;
  current = null;
  // node only, or the whole group (Postgres too) as the answer leaves
  const group = random() < 0.5;
  process.kill(group ? -up.child.pid! : up.child.pid!, 'SIGKILL');
  pkills['after-ack']++;
  await up.exited;
  say(`killed up (${group ? 'whole group' : 'node'}) right after a 202; starting again`);
  await sleep(between(0, 500));
  current = await startUp();
}

async function killIntake(): Promise<void> {
  const up = current!;
  current = null;
  process.kill(up.child.pid!, 'SIGKILL');
  pkills.intake++;
  await up.exited;
  say('killed up (node only); starting again');
  await sleep(between(0, 1000));
  current = await startUp();
}

/** SIGTERM to `up` (a clean stop under way: intake closing, batches committing, Postgres stopping), then SIGKILL of the group */
async function termThenKill(): Promise<void> {
  const up = current!;
  current = null;
  const pid = up.child.pid!;
  const ms = Math.round(between(0, 1500));
  process.kill(pid, 'SIGTERM');
  await Promise.race([up.exited, sleep(ms)]);
  const stillUp = up.child.exitCode === null && up.child.signalCode === null;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* the group is gone */
  }
  pkills['term-kill']++;
  await up.exited;
  say(`SIGTERM to up, then SIGKILL of its group ${ms} ms later${stillUp ? ' (still stopping)' : ' (it had stopped)'}; starting again`);
  await sleep(between(0, 500));
  current = await startUp();
}

/** every client connection to the database cut at once (pg_terminate_backend), as a failover or a proxy's restart does */
async function cutConnections(): Promise<void> {
  const db = new Client({ connectionString: current!.databaseUrl });
  try {
    await db.connect();
    const { rows } = await db.query(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type IN ('client backend', 'walsender')`,
    );
    pkills.cut++;
    say(`cut ${rows[0].n} database connections`);
  } catch (e) {
    say(`could not cut connections: ${(e as Error).message}`);
  } finally {
    await db.end().catch(() => undefined);
  }
}

/** SIGTERM to a worker process (it stops claiming, its batches in flight commit), then SIGKILL 0-1.5 s later */
async function termThenKillWorker(): Promise<void> {
  const slot = Math.floor(random() * workerProcesses);
  const w = workerProcs[slot]!;
  w.killed = true;
  const ms = Math.round(between(0, 1500));
  process.kill(w.child.pid!, 'SIGTERM');
  await Promise.race([w.exited, sleep(ms)]);
  try {
    process.kill(w.child.pid!, 'SIGKILL');
  } catch {
    /* it had stopped */
  }
  pkills['worker-term']++;
  await w.exited;
  say(`SIGTERM to worker ${slot}, then SIGKILL ${ms} ms later; starting it again`);
  await sleep(between(0, 1000));
  startWorker(slot);
}

/** killed, started again, and killed again at once (0-300 ms into the new start), then started again */
async function killTwice(): Promise<void> {
  const up = current!;
  current = null;
  const group = random() < 0.5;
  process.kill(group ? -up.child.pid! : up.child.pid!, 'SIGKILL');
  await up.exited;
  pkills.twice++;
  killStartAfter = { ms: Math.round(between(0, 300)), group: random() < 0.5 };
  say(`killed up (${group ? 'whole group' : 'node'}); starting again, to be killed again at once`);
  current = await startUp();
}

/** a second `up` on the same home while the first serves: it must exit 1 and leave the first (and its Postgres) alone */
async function secondUp(): Promise<void> {
  const up = current!;
  if (random() < 0.5) return otherUpOnTheDatabase(up);
  const pm = postmasterPid();
  pkills['second-up']++;
  const out: string[] = [];
  const child = spawn(process.execPath, [BIN, 'up', '--data-dir', home, '--port', '0', '--realtime-port', '0', '--workers', String(workers)], {
    env: { ...process.env, DATABASE_URL: '', MESHHOOK_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout!.on('data', (d) => out.push(String(d)));
  child.stderr!.on('data', (d) => out.push(String(d)));
  const code = await Promise.race([new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c))), sleep(30_000).then(() => 'hung' as const)]);
  if (code === 'hung') {
    process.kill(-child.pid!, 'SIGKILL');
    failedStarts.push(`a second up on the same home did not exit within 30 s: ${out.join('').trim().split('\n').slice(-3).join(' | ')}`);
  } else if (code !== 1) failedStarts.push(`a second up on the same home exited ${code}: ${out.join('').trim().split('\n').slice(-3).join(' | ')}`);
  if (up.child.exitCode !== null) failedStarts.push('the first up exited when a second was started on its home');
  if (pm && postmasterPid() !== pm) failedStarts.push(`the postmaster changed (pid ${pm} -> ${postmasterPid()}) when a second up was started`);
  const s = readState();
  if (s.pid !== up.child.pid) failedStarts.push(`state.json names pid ${s.pid}, not the up that serves (${up.child.pid}), after a second up`);
  say(`a second up on the same home exited ${code}`);
}

/**
 * another `up` with a home of its own on the same database (`--database-url`, the same keys): it migrates (nothing to
 * do) while the first serves, its workers take runs too, and after a few seconds it is SIGKILLed with runs in hand
 */
async function otherUpOnTheDatabase(up: Up): Promise<void> {
  const otherHome = mkdtempSync(path.join(os.tmpdir(), `meshhook-chaos-${seed}-other-`));
  const logFile = path.join(home, `other-up-${pkills['second-up']}.log`);
  const log = createWriteStream(logFile);
  const child = spawn(process.execPath, [BIN, 'up', '--data-dir', otherHome, '--port', '0', '--no-realtime', '--workers', '2', '--database-url', up.databaseUrl], {
    env: { ...process.env, DATABASE_URL: '', MESHHOOK_HOME: otherHome, MESHHOOK_KEY_FILE: path.join(home, 'keyring.json') },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const ms = Math.round(between(500, 6000));
  await Promise.race([exited, sleep(ms)]);
  const early = child.exitCode;
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    /* gone */
  }
  await exited;
  if (early !== null && current === up) failedStarts.push(`another up on the same database exited ${early} by itself: ${readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' | ')}`);
  rmSync(otherHome, { recursive: true, force: true });
  say(`another up (own home, same database) killed ${ms} ms into its life`);
}

/** the postmaster SIGKILLed as the next 202 is read (the intake is acknowledging others meanwhile); up brings it back */
async function killDatabaseAtAck(): Promise<void> {
  const acked = new Promise<void>((resolve) => (killOnAck = resolve));
  const fired = await Promise.race([acked.then(() => true), sleep(10_000).then(() => false)]);
  killOnAck = null;
  if (!fired) return;
  pkills['db-at-ack']++;
  await killAndRestart('database');
}

// ───── the order service and the webhook sender

const target = new TargetService();
let hiccups = 0;
let slowed = 0;
let inFlightAtKills = 0;

/** runs started and not finished: what a kill now interrupts */
async function runsInFlight(): Promise<number> {
  const db = new Client({ connectionString: current!.databaseUrl });
  try {
    await db.connect();
    return Number((await db.query(`SELECT count(*) FROM runs WHERE status IN ('running', 'waiting')`)).rows[0].count);
  } catch {
    return 0;
  } finally {
    await db.end().catch(() => undefined);
  }
}

interface Delivery {
  id: string;
  body: string;
  runId?: string;
}
const deliveries: Delivery[] = [];
const acknowledged = new Map<string, string>();
let secret = '';
let sendAttempts = 0;
const refusedOtherwise: string[] = [];

async function send(d: Delivery): Promise<void> {
  const up = current;
  if (!up) return;
  sendAttempts++;
  try {
    const res = await deliver(up.intakeUrl, PROJECT, WORKFLOW, secret, d.body, { deliveryId: d.id });
    if (res.status === 202 || res.status === 200) {
      const runId = res.body?.runId as string;
      const before = acknowledged.get(d.id);
      if (before && before !== runId) refusedOtherwise.push(`delivery ${d.id} acknowledged as run ${before}, then as ${runId}`);
      acknowledged.set(d.id, runId);
      d.runId = runId;
      if (res.status === 202 && killOnAck) killOnAck();
    } else if (res.status >= 500) {
      // a sender delivers again after any 5xx; only 503 is the right answer while the database is away
      if (res.status !== 503) refusedOtherwise.push(`delivery ${d.id}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    } else {
      refusedOtherwise.push(`delivery ${d.id} refused: HTTP ${res.status} ${JSON.stringify(res.body)}`);
      d.runId = 'refused';
    }
  } catch {
    // connection refused or reset while `up` is down: the sender tries again with the same bytes
  }
}

async function sender(until: () => boolean): Promise<void> {
  let n = 0;
  const gap = 1000 / rate;
  let next = Date.now();
  while (!until()) {
    if (Date.now() >= next) {
      n++;
      deliveries.push({ id: `dlv_chaos_${seed}_${n}`, body: JSON.stringify({ order: { id: `o-${seed}-${n}`, sum: Math.round(between(1, 5000)) / 100 } }) });
      next += gap;
    }
    const open = deliveries.filter((d) => !d.runId);
    await Promise.all(open.slice(0, 32).map(send));
    if (open.length > 0 && !current) await sleep(100);
    await sleep(Math.max(0, Math.min(gap, next - Date.now())));
  }
}

// ───── the run

async function cli(args: string[]): Promise<{ code: number; out: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, DATABASE_URL: '', MESHHOOK_HOME: home } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? -1)));
  return { code, out };
}

async function main(): Promise<number> {
  await target.start();
  if (opts['plant-duplicates']) target.ignoreIdempotencyKeys();
  target.setDefaultResponse('/orders', 201, (req: RecordedRequest) => ({ orderId: target.idFor(req.idempotencyKey ?? 'none'), received: req.body }));
  // the worker processes read the database's URL once: up keeps its Postgres port across restarts by itself now
  // (pgdata.port); --pin-pg-port passes it as --pg-port as before
  if (workerProcesses > 0 && opts['pin-pg-port']) pgPort = await freePort();
  current = await startUp();
  say(`meshhook up on ${home} (topology ${topology}: ${workers} in-process workers, ${workerProcesses} worker processes)`);
  for (let i = 0; i < workerProcesses; i++) startWorker(i);

  const definition = JSON.parse(readFileSync(path.resolve(__dirname, '../examples/order-sync.json'), 'utf8'));
  const push = definition.steps.find((s: { id: string }) => s.id === 'push');
  push.url = `${target.baseUrl}/orders`;
  push.retry = { maxAttempts: 8, initialDelayMs: 100, multiplier: 2, maxDelayMs: 1000, jitter: 0.2 };
  if (opts['delay-step']) {
    // a timer before the call, and a timeout some slow answers exceed (the effect is made, the answer is late)
    const map = definition.steps.find((s: { id: string }) => s.id === 'map');
    map.next = 'pause';
    definition.steps.splice(1, 0, { id: 'pause', type: 'delay', durationMs: 400, next: 'push' });
    push.timeoutMs = 1000;
  }
  writeFileSync(path.join(home, 'order-sync.json'), JSON.stringify(definition, null, 2));
  const published = await cli(['publish', path.join(home, 'order-sync.json'), '--project', PROJECT, '--allow-private-targets']);
  secret = /signing secret: (\S+)/.exec(published.out)?.[1] ?? '';
  if (published.code !== 0 || !secret) throw new Error(`publish failed: ${published.out}`);

  // the minutes count from here, not from the start: on a loaded machine up alone can take most of a short run
  const end = Date.now() + minutes * 60_000;
  const sending = sender(() => Date.now() >= end);
  while (Date.now() < end) {
    await sleep(between(2000, 7000));
    if (Date.now() >= end) break;
    if (random() < 0.3) {
      // the order service hiccups: the next few attempts get 503 and are retried
      const times = 1 + Math.floor(random() * 3);
      target.script('/orders', { kind: 'fail', status: 503, times });
      hiccups += times;
    }
    if (random() < 0.6 || opts['plant-duplicates']) {
      // the order service slows down, so the kill lands on calls in flight (done, answer not yet sent)
      const times = 20 + Math.floor(random() * 40);
      target.script('/orders', { kind: 'slow', ms: Math.round(opts['delay-step'] && random() < 0.3 ? between(1100, 2500) : between(100, 600)), times });
      slowed += times;
      await sleep(between(300, 1200));
    }
    inFlightAtKills += await runsInFlight();
    const r = random();
    if (opts.only) {
      const kinds = opts.only.split(',');
      const k = kinds[Math.floor(random() * kinds.length)];
      if (k === 'worker' && workerProcesses > 0) await killWorker();
      else if (k === 'intake') await killIntake();
      else if (k === 'startup') {
        // up killed again while it starts (Postgres starting or recovering, migrations, workers' first claims)
        killStartAfter = { ms: Math.round(between(50, 4000)), group: random() < 0.5 };
        await killIntake();
      }
      else if (k === 'pause' && workerProcesses > 0) await pauseOne();
      else if (k === 'pause-db' && workerProcesses > 0) await pauseAcrossDatabaseCrash();
      else if (k === 'after-ack') await killAfterAck();
      else if (k === 'term-kill') await termThenKill();
      else if (k === 'worker-term' && workerProcesses > 0) await termThenKillWorker();
      else if (k === 'cut') await cutConnections();
      else if (k === 'twice') await killTwice();
      else if (k === 'second-up') await secondUp();
      else if (k === 'db-at-ack') await killDatabaseAtAck();
      else if (['group', 'node', 'postmaster', 'database'].includes(k)) await killAndRestart(k as KillKind);
      else throw new Error(`--only: ${k} is no fault of topology ${topology}`);
    } else if (topology === 'up') {
      if (opts['after-ack'] && random() < 0.4) await killAfterAck();
      else await killAndRestart(r < 0.35 ? 'group' : r < 0.65 ? 'node' : r < 0.82 ? 'postmaster' : 'database');
    } else if (r < 0.35) await killWorker();
    else if (r < 0.5) await killIntake();
    else if (r < 0.65) await pauseOne();
    else if (r < 0.8 || !opts['after-ack']) await killAndRestart(random() < 0.6 ? 'group' : 'database');
    else await killAfterAck();
  }
  await sending;
  say(`sending stopped: ${deliveries.length} deliveries; draining`);

  // the backlog: every delivery the sender still holds, then every run to its end
  const drainBy = Date.now() + 120_000;
  while (deliveries.some((d) => !d.runId) && Date.now() < drainBy) {
    await Promise.all(deliveries.filter((d) => !d.runId).slice(0, 32).map(send));
    await sleep(100);
  }
  const db = new Client({ connectionString: current!.databaseUrl });
  await db.connect();
  let unfinished = -1;
  while (Date.now() < drainBy) {
    unfinished = Number((await db.query(`SELECT count(*) FROM runs WHERE status IN ('running', 'waiting')`)).rows[0].count);
    if (unfinished === 0) break;
    await sleep(250);
  }

  // ───── the invariants
  const problems: string[] = [...failedStarts, ...refusedOtherwise];
  const unacked = deliveries.filter((d) => !d.runId).length;
  if (unacked) problems.push(`${unacked} deliveries never acknowledged`);
  const recorded = new Map<string, string>(
    (
      await db.query(
        `SELECT d.delivery_id, d.run_id FROM deliveries d JOIN projects p ON p.id = d.project_id WHERE p.slug = $1`,
        [PROJECT],
      )
    ).rows.map((r) => [r.delivery_id, r.run_id]),
  );
  for (const [id, runId] of acknowledged) {
    if (recorded.get(id) !== runId) problems.push(`delivery ${id} was acknowledged as run ${runId}, the database says ${recorded.get(id) ?? 'nothing'}`);
  }
  for (const id of recorded.keys()) if (!acknowledged.has(id)) problems.push(`the database holds delivery ${id} that was never acknowledged`);
  const statuses = new Map<string, number>(
    (await db.query(`SELECT status, count(*)::int AS n FROM runs GROUP BY status`)).rows.map((r) => [r.status, r.n]),
  );
  const runCount = [...statuses.values()].reduce((a, b) => a + b, 0);
  if (runCount !== acknowledged.size) problems.push(`${runCount} runs for ${acknowledged.size} acknowledged deliveries`);
  // a run that delivered nothing checked nothing
  if (acknowledged.size === 0) problems.push('no delivery was acknowledged, so no invariant was put to the test');
  if (unfinished !== 0) problems.push(`${unfinished} runs still unfinished two minutes after the last fault`);
  const succeeded = statuses.get('succeeded') ?? 0;
  if (succeeded !== runCount) problems.push(`runs by status: ${JSON.stringify(Object.fromEntries(statuses))}`);

  if (opts['plant-stale-send']) {
    const sent = target.requests.find((r) => r.idempotencyKey && r.outcome === 'answered');
    if (sent) {
      await new Promise((r) => setTimeout(r, 100));
      await fetch(`${target.baseUrl}${sent.url}`, { method: sent.method, headers: { 'content-type': sent.headers['content-type'] ?? 'application/json', 'idempotency-key': sent.idempotencyKey! }, body: sent.raw });
      say(`planted: request ${sent.index} sent again (key ${sent.idempotencyKey})`);
    }
  }
  const byKey = new Map<string, Set<string>>();
  for (const req of target.requests) {
    if (!req.idempotencyKey) {
      problems.push(`request ${req.index} carried no Idempotency-Key`);
      continue;
    }
    const bodies = byKey.get(req.idempotencyKey) ?? new Set<string>();
    bodies.add(req.raw);
    byKey.set(req.idempotencyKey, bodies);
    if (req.keyMismatch) problems.push(`request ${req.index} reused key ${req.idempotencyKey} with other bytes`);
  }
  const effects = target.effects('/orders');
  const effectKeys = new Map<string, number>();
  for (const e of effects) effectKeys.set(e.idempotencyKey ?? '', (effectKeys.get(e.idempotencyKey ?? '') ?? 0) + 1);
  const duplicated = [...effectKeys.values()].filter((n) => n > 1).length;
  const otherBytes = [...byKey.values()].filter((s) => s.size > 1).length;
  if (duplicated) problems.push(`${duplicated} keys with more than one effect`);
  if (otherBytes) problems.push(`${otherBytes} keys sent with different bytes`);
  if (effects.length !== runCount) problems.push(`${effects.length} effects for ${runCount} runs (one each expected)`);
  // a stale send: a request that reached the order service after its run already held the call's answer. Same key
  // and bytes, so no second effect here; but it is what a worker held up (stopped, starved) must not do
  // (src/worker/worker.ts, STALE_AFTER_MS): after a cancel it would be an effect for a run that no longer wants it
  const answeredAt = new Map<string, number>();
  for (const r of (
    await db.query(`SELECT e.run_id, e.payload FROM run_events e JOIN projects p ON p.id = e.project_id WHERE p.slug = $1 AND e.type = 'HttpResponseRecorded'`, [PROJECT])
  ).rows) {
    const data = (r.payload?.data ?? r.payload) as { at?: string; outcome?: { status?: number } };
    if (data?.outcome?.status === 201 && data.at) answeredAt.set(idempotencyKeyFor(r.run_id, 'push'), Date.parse(data.at));
  }
  const stale = target.requests.filter((req) => req.idempotencyKey && answeredAt.has(req.idempotencyKey) && req.at.getTime() > answeredAt.get(req.idempotencyKey)! + 50);
  if (answeredAt.size !== runCount) problems.push(`${answeredAt.size} runs hold a 201 answer, of ${runCount}`);
  for (const req of stale.slice(0, 5))
    problems.push(`request ${req.index} (key ${req.idempotencyKey}) arrived ${req.at.getTime() - answeredAt.get(req.idempotencyKey!)!} ms after its run recorded the answer: a stale send`);
  if (stale.length > 5) problems.push(`… ${stale.length} stale sends in all`);
  await db.end();

  const verify = await cli(['verify', '--all', ...(opts.journals ? ['--checkpoints', journalFiles().join(',')] : [])]);
  if (verify.code !== 0) problems.push(`meshhook verify --all exited ${verify.code}: ${verify.out.trim().split('\n').slice(-3).join(' | ')}`);
  const rebuild = await cli(['rebuild', '--project', PROJECT]);
  const repaired = /repaired:\s+(\d+)/.exec(rebuild.out);
  if (rebuild.code !== 0 || !repaired || Number(repaired[1]) > 0) {
    problems.push(`meshhook rebuild: exit ${rebuild.code}: ${rebuild.out.trim().split('\n').slice(-3).join(' | ')}`);
  }

  // the worker processes stop on SIGTERM, cleanly
  stoppingWorkers = true;
  for (const w of workerProcs) {
    if (!w) continue;
    process.kill(w.child.pid!, 'SIGTERM');
    const c = await Promise.race([w.exited, sleep(20_000).then(() => 'hung' as const)]);
    if (c !== 0) problems.push(`worker ${w.slot} ended with ${c} on SIGTERM`);
    if (c === 'hung') process.kill(w.child.pid!, 'SIGKILL');
  }
  // a worker that ended on its own while up was up could not restart: a finding
  for (const e of workerExits) if (e.includes('while up was up')) problems.push(e);

  // a last Ctrl-C: everything stops and nothing is left behind
  const last = current!;
  const pm = postmasterPid();
  process.kill(last.child.pid!, 'SIGINT');
  const code = await Promise.race([last.exited, sleep(30_000).then(() => 'hung' as const)]);
  if (code !== 0) problems.push(`the last Ctrl-C: meshhook up ended with ${code}`);
  if (pm && isAlive(pm)) problems.push(`the postmaster (pid ${pm}) outlived meshhook up`);
  if (existsSync(path.join(home, 'state.json'))) problems.push('state.json left behind after a clean stop');
  await target.close();

  const totalKills = kills.group + kills.node + kills.postmaster + kills.database;
  const line =
    `chaos seed=${seed} minutes=${minutes}: ${acknowledged.size} deliveries acknowledged (${sendAttempts} attempts), ` +
    `${runCount} runs (${succeeded} succeeded, ${Math.max(unfinished, 0)} stuck), ` +
    `topology ${topology}, ` +
    `${totalKills} kills (${kills.group} whole group, ${kills.node} node only, ${kills.postmaster} postmaster then stop, ${kills.database} postmaster brought back by up), ` +
    `${pkills.worker} worker processes killed, ${pkills.intake} up killed (node), ${pkills['after-ack']} up killed right after a 202, ${pkills['term-kill']} SIGTERM then SIGKILL, ${pkills.twice} killed twice, ${pkills['second-up']} second ups, ${pkills['db-at-ack']} postmasters killed at a 202, ${pkills['worker-term']} workers SIGTERMed then SIGKILLed, ${pkills.cut} connection cuts, ${pkills.pause} paused (${pausedMs} ms), ${startupKills} starts killed, ${workerExits.length} worker exits on their own, ` +
    `${inFlightAtKills} runs in flight at the kills, ${starts - 1} restarts (${failedStarts.length} failed), ` +
    `${hiccups} target 503s, ${slowed} slow answers, ` +
    `${target.requests.length} requests for ${effects.length} effects (${duplicated} keys duplicated, ${otherBytes} with other bytes, ${stale.length} stale sends), ` +
    `verify ${verify.code === 0 ? 'ok' : 'FAILED'}, rebuild ${rebuild.code === 0 ? 'ok' : 'FAILED'}`;
  for (const p of problems.slice(0, 30)) console.error(`  ✗ ${p}`);
  if (problems.length > 30) console.error(`  … and ${problems.length - 30} more`);
  console.log(line);
  if (problems.length === 0 && !opts.keep) rmSync(home, { recursive: true, force: true });
  else console.log(`data directory and up logs kept in ${home}`);
  return problems.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`chaos: ${(e as Error).stack ?? e}`);
    for (const w of workerProcs) if (w) try { process.kill(w.child.pid!, 'SIGKILL'); } catch { /* gone */ }
    if (current?.child.pid) {
      try {
        process.kill(-current.child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    console.log(`data directory and up logs kept in ${home}`);
    process.exit(1);
  },
);
