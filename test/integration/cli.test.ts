import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { runCli } from '../../src/cli/main';
import { startRealtimeServer } from '../../src/realtime/server';
import { Keyring, tokenSecret } from '../../src/security/keyring';
import { deliver } from '../../src/intake/sign';
import { startEngine } from '../../src/engine';
import { validateDefinition } from '../../src/domain/definition';
import { verifyLog } from '../../src/domain/replay';
import { genesisHash } from '../../src/domain/hash-chain';
import { FIXTURE_KEY_FILE, FIXTURE_KEYRING } from '../../support/fixture-keyring';
import { behindTheEnginesBack, orderSyncDefinition, startDatabases, startTarget, TestDatabases, waitFor, runStatus, KEYS, publish, cli, projectId, tempDir } from './helpers';
import { Client } from 'pg';

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});


/** Changes made as the database's owner with its checks switched off, as an intruder with the database would. */

describe('meshhook CLI against a database', { timeout: 180_000 }, () => {
  it('publish, deliver, runs, replay, verify and rebuild', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-cli-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const file = path.join(dir, 'order-sync.json');
      writeFileSync(file, JSON.stringify(orderSyncDefinition(target.url)));

      const first = await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir);
      assert.equal(first.code, 0, first.err);
      assert.match(first.out, /published acme\/order-sync version 1/);
      assert.match(first.out, /hash: [0-9a-f]{64}/);
      assert.match(first.out, /signing secret: whsec_[0-9a-f]+/);
      assert.match(first.out, /store this secret now/);
      const again = await cli(['publish', file, '--project', 'acme'], env, dir);
      assert.equal(again.code, 0);
      assert.match(again.out, /unchanged, still version 1/);
      assert.doesNotMatch(again.out, /whsec_/, 'the secret is shown only when the workflow is created');
      const grant = async () => (await owner.query(`SELECT allow_private_targets AS allow, allow_private_targets_mac AS mac FROM projects WHERE slug = 'acme'`)).rows[0];
      assert.equal((await grant()).allow, true);
      assert.match((await grant()).mac, /^[\w-]+:\d{4}-[\d:.T-]+Z:[0-9a-f]{64}$/, 'the grant is signed, with when it was given');
      const both = await cli(['publish', file, '--project', 'acme', '--allow-private-targets', '--deny-private-targets'], env, dir);
      assert.equal(both.code, 2, both.out + both.err);
      const denied = await cli(['publish', file, '--project', 'acme', '--deny-private-targets'], env, dir);
      assert.equal(denied.code, 0, denied.err);
      assert.match(denied.out, /acme: http_call steps may no longer call private and loopback addresses/);
      const taken = await grant();
      assert.equal(taken.allow, false);
      assert.match(taken.mac, /^deny:[\w-]+:\d{4}-[\d:.T-]+Z:[0-9a-f]{64}$/, 'taking the leave away is signed, with when it was taken');
      assert.equal((await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir)).code, 0);

      const bad = path.join(dir, 'bad.json');
      writeFileSync(bad, JSON.stringify({ name: 'bad', steps: [{ id: 'a', type: 'transform', expression: 'x', next: 'ghost' }, { id: 'a', type: 'transform', expression: 'y[' }] }));
      const invalid = await cli(['publish', bad, '--project', 'acme'], env, dir);
      assert.equal(invalid.code, 2);
      const problems = invalid.err.split('\n').filter((l) => l.startsWith('  - '));
      assert.equal(problems.length, 3, invalid.err);

      const delivered = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-7","sum":7}}', '--delivery-id', 'cli-1', '--url', engine.intake.url], env, dir);
      assert.equal(delivered.code, 0, delivered.err);
      const runId = /run ([0-9a-f-]{36}) started/.exec(delivered.out)![1];
      const dup = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-7","sum":7}}', '--delivery-id', 'cli-1', '--url', engine.intake.url], env, dir);
      assert.match(dup.out, new RegExp(`run ${runId} already exists for this delivery`));
      const refused = await cli(['deliver', 'acme', 'order-sync', '--body', '42', '--url', engine.intake.url], env, dir);
      assert.equal(refused.code, 1);
      assert.match(refused.err, /HTTP 400 malformed_body/);
      await waitFor('the run to succeed', async () => (await runStatus(engine.pool, runId)) === 'succeeded');

      const runs = await cli(['runs', '--project', 'acme'], env, dir);
      assert.equal(runs.code, 0);
      const lines = runs.out.split('\n');
      assert.match(lines[0], /^RUN\s+PROJECT\s+WORKFLOW\s+VERSION\s+STATUS\s+STEP\s+EVENTS$/);
      assert.match(lines[1], new RegExp(`^${runId}\\s+acme\\s+order-sync\\s+1\\s+succeeded\\s+-\\s+12$`));

      const replay = await cli(['replay', runId, '--project', 'acme'], env, dir);
      assert.equal(replay.code, 0);
      const replayed = JSON.parse(replay.out);
      assert.equal(replayed.view.status, 'succeeded');
      assert.equal(replayed.eventCount, 12);

      const verified = await cli(['verify', runId, '--project', 'acme'], env, dir);
      assert.equal(verified.code, 0, verified.out);
      assert.match(verified.out, /events:\s+12/);
      assert.match(verified.out, /hash chain:\s+ok/);
      assert.match(verified.out, /run view:\s+matches the log/);
      assert.match(verified.out, /verified: ok$/);

      // a real run becomes a golden history that today's engine replays, its chain checkable with the fixtures' key
      const golden = path.join(dir, 'golden.json');
      const exported = await cli(
        ['export-history', runId, '--project', 'acme', '--name', 'order-sync-from-cli', '--out', golden, '--sign-with', FIXTURE_KEY_FILE],
        env,
        dir,
      );
      assert.equal(exported.code, 0, exported.err);
      assert.match(exported.out, /wrote .*golden\.json: 12 events, succeeded, meshhook-replay \d+\.\d+\.\d+/);
      const history = JSON.parse(readFileSync(golden, 'utf8'));
      assert.equal(history.name, 'order-sync-from-cli');
      assert.match(history.provenance, /verified under key .*linked again under key fixtures/);
      const replayed12 = verifyLog(runId, history.events, validateDefinition(history.definition), { keys: FIXTURE_KEYRING.chainKeys() });
      assert.equal(replayed12.ok, true, JSON.stringify(replayed12.divergence ?? replayed12.chainBreak));
      assert.equal(replayed12.state.status, 'succeeded');
      // without re-linking, the chain holds the installation's own key: the fixtures' key cannot check it
      const asIs = JSON.parse((await cli(['export-history', runId, '--project', 'acme'], env, dir)).out);
      assert.ok(verifyLog(runId, asIs.events, validateDefinition(asIs.definition), { keys: FIXTURE_KEYRING.chainKeys() }).chainBreak);
      assert.equal(verifyLog(runId, asIs.events, validateDefinition(asIs.definition), { keys: KEYS.chainKeys() }).ok, true);

      // as the database's owner: the engine's own role may not do this behind the log's back
      await owner.query(`UPDATE runs SET status = 'failed' WHERE id = $1`, [runId]);
      const refusedExport = await cli(['export-history', runId, '--project', 'acme'], env, dir);
      assert.equal(refusedExport.code, 1);
      assert.match(refusedExport.err, /does not verify, and only a genuine run becomes a golden history/);
      const broken = await cli(['verify', runId, '--project', 'acme'], env, dir);
      assert.equal(broken.code, 1);
      assert.match(broken.out, /run view:\s+DIFFERS from the log: status: stored "failed", replayed "succeeded"/);
      assert.match(broken.out, /verified: NOT ok$/);

      const rebuilt = await cli(['rebuild', '--run', runId, '--project', 'acme'], env, dir);
      assert.equal(rebuilt.code, 0);
      assert.match(rebuilt.out, /runs checked: 1\nrepaired:\s+1\n  [0-9a-f-]{36}/);
      assert.equal((await cli(['verify', runId, '--project', 'acme'], env, dir)).code, 0);

      const missing = await cli(['verify', '00000000-0000-4000-8000-000000000000', '--project', 'acme'], env, dir);
      assert.equal(missing.code, 1);
      assert.match(missing.err, /not found/);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('runs --status and --workflow list only the runs asked for', async () => {
    const { url } = await dbs.fresh();
    const target = await startTarget();
    // no workers: the runs stay where the intake left them until an operator acts
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0, pollMs: 20 });
    const dir = tempDir('mh-cli-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const ids: Record<string, string> = {};
      for (const name of ['order-sync', 'refunds']) {
        const file = path.join(dir, `${name}.json`);
        writeFileSync(file, JSON.stringify(orderSyncDefinition(target.url, name)));
        assert.equal((await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir)).code, 0);
      }
      for (const [key, wf] of [['a', 'order-sync'], ['b', 'order-sync'], ['c', 'refunds']]) {
        const d = await cli(['deliver', 'acme', wf, '--body', `{"order":{"id":"${key}","sum":1}}`, '--url', engine.intake.url], env, dir);
        assert.equal(d.code, 0, d.err);
        ids[key] = /run ([0-9a-f-]{36}) started/.exec(d.out)![1];
      }
      assert.equal((await cli(['cancel', ids.b, '--project', 'acme', '--reason', 'test'], env, dir)).code, 0);
      const listed = async (...flags: string[]): Promise<string[]> => {
        const r = await cli(['runs', '--project', 'acme', ...flags], env, dir);
        assert.equal(r.code, 0, r.err);
        return r.out.split('\n').slice(1).map((l) => l.split(/\s+/)[0]).filter((x) => x !== 'no').sort();
      };
      assert.deepEqual(await listed(), [ids.a, ids.b, ids.c].sort(), 'the control: no filter lists all three');
      assert.deepEqual(await listed('--status', 'canceled'), [ids.b]);
      assert.deepEqual(await listed('--status', 'running,waiting'), [ids.a, ids.c].sort());
      assert.deepEqual(await listed('--workflow', 'refunds'), [ids.c]);
      assert.deepEqual(await listed('--workflow', 'order-sync', '--status', 'running'), [ids.a]);
      const none = await cli(['runs', '--project', 'acme', '--status', 'failed'], env, dir);
      assert.equal(none.out, 'no runs match');
      const asJson = await cli(['runs', '--project', 'acme', '--status', 'canceled', '--json'], env, dir);
      assert.equal(asJson.code, 0, asJson.err);
      const parsed = JSON.parse(asJson.out);
      assert.equal(parsed.length, 1);
      assert.deepEqual({ ...parsed[0], createdAt: typeof parsed[0].createdAt, events: typeof parsed[0].events }, {
        id: ids.b,
        project: 'acme',
        workflow: 'order-sync',
        version: 1,
        status: 'canceled',
        currentStep: null,
        events: 'number',
        createdAt: 'string',
      });
      assert.deepEqual(JSON.parse((await cli(['runs', '--project', 'acme', '--status', 'failed', '--json'], env, dir)).out), []);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('verify --all names a run whose row was deleted while its log remains, and one a checkpoint remembers that is gone', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-gone-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      const ids: string[] = [];
      for (const n of [1, 2, 3]) {
        const d = await cli(['deliver', 'acme', 'order-sync', '--body', `{"order":{"id":"o-${n}","sum":${n}}}`, '--url', engine.intake.url], env, dir);
        ids.push(/run ([0-9a-f-]{36}) started/.exec(d.out)![1]);
      }
      for (const id of ids) await waitFor('the run to succeed', async () => (await runStatus(engine.pool, id)) === 'succeeded');
      assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);
      const [rowGone, wholeGone] = ids;
      // as a superuser with the log's protection and the foreign keys out of the way
      await behindTheEnginesBack(owner, async (c) => {
        await c.query('DELETE FROM deliveries WHERE run_id = ANY($1)', [[rowGone, wholeGone]]);
        await c.query('DELETE FROM runs WHERE id = ANY($1)', [[rowGone, wholeGone]]);
        await c.query('DELETE FROM run_events WHERE run_id = $1', [wholeGone]);
      });
      const plain = await cli(['verify', '--all', '--project', 'acme'], env, dir);
      assert.equal(plain.code, 1, plain.out);
      assert.match(plain.out, new RegExp(`NOT ok  acme  ${rowGone}  its log \\(\\d+ events\\) is in the database, but the run is not`));
      const withCheckpoint = await cli(['verify', '--all', '--project', 'acme', '--checkpoints', 'cp.jsonl'], env, dir);
      assert.equal(withCheckpoint.code, 1);
      assert.match(withCheckpoint.out, new RegExp(`NOT ok  ${wholeGone}  a checkpoint taken .* and it no longer exists`));
      assert.doesNotMatch(withCheckpoint.out, new RegExp(`NOT ok  ${rowGone}  a checkpoint`), 'a log without its row is named once, for what it is');
      assert.match(withCheckpoint.out, /verified 3 runs, 24 events in .*: 1 ok, 2 NOT ok$/);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('verify names a run whose delivery record was deleted, and verify --all a published version a checkpoint saw that is gone', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-rollback-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      const ids: string[] = [];
      for (const n of [1, 2]) {
        const d = await cli(['deliver', 'acme', 'order-sync', '--body', `{"order":{"id":"o-${n}","sum":${n}}}`, '--url', engine.intake.url], env, dir);
        ids.push(/run ([0-9a-f-]{36}) started/.exec(d.out)![1]);
      }
      for (const id of ids) await waitFor('the run to succeed', async () => (await runStatus(engine.pool, id)) === 'succeeded');
      // a second version, with no run yet: deleting it would send the next run to version 1's URL
      const v2 = await publish(engine.pool, 'acme', orderSyncDefinition(`${target.url}/v2`));
      assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);
      // the controls: all is well before anything is touched
      const before = await cli(['verify', '--all', '--project', 'acme', '--checkpoints', 'cp.jsonl'], env, dir);
      assert.equal(before.code, 0, before.out);
      assert.equal((await cli(['verify', ids[0], '--project', 'acme'], env, dir)).code, 0);
      await behindTheEnginesBack(owner, async (c) => {
        await c.query('DELETE FROM deliveries WHERE run_id = $1', [ids[0]]);
        await c.query('DELETE FROM workflow_versions WHERE workflow_id = $1 AND version = 2', [v2.workflowId]);
      });
      const one = await cli(['verify', ids[0], '--project', 'acme'], env, dir);
      assert.equal(one.code, 1, one.out);
      assert.match(one.out, /delivery: +NOT OK: the record of delivery ".+", which started it, is gone/);
      const all = await cli(['verify', '--all', '--project', 'acme', '--checkpoints', 'cp.jsonl'], env, dir);
      assert.equal(all.code, 1, all.out);
      assert.match(all.out, new RegExp(`NOT ok  acme  ${ids[0]}  delivery: the record of delivery`));
      assert.doesNotMatch(all.out, new RegExp(`NOT ok  acme  ${ids[1]}`), 'the other run is fine');
      assert.match(all.out, /NOT ok  acme  a checkpoint taken .* saw version 2 of workflow .* published, and it no longer exists/);
      assert.match(all.out, /1 ok, 1 NOT ok; 1 published version NOT as a checkpoint saw it$/);
      // without the checkpoint the deleted version is not seen: every row left is genuine
      const plain = await cli(['verify', '--all', '--project', 'acme'], env, dir);
      assert.doesNotMatch(plain.out, /published version/);
      // a run whose pinned version is deleted is named, its log still checked link by link
      await behindTheEnginesBack(owner, (c) => c.query('DELETE FROM workflow_versions WHERE workflow_id = $1 AND version = 1', [v2.workflowId]));
      const pinnedGone = await cli(['verify', ids[1], '--project', 'acme'], env, dir);
      assert.equal(pinnedGone.code, 1, pinnedGone.out + pinnedGone.err);
      assert.match(pinnedGone.out, /version: +NOT OK: is gone \(deleted outside the engine\)/);
      assert.match(pinnedGone.out, /hash chain: +ok/);
      const allGone = await cli(['verify', '--all', '--project', 'acme'], env, dir);
      assert.equal(allGone.code, 1);
      assert.match(allGone.out, /0 ok, 2 NOT ok$/);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('a project whose name is not signed is refused until sign-project, which shows it first; a renamed workflow is named and not run', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-names-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const file = path.join(dir, 'order-sync.json');
      writeFileSync(file, JSON.stringify(orderSyncDefinition(target.url)));
      assert.equal((await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir)).code, 0);
      const d = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-1","sum":1}}', '--url', engine.intake.url], env, dir);
      const runId = /run ([0-9a-f-]{36}) started/.exec(d.out)![1];
      await waitFor('the run to succeed', async () => (await runStatus(engine.pool, runId)) === 'succeeded');
      const id: string = (await owner.query(`SELECT id FROM projects WHERE slug = 'acme'`)).rows[0].id;
      assert.equal((await cli(['runs', '--project', 'acme'], env, dir)).code, 0, 'the control: a name the engine signed is taken');

      // as a project made before names were signed (or with its signature removed)
      await owner.query(`UPDATE projects SET slug_mac = NULL WHERE id = $1`, [id]);
      for (const argv of [['runs', '--project', 'acme'], ['publish', file, '--project', 'acme'], ['secrets', 'set', 'k', '--value', 'v', '--project', 'acme']]) {
        const refused = await cli(argv, env, dir);
        assert.equal(refused.code, 1, `${argv[0]}: ${refused.out}`);
        assert.match(refused.err, /project "acme" \(.+\) has no signed name.*meshhook sign-project --project acme/);
      }
      assert.equal((await owner.query('SELECT count(*)::int AS n FROM project_secrets')).rows[0].n, 0);
      const shown = await cli(['sign-project', '--project', 'acme'], env, dir);
      assert.equal(shown.code, 1, 'showing is not signing');
      assert.match(shown.out, new RegExp(`the project called acme in the database is ${id}, and holds:\n  order-sync: 1 run\n`));
      assert.match(shown.out, new RegExp(`meshhook sign-project --project acme --id ${id}$`));
      const wrongId = await cli(['sign-project', '--project', 'acme', '--id', '00000000-0000-4000-8000-000000000000'], env, dir);
      assert.equal(wrongId.code, 1);
      assert.match(wrongId.err, /nothing signed/);
      assert.equal((await owner.query('SELECT slug_mac FROM projects WHERE id = $1', [id])).rows[0].slug_mac, null);
      const signed = await cli(['sign-project', '--project', 'acme', '--id', id], env, dir);
      assert.equal(signed.code, 0, signed.err);
      assert.equal(signed.out, `signed: acme is ${id}`);
      assert.equal((await cli(['runs', '--project', 'acme'], env, dir)).code, 0);
      assert.match((await cli(['sign-project', '--project', 'acme'], env, dir)).out, /its name is signed already/);

      // a workflow renamed behind the engine's back: its signed versions still name it as published
      await owner.query(`UPDATE workflows SET slug = 'order-sync-eu' WHERE project_id = $1`, [id]);
      const verified = await cli(['verify', '--all', '--project', 'acme'], env, dir);
      assert.equal(verified.code, 1, verified.out);
      assert.match(verified.out, new RegExp(`NOT ok  acme  ${runId}  version 1: was published for workflow "order-sync", but the run's workflow is called "order-sync-eu"`));
      const one = await cli(['verify', runId, '--project', 'acme'], env, dir);
      assert.equal(one.code, 1, one.out);
      const runsBefore = (await owner.query('SELECT count(*)::int AS n FROM runs')).rows[0].n;
      const renamed = await cli(['deliver', 'acme', 'order-sync-eu', '--body', '{"order":{"id":"o-2","sum":2}}', '--url', engine.intake.url], env, dir);
      assert.equal(renamed.code, 1, renamed.out);
      assert.match(renamed.err, /refused: HTTP 503 workflow_unavailable/);
      assert.equal((await owner.query('SELECT count(*)::int AS n FROM runs')).rows[0].n, runsBefore, 'nothing was started');
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('verify --all --checkpoints names a leave to call private addresses taken away in the table alone, and not one the engine took away', async () => {
    // found by a tampering probe: the flag cleared behind the engine's back made every private call fail, unnamed
    const { url, pool: owner } = await dbs.fresh();
    const dir = tempDir('mh-deny-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const file = path.join(dir, 'order-sync.json');
    writeFileSync(file, JSON.stringify(orderSyncDefinition('http://127.0.0.1:9/orders')));
    assert.equal((await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir)).code, 0);
    assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);
    const control = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(control.code, 0, control.out);

    await owner.query(`UPDATE projects SET allow_private_targets = false, allow_private_targets_mac = NULL WHERE slug = 'acme'`);
    const cleared = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(cleared.code, 1, cleared.out);
    assert.match(cleared.out, /NOT ok  acme  a checkpoint taken .* saw the project's leave to call private addresses granted .*, but it is taken away now without the engine's signed word \(no signed denial\): taken away behind the engine's back/);

    // taken away by its owner through the engine: signed, so not a finding
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await cli(['publish', file, '--project', 'acme', '--deny-private-targets'], env, dir)).code, 0);
    assert.match((await owner.query(`SELECT allow_private_targets_mac AS mac FROM projects WHERE slug = 'acme'`)).rows[0].mac, /^deny:/);
    const denied = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(denied.code, 0, denied.out);
  });

  it('verify --all --checkpoints names a leave to call private addresses given back by writing an old signed grant back', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const dir = tempDir('mh-grant-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const file = path.join(dir, 'order-sync.json');
    writeFileSync(file, JSON.stringify(orderSyncDefinition('http://127.0.0.1:9/orders')));
    const grant = async () => (await owner.query(`SELECT allow_private_targets AS allow, allow_private_targets_mac AS mac FROM projects WHERE slug = 'acme'`)).rows[0];
    assert.equal((await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir)).code, 0);
    const old = await grant();
    assert.match(old.mac, /^[\w-]+:\d{4}-\d\d-\d\dT[\d:.]+Z:[0-9a-f]{64}$/, 'the grant carries when it was signed');
    assert.equal((await cli(['publish', file, '--project', 'acme', '--deny-private-targets'], env, dir)).code, 0);
    assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);
    assert.match(readFileSync(path.join(dir, 'cp.jsonl'), 'utf8'), /"kind":"grant","projectId":"[0-9a-f-]{36}","allowed":false,"grantedAt":null/);
    const control = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(control.code, 0, control.out);

    // the leave taken away, given back with the grant signed before: genuine, so a worker honours it
    await owner.query(`UPDATE projects SET allow_private_targets = true, allow_private_targets_mac = $1 WHERE slug = 'acme'`, [old.mac]);
    const rolledBack = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(rolledBack.code, 1, rolledBack.out);
    assert.match(rolledBack.out, /NOT ok  acme  a checkpoint taken .* saw the project's leave to call private addresses taken away, but it stands now on a grant signed .*: an old grant written back/);
    assert.match(rolledBack.out, /; 1 project's leave to call private addresses NOT as a checkpoint saw it$/);
    // the next routine checkpoint (cron) sees the old grant standing: the checkpoint that saw the leave taken away still counts
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);
    const after = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(after.code, 1, after.out);
    assert.match(after.out, /saw the project's leave to call private addresses taken away, but it stands now on a grant signed .*: an old grant written back/);

    // granted again by its owner after the checkpoint: that is a new grant, not an old one
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await cli(['publish', file, '--project', 'acme', '--allow-private-targets'], env, dir)).code, 0);
    assert.notEqual((await grant()).mac, old.mac);
    const regranted = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(regranted.code, 0, regranted.out);

    // a checkpoint line edited outside the database is not believed
    writeFileSync(path.join(dir, 'cp.jsonl'), readFileSync(path.join(dir, 'cp.jsonl'), 'utf8').replace('"allowed":false', '"allowed":true'));
    const edited = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(edited.code, 1);
    assert.match(edited.err, /checkpoint of project .*'s leave to call private addresses is not genuine/);
  });

  it('history shows a trail edited behind the engine\'s back under NOT VERIFIED, and exits 1', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-history-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      const d = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-1","sum":1}}', '--url', engine.intake.url], env, dir);
      const runId = /run ([0-9a-f-]{36}) started/.exec(d.out)![1];
      await waitFor('the run to succeed', async () => (await runStatus(engine.pool, runId)) === 'succeeded');
      const genuine = await cli(['history', runId, '--project', 'acme'], env, dir);
      assert.equal(genuine.code, 0, genuine.out + genuine.err);
      assert.doesNotMatch(genuine.out, /NOT VERIFIED/);
      const c = await owner.connect();
      try {
        await c.query('ALTER TABLE run_events DISABLE TRIGGER USER');
        await c.query(`UPDATE run_events SET payload = jsonb_set(payload, '{deliveryId}', '"forged"') WHERE run_id = $1 AND seq = 1`, [runId]);
      } finally {
        await c.query('ALTER TABLE run_events ENABLE TRIGGER USER').catch(() => undefined);
        c.release();
      }
      const edited = await cli(['history', runId, '--project', 'acme'], env, dir);
      assert.equal(edited.code, 1);
      assert.match(edited.out.split('\n')[0], /^NOT VERIFIED: hash chain broken at event 1/);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it("an operator's command journals the head its action commits, so verify --checkpoints names the action rolled back", async () => {
    const { url, pool: owner } = await dbs.fresh();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-operator-journal-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const followUp = { name: 'follow-up', steps: [{ id: 'wait', type: 'delay', durationMs: 3_600_000, next: 'done' }, { id: 'done', type: 'terminate', status: 'succeeded' }] };
      await publish(engine.pool, 'acme', followUp);
      const d = await cli(['deliver', 'acme', 'follow-up', '--body', '{"order":{"id":"o-1","sum":1}}', '--url', engine.intake.url], env, dir);
      const runId = /run ([0-9a-f-]{36}) started/.exec(d.out)![1];
      await waitFor('the run to wait', async () => (await runStatus(engine.pool, runId)) === 'waiting');
      // the head a worker committed before the action: genuinely signed, so putting it back passes every signature check
      const before = (await owner.query('SELECT to_jsonb(r) AS row, r.last_seq FROM runs r WHERE id = $1', [runId])).rows[0];
      const canceled = await cli(['cancel', runId, '--project', 'acme', '--reason', 'the customer withdrew the order', '--by', 'dana@acme.example', '--journal', 'ops.jsonl'], env, dir);
      assert.equal(canceled.code, 0, canceled.err);
      assert.equal(readFileSync(path.join(dir, 'ops.jsonl'), 'utf8').trim().split('\n').length, 1, 'one head a command');
      await behindTheEnginesBack(owner, async (c) => {
        await c.query('DELETE FROM run_events WHERE run_id = $1 AND seq > $2', [runId, before.last_seq]);
        const columns = Object.keys(before.row).filter((k) => k !== 'id');
        await c.query(`UPDATE runs r SET (${columns.join(', ')}) = (SELECT ${columns.map((k) => `b.${k}`).join(', ')} FROM jsonb_populate_record(NULL::runs, $2) b) WHERE r.id = $1`, [runId, before.row]);
      });
      // without the operator's journal the rollback leaves nothing to see; with it, the action is missed
      const plain = await cli(['verify', runId, '--project', 'acme'], env, dir);
      assert.equal(plain.code, 0, plain.out);
      const checked = await cli(['verify', '--all', '--project', 'acme', '--checkpoints', 'ops.jsonl'], env, dir);
      assert.equal(checked.code, 1, checked.out);
      assert.match(checked.out, new RegExp(`NOT ok  acme  ${runId}  .*checkpoint`));
      // a journal that cannot be written is said, and the action stands all the same
      const paused = await cli(['pause', runId, '--project', 'acme', '--reason', 'hold', '--by', 'dana@acme.example', '--journal', 'no/such/dir/ops.jsonl'], env, dir);
      assert.equal(paused.code, 0, paused.err);
      assert.match(paused.err, /warning: the action is recorded, but its head could not be written to no\/such\/dir\/ops\.jsonl/);
    } finally {
      await engine.stop();
    }
  });

  it("a delivery record whose body hash was edited is named against the hash the run's signed first event carries", async () => {
    const { url, pool: owner } = await dbs.fresh();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0 });
    const dir = tempDir('mh-body-sha-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
      const body = '{"order":{"id":"o-1","sum":1}}';
      const sent = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, body, { deliveryId: 'delivery-1' });
      const runId: string = sent.body.runId;
      const started = (await owner.query(`SELECT payload->>'bodySha256' AS sha FROM run_events WHERE run_id = $1 AND seq = 1`, [runId])).rows[0];
      assert.equal(started.sha, createHash('sha256').update(body).digest('hex'), 'the first event carries the hash of the exact bytes');
      assert.equal((await cli(['verify', '--all', '--project', 'acme'], env, dir)).code, 0);
      await owner.query(`UPDATE deliveries SET body_sha256 = repeat('0', 64) WHERE run_id = $1`, [runId]);
      // the intake judges a re-delivery by the hash the first event carries: the same bytes are still the same
      // delivery (not refused as an id reused for another body), and other bytes under the id still are refused
      const again = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, body, { deliveryId: 'delivery-1' });
      assert.deepEqual([again.status, again.body.runId, again.body.duplicate], [200, runId, true]);
      assert.equal((await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, '{"order":{"id":"o-1","sum":2}}', { deliveryId: 'delivery-1' })).status, 409);
      const one = await cli(['verify', runId, '--project', 'acme'], env, dir);
      assert.equal(one.code, 1, one.out);
      assert.match(one.out, /delivery: +NOT OK: the record of delivery "delivery-1" names other bytes than the run's signed first event/);
      const all = await cli(['verify', '--all', '--project', 'acme'], env, dir);
      assert.equal(all.code, 1, all.out);
      assert.match(all.out, new RegExp(`NOT ok  acme  ${runId}  delivery: the record of delivery "delivery-1" names other bytes`));
    } finally {
      await engine.stop();
    }
  });

  it('a run forged to name a delivery that has not arrived does not make that webhook count as sent before', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0 });
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
      const body = '{"order":{"id":"o-9","sum":9}}';
      const forged = '00000000-0000-4000-8000-000000000009';
      const payload = { runId: forged, project: 'acme', workflow: 'order-sync', version: 1, definitionHash: 'x', deliveryId: 'delivery-9', input: {}, at: new Date().toISOString(), bodySha256: createHash('sha256').update(body).digest('hex') };
      await behindTheEnginesBack(owner, async (c) => {
        await c.query(`INSERT INTO runs (id, project_id, workflow_id, version, status, last_seq) VALUES ($1, $2, $3, 1, 'succeeded', 1)`, [forged, wf.projectId, wf.workflowId]);
        await c.query(`INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid) VALUES ($1, $2, 1, 'RunStarted', 1, $3, now(), $4, 'forged', NULL)`, [
          wf.projectId,
          forged,
          JSON.stringify(payload),
          genesisHash(forged),
        ]);
      });
      // no delivery record: the intake finds the forged run by its first event, and does not take its word for it
      const sent = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, body, { deliveryId: 'delivery-9' });
      assert.equal(sent.status, 503, JSON.stringify(sent.body));
      assert.equal(sent.body.error.code, 'delivery_record_broken');
    } finally {
      await engine.stop();
    }
  });

  it('the intake journals the head of every run it starts, so a run deleted before any worker took it up is named', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const dir = tempDir('mh-intake-journal-');
    const journal = path.join(dir, 'heads.jsonl');
    // no workers: only the intake has written anything about the run
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0, headJournal: journal });
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
      const sent = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, '{"order":{"id":"o-1","sum":1}}', { deliveryId: 'delivery-1' });
      assert.equal(sent.status, 202);
      const runId: string = sent.body.runId;
      assert.equal((await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, '{"order":{"id":"o-1","sum":1}}', { deliveryId: 'delivery-1' })).status, 200);
      await engine.stop();
      const lines = readFileSync(journal, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const head = (await owner.query('SELECT last_seq, head_hash FROM runs WHERE id = $1', [runId])).rows[0];
      assert.deepEqual(
        lines.map((l) => [l.runId, l.seq, l.hash]),
        [[runId, head.last_seq, head.head_hash]],
        'one line, for the run started (not for the re-delivery), with the head the database holds',
      );
      await behindTheEnginesBack(owner, async (c) => {
        await c.query('DELETE FROM deliveries WHERE run_id = $1', [runId]);
        await c.query('DELETE FROM run_events WHERE run_id = $1', [runId]);
        await c.query('DELETE FROM runs WHERE id = $1', [runId]);
      });
      const checked = await cli(['verify', '--all', '--project', 'acme', '--checkpoints', journal], env, dir);
      assert.equal(checked.code, 1, checked.out);
      assert.match(checked.out, new RegExp(`NOT ok  ${runId}  a checkpoint taken .* saw this run at event 1, and it no longer exists`));
    } finally {
      await engine.stop();
    }
  });

  it('keys rotate re-seals every secret under the new key, and never takes a signing secret written in plain text unless told to', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const dir = tempDir('mh-rotate-');
    const keyFile = path.join(dir, 'keys.json');
    writeFileSync(keyFile, JSON.stringify({ keys: KEYS.toEnv().split(',').map((pair) => ({ id: pair.slice(0, pair.indexOf(':')), key: pair.slice(pair.indexOf(':') + 1) })) }));
    const env = { DATABASE_URL: url, MESHHOOK_KEY_FILE: keyFile };
    let engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0 });
    try {
      const genuine = await publish(engine.pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
      const legacy = await publish(engine.pool, 'acme', orderSyncDefinition('http://127.0.0.1:9', 'legacy-sync'));
      await engine.stop();
      // as the database's owner: a secret of their choosing beside the sealed one, and one workflow with only a plain one
      await owner.query(`UPDATE workflows SET signing_secret = 'whsec_chosen_by_someone_with_the_database_0123' WHERE id = $1`, [genuine.workflowId]);
      await owner.query(`UPDATE workflows SET signing_secret = 'whsec_left_by_an_engine_before_sealed_secrets', signing_secret_sealed = NULL WHERE id = $1`, [legacy.workflowId]);
      const verified = await cli(['verify', '--all'], env, dir);
      assert.equal(verified.code, 1, verified.out);
      assert.match(verified.out, /NOT ok  acme  workflow order-sync holds a signing secret in plain text, which the engine never writes/);
      assert.match(verified.out, /; 2 signing secrets in plain text$/);

      const rotated = await cli(['keys', 'rotate'], env, dir);
      assert.equal(rotated.code, 0, rotated.err);
      assert.match(rotated.out, /new active key k\w+ in .*\nsealed 1 secrets again with key k\w+/);
      assert.match(rotated.err, /warning: acme\/order-sync has a signing secret in plain text beside its sealed one: ignored/);
      assert.match(rotated.err, /warning: acme\/legacy-sync has its signing secret only in plain text: not sealed/);
      // under the new key, the sealed secret still signs and the chosen one does not
      engine = await startEngine({ databaseUrl: url, keyring: Keyring.fromFile(keyFile), workers: 0 });
      const chosen = await deliver(engine.intake.url, 'acme', 'order-sync', 'whsec_chosen_by_someone_with_the_database_0123', '{"order":{"id":"forged","sum":1000000}}');
      assert.equal(chosen.status, 401);
      assert.equal((await deliver(engine.intake.url, 'acme', 'order-sync', genuine.signingSecret, '{"order":{"id":"o-1","sum":1}}')).status, 202);
      await engine.stop();
      const adopted = await cli(['keys', 'rotate', '--adopt-plain-signing-secrets'], env, dir);
      assert.equal(adopted.code, 0, adopted.err);
      assert.doesNotMatch(adopted.err, /legacy-sync/);
      engine = await startEngine({ databaseUrl: url, keyring: Keyring.fromFile(keyFile), workers: 0 });
      assert.equal((await deliver(engine.intake.url, 'acme', 'legacy-sync', 'whsec_left_by_an_engine_before_sealed_secrets', '{"order":{"id":"o-2","sum":2}}')).status, 202);
    } finally {
      await engine.stop().catch(() => undefined);
    }
  });

  it('a forged run whose event is nested too deep to read is named, and every other run still verified', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const dir = tempDir('mh-deep-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      const d = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-1","sum":1}}', '--url', engine.intake.url], env, dir);
      const genuine = /run ([0-9a-f-]{36}) started/.exec(d.out)![1];
      await waitFor('the run to succeed', async () => (await runStatus(engine.pool, genuine)) === 'succeeded');
      const forged = '00000000-0000-4000-8000-000000000001';
      await owner.query(`INSERT INTO runs (id, project_id, workflow_id, version, status, last_seq) VALUES ($1, $2, $3, 1, 'succeeded', 1)`, [forged, wf.projectId, wf.workflowId]);
      await owner.query(`INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid) VALUES ($1, $2, 1, 'RunStarted', 1, (repeat('[', 5000) || repeat(']', 5000))::jsonb, now(), 'x', 'y', 'k')`, [wf.projectId, forged]);
      const all = await cli(['verify', '--all', '--project', 'acme'], env, dir);
      assert.equal(all.code, 1, all.out + all.err);
      assert.match(all.out, new RegExp(`NOT ok  acme  ${forged}  .*event 1`));
      assert.doesNotMatch(all.out, new RegExp(genuine), 'the genuine run is verified, and fine');
      assert.match(all.out, /verified 2 runs, 13 events in .*: 1 ok, 1 NOT ok/);
      const one = await cli(['verify', forged, '--project', 'acme'], env, dir);
      assert.equal(one.code, 1);
      assert.match(one.out, /verified: NOT ok/);
      const history = await cli(['history', forged, '--project', 'acme'], env, dir);
      assert.equal(history.code, 1, history.err);
      assert.match(history.out.split('\n')[0], /^NOT VERIFIED: hash chain broken at event 1/);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('a vault secret whose earlier value is written back is named behind a checkpoint that saw the later one', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0 });
    const dir = tempDir('mh-vault-cp-');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      await publish(engine.pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
      assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_revoked_0000000000000000'], env, dir)).code, 0);
      const earlier = (await owner.query(`SELECT sealed FROM project_secrets WHERE name = 'orders-api'`)).rows[0].sealed as string;
      assert.match(earlier, /^mh2\.[^.]+\.\d+\./, 'a sealed value carries when it was sealed');
      await new Promise((r) => setTimeout(r, 5));
      assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_current_1111111111111111'], env, dir)).code, 0);
      assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);
      assert.match(readFileSync(path.join(dir, 'cp.jsonl'), 'utf8'), /"kind":"secret","projectId":"[^"]+","name":"orders-api"/);
      assert.equal((await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir)).code, 0, 'the control');
      // as the database's owner: the revoked key's sealed value written back, with the time it carries
      await owner.query(`UPDATE project_secrets SET sealed = $1 WHERE name = 'orders-api'`, [earlier]);
      const plain = await cli(['verify', '--all'], env, dir);
      assert.equal(plain.code, 0, 'without a checkpoint an earlier value still opens');
      const seen = await cli(['verify', '--all', '--checkpoints', 'cp.jsonl'], env, dir);
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, /NOT ok  acme  a checkpoint taken .* saw vault secret orders-api sealed .*, but its value now was sealed .*: an earlier value written back/);
      assert.match(seen.out, /; 1 vault secret older than a checkpoint saw$/);
    } finally {
      await engine.stop();
    }
  });

  it('tail follows a run live through the Realtime protocol: the run log so far, then each event as it commits', async () => {
    const { url } = await dbs.fresh();
    // an order service that holds its answer until the test lets it go, so the run waits mid-step
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    let seen = 0;
    const target = http.createServer((req, res) => {
      seen++;
      req.resume();
      void held.then(() => res.writeHead(201, { 'content-type': 'application/json' }).end('{"orderId":"ord_1"}'));
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    const targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const realtime = await startRealtimeServer({ databaseUrl: url, jwtSecret: tokenSecret(KEYS, env) });
    const dir = tempDir('mh-tail-');
    try {
      await publish(engine.pool, 'acme', orderSyncDefinition(targetUrl));
      const delivered = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-9","sum":9}}', '--url', engine.intake.url], env, dir);
      const runId = /run ([0-9a-f-]{36}) started/.exec(delivered.out)![1];
      await waitFor('the request to reach the order service', async () => seen > 0);

      const lines: string[] = [];
      const io = { out: (l: string) => lines.push(l), err: (l: string) => lines.push(`ERR ${l}`), env, cwd: dir };
      const tailing = runCli(['tail', runId, '--project', 'acme', '--json', '--url', realtime.url], io);
      await waitFor('tail to print what the run log holds so far', async () => lines.length >= 5);
      release();
      assert.equal(await tailing, 0, lines.join('\n'));
      const events = lines.map((l) => JSON.parse(l) as { seq: number; type: string; via: string });
      assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'every event once, in order');
      assert.equal(events.at(-1)!.type, 'RunFinished', 'tail stops when the run finishes');
      // tail was following when only 5 events existed and printed the rest as they came (live, or through a
      // catch-up that got there first on a busy machine): the seq check above shows each once, in order

      const stranger = await cli(['tail', runId, '--project', 'globex', '--url', realtime.url], env, dir);
      assert.notEqual(stranger.code, 0, 'another project cannot follow the run');
      assert.match(stranger.err, /no project globex|not found/);
    } finally {
      release();
      await realtime.close();
      await engine.stop();
      await new Promise<void>((r) => target.close(() => r()));
    }
  });
});

