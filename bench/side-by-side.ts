/*
 * node -r ts-node/register bench/side-by-side.ts [--quick] [--scaling]
 *
 * The bench contenders on their own (bench/contenders/): DBOS Transact and the
 * raw SKIP LOCKED floor, on one embedded Postgres, with the engine bench's
 * method (bench/README.md): every trial on a fresh database cloned from one
 * template (here: DBOS's schema migrated, floor_jobs created), a CHECKPOINT and
 * a full GC before it, one warm-up trial per case (discarded), then repeats in
 * an order that rotates each time. Figures are medians over the repeats; the
 * dbos/floor ratio is the median of the per-repeat ratios, with its min–max.
 *
 *   dbos  pure   transform → transform → terminate    (DBOS queue, 1 executor × workerConcurrency 8)
 *   dbos-inline pure  the same transforms in the workflow's body, no step (DBOS's advice for
 *                deterministic code; records no step output, so a reference, not the headline)
 *   floor pure   the same steps, 8 SKIP LOCKED pollers
 *   dbos  http   transform → http_call → terminate    (POST to an in-process server that honours Idempotency-Key)
 *
 * Commits come from pg_stat_database.xact_commit, statements from pg_stat_statements: the
 * embedded server is restarted once at the start with shared_preload_libraries=pg_stat_statements
 * (with DATABASE_URL, statements are counted only if that server already preloads it).
 *
 * --quick      40 workflows per trial, 2 repeats (about 15 s); the normal run is 1,000 × 4 (about 1.7 min), as
 *              the performance issue measured it
 * SBS_WORKFLOWS, SBS_REPEATS, SBS_WARMUP_WORKFLOWS, SBS_CONCURRENCY, SBS_BUDGET_MS override the defaults
 * --scaling    also DBOS with 1/2/4 executors (child processes, workerConcurrency 4 each) and the engine
 *              with 1/2/4 in-process workers × 4, with 3 pure steps and with the HTTP step, in SBS_SCALING_REPEATS
 *              paired repeats (3; 1 with --quick), the engine ÷ DBOS ratio the median of the repeats' ratios;
 *              the floor with 4/8/16 pollers once, for reference
 * Writes reports/side-by-side.json. Figures only: nothing asserts a timing.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { DBOS } from '@dbos-inc/dbos-sdk';
import { Client } from 'pg';
import { provisionPostgres, PostgresServer } from '../src/db/postgres';
import { round, sleep, TrialResult } from './contenders/common';
import { dbosVersion, runDbosTrial } from './contenders/dbos';
import { runEngineTrial } from './contenders/engine';
import { FLOOR_SCHEMA, runFloorTrial } from './contenders/floor';
import { migrate } from '../src/db/migrate';

const FLAGS = ['--quick', '--scaling', '--help', '-h'];
const unknownFlags = process.argv.slice(2).filter((a) => !FLAGS.includes(a));
if (process.argv.includes('--help') || process.argv.includes('-h') || unknownFlags.length) {
  // before anything starts: `--help` used to run the whole bench (about 2 minutes and an embedded Postgres)
  const usage = [
    'usage: npm run bench:dbos -- [--quick] [--scaling]',
    '',
    'The engine, DBOS Transact and a raw FOR UPDATE SKIP LOCKED floor side by side on one embedded Postgres',
    '(fsync on), fresh databases cloned from one template, one warm-up trial per case, repeats in a rotating order.',
    'Execution only: runs are created and DBOS workflows enqueued before the clock. Ratios are medians of the',
    "repeats' paired ratios. Cases: dbos/pure, dbos-inline/pure (the transforms in DBOS's workflow body, no step:",
    'a reference), floor/pure, engine/pure, engine-single/pure, dbos/http, engine/http. Writes reports/side-by-side.json.',
    '',
    '  --quick      40 workflows a trial, 2 repeats (figures not for quoting)',
    '  --scaling    also 1/2/4 engine workers × 4 against 1/2/4 DBOS executors × 4, paired',
    '',
    'environment: SBS_WORKFLOWS (1000), SBS_REPEATS (4), SBS_WARMUP_WORKFLOWS (40), SBS_CONCURRENCY (8),',
    '             SBS_BUDGET_MS (150000), SBS_SCALING_REPEATS (3), DATABASE_URL (a server of your own)',
  ].join('\n');
  if (unknownFlags.length && !process.argv.includes('--help') && !process.argv.includes('-h')) {
    process.stderr.write(`unknown option ${unknownFlags.join(' ')}\n${usage}\n`);
    process.exit(2);
  }
  process.stdout.write(usage + '\n');
  process.exit(0);
}
const QUICK = process.argv.includes('--quick');
const SCALING = process.argv.includes('--scaling');
const env = (name: string, normal: number, quick: number): number => Number(process.env[name] ?? (QUICK ? quick : normal));
const WORKFLOWS = env('SBS_WORKFLOWS', 1000, 40);
const REPEATS = env('SBS_REPEATS', 4, 2);
const WARMUP_WORKFLOWS = env('SBS_WARMUP_WORKFLOWS', 40, 10);
const CONCURRENCY = env('SBS_CONCURRENCY', 8, 8);
const POLL_MS = 10;
/** beyond this, fewer repeats (never under 2) */
const BUDGET_MS = env('SBS_BUDGET_MS', 150_000, 40_000);
/** paired repeats of the scaling trials (--scaling): single trials here move by 10–20 %, DBOS's most */
const SCALING_REPEATS = env('SBS_SCALING_REPEATS', 3, 1);

