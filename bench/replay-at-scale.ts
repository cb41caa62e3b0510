/*
 * npm run bench:replay — replay and verify of one long run straight from
 * Postgres, against the floor of reading and parsing the same rows, at about
 * 1k, 10k and 80k events, with the peak memory each one needs.
 *
 * The run (not measured): a workflow of http_call steps whose target answers
 * 503 ninety-nine times and then 201, each step about 400 events (every
 * attempt, response, retry timer), decided by the engine's own decider and
 * appended through commitBatch: a keyed chain and a signed head, as a worker
 * writes them. 199 such steps (the most a definition may have) are about 80k.
 *
 * Then, interleaved, REPEATS times per size:
 *   floor    SELECT the run's events (the columns the engine reads), parsed by pg, nothing else
 *   replay   replayRunState(): stream the log through a cursor and fold it
 *   verify   verifyRun(): every link and the signed head, every decision re-made, the view compared
 * Each measurement runs in a fresh child process, once to warm up and once measured. Reported: events/s of each, its speed as a share of
 * the floor's (the issue asks ≥ 0.9), and the child's peak RSS above its level just before the
 * measurement began: flat across sizes means memory does not grow with the log. V8 collects lazily, so with
 * the default heap the peak grows with the garbage; one more pass of each, with the old space capped at
 * 64 MB, shows what stays live.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { migrate } from '../src/db/migrate';
import { openEnginePool, openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import { inProject } from '../src/db/scope';
import { createDecider } from '../src/domain/decider';
import { driveLoop, runLoop } from '../src/domain/run-loop';
import { validateDefinition } from '../src/domain/definition';
import type { HttpOutcome, RunEvent } from '../src/domain/events';
import { Failpoints } from '../src/faults/failpoints';
import { replayRunState, verifyRun } from '../src/replay-service';
import { Keyring } from '../src/security/keyring';
import { latestVersion, publishWorkflow } from '../src/store/registry';
import { startRun } from '../src/store/intake-start';
import { commitBatch } from '../src/store/log-append';
import { loadRun } from '../src/store/run-load';

const SIZES = (process.env.BENCH_REPLAY_SIZES ?? '1000,10000,80000').split(',').map(Number);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
// a measuring child is handed the parent's keys (MESHHOOK_KEYS), so it checks the links the parent signed
const KEYS = Keyring.fromEnv() ?? Keyring.generate('replay-bench');
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const r = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;
const EVENTS_PER_STEP = 400;
const HEAP_CAP_MB = 64;

function definitionOf(steps: number) {
  return validateDefinition({
    name: `retries-${steps}`,
    steps: [
      ...Array.from({ length: steps }, (_, i) => ({
        id: `call-${i}`,
        type: 'http_call',
        method: 'POST',
        url: 'http://127.0.0.1:9090/orders',
        body: 'input.order',
        retry: { maxAttempts: 100, initialDelayMs: 10, multiplier: 1, maxDelayMs: 10, jitter: 0 },
        next: i + 1 < steps ? `call-${i + 1}` : 'done',
      })),
      { id: 'done', type: 'terminate', status: 'succeeded' },
    ],
  });
}

interface Measurement {
  ms: number;
  /** the child's peak RSS above its RSS just before it started (MB) */
  peakMb: number;
  ok: boolean;
}

/**
 * One measurement in a fresh child process, so its peak RSS (getrusage) is
 * this measurement's alone and not the setup's or an earlier one's.
 */
