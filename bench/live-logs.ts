/*
 * npm run bench:live — what live logs cost, as ratios measured in the same run.
 *
 * One embedded Postgres, one migrated database, the compatible Realtime server
 * (src/realtime/server.ts) fed by logical replication. Trials alternate between
 * no subscriber and SUBSCRIBERS dashboards (real supabase-js clients, each with
 * its own project token, so the server checks visibility per user as it must),
 * each trial executing RUNS three-step workflows with WORKERS in-process
 * workers. Reported:
 *   - workers' throughput with SUBSCRIBERS subscribers ÷ with none (median of
 *     the paired repeats; the target is ≥ 0.95×)
 *   - the same with the server and subscriber processes at nice 19 ("apart"): on this
 *     2-core machine they stand for hosts of their own, as in production, taking only
 *     the CPU the workers and Postgres leave idle; the target is read on this one
 *   - commit → subscriber delay over every event one subscriber received
 *     (median, p99), from the transaction's commit timestamp that pgoutput
 *     carries to the moment supabase-js handed the change over. Under the
 *     trials' full load this is mostly queueing; a paced trial (runs started
 *     at PACED_RATE per second, well below what the machine sustains, the 50
 *     subscribers at equal priority) gives the delay a dashboard sees in
 *     ordinary use
 * Figures only: nothing asserts a timing. Writes reports/bench-live-logs.json.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import type { SupabaseClient } from '@supabase/supabase-js';
import { migrate } from '../src/db/migrate';
import { openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import { closeRealtimeClient, openRealtimeClient } from '../src/realtime/live-log';
import { RealtimeServer } from '../src/realtime/server';
import { signAnonKey, signProjectToken } from '../src/realtime/tokens';
import { Keyring } from '../src/security/keyring';
import { latestVersion, publishWorkflow } from '../src/store/registry';
import { startRun } from '../src/store/intake-start';
import { Worker } from '../src/worker/worker';

const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 4);
const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 50);
const DEADLINE_MS = 60_000;
const PACED_RATE = Number(process.env.BENCH_PACED_RATE ?? 20);
const PACED_RUNS = Number(process.env.BENCH_PACED_RUNS ?? 100);
const KEYS = Keyring.generate('bench-live');
const SECRET = 'bench-live-logs-jwt-secret-at-least-32-characters';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const r = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;

interface Subscribers {
  clients: SupabaseClient[];
  received: number;
  /** commit → delivery, ms, as the first subscriber saw it */
  delays: number[];
}

async function subscribe(url: string, projectId: string, n: number): Promise<Subscribers> {
  const anon = await signAnonKey({ secret: SECRET });
  const subs: Subscribers = { clients: [], received: 0, delays: [] };
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const token = await signProjectToken({ secret: SECRET, projectId, ttlSec: 3600, claims: { sub: process.env.BENCH_SAME_USER ? 'user' : `user-${i}` } });
      const client = await openRealtimeClient({ url, anonKey: anon, accessToken: token });
      subs.clients.push(client);
      await new Promise<void>((resolve, reject) => {
        client
          .channel(`bench-${i}-${randomUUID().slice(0, 6)}`)
          .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'run_events', filter: `project_id=eq.${projectId}` }, (p) => {
            subs.received++;
            if (i === 0) subs.delays.push(Date.now() - Date.parse(p.commit_timestamp));
          })
          .subscribe((status, err) => {
            if (status === 'SUBSCRIBED') resolve();
            else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status));
          });
      });
    }),
  );
  // the server says "Subscribed to PostgreSQL" after the join: give every binding a moment to be live
  await new Promise((res) => setTimeout(res, 500));
  return subs;
}

/**
 * The live-log server and the subscribers each run in a child process of their
 * own, as in production (a server process; dashboards in browsers elsewhere):
 * what is measured is what each costs the database and the machine, not a
 * shared event loop. Here all three share the machine's 2 cores.
 */
