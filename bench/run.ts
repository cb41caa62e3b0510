/*
 * npm run bench — what event sourcing costs the engine, as ratios against a
 * baseline measured in the same run, on the same Postgres, in the same process.
 *
 * Three executors run the same 3-step workflows with the same pure step logic,
 * the same claim pattern (WORKERS in-process workers × CONCURRENCY runs each,
 * polling every POLL_MS), the same HTTP client and one transaction per batch:
 *   state-stored   bench/state-stored.ts: one UPDATE of a state row per batch, no log
 *   engine         src/worker/worker.ts with Failpoints.none()
 *   engine+fp      the same Worker, failpoints armed with a spec that never matches
 * Every trial gets a fresh database cloned from one migrated template, starts
 * with a CHECKPOINT and a full GC, and the trials are interleaved (the order
 * rotates each repeat) so warm-up and drift fall on every executor alike.
 * Per variant and executor the median of the repeats is reported; a ratio is
 * the median of the per-repeat ratios (each repeat's trials ran side by side).
 * Also measured: replay+verify cost of the engine's runs relative to executing
 * them. Figures only: nothing here asserts a timing, and no test depends on it.
 * Bounded in time; writes reports/bench.json. bench/README.md explains it all.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Client } from 'pg';
import { migrate } from '../src/db/migrate';
import { openEnginePool, openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import { replayLog, verifyLog } from '../src/domain/replay';
import { Failpoints, parseFailpoints } from '../src/faults/failpoints';
import { verifyRun } from '../src/replay-service';
import { latestVersion, LoadedVersion, publishWorkflow, setAllowPrivateTargets } from '../src/store/registry';
import { Keyring } from '../src/security/keyring';
import { startRun } from '../src/store/intake-start';
import { loadEvents } from '../src/store/log-read';
import { Worker } from '../src/worker/worker';
import { startStateStoredRun, STATE_STORED_SCHEMA, StateStoredRepository } from './state-stored';

// 1,000 runs a trial: in shorter trials the fresh database's new Postgres connections weigh in (a backend's
// first call of the engine's functions costs about 10 ms: relation caches, compiling the functions)
const RUNS = Number(process.env.BENCH_RUNS ?? 1000);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 4);
const WARMUP_RUNS = Number(process.env.BENCH_WARMUP_RUNS ?? 40);
const TRIAL_DEADLINE_MS = Number(process.env.BENCH_DEADLINE_MS ?? 60_000);
/** on a slow machine, fewer repeats (never under 2) rather than a bench that runs on and on */
const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 170_000);
const POLL_MS = 10;
const KEYS = Keyring.generate('bench');
/** runs are created this many at a time before a trial (not measured) */
const SETUP_PARALLEL = 8;
const SAMPLE_MS = 5;
/** armed, so every failpoint site runs its check, but it names a step no workflow has */
const NEVER_MATCHING_FAILPOINT = 'timer-fired@no-such-step=trace';

