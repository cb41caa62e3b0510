import assert from 'node:assert/strict';
import { ChildProcess, fork } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startIntake } from '../../src/intake/server';
import { deliver } from '../../src/intake/sign';
import { readRunView, rebuildViews, verifyRun } from '../../src/replay-service';
import { orderSyncDefinition, runStatus, startDatabases, startTarget, TestDatabases, waitFor, projectId, KEYS, publish, tempDir } from './helpers';

/*
 * Workers as real child processes (src/worker/main.ts through ts-node), killed
 * for real: the failpoint SIGKILLs the worker between the HTTP answer and its
 * record, so the order service did the work but the log does not know it.
 */

const ENTRY = path.resolve(__dirname, '..', '..', 'src', 'worker', 'main.ts');

interface Spawned {
  child: ChildProcess;
  output: string[];
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnWorker(id: string, databaseUrl: string, env: Record<string, string> = {}): Spawned {
  const child = fork(ENTRY, [], {
    execArgv: ['-r', 'ts-node/register'],
    env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: '', DATABASE_URL: databaseUrl, MESHHOOK_WORKER_ID: id, MESHHOOK_POLL_MS: '20', MESHHOOK_KEYS: KEYS.toEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const output: string[] = [];
  const collect = (chunk: Buffer) => output.push(...chunk.toString('utf8').split('\n').filter((l) => l.trim()));
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m: { type?: string }) => m?.type === 'ready' && resolve());
    void exited.then((e) => reject(new Error(`worker ${id} exited before ready (${e.signal ?? e.code}): ${output.join(' | ')}`)));
  });
  ready.catch(() => undefined);
  return { child, output, ready, exited };
}

let dbs: TestDatabases;
const children: Spawned[] = [];
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  await Promise.all(children.map((c) => c.exited));
  await dbs?.closeAll();
});

