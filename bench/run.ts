/*
 * npm run bench — throughput and replay cost of the engine on a real Postgres.
 *
 * For each variant, N runs are started (straight through the run store, so the
 * intake is not measured), then 2 in-process workers execute them. Reported:
 * runs/s, commits per run (the workers' batches, and every committed
 * transaction Postgres counted), events per run, run latency, and the cost of
 * replaying + verifying those runs relative to executing them. Figures only:
 * nothing here asserts a timing. Bounded in time; writes reports/bench.json.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client, Pool } from 'pg';
import { migrate } from '../src/db/migrate';
import { openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import type { WorkflowDefinition } from '../src/domain/definition';
import { replayLog, verifyLog } from '../src/domain/replay';
import { verifyRun } from '../src/replay-service';
import { latestVersion, publishWorkflow } from '../src/store/registry';
import { loadEvents, startRun } from '../src/store/run-store';
import { Worker } from '../src/worker/worker';

const RUNS = Number(process.env.BENCH_RUNS ?? 300);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const VARIANT_DEADLINE_MS = Number(process.env.BENCH_DEADLINE_MS ?? 90_000);

interface Variant {
  name: string;
  definition: (targetUrl: string) => Record<string, unknown>;
}

const VARIANTS: Variant[] = [
  {
    name: 'transform-transform-terminate',
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

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function r(x: number, digits = 1): number {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : x;
}

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

async function xactCommits(pool: Pool): Promise<number> {
  // stats are flushed lazily by each backend; give them a moment, then read a fresh snapshot
  await new Promise((res) => setTimeout(res, 1200));
  await pool.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await pool.query('SELECT xact_commit::bigint AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number(rows[0].n);
}

async function runVariant(variant: Variant, databaseUrl: string, targetUrl: string) {
  const pool = openPool(databaseUrl, { max: 20 }, () => undefined);
  try {
    await migrate(pool);
    const published = await publishWorkflow(pool, 'bench', variant.definition(targetUrl));
    const version = await latestVersion(pool, published.workflowId);
    const definition: WorkflowDefinition = version.definition;

    // 1. start N runs (what the intake does after its checks)
    const runIds: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < RUNS; i++) {
      const runId = randomUUID();
      const input = { order: { id: `o-${i}`, sum: i } };
      await startRun(pool, {
        runId,
        projectId: published.projectId,
        projectSlug: 'bench',
        workflowSlug: published.workflow,
        version,
        deliveryId: `bench-${i}`,
        input,
        rawBody: JSON.stringify(input),
        at: new Date(),
      });
      runIds.push(runId);
    }
    const startMs = performance.now() - t0;

    // 2. execute them with N workers
    const commitsBefore = await xactCommits(pool);
    const workers = Array.from(
      { length: WORKERS },
      (_, i) => new Worker({ pool, lockConnection: { connectionString: databaseUrl }, pollMs: 10, id: `bench-${i + 1}` }),
    );
    const wallStart = new Date();
    const t1 = performance.now();
    for (const w of workers) w.start();
    let finished = 0;
    const deadline = Date.now() + VARIANT_DEADLINE_MS;
    while (Date.now() < deadline) {
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM runs WHERE status IN ('succeeded', 'failed')`);
      finished = rows[0].n;
      if (finished >= RUNS) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    const execMs = performance.now() - t1;
    await Promise.all(workers.map((w) => w.stop()));
    const commitsAfter = await xactCommits(pool);
    const batches = workers.reduce((n, w) => n + w.stats.batches, 0);
    const conflicts = workers.reduce((n, w) => n + w.stats.conflicts, 0);

    // 3. latencies from the log itself
    const { rows: spans } = await pool.query(
      `SELECT run_id,
              min(recorded_at) FILTER (WHERE seq = 1) AS started,
              min(recorded_at) FILTER (WHERE seq = 2) AS first_step,
              max(recorded_at) FILTER (WHERE type = 'RunFinished') AS finished,
              count(*)::int AS events
       FROM run_events GROUP BY run_id`,
    );
    const done = spans.filter((s) => s.finished);
    const endToEnd = done.map((s) => s.finished.getTime() - Math.max(s.started.getTime(), wallStart.getTime())).sort((a, b) => a - b);
    const execSpan = done.map((s) => s.finished.getTime() - s.first_step.getTime()).sort((a, b) => a - b);
    const events = spans.reduce((n, s) => n + s.events, 0);

    // 4. replay cost: verify every finished run, (a) from memory, (b) from Postgres
    const logs = await Promise.all(done.map((s) => loadEvents(pool, s.run_id)));
    const t2 = performance.now();
    let failures = 0;
    for (const log of logs) if (!verifyLog(log[0].runId, log, definition).ok) failures++;
    const verifyMemMs = performance.now() - t2;
    const t3 = performance.now();
    for (const log of logs) replayLog(log);
    const foldMs = performance.now() - t3;
    const t4 = performance.now();
    let dbFailures = 0;
    for (const s of done) if (!(await verifyRun(pool, s.run_id)).ok) dbFailures++;
    const verifyDbMs = performance.now() - t4;

    const n = done.length;
    const execPerRun = execMs / Math.max(1, n);
    return {
      variant: variant.name,
      runs: RUNS,
      finished: n,
      workers: WORKERS,
      startRunsPerSec: r(RUNS / (startMs / 1000)),
      runsPerSec: r(n / (execMs / 1000)),
      executionMs: r(execMs),
      batchesPerRun: r(batches / Math.max(1, n), 2),
      xactCommitsPerRun: r((commitsAfter - commitsBefore) / Math.max(1, n), 2),
      conflicts,
      eventsPerRun: r(events / Math.max(1, spans.length), 2),
      latencyMs: {
        endToEnd: { p50: pct(endToEnd, 50), p95: pct(endToEnd, 95), note: 'RunStarted (or workers start, if later) to RunFinished, all runs queued at once' },
        execution: { p50: pct(execSpan, 50), p95: pct(execSpan, 95), note: 'first worker event to RunFinished' },
      },
      replay: {
        executePerRunMs: r(execPerRun, 3),
        verifyInMemoryPerRunMs: r(verifyMemMs / Math.max(1, n), 3),
        foldOnlyPerRunMs: r(foldMs / Math.max(1, n), 4),
        verifyFromPostgresPerRunMs: r(verifyDbMs / Math.max(1, n), 3),
        verifyInMemoryRatio: r(verifyMemMs / Math.max(1, n) / execPerRun, 4),
        verifyFromPostgresRatio: r(verifyDbMs / Math.max(1, n) / execPerRun, 4),
        verifyFailures: failures + dbFailures,
      },
    };
  } finally {
    await pool.end().catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  process.stdout.write(`bench: ${RUNS} runs per variant, ${WORKERS} workers, ${os.cpus().length} CPUs, node ${process.version}\n`);
  const pg = await provisionPostgres();
  const target = await startTarget();
  const results = [];
  try {
    for (const [i, variant] of VARIANTS.entries()) {
      const db = `bench_${process.pid}_${i}`;
      const admin = new Client({ connectionString: pg.urlFor('postgres') });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${db}`);
      await admin.end();
      process.stdout.write(`\n▶ ${variant.name}\n`);
      const res = await runVariant(variant, pg.urlFor(db), target.url);
      results.push(res);
      print(res);
    }
  } finally {
    await target.close();
    await pg.stop();
  }
  const report = { at: new Date().toISOString(), node: process.version, cpus: os.cpus().length, postgres: pg.kind, durationMs: Date.now() - started, results };
  const dir = path.resolve(__dirname, '..', 'reports');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'bench.json'), JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(`\nwrote reports/bench.json (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
}

function print(res: Awaited<ReturnType<typeof runVariant>>): void {
  const l = (label: string, value: string) => process.stdout.write(`  ${label.padEnd(34)}${value}\n`);
  l('runs finished', `${res.finished}/${res.runs}${res.finished < res.runs ? '  (deadline reached)' : ''}`);
  l('throughput', `${res.runsPerSec} runs/s  (${res.workers} workers, ${res.executionMs} ms)`);
  l('run creation (startRun)', `${res.startRunsPerSec} runs/s`);
  l('commits per run', `${res.batchesPerRun} event batches; ${res.xactCommitsPerRun} Postgres transactions incl. claims/reads`);
  l('events per run', String(res.eventsPerRun));
  l('conflicts (lost appends)', String(res.conflicts));
  l('latency, execution p50/p95', `${res.latencyMs.execution.p50} / ${res.latencyMs.execution.p95} ms`);
  l('latency, end-to-end p50/p95', `${res.latencyMs.endToEnd.p50} / ${res.latencyMs.endToEnd.p95} ms (burst of ${res.runs})`);
  l('execute, per run (amortised)', `${res.replay.executePerRunMs} ms`);
  l('replay+verify, in memory', `${res.replay.verifyInMemoryPerRunMs} ms/run = ${res.replay.verifyInMemoryRatio}× of executing it`);
  l('replay+verify, from Postgres', `${res.replay.verifyFromPostgresPerRunMs} ms/run = ${res.replay.verifyFromPostgresRatio}× of executing it`);
  l('fold only (replayLog)', `${res.replay.foldOnlyPerRunMs} ms/run`);
  l('verify failures', String(res.replay.verifyFailures));
}

main().catch((e: Error) => {
  process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`);
  process.exitCode = 1;
});