// a full GC before each trial, so every executor starts from the same live heap
v8.setFlagsFromString('--expose-gc');
const gc: (() => void) | null = (() => {
  try {
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
})();

type Kind = 'state-stored' | 'engine' | 'engine+fp';
const KINDS: Kind[] = ['state-stored', 'engine', 'engine+fp'];
const KIND_LABEL: Record<Kind, string> = {
  'state-stored': 'state-stored (baseline)',
  engine: 'engine (event-sourced)',
  'engine+fp': 'engine, fp armed no match',
};

interface Variant {
  name: string;
  short: string;
  definition: (targetUrl: string) => Record<string, unknown>;
}

const VARIANTS: Variant[] = [
  {
    name: 'transform-transform-terminate',
    short: 'transform×2',
    definition: () => ({
      name: 'three-transforms',
      steps: [
        { id: 'shape', type: 'transform', expression: '{id: input.order.id, total: input.order.sum}', next: 'tax' },
        { id: 'tax', type: 'transform', expression: '{id: steps.shape.id, gross: steps.shape.total}', next: 'done' },
        { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.tax' },
      ],
    }),
  },
  {
    name: 'transform-http_call-terminate',
    short: 'with http_call',
    definition: (targetUrl) => ({
      name: 'with-http',
      steps: [
        { id: 'shape', type: 'transform', expression: '{id: input.order.id, total: input.order.sum}', next: 'push' },
        { id: 'push', type: 'http_call', method: 'POST', url: `${targetUrl}/orders`, body: 'steps.shape', next: 'done' },
        { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.push.body' },
      ],
    }),
  },
];

// ───── small helpers

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function r(x: number, digits = 1): number {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : x;
}

const MB = 1024 * 1024;
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function startTarget(): Promise<{ url: string; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      hits++;
      const body = JSON.stringify({ orderId: `ord_${hits}` });
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits: () => hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Committed transactions Postgres counted for one database, read from another
 * connection. A backend publishes its counts as it exits, and pg's Pool.end()
 * resolves before its backends are gone: wait until none is left, then read.
 */
async function xactCommits(admin: Client, db: string): Promise<number> {
  const until = Date.now() + 5_000;
  while (Date.now() < until) {
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, [db]);
    if (rows[0].n === 0) break;
    await sleep(10);
  }
  await admin.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await admin.query('SELECT coalesce(xact_commit, 0)::bigint AS n FROM pg_stat_database WHERE datname = $1', [db]);
  return Number(rows[0]?.n ?? 0);
}

// GC pauses, attributed to trials by time window
const gcEntries: { start: number; end: number }[] = [];
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcEntries.push({ start: e.startTime, end: e.startTime + e.duration });
});
gcObserver.observe({ entryTypes: ['gc'] });

/**
 * Peak heapUsed / RSS of this process, sampled on a timer while an executor
 * runs. Between two samples heapUsed only grows by allocation (a collection
 * makes it drop), so the sum of the rises approximates the bytes allocated.
 */
function memorySampler(): { stop(): { heapBeforeMB: number; peakHeapDeltaMB: number; allocatedMBApprox: number; rssBeforeMB: number; peakRssDeltaMB: number; samples: number } } {
  const before = process.memoryUsage();
  let peakHeap = before.heapUsed;
  let peakRss = before.rss;
  let last = before.heapUsed;
  let allocated = 0;
  let samples = 0;
  const sample = (): void => {
    const m = process.memoryUsage();
    samples++;
    if (m.heapUsed > peakHeap) peakHeap = m.heapUsed;
    if (m.rss > peakRss) peakRss = m.rss;
    if (m.heapUsed > last) allocated += m.heapUsed - last;
    last = m.heapUsed;
  };
  const timer = setInterval(sample, SAMPLE_MS);
  return {
    stop() {
      sample();
      clearInterval(timer);
      return {
        heapBeforeMB: r(before.heapUsed / MB, 2),
        peakHeapDeltaMB: r((peakHeap - before.heapUsed) / MB, 2),
        allocatedMBApprox: r(allocated / MB, 2),
        rssBeforeMB: r(before.rss / MB, 1),
        peakRssDeltaMB: r((peakRss - before.rss) / MB, 2),
        samples,
      };
    },
  };
}

// ───── one trial: a fresh database, N runs created, then executed by one executor

interface Bench {
  admin: Client;
  urlFor: (db: string) => string;
  template: string;
  published: Map<string, { projectId: string; workflow: string; version: LoadedVersion }>;
}

let dbCounter = 0;

async function runTrial(bench: Bench, variant: Variant, kind: Kind, runs: number, measureReplay: boolean) {
  const db = `bench_${process.pid}_${++dbCounter}`;
  const trialStart = performance.now();
  await bench.admin.query(`CREATE DATABASE ${db} TEMPLATE ${bench.template}`);
  const createDbMs = performance.now() - trialStart;
  const url = bench.urlFor(db);
  const pub = bench.published.get(variant.name)!;
  try {
    // 1. a level field: the previous trial's dirty pages written out before this one starts
    const tc = performance.now();
    // (a role without CHECKPOINT rights on a DATABASE_URL server just skips it)
    await bench.admin.query('CHECKPOINT').catch(() => undefined);
    const checkpointMs = performance.now() - tc;

    // 2. create the runs (what the intake does after its checks), a few at a time; not measured
    const setup = openPool(url, { max: SETUP_PARALLEL }, () => undefined);
    const t0 = performance.now();
    let next = 0;
    const create = async (): Promise<void> => {
      for (let i = next++; i < runs; i = next++) {
        const input = { order: { id: `o-${i}`, sum: i } };
        const common = { chain: KEYS.chainKey(), runId: randomUUID(), projectId: pub.projectId, projectSlug: 'bench', workflowSlug: pub.workflow, version: pub.version, deliveryId: `bench-${i}`, input, at: new Date() };
        if (kind === 'state-stored') await startStateStoredRun(setup, common);
        else await startRun(setup, { ...common, rawBody: JSON.stringify(input) });
      }
    };
    await Promise.all(Array.from({ length: SETUP_PARALLEL }, create));
    const startMs = performance.now() - t0;
    await setup.end(); // backends flush their statistics as they exit
    const commitsBefore = await xactCommits(bench.admin, db);
    gc?.();
    gc?.();

    // 3. execute them
    // as `meshhook worker` runs: the engine's role, under row-level security (a superuser would bypass it)
    const pool = openEnginePool(url, { max: 20 }, () => undefined);
    let onAllFinished = (): void => undefined;
    const allFinished = new Promise<void>((resolve) => (onAllFinished = resolve));
    const finishedSoFar = (): number => workers.reduce((n, w) => n + w.stats.runsFinished, 0);
    const log = (): void => {
      if (finishedSoFar() >= runs) onAllFinished();
    };
    const failpoints = kind === 'engine+fp' ? new Failpoints(parseFailpoints(NEVER_MATCHING_FAILPOINT)) : Failpoints.none();
    // one Worker for both kinds: the baseline differs only in its repository (bench/state-stored.ts)
    const workers: Worker[] = Array.from({ length: WORKERS }, (_, i) =>
      kind === 'state-stored'
        ? new Worker({ pool, lockConnection: { connectionString: url }, pollMs: POLL_MS, concurrency: CONCURRENCY, id: `state-${i + 1}`, log, repository: new StateStoredRepository(pool) })
        : new Worker({ pool, lockConnection: { connectionString: url }, pollMs: POLL_MS, concurrency: CONCURRENCY, id: `bench-${i + 1}`, failpoints, keyring: KEYS, log }),
    );
    const memory = memorySampler();
    const wallStart = new Date();
    const t1 = performance.now();
    for (const w of workers) w.start();
    let deadline: NodeJS.Timeout | undefined;
    await Promise.race([allFinished, new Promise<void>((resolve) => (deadline = setTimeout(resolve, TRIAL_DEADLINE_MS)))]);
    const execMs = performance.now() - t1;
    const mem = memory.stop();
    clearTimeout(deadline);
    await Promise.all(workers.map((w) => w.stop()));
    await pool.end();
    const commitsAfter = await xactCommits(bench.admin, db);
    const gcInWindow = gcEntries.filter((g) => g.start >= t1 && g.start <= t1 + execMs);
    const batches = workers.reduce((n, w) => n + w.stats.batches, 0);
    const conflicts = workers.reduce((n, w) => n + w.stats.conflicts, 0);
    const errors = workers.reduce((n, w) => n + w.stats.errors, 0);

    // 4. latencies, both from timestamps taken just before each batch's transaction
    const post = openPool(url, { max: 2 }, () => undefined);
    try {
      const { rows: spans } = await post.query(
        kind === 'state-stored'
          ? `SELECT id AS run_id, started_at AS started, first_step_at AS first_step, finished_at AS finished, NULL::int AS events FROM bench_runs_state`
          : `SELECT run_id,
                    min(recorded_at) FILTER (WHERE seq = 1) AS started,
                    min(recorded_at) FILTER (WHERE seq = 2) AS first_step,
                    max(recorded_at) FILTER (WHERE type = 'RunFinished') AS finished,
                    count(*)::int AS events
             FROM run_events GROUP BY run_id`,
      );
      const { rows: outcome } = await post.query(
        `SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded, min(outputs::text) AS sample FROM ${kind === 'state-stored' ? 'bench_runs_state' : 'runs'}`,
      );
      const done = spans.filter((s) => s.finished);
      const endToEnd = done.map((s) => s.finished.getTime() - Math.max(s.started.getTime(), wallStart.getTime())).sort((a, b) => a - b);
      const execSpan = done.map((s) => s.finished.getTime() - s.first_step.getTime()).sort((a, b) => a - b);
      const n = done.length;
      const trial = {
        variant: variant.name,
        executor: kind,
        db,
        runs,
        finished: n,
        succeeded: outcome[0].succeeded as number,
        startRunsPerSec: r(runs / (startMs / 1000)),
        runsPerSec: r(n / (execMs / 1000)),
        executionMs: r(execMs),
        batchesPerRun: r(batches / Math.max(1, n), 2),
        xactCommitsPerRun: r((commitsAfter - commitsBefore) / Math.max(1, n), 2),
        eventsPerRun: kind === 'state-stored' ? null : r(spans.reduce((k, s) => k + s.events, 0) / Math.max(1, spans.length), 2),
        conflicts,
        errors,
        latencyMs: {
          executionP50: pct(execSpan, 50),
          executionP95: pct(execSpan, 95),
          endToEndP50: pct(endToEnd, 50),
          endToEndP95: pct(endToEnd, 95),
        },
        memory: { ...mem, gcCount: gcInWindow.length, gcPauseMs: r(gcInWindow.reduce((k, g) => k + (g.end - g.start), 0), 1) },
        replay: null as null | Record<string, number>,
        /** where the trial's wall time went besides executing (for tuning the bench's length) */
        overheadMs: { createDatabase: r(createDbMs), checkpoint: r(checkpointMs), createRuns: r(startMs), trialTotal: 0 },
      };

      // 5. replay cost (engine only): verify every finished run, from memory and from Postgres
      if (measureReplay && kind !== 'state-stored' && n > 0) {
        const definition = pub.version.definition;
        const logs = await Promise.all(done.map((s) => loadEvents(post, pub.projectId, s.run_id)));
        const t2 = performance.now();
        let failures = 0;
        for (const l of logs) if (!verifyLog(l[0].runId, l, definition, { keys: KEYS.chainKeys() }).ok) failures++;
        const verifyMemMs = performance.now() - t2;
        const t3 = performance.now();
        for (const l of logs) replayLog(l);
        const foldMs = performance.now() - t3;
        const t4 = performance.now();
        for (const s of done) if (!(await verifyRun(post, pub.projectId, s.run_id, { keys: KEYS.chainKeys() })).ok) failures++;
        const verifyDbMs = performance.now() - t4;
        const execPerRun = execMs / n;
        trial.replay = {
          executePerRunMs: r(execPerRun, 3),
          verifyInMemoryPerRunMs: r(verifyMemMs / n, 3),
          foldOnlyPerRunMs: r(foldMs / n, 4),
          verifyFromPostgresPerRunMs: r(verifyDbMs / n, 3),
          verifyInMemoryRatio: r(verifyMemMs / n / execPerRun, 4),
          verifyFromPostgresRatio: r(verifyDbMs / n / execPerRun, 4),
          verifyFailures: failures,
        };
      }
      if (process.env.BENCH_DEBUG) process.stdout.write(`\n  ${kind}: ${outcome[0].succeeded} succeeded, e.g. outputs ${outcome[0].sample}\n`);
      trial.overheadMs.trialTotal = r(performance.now() - trialStart);
      return trial;
    } finally {
      await post.end().catch(() => undefined);
    }
  } finally {
    await bench.admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  }
}

type Trial = Awaited<ReturnType<typeof runTrial>>;

// ───── aggregation

const METRICS = {
  throughput: { get: (t: Trial) => t.runsPerSec, unit: 'runs/s', higherIsBetter: true, what: 'throughput' },
  latencyP50: { get: (t: Trial) => t.latencyMs.executionP50, unit: 'ms', higherIsBetter: false, what: 'p50 run latency' },
  latencyP95: { get: (t: Trial) => t.latencyMs.executionP95, unit: 'ms', higherIsBetter: false, what: 'p95 run latency' },
  endToEndP50: { get: (t: Trial) => t.latencyMs.endToEndP50, unit: 'ms', higherIsBetter: false, what: 'p50 end-to-end latency of the burst' },
  peakHeap: { get: (t: Trial) => t.memory.peakHeapDeltaMB, unit: 'MB', higherIsBetter: false, what: 'peak worker heap growth' },
  allocatedHeap: { get: (t: Trial) => t.memory.allocatedMBApprox, unit: 'MB', higherIsBetter: false, what: 'heap allocated while executing (approx.)' },
  peakRss: { get: (t: Trial) => t.memory.peakRssDeltaMB, unit: 'MB', higherIsBetter: false, what: 'peak RSS growth' },
  commitsPerRun: { get: (t: Trial) => t.xactCommitsPerRun, unit: 'xacts/run', higherIsBetter: false, what: 'Postgres transactions per run' },
} as const;
type MetricName = keyof typeof METRICS;

/** RSS rarely moves once the process has grown; below this a ratio of deltas says nothing. */
const MIN_RSS_DELTA_MB = 2;

interface PairedRatio {
  ratio: number | null;
  min: number | null;
  max: number | null;
  perRepeat: (number | null)[];
  numerator: number;
  denominator: number;
  note?: string;
}

function paired(trials: Trial[], metric: MetricName, num: Kind, den: Kind): PairedRatio {
  const get = METRICS[metric].get;
  const byRepeat = (k: Kind) => trials.filter((t) => t.executor === k);
  const a = byRepeat(num);
  const b = byRepeat(den);
  const perRepeat = a.map((t, i) => {
    const x = get(t);
    const y = b[i] ? get(b[i]) : NaN;
    if (metric === 'peakRss' && (x < MIN_RSS_DELTA_MB || y < MIN_RSS_DELTA_MB)) return null;
    return Number.isFinite(x) && Number.isFinite(y) && y > 0 ? x / y : null;
  });
  const valid = perRepeat.filter((x): x is number => x !== null);
  const res: PairedRatio = {
    ratio: valid.length ? r(median(valid), 3) : null,
    min: valid.length ? r(Math.min(...valid), 3) : null,
    max: valid.length ? r(Math.max(...valid), 3) : null,
    perRepeat: perRepeat.map((x) => (x === null ? null : r(x, 3))),
    numerator: r(median(a.map(get)), 2),
    denominator: r(median(b.map(get)), 2),
  };
  if (valid.length < perRepeat.length) {
    res.note = metric === 'peakRss' ? `RSS grew less than ${MIN_RSS_DELTA_MB} MB in some repeats (the process had already grown): those repeats carry no ratio` : 'some repeats had no usable figure';
  }
  return res;
}

function geomean(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null && x > 0);
  if (v.length === 0) return null;
  return r(Math.exp(v.reduce((s, x) => s + Math.log(x), 0) / v.length), 3);
}