interface ChildReport {
  /** CPU the child used from ready to report, ms */
  cpuMs: number;
  received: number;
  delays: number[];
  stats: { framesSent: number; slowSocketsClosed: number };
  url: string;
}

type ChildArgs = { mode: 'server'; url: string } | { mode: 'subscribers'; url: string; projectId: string; n: number };

async function startChild(args: ChildArgs, apart: boolean): Promise<{ ready: ChildReport; stop(expect?: number): Promise<ChildReport> }> {
  const child: ChildProcess = fork(__filename, ['--live-side'], { execArgv: ['-r', 'ts-node/register', ...(process.env.BENCH_PROF && args.mode === 'server' ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : [])], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  // as if on hosts of their own: the lowest priority takes only the CPU the workers and Postgres leave idle
  if (apart) os.setPriority(child.pid!, 19);
  const next = (type: string): Promise<ChildReport> =>
    new Promise((resolve, reject) => {
      const onMessage = (m: { type: string; data: ChildReport; error?: string }) => {
        if (m.type === 'error') reject(new Error(m.error));
        else if (m.type === type) {
          child.off('message', onMessage);
          resolve(m.data);
        }
      };
      child.on('message', onMessage);
      child.once('exit', (code) => reject(new Error(`live side exited (${code})`)));
    });
  const readyP = next('ready');
  child.send(args);
  const ready = await readyP;
  return {
    ready,
    async stop(expect?: number) {
      const report = next('report');
      child.send({ stop: true, expect });
      const r = await report;
      await new Promise((res) => child.once('exit', res));
      return r;
    },
  };
}

/** how long the subscribers wait for a frame before they count what they have */
const QUIET_MS = 10_000;

async function liveSide(): Promise<void> {
  const args = await new Promise<ChildArgs>((resolve) => process.once('message', resolve as (m: unknown) => void));
  const empty = { received: 0, delays: [] as number[], stats: { framesSent: 0, slowSocketsClosed: 0 }, url: '', cpuMs: 0 };
  try {
    if (args.mode === 'server') {
      const server = new RealtimeServer({ databaseUrl: args.url, jwtSecret: SECRET });
      const { url } = await server.start();
      const cpu0 = process.cpuUsage();
      process.send!({ type: 'ready', data: { ...empty, url } });
      await new Promise((resolve) => process.once('message', resolve));
      const used = process.cpuUsage(cpu0);
      const stats = { framesSent: server.stats.framesSent, slowSocketsClosed: server.stats.slowSocketsClosed };
      await server.close();
      process.send!({ type: 'report', data: { ...empty, url, stats, cpuMs: (used.user + used.system) / 1000 } }, () => process.exit(0));
    } else {
      const subs = await subscribe(args.url, args.projectId, args.n);
      const cpu0 = process.cpuUsage();
      process.send!({ type: 'ready', data: empty });
      const { expect } = await new Promise<{ expect?: number }>((resolve) => process.once('message', resolve as (m: unknown) => void));
      // let the last frames arrive before counting them: until every expected frame is in, or nothing more has
      // come for QUIET_MS (a server slowed down, by a profiler say, is waited for; one that lost frames is not)
      let last = -1;
      let quietSince = Date.now();
      while (subs.received < (expect ?? Infinity) && Date.now() - quietSince < (expect === undefined ? 500 : QUIET_MS)) {
        if (subs.received !== last) {
          last = subs.received;
          quietSince = Date.now();
        }
        await new Promise((res) => setTimeout(res, 50));
      }
      const used = process.cpuUsage(cpu0);
      await Promise.all(subs.clients.map((c) => closeRealtimeClient(c)));
      process.send!({ type: 'report', data: { ...empty, received: subs.received, delays: subs.delays, cpuMs: (used.user + used.system) / 1000 } }, () => process.exit(0));
    }
  } catch (e) {
    process.send!({ type: 'error', error: (e as Error).message }, () => process.exit(1));
  }
}

async function withLiveSide<T extends { events: number }>(url: string, projectId: string, n: number, body: () => Promise<T>, apart = false): Promise<{ result: T; server: ChildReport; subscribers: ChildReport | null }> {
  const server = await startChild({ mode: 'server', url }, apart);
  const subscribers = n > 0 ? await startChild({ mode: 'subscribers', url: server.ready.url, projectId, n }, apart) : null;
  const result = await body();
  // every subscriber is to get every event the trial wrote
  const subReport = subscribers ? await subscribers.stop(n * result.events) : null;
  return { result, subscribers: subReport, server: await server.stop() };
}

async function trial(url: string, pub: { projectId: string; workflow: string; version: Awaited<ReturnType<typeof latestVersion>> }) {
  const setup = openPool(url, { max: 8 }, () => undefined);
  const logLength = async (db: typeof setup): Promise<number> => Number((await db.query('SELECT count(*)::int AS n FROM run_events')).rows[0].n);
  const before = await logLength(setup);
  await Promise.all(
    Array.from({ length: 8 }, async (_, k) => {
      for (let i = k; i < RUNS; i += 8) {
        const input = { order: { id: `o-${i}`, sum: i } };
        await startRun(setup, { chain: KEYS.chainKey(), runId: randomUUID(), projectId: pub.projectId, projectSlug: 'bench', workflowSlug: pub.workflow, version: pub.version, deliveryId: `live-${randomUUID()}`, input, at: new Date(), rawBody: JSON.stringify(input) });
      }
    }),
  );
  const pool = openPool(url, { max: 20 }, () => undefined);
  let done = (): void => undefined;
  const finished = new Promise<void>((res) => (done = res));
  const workers: Worker[] = [];
  const log = (): void => {
    if (workers.reduce((n, w) => n + w.stats.runsFinished, 0) >= RUNS) done();
  };
  for (let i = 0; i < WORKERS; i++) workers.push(new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 10, concurrency: CONCURRENCY, id: `live-${i + 1}`, keyring: KEYS, log }));
  const t0 = performance.now();
  for (const w of workers) w.start();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([finished, new Promise<void>((res) => (timer = setTimeout(res, DEADLINE_MS)))]);
  const ms = performance.now() - t0;
  clearTimeout(timer);
  const n = workers.reduce((k, w) => k + w.stats.runsFinished, 0);
  await Promise.all(workers.map((w) => w.stop()));
  await pool.end();
  // every event the trial wrote (each subscriber must get each one)
  const events = (await logLength(setup)) - before;
  await setup.end();
  return { runs: n, runsPerSec: n / (ms / 1000), events };
}

