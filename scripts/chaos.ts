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
 * `--plant-duplicates` shows the check failing: the order service ignores keys.
 * Runs the built CLI: `npm run build` first (npm run chaos does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'pg';
import { isAlive, postmasterPidIn } from '../src/db/postgres';
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
    keep: { type: 'boolean', default: false },
    // shows the check can fail: the order service stops honouring Idempotency-Key, so a call
    // repeated after a kill becomes a second order and the run must end in failure
    'plant-duplicates': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('usage: npm run chaos -- [--seed N] [--minutes M] [--rate webhooks/s] [--workers n] [--keep] [--plant-duplicates]');
  process.exit(0);
}
const seed = Number(opts.seed);
const minutes = Number(opts.minutes);
const rate = Number(opts.rate);
const workers = Number(opts.workers);
if (![seed, minutes, rate, workers].every((n) => Number.isFinite(n) && n >= 0) || rate === 0) {
  console.error('--seed, --minutes, --rate and --workers take non-negative numbers (rate > 0)');
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
const failedStarts: string[] = [];

function readState(): { pid?: number; intakeUrl?: string; databaseUrl?: string } {
  try {
    return JSON.parse(readFileSync(path.join(home, 'state.json'), 'utf8'));
  } catch {
    return {};
  }
}

async function startUp(): Promise<Up> {
  for (let attempt = 1; ; attempt++) {
    starts++;
    const logFile = path.join(home, `up-${starts}.log`);
    const log = createWriteStream(logFile);
    const child = spawn(process.execPath, [BIN, 'up', '--data-dir', home, '--port', '0', '--realtime-port', '0', '--workers', String(workers)], {
      env: { ...process.env, DATABASE_URL: '', MESHHOOK_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so the whole group can be killed at once
    });
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let code: number | null | undefined;
    void exited.then((c) => (code = c));
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
  current = await startUp();
  say(`meshhook up on ${home}`);

  const definition = JSON.parse(readFileSync(path.resolve(__dirname, '../examples/order-sync.json'), 'utf8'));
  const push = definition.steps.find((s: { id: string }) => s.id === 'push');
  push.url = `${target.baseUrl}/orders`;
  push.retry = { maxAttempts: 8, initialDelayMs: 100, multiplier: 2, maxDelayMs: 1000, jitter: 0.2 };
  writeFileSync(path.join(home, 'order-sync.json'), JSON.stringify(definition, null, 2));
  const published = await cli(['publish', path.join(home, 'order-sync.json'), '--project', PROJECT, '--allow-private-targets']);
  secret = /signing secret: (\S+)/.exec(published.out)?.[1] ?? '';
  if (published.code !== 0 || !secret) throw new Error(`publish failed: ${published.out}`);

  const end = t0 + minutes * 60_000;
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
      target.script('/orders', { kind: 'slow', ms: Math.round(between(100, 600)), times });
      slowed += times;
      await sleep(between(300, 1200));
    }
    inFlightAtKills += await runsInFlight();
    const r = random();
    await killAndRestart(r < 0.35 ? 'group' : r < 0.65 ? 'node' : r < 0.82 ? 'postmaster' : 'database');
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
  if (unfinished !== 0) problems.push(`${unfinished} runs still unfinished two minutes after the last fault`);
  const succeeded = statuses.get('succeeded') ?? 0;
  if (succeeded !== runCount) problems.push(`runs by status: ${JSON.stringify(Object.fromEntries(statuses))}`);

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
  await db.end();

  const verify = await cli(['verify', '--all']);
  if (verify.code !== 0) problems.push(`meshhook verify --all exited ${verify.code}: ${verify.out.trim().split('\n').slice(-3).join(' | ')}`);
  const rebuild = await cli(['rebuild', '--project', PROJECT]);
  const repaired = /repaired:\s+(\d+)/.exec(rebuild.out);
  if (rebuild.code !== 0 || !repaired || Number(repaired[1]) > 0) {
    problems.push(`meshhook rebuild: exit ${rebuild.code}: ${rebuild.out.trim().split('\n').slice(-3).join(' | ')}`);
  }

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
    `${totalKills} kills (${kills.group} whole group, ${kills.node} node only, ${kills.postmaster} postmaster then stop, ${kills.database} postmaster brought back by up), ` +
    `${inFlightAtKills} runs in flight at the kills, ${starts - 1} restarts (${failedStarts.length} failed), ` +
    `${hiccups} target 503s, ${slowed} slow answers, ` +
    `${target.requests.length} requests for ${effects.length} effects (${duplicated} keys duplicated, ${otherBytes} with other bytes), ` +
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