describe('a worker process that crashes mid-step', { timeout: 270_000 }, () => {
  it('is killed by the failpoint; a second worker finishes the run with the same idempotency key', async () => {
    const { pool, url } = await dbs.fresh();
    const target = await startTarget();
    const intake = await startIntake({ pool, keyring: KEYS });
    const failpointLog = path.join(tempDir('mh-fp-'), 'fired.jsonl');
    try {
      const wf = await publish(pool, 'acme', orderSyncDefinition(target.url));
      const res = await deliver(intake.url, 'acme', 'order-sync', wf.signingSecret, JSON.stringify({ order: { id: 'o-9', sum: 9 } }));
      assert.equal(res.status, 202);
      const runId: string = res.body.runId;

      const first = spawnWorker('doomed', url, { MESHHOOK_FAILPOINTS: 'after-request-sent@push=crash', MESHHOOK_FAILPOINT_LOG: failpointLog });
      children.push(first);
      const death = await first.exited;
      assert.deepEqual(death, { code: null, signal: 'SIGKILL' }, `the worker died by SIGKILL: ${first.output.join('\n')}`);
      assert.ok(existsSync(failpointLog), 'the failpoint wrote its firing down before acting');
      const fired = readFileSync(failpointLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(fired.length, 1);
      assert.equal(fired[0].name, 'after-request-sent');
      assert.equal(fired[0].step, 'push');
      assert.equal(fired[0].action, 'crash');
      assert.equal(fired[0].runId, runId);
      assert.equal(fired[0].pid, first.child.pid);

      assert.equal(target.requests.length, 1, 'the order service answered the doomed worker');
      const stuck = await readRunView(pool, await projectId(pool), runId);
      assert.equal(stuck?.status, 'running');
      assert.equal(stuck?.currentStep, 'push', 'the log does not know the answer yet');

      const second = spawnWorker('rescuer', url);
      children.push(second);
      await second.ready;
      await waitFor('the run to succeed', async () => (await runStatus(pool, runId)) === 'succeeded', 20_000);

      assert.equal(target.requests.length, 2, 'the request was sent again after the crash');
      const keys = new Set(target.requests.map((r) => r.headers['idempotency-key']));
      assert.equal(keys.size, 1, 'both attempts carry ONE idempotency key');
      assert.match(String([...keys][0]), /^mh_[0-9a-f]{40}$/);
      assert.ok(
        second.output.some((l) => JSON.parse(l).msg === 'resuming a run another worker left'),
        `the second worker says it recovered the run:\n${second.output.join('\n')}`,
      );

      const report = await verifyRun(pool, await projectId(pool), runId, { keys: KEYS.chainKeys() });
      assert.equal(report.ok, true, JSON.stringify({ chain: report.chainBreak, div: report.divergence, view: report.viewDifference }));
      const prepared = report.state.attempts.push;
      assert.equal(prepared, 1, 'the crash is not a retry: still attempt 1');

      second.child.kill('SIGTERM');
      assert.deepEqual(await second.exited, { code: 0, signal: null }, 'SIGTERM stops a worker cleanly with exit 0');
      assert.ok(second.output.some((l) => JSON.parse(l).msg === 'stopped'));
    } finally {
      await intake.close();
      await target.close();
    }
  });

  it('restarted on its own head journal, refuses a run put back behind a head it committed before', async () => {
    const { pool: owner, url } = await dbs.fresh();
    const intake = await startIntake({ pool: owner, keyring: KEYS });
    const journal = path.join(tempDir('mh-journal-'), 'heads.jsonl');
    try {
      const followUp = { name: 'follow-up', steps: [{ id: 'wait', type: 'delay', durationMs: 3_600_000, next: 'done' }, { id: 'done', type: 'terminate', status: 'succeeded' }] };
      const wf = await publish(owner, 'acme', followUp);
      const res = await deliver(intake.url, 'acme', 'follow-up', wf.signingSecret, JSON.stringify({ order: { id: 'o-7', sum: 7 } }));
      assert.equal(res.status, 202);
      const runId: string = res.body.runId;
      // the run as the intake left it, genuinely signed: what someone with the database puts back later
      const before = (await owner.query('SELECT to_jsonb(r) AS row, r.last_seq FROM runs r WHERE id = $1', [runId])).rows[0];
      const first = spawnWorker('first', url, { MESHHOOK_HEAD_JOURNAL: journal });
      children.push(first);
      await waitFor('the run to wait', async () => (await runStatus(owner, runId)) === 'waiting', 20_000);
      first.child.send({ type: 'stop' });
      assert.deepEqual(await first.exited, { code: 0, signal: null });
      assert.ok(readFileSync(journal, 'utf8').includes(runId), 'the worker journaled the heads it committed');

      const c = await owner.connect();
      try {
        await c.query('SET session_replication_role = replica');
        await c.query('DELETE FROM run_events WHERE run_id = $1 AND seq > $2', [runId, before.last_seq]);
        const columns = Object.keys(before.row).filter((k) => k !== 'id');
        await c.query(`UPDATE runs r SET (${columns.join(', ')}) = (SELECT ${columns.map((k) => `b.${k}`).join(', ')} FROM jsonb_populate_record(NULL::runs, $2) b) WHERE r.id = $1`, [runId, before.row]);
      } finally {
        await c.query('RESET session_replication_role').catch(() => undefined);
        c.release();
      }

      // given only the journal it writes (no MESHHOOK_CHECKPOINTS), the restarted worker holds the run to it
      const second = spawnWorker('second', url, { MESHHOOK_HEAD_JOURNAL: journal });
      children.push(second);
      await second.ready;
      await waitFor(
        'the restarted worker to refuse the run',
        async () => second.output.some((l) => JSON.parse(l).run === runId && /checkpoint .* the log was cut back/.test(JSON.parse(l).msg)),
        20_000,
      );
      const { rows } = await owner.query('SELECT count(*)::int AS n FROM run_events WHERE run_id = $1', [runId]);
      assert.equal(rows[0].n, before.last_seq, 'the run was not carried on from the earlier state');
      second.child.send({ type: 'stop' });
      await second.exited;
    } finally {
      await intake.close();
    }
  });

  it('answers IPC: a clock message moves time and a stop message ends it with exit 0', async () => {
    const { url } = await dbs.fresh();
    const w = spawnWorker('ipc', url, { MESHHOOK_CLOCK_OFFSET_MS: '1000' });
    children.push(w);
    await w.ready;
    w.child.send({ type: 'clock', offsetMs: 60_000 });
    await waitFor('the clock to move', async () => w.output.some((l) => JSON.parse(l).msg === 'clock moved' && JSON.parse(l).offsetMs === 60_000), 5_000);
    w.child.send({ type: 'stop' });
    assert.deepEqual(await w.exited, { code: 0, signal: null });
    for (const line of w.output) assert.doesNotThrow(() => JSON.parse(line), `stdout is JSON lines: ${line}`);
  });
});