function measureInChild(which: string, url: string, run: { projectId: string; runId: string; events: number }, heapCapMb?: number): Measurement {
  const cap = heapCapMb ? [`--max-old-space-size=${heapCapMb}`] : [];
  const out = execFileSync(process.execPath, [...process.execArgv, ...cap, __filename, '--measure', which, url, run.projectId, run.runId, String(run.events)], {
    encoding: 'utf8',
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true', MESHHOOK_KEYS: KEYS.toEnv() },
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Measurement;
}

async function measureHere(which: string, url: string, projectId: string, runId: string, events: number): Promise<Measurement> {
  const engine = openEnginePool(url, { max: 1 }, () => undefined);
  const once = async (): Promise<boolean> => {
    if (which === 'floor') {
      const res = await inProject(engine, projectId, (c) =>
        c.query('SELECT project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid FROM run_events WHERE run_id = $1 ORDER BY seq', [runId]),
      );
      return res.rowCount === events;
    }
    if (which === 'replay') return (await replayRunState(engine, projectId, runId)).eventCount === events;
    const v = await verifyRun(engine, projectId, runId, { keys: KEYS.chainKeys() });
    return v.ok && v.eventCount === events;
  };
  const before = process.memoryUsage.rss();
  // once to warm the code up (the JIT, the pool's connection), then the measured pass; both reach the same peak
  await once();
  global.gc?.();
  const t0 = performance.now();
  const ok = await once();
  const ms = performance.now() - t0;
  await engine.end();
  // maxRSS is in kilobytes; the level before the first pass is subtracted
  const peakMb = Math.max(0, process.resourceUsage().maxRSS * 1024 - before) / 2 ** 20;
  return { ms, peakMb, ok };
}

async function main(): Promise<void> {
  const pg = await provisionPostgres({ durable: false });
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const db = `bench_replay_${process.pid}`;
  await admin.query(`CREATE DATABASE ${db}`);
  const url = pg.urlFor(db);
  const rows: Array<Record<string, number>> = [];
  try {
    const owner = openPool(url, { max: 4 }, () => undefined);
    await migrate(owner);
    const runs: Array<{ size: number; runId: string; projectId: string; events: number }> = [];
    for (const size of SIZES) {
      const steps = Math.min(199, Math.max(1, Math.round(size / EVENTS_PER_STEP)));
      const p = await publishWorkflow(owner, KEYS, 'bench', definitionOf(steps));
      const version = await latestVersion(owner, p.projectId, p.workflowId);
      const runId = randomUUID();
      const input = { order: { id: `o-${size}`, sum: size } };
      process.stdout.write(`bench:replay: recording a run of ${steps} steps ...`);
      await startRun(owner, { chain: KEYS.chainKey(), runId, projectId: p.projectId, projectSlug: 'bench', workflowSlug: p.workflow, version, deliveryId: `r-${size}`, input, at: new Date(), rawBody: JSON.stringify(input) });
      const loaded = (await loadRun(owner, p.projectId, runId))!;
      const decider = createDecider(version.definition);
      let committed = { state: loaded.state, lastSeq: loaded.lastSeq, lastHash: loaded.lastHash };
      let batch: RunEvent[] = [];
      let clock = Date.parse(loaded.state.startedAt!);
      let ticked = false;
      // many decided batches go into one commit: the log is the same, only recordedAt is shared
      const flush = async (): Promise<void> => {
        const ctx = { runId, projectId: p.projectId, expectedSeq: committed.lastSeq, prevHash: committed.lastHash, stateBefore: committed.state, recordedAt: new Date(clock), chain: KEYS.chainKey(), failpoints: Failpoints.none(), step: null };
        committed = await commitBatch(owner, ctx, batch);
        batch = [];
      };
      // the engine's run loop, answered from a script: 5 ms per decision, the target failing 99 times per step
      await driveLoop(runLoop(decider, loaded.state, { merge: false }), {
        now: () => {
          if (!ticked) clock += 5;
          ticked = true;
          return new Date(clock);
        },
        send: ({ request }) => ({
          outcome: (request.attempt < 100
              ? { kind: 'response', status: 503, headers: {}, body: null }
              : { kind: 'response', status: 201, headers: { 'content-type': 'application/json' }, body: { orderId: `ord_${request.step}` } }) as HttpOutcome,
          durationMs: 3,
        }),
        jitter: () => 0.5,
        due: ({ dueAt }) => {
          clock = Math.max(clock, Date.parse(dueAt));
          return true;
        },
        moment: () => undefined,
        commit: async ({ batch: decided }) => {
          batch.push(...decided.events);
          ticked = false;
          if (batch.length >= 2_000) await flush();
          return decided.stateAfter;
        },
      });
      if (batch.length) await flush();
      runs.push({ size, runId, projectId: p.projectId, events: committed.lastSeq });
      process.stdout.write(` ${committed.lastSeq} events\n`);
    }
    await owner.end();

    for (const run of runs) {
      const figures: Record<string, { ms: number[]; mb: number[] }> = { floor: { ms: [], mb: [] }, replay: { ms: [], mb: [] }, verify: { ms: [], mb: [] } };
      const order = ['floor', 'replay', 'verify'];
      for (let rep = 0; rep < REPEATS; rep++) {
        for (let k = 0; k < order.length; k++) {
          const which = order[(k + rep) % order.length];
          const m = measureInChild(which, url, run);
          if (!m.ok) throw new Error(`${which} of the ${run.events}-event run did not read it whole (or did not verify)`);
          figures[which].ms.push(m.ms);
          figures[which].mb.push(m.peakMb);
        }
        process.stdout.write('.');
      }
      // V8 collects lazily: with the default heap, garbage waits for a full collection and peak RSS follows the
      // log's length whatever is live. Under a 64 MB old space (the process needs ~25 MB before it starts) V8
      // collects as it goes, so the peak shows what is live: flat when the fold holds no more than a page
      const capped = { replay: measureInChild('replay', url, run, HEAP_CAP_MB), verify: measureInChild('verify', url, run, HEAP_CAP_MB) };
      const floorMs = median(figures.floor.ms);
      const row: Record<string, number> = { events: run.events, floorMs: r(floorMs, 1), floorEventsPerSec: r(run.events / (floorMs / 1000), 0), floorPeakMb: r(median(figures.floor.mb), 1) };
      for (const which of ['replay', 'verify']) {
        const ms = median(figures[which].ms);
        row[`${which}Ms`] = r(ms, 1);
        row[`${which}EventsPerSec`] = r(run.events / (ms / 1000), 0);
        row[`${which}SpeedVsFloor`] = r(floorMs / ms);
        row[`${which}PeakMb`] = r(median(figures[which].mb), 1);
        row[`${which}PeakMbCapped`] = r(capped[which as 'replay' | 'verify'].peakMb, 1);
        row[`${which}MsCapped`] = r(capped[which as 'replay' | 'verify'].ms, 1);
      }
      rows.push(row);
    }
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await pg.stop();
  }
  mkdirSync('reports', { recursive: true });
  writeFileSync(path.join('reports', 'bench-replay.json'), JSON.stringify({ repeats: REPEATS, heapCapMb: HEAP_CAP_MB, runs: rows }, null, 2) + '\n');
  process.stdout.write('\n\n| events | floor ms (peak MB) | replay ms (speed vs floor, peak MB) | verify ms (speed vs floor, peak MB) |\n| --- | --- | --- | --- |\n');
  for (const x of rows) {
    process.stdout.write(
      `| ${x.events} | ${x.floorMs} (${x.floorPeakMb}) | ${x.replayMs} (${x.replaySpeedVsFloor}×, ${x.replayPeakMb}) | ${x.verifyMs} (${x.verifySpeedVsFloor}×, ${x.verifyPeakMb}) |\n`,
    );
  }
  process.stdout.write(`\npeak RSS above the start, old space capped at ${HEAP_CAP_MB} MB: ${rows.map((x) => `${x.events} events replay ${x.replayPeakMbCapped} MB (${x.replayMsCapped} ms), verify ${x.verifyPeakMbCapped} MB (${x.verifyMsCapped} ms)`).join('; ')}\n`);
  process.stdout.write("speed vs floor: the floor's time ÷ its time (1.0 = as fast as reading the rows; the issue asks ≥ 0.9)\nreports/bench-replay.json\n");
}

const measuring = process.argv.indexOf('--measure');
(measuring > 0
  ? measureHere(process.argv[measuring + 1], process.argv[measuring + 2], process.argv[measuring + 3], process.argv[measuring + 4], Number(process.argv[measuring + 5])).then((m) => {
      process.stdout.write(JSON.stringify(m) + '\n');
    })
  : main()
).catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
