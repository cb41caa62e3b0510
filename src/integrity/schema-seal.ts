import type { ClientBase, Pool } from 'pg';
import { canonicalJson } from '../domain/canonical';
import { ChainKey, ChainKeys, hmacSha256Hex, signatureParts } from '../domain/hash-chain';

/*
 * The engine's schema, sealed. Row-level security, the append-only and
 * gap-free triggers, the policies, the grants and the engine's SQL functions
 * are what keep projects apart and the log whole while the engine runs.
 * Someone with the database can switch any of them off, or replace a function,
 * without touching a row the chain covers: nothing in the log would show it.
 *
 * So when the engine applies its migrations it writes down what each of those
 * objects is (a hash of its definition as Postgres prints it) and signs that
 * list with the chain key, which the database never holds. `verify --all`
 * reads the same list from the catalogs again and names every object that is
 * not as sealed: changed, switched off, gone, or added (a second, permissive
 * policy is as bad as a weakened one).
 *
 * What it cannot see: a change made and undone between two verifications.
 * The catalogs are read with plain queries on pg_catalog, never through a
 * function of the engine's own schema, which whoever changed it could have
 * made to answer anything.
 */

/** The engine's tables: their row-level security, grants, policies and triggers are sealed. */
export const ENGINE_TABLES = ['projects', 'workflows', 'workflow_versions', 'runs', 'run_events', 'deliveries', 'project_secrets', 'schema_migrations', 'schema_seals'] as const;

/** What each sealed object is, by a name that says what it is ("function meshhook_load_run(…)", "trigger … on …"). */
export type SchemaObjects = Record<string, string>;

/*
 * One query, pg_catalog only, rendered under a fixed search_path so that a
 * name is printed the same way at sealing and at verifying. Functions are the
 * meshhook_* ones and whatever a trigger on an engine table calls.
 */
const OBJECTS_SQL = `
  WITH t AS (
    SELECT c.oid, c.relname FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])
  )
  SELECT 'table ' || t.relname AS name,
         'rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity || ' owner=' || c.relowner::regrole::text
           || ' acl=' || coalesce(c.relacl::text, '') AS what
  FROM t JOIN pg_catalog.pg_class c ON c.oid = t.oid
  UNION ALL
  SELECT 'policy ' || p.polname || ' on ' || t.relname,
         pg_catalog.md5(p.polcmd::text || '|' || p.polpermissive::text || '|' || p.polroles::regrole[]::text || '|'
           || coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') || '|' || coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), ''))
  FROM pg_catalog.pg_policy p JOIN t ON t.oid = p.polrelid
  UNION ALL
  SELECT 'trigger ' || g.tgname || ' on ' || t.relname,
         CASE g.tgenabled WHEN 'D' THEN 'disabled' WHEN 'O' THEN 'enabled' WHEN 'R' THEN 'replica only' ELSE 'always' END
           || ' ' || pg_catalog.md5(pg_catalog.pg_get_triggerdef(g.oid))
  FROM pg_catalog.pg_trigger g JOIN t ON t.oid = g.tgrelid
  WHERE NOT g.tgisinternal
  UNION ALL
  SELECT 'function ' || f.proname || '(' || pg_catalog.pg_get_function_identity_arguments(f.oid) || ')',
         pg_catalog.md5(pg_catalog.pg_get_functiondef(f.oid)) || ' owner=' || f.proowner::regrole::text || ' acl=' || coalesce(f.proacl::text, '')
  FROM pg_catalog.pg_proc f
  WHERE f.pronamespace = 'public'::regnamespace AND f.prokind IN ('f', 'p')
    AND (f.proname LIKE 'meshhook\\_%' OR f.oid IN (SELECT g.tgfoid FROM pg_catalog.pg_trigger g JOIN t ON t.oid = g.tgrelid))`;

