import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Client, Pool } from 'pg';
import { provisionPostgres, type PostgresServer } from '../../src/db/postgres';
import { Visibility, type VisibilityGroup } from '../../src/realtime/auth';
import type { RelationInfo } from '../../src/realtime/feed';
import { createRealtimeTestSchema } from '../../src/realtime/testing';

/*
 * Who may see a change, asked the way the server asks it for a whole round of
 * subscribers: one batch, the lookup prepared once per table and run under
 * each subscriber's role and claims. Row-level security must still judge every
 * subscriber on its own, whatever order the groups come in.
 */

const A = randomUUID();
const B = randomUUID();
const RUN_A = randomUUID();
const RUN_B = randomUUID();

let pg: PostgresServer;
let pool: Pool;
let visibility: Visibility;
let events: RelationInfo;
let items: RelationInfo;

function relation(oid: number, table: string, columns: Array<[string, string]>, primaryKey: string[], rls: boolean): RelationInfo {
  const cols = columns.map(([name, typname]) => ({ name, typeOid: 0, typname, sqlType: typname === 'int4' ? 'integer' : typname === 'int8' ? 'bigint' : typname }));
  return { oid, schema: 'public', table, columns: cols, byName: new Map(cols.map((c) => [c.name, c])), primaryKey, rls, selectable: new Map() };
}

const claimsOf = (project: string, sub = randomUUID()) => ({ role: 'authenticated', sub, project_id: project, exp: Math.floor(Date.now() / 1000) + 3600 });
const group = (rel: RelationInfo, role: string, claims: Record<string, unknown>, keys: Array<Array<string | null>>): VisibilityGroup => ({ rel, role, claims, keys });

describe('realtime visibility: a round of subscribers in one batch', { timeout: 180_000 }, () => {
  before(async () => {
    pg = await provisionPostgres();
    const admin = new Client({ connectionString: pg.urlFor('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE visibility_test');
    await admin.end();
    // one connection: what a round leaves behind on it is seen by the next query
    pool = new Pool({ connectionString: pg.urlFor('visibility_test'), max: 1 });
    const c = await pool.connect();
    try {
      await createRealtimeTestSchema(c);
      await c.query(`INSERT INTO run_events (project_id, run_id, seq, type) VALUES ($1, $2, 1, 'RunStarted'), ($1, $2, 2, 'StepSucceeded'), ($3, $4, 1, 'RunStarted')`, [A, RUN_A, B, RUN_B]);
      await c.query(`INSERT INTO items (id, label) VALUES (1, 'one'), (2, 'two')`);
      const oids = await c.query<{ relname: string; oid: number }>(`SELECT relname::text, oid::int FROM pg_class WHERE relname IN ('run_events', 'items') AND relnamespace = 'public'::regnamespace`);
      const oid = (name: string) => oids.rows.find((r) => r.relname === name)!.oid;
      events = relation(oid('run_events'), 'run_events', [['project_id', 'uuid'], ['run_id', 'uuid'], ['seq', 'int4'], ['type', 'text']], ['run_id', 'seq'], true);
      items = relation(oid('items'), 'items', [['id', 'int8'], ['label', 'text']], ['id'], false);
    } finally {
      c.release();
    }
    visibility = new Visibility(pool);
  });

  after(async () => {
    await pool?.end();
    await pg?.stop();
  });

  it('judges each subscriber under its own claims, with one prepared lookup per table for all of them', async () => {
    const keys = [[RUN_A, '1'], [RUN_B, '1'], [RUN_A, '2'], [RUN_A, '3']];
    let fellBack = false;
    const original = (visibility as unknown as { oneByOne: unknown }).oneByOne;
    (visibility as unknown as { oneByOne: unknown }).oneByOne = (...args: unknown[]) => {
      fellBack = true;
      return (original as (...a: unknown[]) => unknown).apply(visibility, args);
    };
    try {
      const answers = await visibility.visibleGroups(
        [],
        [
          group(events, 'authenticated', claimsOf(A), keys),
          group(events, 'authenticated', claimsOf(B), keys),
          group(items, 'authenticated', claimsOf(B), [['1'], ['3']]),
          group(events, 'authenticated', claimsOf(A), [[RUN_B, '1']]),
          group(events, 'authenticated', claimsOf(randomUUID()), keys),
        ],
      );
      assert.equal(fellBack, false, 'the round was answered by the one batch, not one transaction per group');
      assert.deepEqual(answers, [
        [true, false, true, false], // project A sees its run's two events, not B's, and not an event that does not exist
        [false, true, false, false], // project B sees only its own
        [true, false], // a table without row-level security: every existing row
        [false], // A again, after B: the claims of each group are the ones it is judged by
        [false, false, false, false], // a project with no events sees nothing
      ]);
    } finally {
      (visibility as unknown as { oneByOne: unknown }).oneByOne = original;
    }
  });

  it('gives the same verdicts as one transaction per subscriber when a role may not read the table at all', async () => {
    const keys = [[RUN_A, '1']];
    // anon has no SELECT on run_events: the batch cannot run, and the careful path sorts the refusal from the rest
    const answers = await visibility.visibleGroups([], [group(events, 'anon', { role: 'anon' }, keys), group(events, 'authenticated', claimsOf(A), keys)]);
    assert.deepEqual(answers, [[false], [true]]);
    // and no connection is left holding a round's prepared statement: rounds that ran and one that stopped part way
    for (let i = 0; i < 3; i++) assert.deepEqual(await visibility.visibleGroups([], [group(events, 'authenticated', claimsOf(A), keys)]), [[true]]);
    const left = await pool.query(`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'meshhook_rt_visible_%'`);
    assert.equal(left.rows[0].n, 0);
  });
});
