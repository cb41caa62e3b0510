/*
 * npm run bench:recovery — how fast the engine picks up after every worker is
 * SIGKILLed with runs in flight, against the same work done without a crash,
 * in the same run.
 *
 * Setup (not measured): RUNS runs of `shape → charge (http_call) → done`
 * started through the store, in a template database each trial clones. The
 * order service is in this process, answers after TARGET_MS and honours
 * Idempotency-Key (a known key gets the first answer again, and a known key
 * with other bytes would be counted).
 *
 * Trials, interleaved, REPEATS times each:
 *   no crash   WORKERS worker processes (dist/worker/main.js) run every run to the end
 *   crash      the same, but when half the runs have finished every worker is SIGKILLed;
 *              fresh worker processes are started at once on the same database
 * Reported (medians):
 *   resume     from the fresh workers' spawn until every run that was in flight at the kill
 *              has recorded something new (process start included); also when the first of them did
 *   finish     crash trial's working time (spawn → kill, then fresh spawn → last run done)
 *              ÷ the no-crash trial's time (issue target ≤ 1.1×)
 *   repeats    requests the order service saw again under a key it already had (the one
 *              in-flight retry per run the target allows), and how many of them carried other
 *              bytes (must be 0)
 * Figures only: nothing here asserts a timing.
 */
import { ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { migrate } from '../src/db/migrate';
import { openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import { Keyring } from '../src/security/keyring';
import { latestVersion, publishWorkflow, setAllowPrivateTargets } from '../src/store/registry';
import { startRun } from '../src/store/intake-start';

const RUNS = Number(process.env.BENCH_RECOVERY_RUNS ?? 1000);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const WORKERS = Number(process.env.BENCH_RECOVERY_WORKERS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_RECOVERY_CONCURRENCY ?? 16);
const TARGET_MS = Number(process.env.BENCH_RECOVERY_TARGET_MS ?? 20);
const KEYS = Keyring.generate('recovery-bench');
const ROOT = path.resolve(__dirname, '..');
const BUILT = path.join(ROOT, 'dist', 'worker', 'main.js');
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const r = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** The order service: answers after TARGET_MS, the first answer again for a key it knows. */
async function startTarget() {
  const seen = new Map<string, string>();
  let repeats = 0;
  let otherBytes = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const key = String(req.headers['idempotency-key'] ?? '');
      const known = seen.get(key);
      if (known !== undefined) {
        repeats++;
        if (known !== body) otherBytes++;
      } else seen.set(key, body);
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ charged: true, key }));
      }, TARGET_MS);
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/charges`,
    reset() {
      seen.clear();
      repeats = 0;
      otherBytes = 0;
    },
    figures: () => ({ keys: seen.size, repeats, otherBytes }),
    close: () => new Promise<void>((res) => server.close(() => res())),
  };
}

function spawnWorkers(url: string, tag: string): ChildProcess[] {
  const [entry, execArgv] = existsSync(BUILT) ? [BUILT, []] : [path.join(ROOT, 'src', 'worker', 'main.ts'), ['-r', 'ts-node/register']];
  return Array.from({ length: WORKERS }, (_, i) =>
    fork(entry, [], {
      execArgv,
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: '', TS_NODE_TRANSPILE_ONLY: 'true', DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv(), MESHHOOK_WORKER_ID: `${tag}-${i}`, MESHHOOK_CONCURRENCY: String(CONCURRENCY), MESHHOOK_POLL_MS: '20', MESHHOOK_POOL_MAX: process.env.MESHHOOK_POOL_MAX ?? '' },
    }),
  );
}

/** Signal every worker process and wait for each to be gone: SIGKILL for the crash, SIGTERM to end a trial. */
async function endAll(children: ChildProcess[], signal: NodeJS.Signals): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((res) => {
          if (c.exitCode !== null || c.signalCode !== null) return res();
          c.once('exit', () => res());
          c.kill(signal);
        }),
    ),
  );
}

async function main(): Promise<void> {
  if (!existsSync(BUILT)) process.stdout.write('(dist/ not built: workers run through ts-node, which adds to their start; npm run build first)\n');
  const pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const template = `bench_recovery_tpl_${process.pid}`;
  const made: string[] = [template];
  const target = await startTarget();
  try {
    await admin.query(`CREATE DATABASE ${template}`);
    const owner = openPool(pg.urlFor(template), { max: 8 }, () => undefined);
    await migrate(owner);
    const p = await publishWorkflow(owner, KEYS, 'shop', {
      name: 'order-charge',
      steps: [
        { id: 'shape', type: 'transform', expression: '{id: input.order.id, amount: input.order.sum}', next: 'charge' },
        { id: 'charge', type: 'http_call', method: 'POST', url: target.url, body: 'steps.shape', next: 'done' },
        { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.charge' },
      ],
    });
    await setAllowPrivateTargets(owner, KEYS.chainKey(), p.projectId, true);
    const version = await latestVersion(owner, p.projectId, p.workflowId);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < RUNS; i = next++) {
          const input = { order: { id: `o-${i}`, sum: 10 + i } };
          await startRun(owner, { chain: KEYS.chainKey(), runId: randomUUID(), projectId: p.projectId, projectSlug: 'shop', workflowSlug: p.workflow, version, deliveryId: `r-${i}`, input, at: new Date(), rawBody: JSON.stringify(input) });
        }
      }),
    );
    await owner.end();

    const trials: Record<'noCrash' | 'crash', Array<Record<string, number>>> = { noCrash: [], crash: [] };
    for (let rep = 0; rep < REPEATS; rep++) {
      for (const kind of rep % 2 === 0 ? (['noCrash', 'crash'] as const) : (['crash', 'noCrash'] as const)) {
        const db = `bench_recovery_${process.pid}_${rep}_${kind.toLowerCase()}`;
        await admin.query(`CREATE DATABASE ${db} TEMPLATE ${template}`);
        made.push(db);
        const url = pg.urlFor(db);
        const watch = new Client({ connectionString: url });
        await watch.connect();
        target.reset();
        const done = async () => Number((await watch.query(`SELECT count(*)::int AS n FROM runs WHERE status = 'succeeded'`)).rows[0].n);
        const t0 = performance.now();
        let workers = spawnWorkers(url, `${kind}-${rep}`);
        const figures: Record<string, number> = {};
        if (kind === 'crash') {
          while ((await done()) < RUNS / 2) await sleep(5);
          // runs finish in waves (every slot's run started together), so half way can fall just between two
          // waves with nothing in flight: wait (at most 3 s) until some run is mid-step, then kill
          const inFlightNow = `SELECT count(*)::int AS n FROM runs WHERE status = 'running' AND last_seq > (SELECT min(last_seq) FROM runs)`;
          for (const until = performance.now() + 3_000; performance.now() < until; await sleep(2)) {
            if ((await watch.query<{ n: number }>(inFlightNow)).rows[0].n > 0) break;
          }
          await endAll(workers, 'SIGKILL');
          const tKill = performance.now();
          // in flight: started its steps and not finished; each must record something new after the restart
          const { rows } = await watch.query<{ id: string; last_seq: number }>(
            `SELECT id, last_seq FROM runs WHERE status = 'running' AND last_seq > (SELECT min(last_seq) FROM runs)`,
          );
          figures.inFlightAtKill = rows.length;
          figures.finishedAtKill = await done();
          const tRestart = performance.now();
          const restartWall = Date.now();
          workers = spawnWorkers(url, `${kind}-${rep}-fresh`);
          const ids = rows.map((x) => x.id);
          const seqs = rows.map((x) => x.last_seq);
          for (;;) {
            const { rows: left } = await watch.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM runs r JOIN unnest($1::uuid[], $2::int[]) AS k(id, seq) ON r.id = k.id WHERE r.last_seq <= k.seq`,
              [ids, seqs],
            );
            if (left[0].n === 0) break;
            await sleep(5);
          }
          figures.resumeMs = performance.now() - tRestart;
          while ((await done()) < RUNS) await sleep(10);
          figures.workMs = tKill - t0 + (performance.now() - tRestart);
          // when each in-flight run recorded its first event after the restart (the workers' clock is this machine's)
          const { rows: firsts } = await watch.query<{ first: Date }>(
            `SELECT min(e.recorded_at) AS first FROM run_events e JOIN unnest($1::uuid[], $2::int[]) AS k(id, seq) ON e.run_id = k.id AND e.seq > k.seq GROUP BY e.run_id`,
            [ids, seqs],
          );
          const after = firsts.map((x) => x.first.getTime() - restartWall).sort((a, b) => a - b);
          figures.firstResumeMs = after[0] ?? NaN;
          figures.medianResumeMs = after[Math.floor(after.length / 2)] ?? NaN;
        } else {
          while ((await done()) < RUNS) await sleep(10);
          figures.workMs = performance.now() - t0;
        }
        await endAll(workers, 'SIGTERM');
        await watch.end();
        const t = target.figures();
        Object.assign(figures, { keys: t.keys, repeatedRequests: t.repeats, repeatsWithOtherBytes: t.otherBytes });
        trials[kind].push(figures);
        process.stdout.write(`${kind} #${rep + 1}: ${JSON.stringify(Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, r(v, 0)])))}\n`);
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
      }
    }
    const m = (kind: 'noCrash' | 'crash', k: string) => median(trials[kind].map((x) => x[k]));
    const result = {
      generatedAt: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version },
      config: { runs: RUNS, repeats: REPEATS, workers: WORKERS, concurrency: CONCURRENCY, targetMs: TARGET_MS, builtWorkers: existsSync(BUILT) },
      noCrashMs: r(m('noCrash', 'workMs'), 0),
      crashMs: r(m('crash', 'workMs'), 0),
      finishOverNoCrash: r(median(trials.crash.map((c, i) => c.workMs / trials.noCrash[i].workMs))),
      resumeMs: r(m('crash', 'resumeMs'), 0),
      firstResumeMs: r(m('crash', 'firstResumeMs'), 0),
      inFlightAtKill: m('crash', 'inFlightAtKill'),
      repeatedRequests: Math.max(...trials.crash.map((c) => c.repeatedRequests)),
      repeatedRequestsWithoutCrash: Math.max(...trials.noCrash.map((c) => c.repeatedRequests)),
      repeatsWithOtherBytes: Math.max(...trials.crash.map((c) => c.repeatsWithOtherBytes)),
      trials,
    };
    mkdirSync('reports', { recursive: true });
    writeFileSync(path.join('reports', 'bench-recovery.json'), JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(
      `\nrecovery: ${RUNS} runs, ${WORKERS} worker processes × concurrency ${CONCURRENCY}, every worker SIGKILLed at half way (medians of ${REPEATS})\n` +
        `runs in flight at the kill: ${result.inFlightAtKill}; fresh workers had every one of them moving again after ${result.resumeMs} ms, the first after ${result.firstResumeMs} ms (target ≤ 1000 ms, process start included)\n` +
        `working time with the crash ÷ without: ${result.finishOverNoCrash}× (${result.crashMs} ms vs ${result.noCrashMs} ms; target ≤ 1.1×)\n` +
        `requests sent again under a known key: at most ${result.repeatedRequests} (without a crash ${result.repeatedRequestsWithoutCrash}), with other bytes: ${result.repeatsWithOtherBytes}\n` +
        `reports/bench-recovery.json\n`,
    );
  } finally {
    for (const db of made.reverse()) await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await target.close();
    await pg.stop();
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