/** Runs started one by one at `rate` per second while the workers wait for them: the load a dashboard usually sees. */
async function pacedTrial(url: string, pub: { projectId: string; workflow: string; version: Awaited<ReturnType<typeof latestVersion>> }, rate: number, runs: number) {
  const pool = openPool(url, { max: 20 }, () => undefined);
  const before = Number((await pool.query('SELECT count(*)::int AS n FROM run_events')).rows[0].n);
  let finished = 0;
  const workers = Array.from({ length: WORKERS }, (_, i) => new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 10, concurrency: CONCURRENCY, id: `paced-${i + 1}`, keyring: KEYS, log: () => undefined }));
  for (const w of workers) w.start();
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) {
    // on a schedule, not after a pause: a slow start does not lower the rate
    const wait = t0 + (i * 1000) / rate - performance.now();
    if (wait > 0) await new Promise((res) => setTimeout(res, wait));
    const input = { order: { id: `p-${i}`, sum: i } };
    await startRun(pool, { chain: KEYS.chainKey(), runId: randomUUID(), projectId: pub.projectId, projectSlug: 'bench', workflowSlug: pub.workflow, version: pub.version, deliveryId: `paced-${randomUUID()}`, input, at: new Date(), rawBody: JSON.stringify(input) });
    for (const w of workers) w.poke();
  }
  const deadline = performance.now() + DEADLINE_MS;
  while ((finished = workers.reduce((n, w) => n + w.stats.runsFinished, 0)) < runs && performance.now() < deadline) await new Promise((res) => setTimeout(res, 20));
  await Promise.all(workers.map((w) => w.stop()));
  const events = Number((await pool.query('SELECT count(*)::int AS n FROM run_events')).rows[0].n) - before;
  await pool.end();
  return { runs: finished, events };
}