/** What the engine's schema objects are now, read from the catalogs. */
export async function readSchemaObjects(db: Pool | ClientBase): Promise<SchemaObjects> {
  const client = typeof (db as Pool).totalCount === 'number' ? null : (db as ClientBase);
  const run = async (c: ClientBase): Promise<SchemaObjects> => {
    await c.query('BEGIN READ ONLY');
    try {
      // names printed as the migrations see them; set for this transaction only
      await c.query(`SET LOCAL search_path = public`);
      const { rows } = await c.query<{ name: string; what: string }>(OBJECTS_SQL, [ENGINE_TABLES]);
      await c.query('COMMIT');
      const out: SchemaObjects = {};
      for (const r of rows) out[r.name] = r.what;
      return out;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  };
  if (client) return run(client);
  const c = await (db as Pool).connect();
  try {
    return await run(c);
  } finally {
    c.release();
  }
}

function sealMac(key: Buffer, migration: string, objects: SchemaObjects): string {
  return hmacSha256Hex(key, `meshhook-schema-seal\n${migration}\n${canonicalJson(objects)}`);
}

/** Seal the schema as it is now, after `migration` (the last one applied). */
export async function sealSchema(db: Pool | ClientBase, chain: ChainKey, migration: string): Promise<SchemaObjects> {
  const objects = await readSchemaObjects(db);
  await db.query('INSERT INTO schema_seals (migration, objects, mac) VALUES ($1, $2, $3)', [migration, JSON.stringify(objects), `${chain.kid}:${sealMac(chain.key, migration, objects)}`]);
  return objects;
}

export interface SchemaCheck {
  /** when the seal checked against was written (null: none) */
  sealedAt: string | null;
  /** every object not as sealed, one sentence each; empty when the schema is as the engine sealed it */
  problems: string[];
}

/** The engine's schema against its latest seal. */
export async function checkSchema(db: Pool | ClientBase, keys: ChainKeys): Promise<SchemaCheck> {
  const { rows } = await db.query<{ migration: string; objects: SchemaObjects; mac: string; sealed_at: Date }>(
    'SELECT migration, objects, mac, sealed_at FROM schema_seals ORDER BY id DESC LIMIT 1',
  );
  const seal = rows[0];
  if (!seal) return { sealedAt: null, problems: ["the engine's schema carries no seal: its migrations were applied without the chain key, or the seal was deleted (`meshhook seal-schema` seals it as it is now)"] };
  const sealedAt = seal.sealed_at.toISOString();
  const { kid, key, mac } = signatureParts(keys, seal.mac);
  if (!key) return { sealedAt, problems: [`the schema's seal is signed with key "${kid.slice(0, 40)}", which is not in the keyring`] };
  if (mac !== sealMac(key, seal.migration, seal.objects)) return { sealedAt, problems: ["the schema's seal is not as the engine signed it (it was edited in the database)"] };
  return { sealedAt, problems: schemaDifferences(seal.objects, await readSchemaObjects(db)) };
}

/** Each object that differs between the sealed list and the one read now, as a sentence. */
export function schemaDifferences(sealed: SchemaObjects, now: SchemaObjects): string[] {
  const out: string[] = [];
  for (const [name, was] of Object.entries(sealed)) {
    const is = now[name];
    if (is === undefined) out.push(`${name} is gone`);
    else if (is !== was) out.push(`${name} ${changeOf(name, was, is)}`);
  }
  for (const name of Object.keys(now)) if (!(name in sealed)) out.push(`${name} was added behind the engine's back`);
  return out.sort();
}

function changeOf(name: string, was: string, is: string): string {
  if (name.startsWith('trigger ')) {
    const [wasState] = was.split(' ');
    const [isState] = is.split(' ');
    if (wasState !== isState) return `is ${isState} (it was ${wasState})`;
    return 'was redefined';
  }
  if (name.startsWith('table ')) {
    const parts = (s: string) => Object.fromEntries(s.split(' ').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
    const [a, b] = [parts(was), parts(is)];
    const onOff = (v: string) => (v === 'true' ? 'on' : 'off');
    const changes: string[] = [];
    if (a.rls !== b.rls) changes.push(`row-level security is ${onOff(b.rls)} (it was ${onOff(a.rls)})`);
    if (a.force !== b.force) changes.push(`forced row-level security is ${onOff(b.force)} (it was ${onOff(a.force)})`);
    if (a.owner !== b.owner) changes.push(`its owner is ${b.owner} (it was ${a.owner})`);
    if (a.acl !== b.acl) changes.push(`its grants are ${b.acl || 'the defaults'} (they were ${a.acl || 'the defaults'})`);
    return `changed: ${changes.join(', ')}`;
  }
  if (name.startsWith('function ')) return was.split(' ')[0] !== is.split(' ')[0] ? 'was replaced' : 'changed owner or grants';
  return 'was changed';
}