function summarise(trials: Trial[]) {
  const numeric = (f: (t: Trial) => number | null) => r(median(trials.map((t) => f(t) ?? NaN)), 2);
  return {
    repeats: trials.length,
    finished: Math.min(...trials.map((t) => t.finished)),
    succeeded: Math.min(...trials.map((t) => t.succeeded)),
    runs: trials[0]?.runs,
    runsPerSec: numeric((t) => t.runsPerSec),
    executionMs: numeric((t) => t.executionMs),
    startRunsPerSec: numeric((t) => t.startRunsPerSec),
    batchesPerRun: numeric((t) => t.batchesPerRun),
    xactCommitsPerRun: numeric((t) => t.xactCommitsPerRun),
    eventsPerRun: trials[0]?.eventsPerRun === null ? null : numeric((t) => t.eventsPerRun),
    conflicts: trials.reduce((k, t) => k + t.conflicts, 0),
    errors: trials.reduce((k, t) => k + t.errors, 0),
    latencyMs: {
      executionP50: numeric((t) => t.latencyMs.executionP50),
      executionP95: numeric((t) => t.latencyMs.executionP95),
      endToEndP50: numeric((t) => t.latencyMs.endToEndP50),
      endToEndP95: numeric((t) => t.latencyMs.endToEndP95),
    },
    memory: {
      peakHeapDeltaMB: numeric((t) => t.memory.peakHeapDeltaMB),
      allocatedMBApprox: numeric((t) => t.memory.allocatedMBApprox),
      peakRssDeltaMB: numeric((t) => t.memory.peakRssDeltaMB),
      gcCount: numeric((t) => t.memory.gcCount),
      gcPauseMs: numeric((t) => t.memory.gcPauseMs),
    },
    replay: trials.some((t) => t.replay)
      ? Object.fromEntries(
          Object.keys(trials.find((t) => t.replay)!.replay!).map((k) => [
            k,
            k === 'verifyFailures' ? trials.reduce((s, t) => s + (t.replay?.[k] ?? 0), 0) : r(median(trials.filter((t) => t.replay).map((t) => t.replay![k])), 4),
          ]),
        )
      : null,
  };
}