/*
 * Commands that run until stopped (`up`, `worker`) run as real processes, stopped by a real signal: the CLI's
 * source through sucrase (no build needed), from the repository's root.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const CLI_SOURCE = path.join(ROOT, 'src', 'cli', 'main.ts');

function cliProcess(argv: string[], env: NodeJS.ProcessEnv): { output: () => string; stdout: () => string; stderr: () => string; kill: (sig: NodeJS.Signals) => void; exited: Promise<number | null> } {
  let out = '';
  let err = '';
  const child = spawn(process.execPath, ['-r', 'sucrase/register/ts', CLI_SOURCE, ...argv], { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  running.push(child);
  return { output: () => out + err, stdout: () => out, stderr: () => err, kill: (sig) => child.kill(sig), exited };
}
const running: import('node:child_process').ChildProcess[] = [];
after(() => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe('meshhook CLI: keys without up, publish --json, worker, up tuned', { timeout: 360_000 }, () => {
  it('keys init makes the key file publish needs against a database of your own; publish without keys says so and writes nothing', async () => {
    // a database nobody migrated, as someone with their own Postgres and no `meshhook up` has
    const name = `mh_own_${process.pid}`;
    const admin = new Client({ connectionString: dbs.server.urlFor('postgres') });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const url = dbs.server.urlFor(name);
    const home = tempDir('mh-keys-');
    const env = { DATABASE_URL: url, MESHHOOK_HOME: home };
    const file = path.join(home, 'order-sync.json');
    writeFileSync(file, JSON.stringify(orderSyncDefinition('http://127.0.0.1:9')));

    const noKeys = await cli(['publish', file, '--project', 'acme'], env, home);
    assert.equal(noKeys.code, 2, noKeys.out + noKeys.err);
    assert.match(noKeys.err, /no keys: run `meshhook keys init` to make the key file .*keyring\.json/);
    const untouched = new Client({ connectionString: url });
    await untouched.connect();
    try {
      const { rows } = await untouched.query(`SELECT to_regclass('public.schema_migrations') AS t`);
      assert.equal(rows[0].t, null, 'publish without keys did not migrate the database (it would be left unsealed)');
    } finally {
      await untouched.end();
    }

    const made = await cli(['keys', 'init'], env, home);
    assert.equal(made.code, 0, made.err);
    const keyFile = path.join(home, 'keyring.json');
    assert.match(made.out, new RegExp(`made ${keyFile.replace(/[.]/g, '\\.')} with key k\\w+`));
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const before = readFileSync(keyFile, 'utf8');
    const again = await cli(['keys', 'init'], env, home);
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /exists already .*: left as it is/);
    assert.equal(readFileSync(keyFile, 'utf8'), before, 'a second init changes nothing');
    assert.equal((await cli(['keys', 'nonsense'], env, home)).code, 2);

    const published = await cli(['publish', file, '--project', 'acme', '--allow-private-targets', '--json'], env, home);
    assert.equal(published.code, 0, published.err);
    const first = JSON.parse(published.out) as Record<string, unknown>;
    assert.deepEqual(Object.keys(first).sort(), ['allowPrivateTargets', 'created', 'definitionHash', 'project', 'signingSecret', 'unchanged', 'version', 'workflow']);
    assert.equal(first.project, 'acme');
    assert.equal(first.workflow, 'order-sync');
    assert.equal(first.version, 1);
    assert.equal(first.created, true);
    assert.equal(first.unchanged, false);
    assert.equal(first.allowPrivateTargets, true);
    assert.match(String(first.definitionHash), /^[0-9a-f]{64}$/);
    assert.match(String(first.signingSecret), /^whsec_[0-9a-f]+$/);
    const second = JSON.parse((await cli(['publish', file, '--project', 'acme', '--json'], env, home)).out) as Record<string, unknown>;
    assert.deepEqual(second, { project: 'acme', workflow: 'order-sync', version: 1, definitionHash: first.definitionHash, unchanged: true, created: false });
    // the schema was sealed with the key init made: verify --all finds nothing wrong
    const verified = await cli(['verify', '--all'], env, home);
    assert.equal(verified.code, 0, verified.out + verified.err);

    // MESHHOOK_KEYS given: nothing to make
    const fromEnv = await cli(['keys', 'init'], { ...env, MESHHOOK_KEYS: KEYS.toEnv() }, home);
    assert.equal(fromEnv.code, 0);
    assert.match(fromEnv.out, /MESHHOOK_KEYS is set \(active key test\)/);
    // MESHHOOK_KEY_FILE given: that file is the one made
    const elsewhere = path.join(home, 'elsewhere', 'keys.json');
    const named = await cli(['keys', 'init'], { ...env, MESHHOOK_KEY_FILE: elsewhere }, home);
    assert.equal(named.code, 0, named.err);
    assert.ok(existsSync(elsewhere));
  });

  it('meshhook worker runs the runs the intake starts, with its flags, and stops cleanly on SIGTERM', async () => {
    const { url } = await dbs.fresh();
    const target = await startTarget();
    // the intake alone: every run is the separate worker's to advance
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 0 });
    const home = tempDir('mh-worker-');
    try {
      const published = await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      assert.equal((await cli(['worker', '--concurrency', '0'], { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() }, home)).code, 2);
      const worker = cliProcess(['worker', '--concurrency', '3', '--poll-ms', '20', '--pool-max', '2', '--database-url', url], { MESHHOOK_HOME: home, MESHHOOK_KEYS: KEYS.toEnv(), DATABASE_URL: '' });
      await waitFor('the worker to run', async () => /is running against/.test(worker.output()), 30_000);
      assert.match(worker.stdout(), /info  worker running  worker=\S+ pollMs=20 concurrency=3/);
      const started = await deliver(engine.intake.url, 'acme', 'order-sync', published.signingSecret, '{"order":{"id":"o-1","sum":1}}');
      assert.equal(started.status, 202);
      const runId = started.body.runId as string;
      await waitFor('the worker to finish the run', async () => (await runStatus(engine.pool, runId)) === 'succeeded', 30_000);
      assert.equal(target.requests.length, 1);
      await waitFor('its log line', async () => /run succeeded/.test(worker.stdout()));
      worker.kill('SIGTERM');
      assert.equal(await worker.exited, 0, worker.output());
      assert.match(worker.stdout(), /stopping  worker=\S+ why=SIGTERM/);
      assert.match(worker.stdout(), /stopped\.$/m);
      assert.equal(worker.stdout().match(/worker running/g)?.length, 1, 'one worker, not a second one started by importing the worker program');
      assert.equal(worker.stderr(), '');
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('up --concurrency --no-realtime --quiet: no live-log server, no info lines, warnings still printed', async () => {
    const { url, pool } = await dbs.fresh();
    const target = await startTarget();
    const home = tempDir('mh-up-tuned-');
    // a damaged checkpoint file: up warns about it, quiet or not
    const damaged = path.join(home, 'damaged.jsonl');
    writeFileSync(damaged, 'not json\nnor this\n');
    const env = { MESHHOOK_HOME: home, MESHHOOK_KEYS: KEYS.toEnv(), DATABASE_URL: url };
    assert.equal((await cli(['up', '--no-realtime', '--realtime-port', '0'], env, home)).code, 2);
    const up = cliProcess(['up', '--port', '0', '--workers', '1', '--concurrency', '2', '--no-realtime', '--quiet'], { ...env, MESHHOOK_CHECKPOINTS: damaged });
    try {
      await waitFor('up', async () => /MeshHook Replay is up/.test(up.output()), 60_000);
      assert.match(up.stdout(), /MeshHook Replay is up \(1 worker, 2 runs in flight each\)/);
      assert.match(up.stdout(), /live logs: off \(--no-realtime\)/);
      assert.match(up.stderr(), /warn  checkpoint file/);
      const state = JSON.parse(readFileSync(path.join(home, 'state.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(state.realtimeUrl, undefined);
      await publish(pool, 'acme', orderSyncDefinition(target.url));
      const delivered = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"o-1","sum":1}}'], env, home);
      assert.equal(delivered.code, 0, delivered.err);
      const runId = /run ([0-9a-f-]{36}) started/.exec(delivered.out)![1];
      await waitFor('the run to succeed', async () => (await runStatus(pool, runId)) === 'succeeded', 30_000);
      const tail = await cli(['tail', runId, '--project', 'acme'], { MESHHOOK_HOME: home, MESHHOOK_KEYS: KEYS.toEnv() }, home);
      assert.equal(tail.code, 2);
      assert.match(tail.err, /no live-log server: start one with `meshhook up` \(without --no-realtime\)/);
      up.kill('SIGINT');
      assert.equal(await up.exited, 0, up.output());
      assert.doesNotMatch(up.output(), / info  /, 'no info line: not one per run, nor any other');
      assert.ok(await projectId(pool, 'acme'));
    } finally {
      up.kill('SIGKILL');
      await target.close();
    }
  });
});
