import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Pool } from 'pg';
import { createDecider } from '../../src/domain/decider';
import { definitionHash } from '../../src/domain/definition';
import { Failpoints } from '../../src/faults/failpoints';
import { readRunView, rebuildViews, verifyRun } from '../../src/replay-service';
import { latestVersion, loadVersion, publishWorkflow, TamperedDefinitionError } from '../../src/store/registry';
import { DeliveryReusedError, startRun } from '../../src/store/intake-start';
import { commitBatch, ConcurrencyError, PreparedBatch } from '../../src/store/log-append';
import { loadRun, TamperedRunError } from '../../src/store/run-load';
import { EventLogRepository } from '../../src/store/run-repository';
import { GroupCommit } from '../../src/store/group-commit';
import { Worker } from '../../src/worker/worker';
import { openEnginePool } from '../../src/db/pool';
import { count, orderSyncDefinition, startDatabases, startTarget, tamperWithVersions, TestDatabases, waitFor, runStatus, projectId, KEYS, publish } from './helpers';

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

async function newRun(pool: Pool, def: Record<string, unknown>, input: unknown = { order: { id: 'o-1', sum: 42 } }) {
  const published = await publish(pool, 'acme', def);
  const version = await latestVersion(pool, published.projectId, published.workflowId);
  const runId = randomUUID();
  await startRun(pool, {
    runId,
    projectId: published.projectId,
    projectSlug: 'acme',
    workflowSlug: published.workflow,
    version,
    deliveryId: `d-${runId}`,
    input,
    rawBody: JSON.stringify(input),
    at: new Date(),
    chain: KEYS.chainKey(),
  });
  return { runId, version, published };
}