function times(x: number | null): string {
  return x === null ? 'n/a' : `${x.toFixed(2)}×`;
}

/** One line in plain words for a ratio numerator/denominator of a metric. */
function verdict(metric: MetricName, overall: number | null, byVariant: Record<string, PairedRatio>, comparison: 'engineVsStateStored' | 'failpoints'): string {
  const m = METRICS[metric];
  const parts = Object.entries(byVariant);
  const detail = parts
    .map(([v, p]) => `${v} ${times(p.ratio)}${p.min !== null ? ` [${p.min.toFixed(2)}–${p.max!.toFixed(2)}]` : ''}`)
    .join('; ');
  const [num, den] = comparison === 'engineVsStateStored' ? ['engine', 'state-stored'] : ['armed, no match', 'Failpoints.none()'];
  const medians = parts.map(([v, p]) => `${v}: ${num} ${p.numerator} ${m.unit} vs ${den} ${p.denominator} ${m.unit}`).join('; ');
  if (overall === null) {
    return metric === 'peakRss'
      ? `Peak RSS growth: no ratio — RSS grew less than ${MIN_RSS_DELTA_MB} MB while either executor ran (the process reached its high-water mark in warm-up), so memory is judged by heap (${medians})`
      : `${m.what}: no usable ratio (${medians})`;
  }
  // a difference is called one only when at least 80% of all repeats (every variant) point the same way
  const all = parts.flatMap(([, p]) => p.perRepeat).filter((x): x is number => x !== null);
  const agree = all.filter((x) => (overall > 1 ? x > 1 : x < 1)).length;
  const pctDiff = Math.round(Math.abs(overall - 1) * 100);
  const [more, less] = WORDS[metric];
  const size =
    pctDiff >= 1 && agree >= 0.8 * all.length
      ? `${pctDiff}% ${overall > 1 ? more : less}, in ${agree} of ${all.length} paired repeats`
      : pctDiff === 0
        ? `no difference — the same at the median, with the repeats on both sides of 1× (${agree} of ${all.length} on the median's side)`
        : `no consistent difference — ${pctDiff}% ${overall > 1 ? more : less} at the median, but only ${agree} of ${all.length} repeats point that way, which is within this run's noise`;
  const subject =
    comparison === 'engineVsStateStored'
      ? metric === 'throughput'
        ? `The event-sourced engine runs at ${times(overall)} the throughput of a state-stored engine doing the same work`
        : `The event-sourced engine's ${m.what} is ${times(overall)} the state-stored engine's`
      : `With a failpoint armed that never matches (${NEVER_MATCHING_FAILPOINT}), the engine's ${m.what} is ${times(overall)} of the same engine with Failpoints.none()`;
  return `${subject}: ${size} (per variant, median [min–max]: ${detail})`;
}