v8.setFlagsFromString('--expose-gc');
const gc: (() => void) | null = (() => {
  try {
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
})();

interface Case {
  key: string;
  contender: 'dbos' | 'floor' | 'engine';
  variant: 'pure' | 'http';
  /** the engine with one transaction per batch instead of group commit across runs */
  single?: boolean;
  /** DBOS with the pure transforms in the workflow's body, no step each (DBOS's advice for deterministic code) */
  inline?: boolean;
}
const CASES: Case[] = [
  { key: 'dbos/pure', contender: 'dbos', variant: 'pure' },
  { key: 'dbos-inline/pure', contender: 'dbos', variant: 'pure', inline: true },
  { key: 'floor/pure', contender: 'floor', variant: 'pure' },
  { key: 'engine/pure', contender: 'engine', variant: 'pure' },
  { key: 'engine-single/pure', contender: 'engine', variant: 'pure', single: true },
  { key: 'dbos/http', contender: 'dbos', variant: 'http' },
  { key: 'engine/http', contender: 'engine', variant: 'http' },
];

const caseOf = (key: string): Case => {
  const c = CASES.find((x) => x.key === key);
  if (!c) throw new Error(`no case ${key}`);
  return c;
};

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ───── the http target: 200 + JSON; a repeated Idempotency-Key gets the first answer again

async function startTarget() {
  const seen = new Map<string, string>();
  const stats = { requests: 0, withoutKey: 0, replayed: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      stats.requests++;
      const key = req.headers['idempotency-key'];
      let body: string;
      let replayed = false;
      if (typeof key !== 'string' || key === '') {
        stats.withoutKey++;
        body = JSON.stringify({ orderId: `ord_nokey_${stats.requests}` });
      } else if (seen.has(key)) {
        stats.replayed++;
        replayed = true;
        body = seen.get(key)!;
      } else {
        let sent: unknown = null;
        try {
          sent = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          /* not JSON */
        }
        body = JSON.stringify({ orderId: `ord_${seen.size + 1}`, received: sent });
        seen.set(key, body);
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'idempotent-replayed': String(replayed) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats: () => ({ ...stats, distinctKeys: seen.size }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ───── Postgres: embedded, restarted once with pg_stat_statements preloaded

async function startPostgres(log: (s: string) => void): Promise<{ server: PostgresServer; cleanup: () => Promise<void> }> {
  if (process.env.DATABASE_URL || process.env.MESHHOOK_DB) {
    const server = await provisionPostgres();
    return { server, cleanup: () => server.stop() };
  }
  const root = mkdtempSync(path.join(os.tmpdir(), 'meshhook-sbs-'));
  const dataDir = path.join(root, 'data');
  let server = await provisionPostgres({ dataDir });
  const c = new Client({ connectionString: server.urlFor() });
  await c.connect();
  const { rows } = await c.query(`SELECT current_setting('shared_preload_libraries') AS libs`);
  if (!String(rows[0].libs).includes('pg_stat_statements')) {
    await c.query(`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`);
    await c.end();
    log('  restarting the embedded Postgres once with shared_preload_libraries=pg_stat_statements\n');
    await server.stop();
    server = await provisionPostgres({ dataDir });
  } else {
    await c.end();
  }
  const s = server;
  return {
    server: s,
    cleanup: async () => {
      await s.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

async function waitNoBackends(admin: Client, db: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`, [db]);
    if (rows[0].n === 0) return;
    await sleep(10);
  }
}

// ───── main

async function main(): Promise<void> {
  const began = Date.now();
  const out = (s: string): void => void process.stdout.write(s);
  const loadBefore = os.loadavg().map((x) => round(x, 2));
  out(
    `side-by-side: the engine vs DBOS Transact ${dbosVersion()} vs the SKIP LOCKED floor — ${WORKFLOWS} workflows per trial, ${REPEATS} repeats, ` +
      `concurrency ${CONCURRENCY}, poll ${POLL_MS} ms${QUICK ? ' (quick)' : ''}; ${os.cpus().length} CPUs, node ${process.version}\n`,
  );
  const { server, cleanup } = await startPostgres(out);
  const admin = new Client({ connectionString: server.urlFor() });
  await admin.connect();
  const target = await startTarget();
  const template = `sbs_tpl_${process.pid}`;
  const trials: (TrialResult & { repeat: number; case: string; db: string })[] = [];
  const scaling: (TrialResult & { db: string; case: string; repeat: number })[] = [];
  /** engine ÷ DBOS at each worker count: medians of the paired repeats, with their range (3 pure steps; one HTTP step) */
  const scalingRatios: Array<{ workers: number; repeats: number; pure: number; pureMin: number; pureMax: number; http: number; httpMin: number; httpMax: number }> = [];
  try {
    await admin.query(`SET statement_timeout = 0`);
    const { rows: settingRows } = await admin.query(
      `SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'wal_level', 'shared_preload_libraries') ORDER BY name`,
    );
    const settings = Object.fromEntries(settingRows.map((r) => [r.name, r.setting]));

    // the template: DBOS's system schema and the floor's table, so no trial migrates on its clock
    await admin.query(`CREATE DATABASE ${template}`);
    await DBOS.migrate(server.urlFor(template));
    const t = new Client({ connectionString: server.urlFor(template) });
    await t.connect();
    await t.query(FLOOR_SCHEMA);
    // and the engine's schema (its roles are the cluster's: created once here)
    await migrate(t);
    await t.end();
    await waitNoBackends(admin, template);

    let dbCounter = 0;
    const runCase = async (cse: Case, workflows: number, extra: { executors?: number; concurrency?: number; workers?: number } = {}) => {
      const db = `sbs_${process.pid}_${++dbCounter}`;
      await admin.query(`CREATE DATABASE ${db} TEMPLATE ${template}`);
      try {
        await admin.query('CHECKPOINT').catch(() => undefined);
        gc?.();
        gc?.();
        const databaseUrl = server.urlFor(db);
        const concurrency = extra.concurrency ?? CONCURRENCY;
        const r =
          cse.contender === 'dbos'
            ? await runDbosTrial({ databaseUrl, workflows, variant: cse.variant, targetUrl: target.url, concurrency, executors: extra.executors ?? 1, pollMs: POLL_MS, inline: cse.inline })
            : cse.contender === 'engine'
              ? await runEngineTrial({ databaseUrl, workflows, variant: cse.variant, targetUrl: target.url, concurrency, pollMs: POLL_MS, groupCommit: !cse.single, ...(extra.workers ? { workers: extra.workers } : {}) })
              : await runFloorTrial({ databaseUrl, workflows, concurrency, pollMs: POLL_MS });
        return { ...r, db, case: cse.key };
      } finally {
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
      }
    };
    const line = (r: TrialResult, label: string): void =>
      out(
        `  ${label.padEnd(22)} ${String(r.wfPerSec).padStart(7)} wf/s  ${String(r.ms).padStart(7)} ms  ` +
          `${String(r.commitsPerWf).padStart(6)} commits/wf  ${String(r.statementsPerWf).padStart(6)} stmts/wf  ${r.succeeded}/${r.workflows} ok\n`,
      );

    out(`\nwarm-up (${WARMUP_WORKFLOWS} workflows each, discarded)\n`);
    for (const cse of CASES) line(await runCase(cse, WARMUP_WORKFLOWS), cse.key);

    out(`\ntrials\n`);
    const repeatStarted: number[] = [];
    let repeats = 0;
    for (let rep = 0; rep < REPEATS; rep++) {
      if (rep >= 2) {
        const perRepeat = (Date.now() - repeatStarted[0]) / rep;
        if (Date.now() - began + perRepeat > BUDGET_MS) {
          out(`  (stopping after ${rep} repeats: the time budget of ${BUDGET_MS / 1000} s would be exceeded)\n`);
          break;
        }
      }
      repeatStarted.push(Date.now());
      const order = CASES.map((_, i) => CASES[(i + rep) % CASES.length]);
      for (const cse of order) {
        const r = await runCase(cse, WORKFLOWS);
        trials.push({ ...r, repeat: rep + 1 });
        line(r, `#${rep + 1} ${cse.key}`);
      }
      repeats++;
    }

    if (SCALING) {
      out(`\nscaling (${SCALING_REPEATS} paired trial${SCALING_REPEATS > 1 ? 's' : ''} each): DBOS executors in child processes × workerConcurrency 4, floor pollers 4 per "worker"\n`);
      // per worker count, each repeat's engine ÷ DBOS from trials run back to back; the order of the four
      // turns each repeat, and the floor (for reference, not in a ratio) runs in the first repeat only
      const paired = new Map<number, { pure: number[]; http: number[] }>([1, 2, 4].map((n) => [n, { pure: [], http: [] }]));
      for (let rep = 0; rep < SCALING_REPEATS; rep++) {
        for (const n of [1, 2, 4]) {
          const runs: Record<string, TrialResult> = {};
          const cases: Array<[string, () => Promise<TrialResult & { db: string; case: string }>, string]> = [
            ['dbos', () => runCase(caseOf('dbos/pure'), WORKFLOWS, { executors: n, concurrency: 4 }), `dbos ${n} executor${n > 1 ? 's' : ''}`],
            ['engine', () => runCase(caseOf('engine/pure'), WORKFLOWS, { concurrency: 4 * n, workers: n }), `engine ${n} worker${n > 1 ? 's' : ''}`],
            ['dbosHttp', () => runCase(caseOf('dbos/http'), WORKFLOWS, { executors: n, concurrency: 4 }), `dbos http ${n} executor${n > 1 ? 's' : ''}`],
            ['engineHttp', () => runCase(caseOf('engine/http'), WORKFLOWS, { concurrency: 4 * n, workers: n }), `engine http ${n} worker${n > 1 ? 's' : ''}`],
          ];
          if (rep === 0) {
            // the engine's workers run in this one process (DBOS's executors each have a process of their own)
            const f = await runCase(caseOf('floor/pure'), WORKFLOWS, { concurrency: 4 * n });
            scaling.push({ ...f, repeat: 1 });
            line(f, `#1 floor ${4 * n} pollers`);
          }
          for (let k = 0; k < cases.length; k++) {
            const [key, run, label] = cases[(k + rep) % cases.length];
            const r = await run();
            runs[key] = r;
            scaling.push({ ...r, repeat: rep + 1 });
            line(r, `#${rep + 1} ${label}`);
          }
          paired.get(n)!.pure.push(runs.engine.wfPerSec / runs.dbos.wfPerSec);
          paired.get(n)!.http.push(runs.engineHttp.wfPerSec / runs.dbosHttp.wfPerSec);
          out(`  engine ÷ DBOS with ${n}: ${round(runs.engine.wfPerSec / runs.dbos.wfPerSec, 2)}× (3 pure steps), ${round(runs.engineHttp.wfPerSec / runs.dbosHttp.wfPerSec, 2)}× (one HTTP step)\n`);
        }
      }
      for (const [n, x] of paired) {
        scalingRatios.push({
          workers: n,
          repeats: x.pure.length,
          pure: round(median(x.pure), 2),
          pureMin: round(Math.min(...x.pure), 2),
          pureMax: round(Math.max(...x.pure), 2),
          http: round(median(x.http), 2),
          httpMin: round(Math.min(...x.http), 2),
          httpMax: round(Math.max(...x.http), 2),
        });
      }
    }

    // ── summary
    const results = Object.fromEntries(
      CASES.map((c) => {
        const ts = trials.filter((x) => x.case === c.key);
        const w = ts.map((x) => x.wfPerSec);
        return [
          c.key,
          {
            repeats: ts.length,
            succeededMin: Math.min(...ts.map((x) => x.succeeded)),
            wfPerSec: round(median(w), 1),
            wfPerSecMin: round(Math.min(...w), 1),
            wfPerSecMax: round(Math.max(...w), 1),
            ms: round(median(ts.map((x) => x.ms)), 1),
            commitsPerWf: round(median(ts.map((x) => x.commitsPerWf)), 2),
            statementsPerWf: round(median(ts.map((x) => x.statementsPerWf)), 2),
            nodeCpuMsPerWf: round(median(ts.map((x) => Number(x.details.nodeCpuMs) / Math.max(1, x.succeeded))), 3),
            pgCpuMsPerWf: round(median(ts.map((x) => Number(x.details.pgCpuMs) / Math.max(1, x.succeeded))), 3),
            topStatements: ts[ts.length - 1]?.topStatements ?? [],
          },
        ];
      }),
    );
    const pairedRatio = (get: (t: TrialResult) => number, num = 'dbos/pure', den = 'floor/pure') => {
      const per = Array.from({ length: repeats }, (_, i) => {
        const d = trials.find((x) => x.repeat === i + 1 && x.case === num);
        const f = trials.find((x) => x.repeat === i + 1 && x.case === den);
        return d && f && get(f) > 0 ? get(d) / get(f) : NaN;
      }).filter(Number.isFinite);
      return { ratio: round(median(per), 3), min: round(Math.min(...per), 3), max: round(Math.max(...per), 3), perRepeat: per.map((x) => round(x, 3)) };
    };
    const ratios = {
      dbosVsFloorPure: {
        throughput: pairedRatio((x) => x.wfPerSec),
        commitsPerWf: pairedRatio((x) => x.commitsPerWf),
        statementsPerWf: pairedRatio((x) => x.statementsPerWf),
      },
      engineVsDbosPure: {
        throughput: pairedRatio((x) => x.wfPerSec, 'engine/pure', 'dbos/pure'),
        commitsPerWf: pairedRatio((x) => x.commitsPerWf, 'engine/pure', 'dbos/pure'),
      },
      engineVsDbosHttp: {
        throughput: pairedRatio((x) => x.wfPerSec, 'engine/http', 'dbos/http'),
        commitsPerWf: pairedRatio((x) => x.commitsPerWf, 'engine/http', 'dbos/http'),
      },
      /** a reference: DBOS with no checkpoint between the transforms does less durable work than the engine */
      engineVsDbosInlinePure: {
        throughput: pairedRatio((x) => x.wfPerSec, 'engine/pure', 'dbos-inline/pure'),
        commitsPerWf: pairedRatio((x) => x.commitsPerWf, 'engine/pure', 'dbos-inline/pure'),
      },
      engineVsFloorPure: { throughput: pairedRatio((x) => x.wfPerSec, 'engine/pure', 'floor/pure') },
      groupCommitVsSinglePure: {
        throughput: pairedRatio((x) => x.wfPerSec, 'engine/pure', 'engine-single/pure'),
        commitsPerWf: pairedRatio((x) => x.commitsPerWf, 'engine/pure', 'engine-single/pure'),
      },
    };

    out(`\nmedians over ${repeats} repeats (${WORKFLOWS} workflows per trial)\n`);
    out(`  ${'case'.padEnd(18)} ${'wf/s'.padStart(8)} ${'[min–max]'.padStart(15)} ${'ms'.padStart(8)} ${'commits/wf'.padStart(11)} ${'stmts/wf'.padStart(9)} ${'node cpu ms/wf'.padStart(15)} ${'pg cpu ms/wf'.padStart(13)}\n`);
    for (const [k, v] of Object.entries(results)) {
      out(
        `  ${k.padEnd(18)} ${String(v.wfPerSec).padStart(8)} ${`[${v.wfPerSecMin}–${v.wfPerSecMax}]`.padStart(15)} ${String(v.ms).padStart(8)} ` +
          `${String(v.commitsPerWf).padStart(11)} ${String(v.statementsPerWf).padStart(9)} ${String(v.nodeCpuMsPerWf).padStart(15)} ${String(v.pgCpuMsPerWf).padStart(13)}\n`,
      );
    }
    const tr = ratios.dbosVsFloorPure.throughput;
    out(`  dbos / floor throughput (pure): ${tr.ratio}× [${tr.min}–${tr.max}]\n`);
    for (const [label, r] of [
      ['engine / dbos throughput (pure)', ratios.engineVsDbosPure.throughput],
      ['engine / dbos throughput (http)', ratios.engineVsDbosHttp.throughput],
      ['engine / dbos with the transforms inline, no step (pure; a reference)', ratios.engineVsDbosInlinePure.throughput],
      ['engine / floor throughput (pure)', ratios.engineVsFloorPure.throughput],
      ['group commit / one transaction per batch (pure)', ratios.groupCommitVsSinglePure.throughput],
    ] as const)
      out(`  ${label}: ${r.ratio}× [${r.min}–${r.max}]\n`);
    const ts = target.stats();
    out(`  http target: ${ts.requests} requests, ${ts.distinctKeys} distinct Idempotency-Keys, ${ts.replayed} replayed, ${ts.withoutKey} without a key\n`);

    const report = {
      generatedAt: new Date().toISOString(),
      config: {
        workflows: WORKFLOWS,
        repeats,
        repeatsRequested: REPEATS,
        warmupWorkflows: WARMUP_WORKFLOWS,
        concurrency: CONCURRENCY,
        pollMs: POLL_MS,
        quick: QUICK,
        dbosVersion: dbosVersion(),
        dbos: 'DBOS queue (registered with a DBOSClient: workerConcurrency = concurrency, minPollingIntervalMs = pollMs); workflows enqueued before the executor launches; system database = the trial database (schema dbos)',
        floor: 'floor_jobs(id, state jsonb, step, status); pollers claim with UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING; one autocommit UPDATE per step',
        counters: 'commits: pg_stat_database.xact_commit delta of the trial database; statements: pg_stat_statements calls of the trial database; both over the executors’ whole life (start-up and shut-down included)',
        cpus: os.cpus().length,
        node: process.version,
        postgres: { kind: server.kind, settings },
        elapsedMs: Date.now() - began,
      },
      loadAverage: { start: loadBefore, end: os.loadavg().map((x) => round(x, 2)) },
      results,
      ratios,
      httpTarget: ts,
      scaling: scaling.length ? scaling : undefined,
      scalingRatios: scalingRatios.length ? scalingRatios : undefined,
      trials,
    };
    const dir = path.resolve(__dirname, '..', 'reports');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'side-by-side.json'), JSON.stringify(report, null, 2) + '\n');
    out(`\nwrote reports/side-by-side.json in ${round((Date.now() - began) / 1000, 1)} s; load average ${loadBefore[0]} at start, ${round(os.loadavg()[0], 2)} at end\n`);
  } finally {
    await target.close();
    await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => undefined);
    await admin.end().catch(() => undefined);
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