describe('run store', { timeout: 180_000 }, () => {
  it('the database refuses events that do not follow a run\'s last one, checked once a statement (migration 026)', async () => {
    const { pool } = await dbs.fresh();
    const a = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const b = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const project = await projectId(pool);
    const last = async (run: string) => (await pool.query<{ n: number }>('SELECT max(seq)::int AS n FROM run_events WHERE run_id = $1', [run])).rows[0].n;
    const [la, lb] = [await last(a.runId), await last(b.runId)];
    const append = (rows: Array<[string, number]>) =>
      pool.query(
        `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid)
         SELECT $1, r.run, r.seq, 'StepSucceeded', 1, '{}', now(), 'x', 'y', NULL FROM unnest($2::uuid[], $3::int[]) AS r(run, seq)`,
        [project, rows.map((r) => r[0]), rows.map((r) => r[1])],
      );
    const refused = async (rows: Array<[string, number]>, code: string, why: string) => {
      await assert.rejects(append(rows), (e: { code?: string }) => e.code === code, why);
    };
    await refused([[a.runId, la + 2]], '40001', 'one event past the next');
    await refused([[a.runId, la + 1], [a.runId, la + 3]], '40001', 'a gap inside one statement');
    await refused([[a.runId, la + 1], [b.runId, lb + 2]], '40001', 'one run right and another with a gap: nothing of the statement');
    await refused([[a.runId, 1]], '23505', 'a number the run has');
    assert.equal(await last(a.runId), la, 'nothing refused was written');
    await append([[a.runId, la + 1], [a.runId, la + 2], [b.runId, lb + 1]]);
    assert.deepEqual([await last(a.runId), await last(b.runId)], [la + 2, lb + 1], 'consecutive events of two runs in one statement go in');
    await refused([[b.runId, 1 + lb + 1], [b.runId, lb]], '23505', 'the next one together with one the run has');
  });

  it('two writers appending at the same expected sequence: exactly one wins', async () => {
    const { pool } = await dbs.fresh();
    const { runId, version } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const decider = createDecider(version.definition);
    for (let round = 0; round < 5; round++) {
      const run = (await loadRun(pool, await projectId(pool), runId))!;
      if (run.state.phase !== 'ready') break;
      const attempt = (ms: number) => {
        const at = new Date(Date.now() + ms);
        const events = decider.decide({ type: 'ExecuteStep', data: { at: at.toISOString() } }, run.state);
        return commitBatch(pool, { runId, projectId: run.projectId, expectedSeq: run.lastSeq, prevHash: run.lastHash, stateBefore: run.state, recordedAt: at, chain: KEYS.chainKey(), failpoints: Failpoints.none(), step: null }, events);
      };
      const results = await Promise.allSettled([attempt(0), attempt(1)]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, `round ${round}: exactly one writer wins`);
      assert.equal(lost.length, 1);
      assert.ok(lost[0].reason instanceof ConcurrencyError, `the loser gets a ConcurrencyError, not ${lost[0].reason}`);
      assert.equal((lost[0].reason as ConcurrencyError).expectedSeq, run.lastSeq);
    }
    const after = (await loadRun(pool, await projectId(pool), runId))!;
    assert.deepEqual(after.events.map((e) => e.seq), after.events.map((_, i) => i + 1), 'the log stays gap-free');
    const report = await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() });
    assert.equal(report.ok, true, JSON.stringify({ chain: report.chainBreak, div: report.divergence, view: report.viewDifference }));
  });

  it('a writer holding a stale sequence loses even when it runs alone', async () => {
    const { pool } = await dbs.fresh();
    const { runId, version } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const decider = createDecider(version.definition);
    const run = (await loadRun(pool, await projectId(pool), runId))!;
    const events = decider.decide({ type: 'ExecuteStep', data: { at: new Date().toISOString() } }, run.state);
    const ctx = { runId, projectId: run.projectId, expectedSeq: run.lastSeq, prevHash: run.lastHash, stateBefore: run.state, recordedAt: new Date(), chain: KEYS.chainKey(), failpoints: Failpoints.none(), step: null };
    await commitBatch(pool, ctx, events);
    await assert.rejects(commitBatch(pool, ctx, events), ConcurrencyError);
    assert.equal(await count(pool, 'run_events'), 1 + events.length);
  });

  it('a batch whose run view moved on keeps nothing: no event without its view update', async () => {
    const { pool } = await dbs.fresh();
    const { runId, version } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const decider = createDecider(version.definition);
    const run = (await loadRun(pool, await projectId(pool), runId))!;
    const events = decider.decide({ type: 'ExecuteStep', data: { at: new Date().toISOString() } }, run.state);
    // the events themselves would fit (no one appended them), but the view is no longer where the writer expects
    await pool.query('UPDATE runs SET last_seq = 99 WHERE id = $1', [runId]);
    const ctx = { runId, projectId: run.projectId, expectedSeq: run.lastSeq, prevHash: run.lastHash, stateBefore: run.state, recordedAt: new Date(), chain: KEYS.chainKey(), failpoints: Failpoints.none(), step: null };
    await assert.rejects(commitBatch(pool, ctx, events), ConcurrencyError);
    assert.equal(await count(pool, 'run_events'), 1, 'the batch left no event behind');
  });

  it('the event-log repository gives a run, records a batch after it, refuses a stale copy and will not give a run whose head was forged', async () => {
    const { pool } = await dbs.fresh();
    const { runId, version } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const project = await projectId(pool);
    const repo = new EventLogRepository({ pool, failpoints: Failpoints.none(), keyring: KEYS });
    assert.equal(await repo.load(project, randomUUID()), null, 'no such run in the project');
    const run = (await repo.load(project, runId))!;
    assert.equal(run.seq, 1);
    const decider = createDecider(version.definition);
    const events = decider.decide({ type: 'ExecuteStep', data: { at: new Date().toISOString() } }, run.state);
    const batch = { events, step: null, stateBefore: run.state, stateAfter: events.reduce(decider.evolve, run.state) };
    const next = await repo.append(run, batch, new Date());
    assert.equal(next.seq, 1 + events.length);
    const again = (await repo.load(project, runId))!;
    assert.deepEqual({ seq: again.seq, lastHash: again.lastHash, phase: again.state.phase }, { seq: next.seq, lastHash: next.lastHash, phase: next.state.phase });
    await assert.rejects(repo.append(run, batch, new Date()), ConcurrencyError, 'a copy of the run from before the append is stale');
    assert.equal(await count(pool, 'run_events'), 1 + events.length);
    await pool.query(`UPDATE runs SET head_mac = repeat('0', 64) WHERE id = $1`, [runId]);
    await assert.rejects(repo.load(project, runId), TamperedRunError);
  });

  it("a run put back to an earlier genuine head is refused by every repository of the process, not only the one that committed past it", async () => {
    const { pool } = await dbs.fresh();
    const { runId, version } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const project = await projectId(pool);
    const first = new EventLogRepository({ pool, failpoints: Failpoints.none(), keyring: KEYS });
    const run = (await first.load(project, runId))!;
    const earlier = (await pool.query('SELECT to_jsonb(r) AS row FROM runs r WHERE id = $1', [runId])).rows[0].row;
    const decider = createDecider(version.definition);
    const events = decider.decide({ type: 'ExecuteStep', data: { at: new Date().toISOString() } }, run.state);
    await first.append(run, { events, step: null, stateBefore: run.state, stateAfter: events.reduce(decider.evolve, run.state) }, new Date());
    // someone with the database puts the log and view back as they were: every signature holds
    const c = await pool.connect();
    try {
      await c.query('ALTER TABLE run_events DISABLE TRIGGER USER');
      await c.query('DELETE FROM run_events WHERE run_id = $1 AND seq > 1', [runId]);
      const columns = Object.keys(earlier).filter((k) => k !== 'id');
      await c.query(`UPDATE runs r SET (${columns.join(', ')}) = (SELECT ${columns.map((k) => `b.${k}`).join(', ')} FROM jsonb_populate_record(NULL::runs, $2) b) WHERE r.id = $1`, [runId, earlier]);
    } finally {
      await c.query('ALTER TABLE run_events ENABLE TRIGGER USER').catch(() => undefined);
      c.release();
    }
    // another worker of the same process (meshhook up runs several) would have sent the run's call again
    const second = new EventLogRepository({ pool, failpoints: Failpoints.none(), keyring: KEYS });
    await assert.rejects(second.load(project, runId), /what COMMIT confirmed is gone/);
  });

  it('group commit: three runs\' batches in one transaction; the one whose run moved on is refused alone', async () => {
    const { pool } = await dbs.fresh();
    const group = new GroupCommit(pool);
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await newRun(pool, orderSyncDefinition('http://127.0.0.1:9', `sync-${i}`)));
    const before = await count(pool, 'run_events');
    const batches = [];
    for (const [i, { runId, version }] of made.entries()) {
      const run = (await loadRun(pool, await projectId(pool), runId))!;
      const events = createDecider(version.definition).decide({ type: 'ExecuteStep', data: { at: new Date().toISOString() } }, run.state);
      // the second run's view moves on behind the writer's back: its batch must be refused, the others kept
      if (i === 1) await pool.query('UPDATE runs SET last_seq = 99 WHERE id = $1', [runId]);
      const ctx = { runId, projectId: run.projectId, expectedSeq: run.lastSeq, prevHash: run.lastHash, stateBefore: run.state, recordedAt: new Date(), chain: KEYS.chainKey(), failpoints: Failpoints.none(), step: null, group };
      batches.push({ ctx, events });
    }
    // decided in the same turn of the event loop, as a worker's runs are: they go together
    const settled = await Promise.allSettled(batches.map(({ ctx, events }) => commitBatch(pool, ctx, events).then(() => events.length)));
    assert.equal(group.stats.calls, 1, 'one call for the three batches');
    assert.equal(group.stats.largest, 3);
    assert.equal(settled[0].status, 'fulfilled');
    assert.equal(settled[2].status, 'fulfilled');
    assert.equal(settled[1].status, 'rejected');
    assert.ok((settled[1] as PromiseRejectedResult).reason instanceof ConcurrencyError);
    const kept = (settled[0] as PromiseFulfilledResult<number>).value + (settled[2] as PromiseFulfilledResult<number>).value;
    assert.equal(await count(pool, 'run_events'), before + kept, 'the refused batch left nothing behind');
    for (const i of [0, 2]) assert.equal((await verifyRun(pool, await projectId(pool), made[i].runId, { keys: KEYS.chainKeys() })).ok, true);
  });

  it('group commit: a call that fails for another reason is tried batch by batch, so only the bad batch fails', async () => {
    const { pool } = await dbs.fresh();
    const group = new GroupCommit(pool);
    const made = [];
    for (let i = 0; i < 2; i++) made.push(await newRun(pool, orderSyncDefinition('http://127.0.0.1:9', `sync-${i}`)));
    // each run's batch as the store would send it (captured, not committed)
    const prepared: PreparedBatch[] = [];
    const capture = { append: async (b: PreparedBatch) => void prepared.push(b) };
    for (const { runId, version } of made) {
      const run = (await loadRun(pool, await projectId(pool), runId))!;
      const events = createDecider(version.definition).decide({ type: 'ExecuteStep', data: { at: new Date().toISOString() } }, run.state);
      await commitBatch(pool, { runId, projectId: run.projectId, expectedSeq: run.lastSeq, prevHash: run.lastHash, stateBefore: run.state, recordedAt: new Date(), chain: KEYS.chainKey(), failpoints: Failpoints.none(), step: null, group: capture }, events);
    }
    // the first batch carries a payload that is not JSON: an error that is no conflict, and fails the whole call
    const columns = [...prepared[0].columns];
    columns[3] = (columns[3] as string[]).map(() => '{not json');
    const [bad, good] = await Promise.allSettled([group.append({ ...prepared[0], columns }), group.append(prepared[1])]);
    assert.equal(group.stats.fallbacks, 1, 'the group call failed and was tried batch by batch');
    assert.equal(bad.status, 'rejected');
    assert.ok(!((bad as PromiseRejectedResult).reason instanceof ConcurrencyError), 'the bad batch gets its own error, not a conflict');
    assert.equal(good.status, 'fulfilled', 'the good batch is kept');
    assert.equal((await verifyRun(pool, await projectId(pool), made[1].runId, { keys: KEYS.chainKeys() })).ok, true);
  });

  it('the database refuses UPDATE, DELETE and TRUNCATE on run_events', async () => {
    const { pool } = await dbs.fresh();
    const { runId } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const before = await count(pool, 'run_events');
    assert.ok(before > 0);
    for (const sql of [
      `UPDATE run_events SET payload = '{}' WHERE run_id = '${runId}'`,
      `DELETE FROM run_events WHERE run_id = '${runId}'`,
      'TRUNCATE run_events',
      'TRUNCATE run_events CASCADE',
    ]) {
      await assert.rejects(pool.query(sql), (e: Error & { code?: string }) => {
        assert.match(e.message, /run_events is append-only: (UPDATE|DELETE|TRUNCATE) is not allowed/, sql);
        assert.equal(e.code, '42501');
        return true;
      });
    }
    assert.equal(await count(pool, 'run_events'), before);
    assert.equal((await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() })).ok, true);
  });

  it('published versions are immutable too', async () => {
    const { pool } = await dbs.fresh();
    await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    await assert.rejects(pool.query(`UPDATE workflow_versions SET definition = '{}'`), /immutable/);
  });

  it('a new run wakes an idle worker at once: it does not wait for its next poll', async () => {
    const { pool, url } = await dbs.fresh();
    const target = await startTarget();
    // an hour between polls: without the notification the run would sit until the test times out
    const worker = new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 3_600_000, keyring: KEYS });
    worker.start();
    try {
      // the worker's first claim found nothing and it now waits, listening on its lock session
      await waitFor('the worker to wait', async () => {
        const { rows } = await pool.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle'`, [`meshhook-lock-${worker.id}`]);
        return rows.length === 1;
      });
      const { runId } = await newRun(pool, orderSyncDefinition(target.url));
      await waitFor('the run to finish', async () => (await runStatus(pool, runId)) === 'succeeded');
    } finally {
      await worker.stop();
      await target.close();
    }
  });

  it('a fresh worker opens its connections before it has work, and runs of one version claimed together load it once', async () => {
    const { pool, url } = await dbs.fresh();
    const target = await startTarget();
    const engine = openEnginePool(url, { max: 4 });
    const registry = require('../../src/store/registry') as { loadVersion: typeof loadVersion };
    const original = registry.loadVersion;
    let loads = 0;
    registry.loadVersion = async (...args: Parameters<typeof loadVersion>) => {
      loads++;
      // a slow read, so every run claimed with the first reaches the version while it is still being read
      await new Promise((r) => setTimeout(r, 300));
      return original(...args);
    };
    const worker = new Worker({ pool: engine, lockConnection: { connectionString: url }, pollMs: 3_600_000, concurrency: 4, keyring: KEYS });
    try {
      worker.start();
      // nothing to do yet, and claims go through the lock session: only the warm-up opens the pool's connections
      await waitFor('the pool to be open', async () => engine.totalCount === 4 && engine.idleCount === 4);
      await worker.stop();
      const { runId, version, published } = await newRun(pool, orderSyncDefinition(target.url));
      const more = await Promise.all(
        [1, 2, 3].map(async (i) => {
          const id = randomUUID();
          await startRun(pool, { runId: id, projectId: published.projectId, projectSlug: 'acme', workflowSlug: published.workflow, version, deliveryId: `d-${i}-${id}`, input: { order: { id: `o-${i}`, sum: i } }, rawBody: '{}', at: new Date(), chain: KEYS.chainKey() });
          return id;
        }),
      );
      const fresh = new Worker({ pool: engine, lockConnection: { connectionString: url }, pollMs: 20, concurrency: 4, keyring: KEYS });
      fresh.start();
      try {
        for (const id of [runId, ...more]) await waitFor(`run ${id} to finish`, async () => (await runStatus(pool, id)) === 'succeeded');
      } finally {
        await fresh.stop();
      }
      assert.equal(loads, 1, 'four runs of one version, claimed together by a fresh worker, read the version once');
    } finally {
      registry.loadVersion = original;
      await worker.stop();
      await engine.end();
      await target.close();
    }
  });

  it('rebuildViews repairs a run view edited behind the engine\'s back', async () => {
    const { pool, url } = await dbs.fresh();
    const target = await startTarget();
    const { runId } = await newRun(pool, orderSyncDefinition(target.url));
    const worker = new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 20, keyring: KEYS });
    worker.start();
    try {
      await waitFor('the run to finish', async () => (await runStatus(pool, runId)) === 'succeeded');
    } finally {
      await worker.stop();
      await target.close();
    }
    const good = await readRunView(pool, await projectId(pool), runId);
    await pool.query(`UPDATE runs SET status = 'failed', outputs = '{"map":"forged"}', current_step = 'push' WHERE id = $1`, [runId]);
    const tampered = await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() });
    assert.equal(tampered.ok, false);
    assert.equal(tampered.viewMatches, false);
    assert.equal(tampered.chainBreak, null, 'the log itself is intact');
    assert.equal(tampered.divergence, null);
    assert.match(tampered.viewDifference!, /^status: stored "failed", replayed "succeeded"/);

    const other = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9', 'other'));
    const rebuilt = await rebuildViews(pool, { keys: KEYS.chainKeys(), projectId: await projectId(pool) });
    assert.equal(rebuilt.runs, 2);
    assert.deepEqual(rebuilt.repaired, [runId], 'only the edited view is repaired; the other run is untouched');
    assert.deepEqual({ ...(await readRunView(pool, await projectId(pool), runId)), }, good);
    assert.equal((await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() })).ok, true);
    assert.deepEqual((await rebuildViews(pool, { keys: KEYS.chainKeys(), projectId: await projectId(pool), runId })).repaired, [], 'a second rebuild finds nothing to do');
    assert.equal((await readRunView(pool, await projectId(pool), other.runId))?.status, 'running');
  });

  it('a delivery id seen before returns its run and writes nothing', async () => {
    const { pool } = await dbs.fresh();
    const { runId, version, published } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const deliveryId = `d-${runId}`;
    const rows = await count(pool, 'run_events');
    const redeliver = (input: unknown) =>
      startRun(pool, {
        runId: randomUUID(),
        projectId: published.projectId,
        projectSlug: 'acme',
        workflowSlug: published.workflow,
        version,
        deliveryId,
        input,
        rawBody: JSON.stringify(input),
        at: new Date(),
        chain: KEYS.chainKey(),
      });
    assert.deepEqual(await redeliver({ order: { id: 'o-1', sum: 42 } }), { runId, duplicate: true });
    assert.equal(await count(pool, 'run_events'), rows);
    assert.equal(await count(pool, 'runs'), 1);

    // the same id with other bytes is a sender bug, not a re-delivery
    await assert.rejects(
      redeliver({ order: { id: 'o-2', sum: 7 } }),
      (e: Error) => e instanceof DeliveryReusedError && e.runId === runId && !e.message.replace(deliveryId, "").includes(runId),
    );
    assert.equal(await count(pool, 'run_events'), rows);
    assert.equal(await count(pool, 'runs'), 1);
  });

  it('rebuildViews refuses a log it cannot fold and still repairs the other runs', async () => {
    const { pool } = await dbs.fresh();
    const unreadable = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const edited = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9', 'other'));
    const [last] = (await pool.query('SELECT project_id, hash FROM run_events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1', [unreadable.runId])).rows;
    await pool.query(
      `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash)
       VALUES ($1, $2, 2, 'PaymentCaptured', 1, '{}', now(), $3, 'x')`,
      [last.project_id, unreadable.runId, last.hash],
    );
    await pool.query(`UPDATE runs SET outputs = '{"map":"forged"}' WHERE id = $1`, [edited.runId]);
    const rebuilt = await rebuildViews(pool, { keys: KEYS.chainKeys(), projectId: await projectId(pool) });
    assert.deepEqual(rebuilt.repaired, [edited.runId]);
    assert.deepEqual(rebuilt.refused.map((r) => r.runId), [unreadable.runId]);
    assert.match(rebuilt.refused[0].reason, /not signed with the chain key/, 'a link written from outside the engine is refused, never repaired');
    assert.deepEqual((await readRunView(pool, await projectId(pool), edited.runId))?.outputs, {});
  });

  it('rebuildViews puts a finished view back to its log when the signed head vouches the log is whole, and refuses when it does not', async () => {
    const { pool } = await dbs.fresh();
    const { runId } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const project = await projectId(pool);
    await pool.query(`UPDATE runs SET status = 'succeeded' WHERE id = $1`, [runId]);
    const vouched = await rebuildViews(pool, { keys: KEYS.chainKeys(), projectId: project });
    assert.deepEqual(vouched.repaired, [runId], 'the view was forged: the log, whole by its signed head, says running');
    assert.equal((await readRunView(pool, project, runId))?.status, 'running');
    // a log cut short under its view is another matter: the signed head no longer names its last event, and rebuild refuses
    await pool.query(`UPDATE runs SET status = 'succeeded', last_seq = last_seq + 1 WHERE id = $1`, [runId]);
    const careful = await rebuildViews(pool, { keys: KEYS.chainKeys(), projectId: project });
    assert.deepEqual(careful.repaired, []);
    assert.match(careful.refused[0].reason, /head/);
  });

  it('a published version edited behind the engine\'s back is refused to workers and reported by verify', async () => {
    const { pool } = await dbs.fresh();
    const { runId, published } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    await tamperWithVersions(pool, `UPDATE workflow_versions SET definition = jsonb_set(definition, '{description}', '"edited"')`);
    await assert.rejects(loadVersion(pool, published.projectId, published.workflowId, 1), TamperedDefinitionError);
    const v = await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() });
    assert.equal(v.divergence, null, 'the edit changes no decision of this run');
    assert.equal(v.definitionChanged, true);
    assert.equal(v.ok, false, 'but the run no longer runs on the version it was pinned to');
  });

  it('a worker will not run a version rewritten together with its hash', async () => {
    const { pool, url } = await dbs.fresh();
    const { runId, published } = await newRun(pool, orderSyncDefinition('http://127.0.0.1:9'));
    const rewritten = { ...published.definition, description: 'rewritten' } as typeof published.definition;
    await tamperWithVersions(pool, 'UPDATE workflow_versions SET definition = $1, definition_hash = $2', [JSON.stringify(rewritten), definitionHash(rewritten)]);
    const worker = new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 20, keyring: KEYS });
    worker.start();
    try {
      await waitFor('the worker to refuse the run', async () => worker.stats.errors > 0);
    } finally {
      await worker.stop();
    }
    assert.equal(worker.stats.batches, 0, 'not one step ran on the rewritten definition');
    assert.equal(await count(pool, 'run_events'), 1);
    const v = await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() });
    assert.equal(v.ok, false);
    assert.match(v.versionProblem ?? '', /signature does not match/);
    // the loader refuses it before any run of it starts, with the reason
    await assert.rejects(loadVersion(pool, published.projectId, published.workflowId, 1, { keys: KEYS.chainKeys() }), /not as the engine published it: its signature does not match/);
  });
});