async function main(): Promise<void> {
  process.stdout.write(`bench:live: ${RUNS} runs × ${REPEATS} repeats, 0 vs ${SUBSCRIBERS} subscribers; ${WORKERS} workers × ${CONCURRENCY}; ${os.cpus().length} CPUs, node ${process.version}\n`);
  const pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const db = `bench_live_${process.pid}`;
  await admin.query(`CREATE DATABASE ${db}`);
  const url = pg.urlFor(db);
  try {
    const p = openPool(url, { max: 2 }, () => undefined);
    await migrate(p);
    const published = await publishWorkflow(p, KEYS, 'bench', {
      name: 'three-transforms',
      steps: [
        { id: 'shape', type: 'transform', expression: '{id: input.order.id, total: input.order.sum}', next: 'tax' },
        { id: 'tax', type: 'transform', expression: '{id: steps.shape.id, gross: steps.shape.total}', next: 'done' },
        { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.tax' },
      ],
    });
    const pub = { projectId: published.projectId, workflow: published.workflow, version: await latestVersion(p, published.projectId, published.workflowId) };
    await p.end();
    // warm up: the engine's paths and the server's decoding
    await withLiveSide(url, pub.projectId, 1, () => trial(url, pub));
    const pairs: Array<{ none: number; many: number; apart: number }> = [];
    const delays: number[] = [];
    const delaysApart: number[] = [];
    let delivered = 0;
    let framesSent = 0; // eslint-disable-line prefer-const
    let slowClosed = 0;
    const cpu = { server: [] as number[], subscribers: [] as number[] };
    for (let rep = 0; rep < REPEATS; rep++) {
      const kinds = ['none', 'many', 'apart'] as const;
      const order = kinds.map((_, k) => kinds[(k + rep) % kinds.length]);
      const pair = { none: 0, many: 0, apart: 0 };
      for (const which of order) {
        // the server runs in every trial: what differs is who listens, and whether the listening side
        // competes with the workers for the cores ('many') or takes only what they leave idle ('apart')
        const { result: t, server, subscribers } = await withLiveSide(url, pub.projectId, which === 'none' ? 0 : SUBSCRIBERS, () => trial(url, pub), which === 'apart');
        // a figure counts only if every subscriber got every event the trial wrote (at low priority too, later)
        if (subscribers && (subscribers.delays.length !== t.events || subscribers.received !== SUBSCRIBERS * t.events)) {
          throw new Error(`${which}: the trial wrote ${t.events} events; the first subscriber got ${subscribers.delays.length}, all ${SUBSCRIBERS} together ${subscribers.received} of ${SUBSCRIBERS * t.events}`);
        }
        if (which === 'none') pair.none = t.runsPerSec;
        else if (which === 'apart') {
          pair.apart = t.runsPerSec;
          delaysApart.push(...subscribers!.delays);
        } else {
          pair.many = t.runsPerSec;
          delays.push(...subscribers!.delays);
          delivered += subscribers!.received;
          framesSent += server.stats.framesSent;
          slowClosed += server.stats.slowSocketsClosed;
          cpu.server.push(server.cpuMs / subscribers!.received * 1000);
          cpu.subscribers.push(subscribers!.cpuMs / subscribers!.received * 1000);
        }
        process.stdout.write('.');
      }
      pairs.push(pair);
    }
    // the delay in ordinary use: a steady rate the machine keeps up with, every subscriber listening
    const paced = await withLiveSide(url, pub.projectId, SUBSCRIBERS, () => pacedTrial(url, pub, PACED_RATE, PACED_RUNS));
    if (paced.subscribers!.delays.length !== paced.result.events || paced.subscribers!.received !== SUBSCRIBERS * paced.result.events) {
      throw new Error(`paced: the trial wrote ${paced.result.events} events; the first subscriber got ${paced.subscribers!.delays.length}, all ${SUBSCRIBERS} together ${paced.subscribers!.received}`);
    }
    const pacedDelays = paced.subscribers!.delays;
    process.stdout.write('.');
    const ratio = median(pairs.map((x) => x.many / x.none));
    const result = {
      runs: RUNS,
      repeats: REPEATS,
      subscribers: SUBSCRIBERS,
      workers: WORKERS,
      runsPerSecNone: r(median(pairs.map((x) => x.none)), 1),
      runsPerSecWithSubscribers: r(median(pairs.map((x) => x.many)), 1),
      throughputRatio: r(ratio),
      runsPerSecApart: r(median(pairs.map((x) => x.apart)), 1),
      throughputRatioApart: r(median(pairs.map((x) => x.apart / x.none))),
      commitToSubscriberMsApart: { events: delaysApart.length, p50: pct(delaysApart, 50), p99: pct(delaysApart, 99), max: Math.max(...delaysApart) },
      commitToSubscriberMs: { events: delays.length, p50: pct(delays, 50), p99: pct(delays, 99), max: Math.max(...delays) },
      paced: { runsPerSec: PACED_RATE, runs: paced.result.runs, events: pacedDelays.length, p50: pct(pacedDelays, 50), p99: pct(pacedDelays, 99), max: Math.max(...pacedDelays) },
      framesDelivered: delivered,
      cpuMicrosecondsPerDeliveredFrame: { server: r(median(cpu.server), 1), subscribers: r(median(cpu.subscribers), 1) },
      serverStats: { framesSent, slowSocketsClosed: slowClosed },
      pairs: pairs.map((x) => ({ none: r(x.none, 1), many: r(x.many, 1), apart: r(x.apart, 1) })),
    };
    mkdirSync('reports', { recursive: true });
    writeFileSync(path.join('reports', 'bench-live-logs.json'), JSON.stringify(result, null, 2) + '\n');
    process.stdout.write('\n\n');
    process.stdout.write(`workers' throughput, ${SUBSCRIBERS} subscribers ÷ none, server and subscribers apart (nice 19): ${result.throughputRatioApart}× (${result.runsPerSecApart} vs ${result.runsPerSecNone} runs/s; target ≥ 0.95×)\n`);
    process.stdout.write(`  the same, sharing the 2 cores at equal priority: ${result.throughputRatio}× (${result.runsPerSecWithSubscribers} runs/s)\n`);
    process.stdout.write(`  commit → subscriber, apart: median ${result.commitToSubscriberMsApart.p50} ms, p99 ${result.commitToSubscriberMsApart.p99} ms\n`);
    process.stdout.write(`commit → subscriber over ${delays.length} events: median ${result.commitToSubscriberMs.p50} ms, p99 ${result.commitToSubscriberMs.p99} ms (max ${result.commitToSubscriberMs.max} ms)\n`);
    process.stdout.write(`commit → subscriber at a steady ${PACED_RATE} runs/s (${result.paced.events} events, ${SUBSCRIBERS} subscribers): median ${result.paced.p50} ms, p99 ${result.paced.p99} ms (max ${result.paced.max} ms)\n`);
    process.stdout.write(`CPU per delivered frame: server ${result.cpuMicrosecondsPerDeliveredFrame.server} µs, subscribers (supabase-js) ${result.cpuMicrosecondsPerDeliveredFrame.subscribers} µs — on this machine they share 2 cores with the workers and Postgres\n`);
    process.stdout.write(`frames delivered to subscribers: ${delivered}; slow sockets closed: ${slowClosed}\n`);
    process.stdout.write('reports/bench-live-logs.json\n');
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await pg.stop();
  }
}

if (process.argv.includes('--live-side')) void liveSide();
else main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
