/*
 * npm run bench:verify — `verify --all` over a project of about 100,000 events,
 * against the floor of reading and parsing the same rows, in the same run.
 *
 * Setup (not measured): 12,500 three-step runs (8 events each) executed by the
 * engine's own workers on an embedded Postgres. Then, interleaved, REPEATS times:
 *   floor   SELECT every run_events row of the project, the columns verify reads in the order it needs
 *           them (run, then number), parsed by pg, nothing else
 *   chain   the floor plus the least any check of the log's keyed links must do: each event's
 *           canonical text and its HMAC compared with the stored link (no heads, no decisions)
 *   verify  as `verify --all` runs it (its default threads, each verifying a slice of the runs in the
 *           same snapshot): every run's chain links and signed head, every decision
 *           re-made by the decider, every run view and delivery record compared, then the schema
 *           checked against its seal, and every index of the engine's tables checked against its table
 *           (amcheck, on another connection while the runs are checked) — what `meshhook verify --all` does
 *   verify1 the same on the main thread alone (`--threads 0`): what threads add is verify1 ÷ verify
 *   indexes the index check alone, for its own figure
 * Reported: events/s of each, verify ÷ floor time (the target is ≤ 1.2×) and chain ÷ floor,
 * which shows how much of the gap the cryptography alone takes. Figures only.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { migrate } from '../src/db/migrate';
import { openEnginePool, openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import { inProject } from '../src/db/scope';
import { checkLink, genesisHash } from '../src/domain/hash-chain';
import { eventTypes, RowEvent, rowToEvent } from '../src/store/log-read';
// verify's threads as `meshhook verify --all` runs them: compiled (npm run bench:verify builds first). From the
// TypeScript sources each thread would spend about half a second transpiling its modules before it verifies
// anything, which the command never does.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { defaultThreads, VerifyThreads } = require('../dist/integrity/verify-threads') as typeof import('../src/integrity/verify-threads');
import { checkSchema } from '../src/integrity/schema-seal';
import { checkIndexes } from '../src/integrity/index-check';
import { Keyring } from '../src/security/keyring';
import { latestVersion, publishWorkflow } from '../src/store/registry';
import { startRun } from '../src/store/intake-start';
import { Worker } from '../src/worker/worker';

const RUNS = Number(process.env.BENCH_VERIFY_RUNS ?? 12_500);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const KEYS = Keyring.generate('verify-bench');
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const r = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;

async function main(): Promise<void> {
  const pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const db = `bench_verify_${process.pid}`;
  await admin.query(`CREATE DATABASE ${db}`);
  const url = pg.urlFor(db);
  try {
    const owner = openPool(url, { max: 8 }, () => undefined);
    await migrate(owner, { seal: KEYS.chainKey() });
    const p = await publishWorkflow(owner, KEYS, 'bench', {
      name: 'three-transforms',
      steps: [
        { id: 'shape', type: 'transform', expression: '{id: input.order.id, total: input.order.sum}', next: 'tax' },
        { id: 'tax', type: 'transform', expression: '{id: steps.shape.id, gross: steps.shape.total}', next: 'done' },
        { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.tax' },
      ],
    });
    const version = await latestVersion(owner, p.projectId, p.workflowId);
    process.stdout.write(`bench:verify: creating and executing ${RUNS} runs ...`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < RUNS; i = next++) {
          const input = { order: { id: `o-${i}`, sum: i } };
          await startRun(owner, { chain: KEYS.chainKey(), runId: randomUUID(), projectId: p.projectId, projectSlug: 'bench', workflowSlug: p.workflow, version, deliveryId: `v-${i}`, input, at: new Date(), rawBody: JSON.stringify(input) });
        }
      }),
    );
    const pool = openPool(url, { max: 20 }, () => undefined);
    const workers = [1, 2].map((i) => new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 10, concurrency: 8, id: `v-${i}`, keyring: KEYS }));
    for (const w of workers) w.start();
    while (workers.reduce((n, w) => n + w.stats.runsFinished, 0) < RUNS) await new Promise((res) => setTimeout(res, 200));
    await Promise.all(workers.map((w) => w.stop()));
    await pool.end();
    await owner.end();
    process.stdout.write(' done\n');

    const engine = openEnginePool(url, { max: 4 }, () => undefined);
    const floorMs: number[] = [];
    const chainMs: number[] = [];
    const verifyMs: number[] = [];
    const verify1Ms: number[] = [];
    const threadCount = Number(process.env.BENCH_VERIFY_THREADS ?? defaultThreads());
    const indexesMs: number[] = [];
    const chainKeys = KEYS.chainKeys();
    let chainBreaks = -1;
    let events = 0;
    let bad = -1;
    for (let rep = 0; rep < REPEATS; rep++) {
      const order = ['floor', 'chain', 'verify', 'verify1', 'indexes'];
      for (let k = 0; k < rep % 5; k++) order.push(order.shift()!);
      for (const which of order) {
        const t0 = performance.now();
        if (which === 'floor') {
          const n = await inProject(engine, p.projectId, async (c) => (await c.query('SELECT project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid FROM run_events ORDER BY run_id, seq')).rowCount ?? 0);
          floorMs.push(performance.now() - t0);
          events = n;
        } else if (which === 'chain') {
          chainBreaks = await inProject(engine, p.projectId, async (c) => {
            const { rows } = await c.query<RowEvent>({ text: 'SELECT project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid FROM run_events ORDER BY run_id, seq', types: eventTypes() });
            let breaks = 0;
            let run = '';
            let prev = '';
            let seq = 0;
            for (const row of rows) {
              if (row.run_id !== run) {
                run = row.run_id;
                prev = genesisHash(run);
                seq = 0;
              }
              if (checkLink(prev, ++seq, rowToEvent(row), chainKeys, true)) breaks++;
              prev = row.hash;
            }
            return breaks;
          });
          chainMs.push(performance.now() - t0);
        } else if (which === 'indexes') {
          const idx = await checkIndexes(engine);
          // (a Postgres without amcheck: verify says it could not check the indexes, and this figure is 0)
          if (idx.problems.length) throw new Error(`the index check found problems in an untouched database: ${JSON.stringify(idx)}`);
          indexesMs.push(performance.now() - t0);
        } else {
          // as `verify --all` does: its threads started first, the indexes checked by Postgres while node checks the runs
          const threads = VerifyThreads.start(which === 'verify' ? threadCount : 0, { connectionString: url, chainKeys: KEYS.chainKeyTable() });
          try {
            const indexes = checkIndexes(engine);
            indexes.catch(() => undefined);
            // and what `verify --all` checks beside the runs, meanwhile too: the schema against its seal (a read of the catalogs)
            const schemaCheck = checkSchema(engine, KEYS.chainKeys());
            schemaCheck.catch(() => undefined);
            const res = await threads.verifyProject(engine, p.projectId, { keys: KEYS.chainKeys() }, () => undefined);
            const schema = await schemaCheck;
            const idx = await indexes;
            (which === 'verify' ? verifyMs : verify1Ms).push(performance.now() - t0);
            bad = res.bad + res.strayDeliveries.length + schema.problems.length + idx.problems.length;
            if (res.runs !== RUNS || res.events !== events) throw new Error(`verify saw ${res.runs} runs and ${res.events} events, not ${RUNS} and ${events}`);
          } finally {
            await threads.close();
          }
        }
        process.stdout.write('.');
      }
    }
    await engine.end();
    // every link of an untouched log holds: a break here means the chain trial checked something else than verify does
    if (chainBreaks !== 0) throw new Error(`the chain trial found ${chainBreaks} broken links in an untouched log`);
    const result = {
      runs: RUNS,
      events,
      badRuns: bad,
      floorMs: r(median(floorMs), 0),
      chainMs: r(median(chainMs), 0),
      chainBreaks,
      verifyMs: r(median(verifyMs), 0),
      indexesMs: r(median(indexesMs), 0),
      floorEventsPerSec: r(events / (median(floorMs) / 1000), 0),
      verifyEventsPerSec: r(events / (median(verifyMs) / 1000), 0),
      verifyOverFloor: r(median(verifyMs) / median(floorMs)),
      threads: threadCount,
      verifyMainThreadMs: r(median(verify1Ms), 0),
      verifyMainThreadOverFloor: r(median(verify1Ms) / median(floorMs)),
      chainOverFloor: r(median(chainMs) / median(floorMs)),
    };
    mkdirSync('reports', { recursive: true });
    writeFileSync(path.join('reports', 'bench-verify.json'), JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(
      `\n\nverify --all over ${events} events (${RUNS} runs, ${bad} bad), ${threadCount} threads beside the main one: ${result.verifyMs} ms (${result.verifyEventsPerSec} events/s)\n` +
        `the same on the main thread alone: ${result.verifyMainThreadMs} ms, ${result.verifyMainThreadOverFloor}× the floor\n` +
        `floor (read + parse the rows): ${result.floorMs} ms (${result.floorEventsPerSec} events/s)\n` +
        `floor + every link's HMAC checked: ${result.chainMs} ms, ${result.chainOverFloor}× the floor (${chainBreaks} broken)\n` +
        `the index check alone (amcheck, every index of the engine's tables): ${result.indexesMs} ms\n` +
        `verify ÷ floor: ${result.verifyOverFloor}× (target ≤ 1.2×)\nreports/bench-verify.json\n`,
    );
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await pg.stop();
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