const WORDS: Record<MetricName, [string, string]> = {
  throughput: ['more runs per second', 'fewer runs per second'],
  latencyP50: ['longer', 'shorter'],
  latencyP95: ['longer', 'shorter'],
  endToEndP50: ['longer', 'shorter'],
  peakHeap: ['more', 'less'],
  allocatedHeap: ['more', 'less'],
  peakRss: ['more', 'less'],
  commitsPerRun: ['more', 'fewer'],
};

// ───── main

async function main(): Promise<void> {
  const started = Date.now();
  const loadBefore = os.loadavg().map((x) => r(x, 2));
  const order = (rep: number): Kind[] => KINDS.map((_, i) => KINDS[(i + rep) % KINDS.length]);
  process.stdout.write(
    `bench: ${RUNS} runs × ${REPEATS} repeats × ${KINDS.length} executors × ${VARIANTS.length} variants; ` +
      `${WORKERS} workers × concurrency ${CONCURRENCY}; ${os.cpus().length} CPUs, node ${process.version}\n`,
  );
  const pg = await provisionPostgres();
  const target = await startTarget();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const results: VariantResult[] = [];
  const allTrials: Trial[] = [];
  const ratioTable: Record<string, Record<string, PairedRatio>> = {};
  let settings: Record<string, string> = {};
  try {
    const { rows: s } = await admin.query(
      `SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_level', 'shared_buffers', 'server_version', 'full_page_writes')`,
    );
    settings = Object.fromEntries(s.map((x) => [x.name, x.setting]));

    // one migrated template holding the engine's schema, the baseline's table and both workflows
    const template = `bench_${process.pid}_template`;
    await admin.query(`CREATE DATABASE ${template}`);
    const published: Bench['published'] = new Map();
    const tpool = openPool(pg.urlFor(template), { max: 2 }, () => undefined);
    try {
      await migrate(tpool);
      await tpool.query(STATE_STORED_SCHEMA);
      for (const v of VARIANTS) {
        const p = await publishWorkflow(tpool, KEYS, 'bench', v.definition(target.url));
        await setAllowPrivateTargets(tpool, KEYS.chainKey(), p.projectId, true);
        published.set(v.name, { projectId: p.projectId, workflow: p.workflow, version: await latestVersion(tpool, p.projectId, p.workflowId) });
      }
    } finally {
      await tpool.end();
    }
    const bench: Bench = { admin, urlFor: (db) => pg.urlFor(db), template, published };

    for (const variant of VARIANTS) {
      process.stdout.write(`\n▶ ${variant.name}: warm-up`);
      for (const kind of KINDS) {
        await runTrial(bench, variant, kind, WARMUP_RUNS, false);
        process.stdout.write('.');
      }
      process.stdout.write(' measuring');
      const trials: Trial[] = [];
      const variantStart = Date.now();
      const variantBudget = (BUDGET_MS - (variantStart - started)) / (VARIANTS.length - VARIANTS.indexOf(variant));
      for (let rep = 0; rep < REPEATS; rep++) {
        const perRepeat = (Date.now() - variantStart) / Math.max(1, rep);
        if (rep >= 2 && Date.now() - variantStart + perRepeat > variantBudget) {
          process.stdout.write(` (time budget: ${rep} of ${REPEATS} repeats)`);
          break;
        }
        for (const kind of order(rep)) {
          trials.push(await runTrial(bench, variant, kind, RUNS, kind === 'engine'));
          process.stdout.write('.');
        }
      }
      process.stdout.write('\n');
      allTrials.push(...trials);
      const of = (k: Kind) => trials.filter((t) => t.executor === k);
      results.push({
        variant: variant.name,
        stateStored: summarise(of('state-stored')),
        engine: summarise(of('engine')),
        engineFailpointArmedNoMatch: summarise(of('engine+fp')),
      });
      const ratios: Record<string, PairedRatio> = {};
      for (const metric of Object.keys(METRICS) as MetricName[]) ratios[`engineVsStateStored.${metric}`] = paired(trials, metric, 'engine', 'state-stored');
      ratios['failpointsNoMatchVsNone.throughput'] = paired(trials, 'throughput', 'engine+fp', 'engine');
      ratios['failpointsNoMatchVsNone.latencyP50'] = paired(trials, 'latencyP50', 'engine+fp', 'engine');
      ratioTable[variant.name] = ratios;
    }
  } finally {
    await admin.end().catch(() => undefined);
    await target.close();
    await pg.stop();
  }

  // ratios across variants: the geometric mean of the per-variant medians
  const group = (key: string) => Object.fromEntries(VARIANTS.map((v) => [v.name, ratioTable[v.name][key]]));
  const engineVsStateStored: Record<string, unknown> = {};
  const verdicts: string[] = [];
  for (const metric of Object.keys(METRICS) as MetricName[]) {
    const byVariant = group(`engineVsStateStored.${metric}`);
    const ratio = geomean(Object.values(byVariant).map((p) => p.ratio));
    const line = verdict(metric, ratio, byVariant, 'engineVsStateStored');
    engineVsStateStored[metric] = { ratio, byVariant, verdict: line };
    verdicts.push(line);
  }
  const failpointsNoMatchVsNone: Record<string, unknown> = {};
  for (const metric of ['throughput', 'latencyP50'] as MetricName[]) {
    const byVariant = group(`failpointsNoMatchVsNone.${metric}`);
    const ratio = geomean(Object.values(byVariant).map((p) => p.ratio));
    const line = verdict(metric, ratio, byVariant, 'failpoints');
    failpointsNoMatchVsNone[metric] = { ratio, byVariant, verdict: line };
    verdicts.push(line);
  }
  const incomplete = allTrials.filter((t) => t.finished < t.runs);
  if (incomplete.length) verdicts.push(`WARNING: ${incomplete.length} trial(s) hit the ${TRIAL_DEADLINE_MS} ms deadline before finishing every run; their figures are partial`);
  const unsuccessful = allTrials.filter((t) => t.succeeded < t.runs);
  if (unsuccessful.length) verdicts.push(`WARNING: in ${unsuccessful.length} trial(s) not every run succeeded; the executors did not do the same work there`);
  const failures = allTrials.reduce((k, t) => k + (t.replay?.verifyFailures ?? 0), 0);
  if (failures) verdicts.push(`WARNING: ${failures} run(s) failed replay verification`);

  const report = {
    at: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    postgres: pg.kind,
    durationMs: Date.now() - started,
    /** 1/5/15-minute load averages: other work on the machine widens the spread, the interleaving keeps ratios comparable */
    loadAverage: { atStart: loadBefore, atEnd: os.loadavg().map((x) => r(x, 2)) },
    config: {
      runs: RUNS,
      repeats: REPEATS,
      budgetMs: BUDGET_MS,
      warmupRuns: WARMUP_RUNS,
      workers: WORKERS,
      concurrency: CONCURRENCY,
      pollMs: POLL_MS,
      memorySampleMs: SAMPLE_MS,
      forcedGcBeforeTrials: gc !== null,
      neverMatchingFailpoint: NEVER_MATCHING_FAILPOINT,
      order: Array.from({ length: REPEATS }, (_, i) => order(i).join(' → ')),
      postgresSettings: settings,
      ratioMethod: 'per variant: median over repeats of (numerator trial / denominator trial of the same repeat), with min and max; overall: geometric mean of the per-variant medians',
    },
    ratios: { engineVsStateStored, failpointsNoMatchVsNone },
    verdicts,
    results,
    trials: allTrials,
  };
  const dir = path.resolve(__dirname, '..', 'reports');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'bench.json'), JSON.stringify(report, null, 2) + '\n');
  print(results, ratioTable, verdicts);
  process.stdout.write(`\nload average ${loadBefore[0]} at start, ${r(os.loadavg()[0], 2)} at end (${os.cpus().length} CPUs)`);
  process.stdout.write(`\nwrote reports/bench.json (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
}

type Summary = ReturnType<typeof summarise>;
interface VariantResult {
  variant: string;
  stateStored: Summary;
  engine: Summary;
  engineFailpointArmedNoMatch: Summary;
}

function print(results: VariantResult[], ratios: Record<string, Record<string, PairedRatio>>, verdicts: string[]): void {
  const w = (s: string) => process.stdout.write(s + '\n');
  const cols = ['runs/s', 'p50 ms', 'p95 ms', 'e2e p50', 'heap Δ MB', 'alloc MB', 'rss Δ MB', 'gc #', 'batch/run', 'xact/run', 'fin'];
  const head = '  executor'.padEnd(30) + cols.map((c) => c.padStart(10)).join('');
  w(`\nmedians of ${results[0]?.engine.repeats ?? REPEATS} repeats, ${RUNS} runs each (latency: first step to finish; e2e: burst start to finish)`);
  for (const res of results) {
    w(`\n${res.variant}`);
    w(head);
    for (const [kind, s] of [
      ['state-stored', res.stateStored],
      ['engine', res.engine],
      ['engine+fp', res.engineFailpointArmedNoMatch],
    ] as const) {
      const vals = [
        s.runsPerSec,
        s.latencyMs.executionP50,
        s.latencyMs.executionP95,
        s.latencyMs.endToEndP50,
        s.memory.peakHeapDeltaMB,
        s.memory.allocatedMBApprox,
        s.memory.peakRssDeltaMB,
        s.memory.gcCount,
        s.batchesPerRun,
        s.xactCommitsPerRun,
        `${s.finished}/${s.runs}`,
      ];
      w(`  ${KIND_LABEL[kind]}`.padEnd(30) + vals.map((v) => String(v).padStart(10)).join(''));
    }
    const rp = res.engine.replay;
    if (rp) {
      w(
        `  replay+verify per run: ${rp.verifyInMemoryPerRunMs} ms in memory (${rp.verifyInMemoryRatio}× of executing it), ` +
          `${rp.verifyFromPostgresPerRunMs} ms from Postgres (${rp.verifyFromPostgresRatio}×); fold only ${rp.foldOnlyPerRunMs} ms; failures ${rp.verifyFailures}`,
      );
    }
  }
  const names = Object.keys(ratios);
  w(`\nratios (median of the paired repeats [min–max])`);
  w('  ratio'.padEnd(40) + names.map((n) => (VARIANTS.find((v) => v.name === n)?.short ?? n).padStart(24)).join(''));
  const keys = [...(Object.keys(METRICS) as MetricName[]).map((m) => `engineVsStateStored.${m}`), 'failpointsNoMatchVsNone.throughput', 'failpointsNoMatchVsNone.latencyP50'];
  for (const k of keys) {
    const label = k.replace('engineVsStateStored.', 'engine / state-stored ').replace('failpointsNoMatchVsNone.', 'fp armed no-match / none ');
    w(
      `  ${label}`.padEnd(40) +
        names
          .map((n) => {
            const p = ratios[n][k];
            return (p.ratio === null ? 'n/a' : `${p.ratio.toFixed(2)} [${p.min!.toFixed(2)}–${p.max!.toFixed(2)}]`).padStart(24);
          })
          .join(''),
    );
  }
  w('\nverdicts');
  for (const v of verdicts) w(`  • ${v}`);
}

main()
  .catch((e: Error) => {
    process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    gcObserver.disconnect();
    // everything is closed by now; should a stray handle keep the loop alive, leave anyway
    setTimeout(() => process.exit(), 5_000).unref();
  });
