import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Pool, type ClientBase } from 'pg';
import { sha256 } from '../domain/canonical';
import type { ChainKey, ChainKeys } from '../domain/hash-chain';
import { latestSeal, readSchemaObjects, schemaDifferences, sealSchema } from '../integrity/schema-seal';

export const MIGRATIONS_DIR = path.resolve(__dirname, '..', '..', 'migrations');

const MIGRATION_LOCK = 0x4d4d; // one migrator at a time per database

export interface MigrateOptions {
  dir?: string;
  /**
   * The chain key: when this call applies a migration, the schema as it then
   * is gets sealed with it (src/integrity/schema-seal.ts), so `verify --all`
   * can name what is changed behind the engine's back later. Without it the
   * schema is left unsealed, and verify says so.
   */
  seal?: ChainKey;
  /**
   * The keys that check the latest seal before a migration is applied (default: the sealing key alone). A schema
   * that is not as its latest genuine seal is not sealed again by a migration: that would make whatever was
   * changed behind the engine's back pass `verify --all` from then on.
   */
  keys?: ChainKeys;
}

/** The kinds of object (a name's first word) the seal came to cover with a migration: a seal made before it lists none. */
const KINDS_COVERED_SINCE: Array<[migration: string, kinds: string[]]> = [
  ['018_seal_covers_columns_and_indexes.sql', ['columns', 'index', 'tables', 'server']],
  ['019_seal_covers_built_in_rows.sql', ['built-in']],
  ['022_seal_covers_locale_and_catalogs.sql', ['catalogs', 'database', 'collations', 'casts', 'system']],
  ['025_seal_covers_trigger_firing.sql', ['firing', 'enforcement', 'aggregates', 'languages', 'access']],
  ['029_seal_covers_checks_and_key_comparisons.sql', ['checking', 'comparisons', 'definitions', 'parameter']],
  ['031_seal_covers_catalog_column_names.sql', ['names']],
  ['032_seal_covers_preloaded_libraries.sql', ['preloaded']],
];

/** Why migrating now would seal a schema changed behind the engine's back (or null: it is as its latest seal). */
async function unsealedChanges(db: ClientBase, keys: ChainKeys): Promise<string[] | null> {
  const { rows } = await db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = 'schema_seals'",
  );
  if (rows[0].n === 0) return null; // nothing sealed yet: a database migrated for the first time
  const { seal, problem } = await latestSeal(db, keys);
  if (!seal) {
    // no seal at all (migrated without the keys) is sealed as it is, as before; a seal that is not genuine is not
    const { rows: any } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM public.schema_seals');
    return any[0].n === 0 ? null : [problem!];
  }
  // a kind of object the seal did not cover yet (a seal older than the migration that covers it) is not a change.
  // Which kinds a seal covered is known from the migration it was made after, not from the kinds it happens to list:
  // a kind it held none of (no table inheriting from an engine table, no event trigger, no rule) is still covered,
  // and one added behind the engine's back must not be sealed by the next migration
  const kind = (name: string): string => name.split(' ')[0];
  // (and a kind it does list is covered whatever migration it names: `seal-schema` run by this release on a database
  // not migrated yet seals every kind under an older migration's name)
  const listed = new Set(Object.keys(seal.objects).map(kind));
  const notYetCovered = new Set(
    KINDS_COVERED_SINCE.filter(([m]) => seal.migration < m)
      .flatMap(([, kinds]) => kinds)
      .filter((k) => !listed.has(k)),
  );
  // and a seal made before 016 covered only some of the functions of a kind it covered: only what it lists counts
  const older = seal.migration < '016_seal_covers_more.sql';
  const now = await readSchemaObjects(db);
  const differences = schemaDifferences(
    seal.objects,
    Object.fromEntries(Object.entries(now).filter(([name]) => name in seal.objects || (!older && !notYetCovered.has(kind(name))))),
  );
  return differences.length ? differences : null;
}

export class UnsealedSchemaError extends Error {
  constructor(readonly differences: string[]) {
    super(
      `the engine's schema is not as its latest seal, so migrating would seal what was changed behind the engine's back:\n  ` +
        differences.join('\n  ') +
        '\nput it back, or review it with `meshhook seal-schema` and seal it with --confirm, then migrate again',
    );
    this.name = 'UnsealedSchemaError';
  }
}

/**
 * Apply plain SQL migrations in file-name order, each once, recorded with its
 * checksum. Runs on one connection under an advisory lock, so two processes
 * starting on a fresh database do not race. The migrations pending and the seal
 * after them commit in one transaction: a process killed (or a migration failing)
 * part of the way leaves the schema as its latest seal, never some migrations
 * applied and unsealed, which the next migrate would refuse as changed behind the
 * engine's back (and `verify --all` would name), so `up` could not come back.
 */
export async function migrate(pool: Pool | ClientBase, opts: MigrateOptions = {}): Promise<string[]> {
  const db: ClientBase = pool instanceof Pool ? await pool.connect() : pool;
  try {
    await db.query('SELECT pg_advisory_lock($1, 0)', [MIGRATION_LOCK]);
    try {
      const dir = opts.dir ?? MIGRATIONS_DIR;
      // checked before anything is applied: a migration seals the schema as it then is
      const todo = await pending(db, dir);
      if (opts.seal && todo.length) {
        const sealKey = opts.seal;
        const changes = await unsealedChanges(db, opts.keys ?? ((kid) => (kid === sealKey.kid ? sealKey.key : null)));
        if (changes) throw new UnsealedSchemaError(changes);
      }
      // sealed only by the call that changed the schema (a seal deleted later is not silently made again), in the
      // transaction that changed it
      const sealKey = opts.seal;
      return await apply(db, dir, sealKey ? (last) => sealSchema(db, sealKey, last, true).then(() => undefined) : null);
    } finally {
      await db.query('SELECT pg_advisory_unlock($1, 0)', [MIGRATION_LOCK]);
    }
  } finally {
    if (pool instanceof Pool) (db as import('pg').PoolClient).release();
  }
}

/** The migrations not applied yet; one missing before one that was applied means schema_migrations was edited. */
async function pending(db: ClientBase, dir: string): Promise<string[]> {
  const { rows } = await db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = 'schema_migrations'",
  );
  const files = readdirSync(dir).filter((f) => f.endsWith('.sql')).sort();
  if (rows[0].n === 0) return files;
  const applied = new Set((await db.query<{ name: string }>('SELECT name FROM public.schema_migrations')).rows.map((r) => r.name));
  const last = files.filter((f) => applied.has(f)).at(-1);
  const missing = files.filter((f) => !applied.has(f));
  const behind = missing.filter((f) => last !== undefined && f < last);
  if (behind.length) {
    throw new Error(
      `migration ${behind.join(', ')} is not recorded as applied, but ${last} (after it) is: schema_migrations was edited behind the engine's back (applying it again would seal the schema as it is now)`,
    );
  }
  return missing;
}

async function apply(db: ClientBase, dir: string, seal: ((lastApplied: string) => Promise<void>) | null): Promise<string[]> {
  await db.query(`CREATE TABLE IF NOT EXISTS public.schema_migrations (
    name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
  const applied = new Map<string, string>(
    (await db.query<{ name: string; checksum: string }>('SELECT name, checksum FROM public.schema_migrations')).rows.map((r) => [r.name, r.checksum]),
  );
  const todo: Array<{ file: string; sql: string; checksum: string }> = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.sql')).sort()) {
    const sql = readFileSync(path.join(dir, file), 'utf8');
    const checksum = sha256(sql);
    const previous = applied.get(file);
    if (previous) {
      if (previous !== checksum) throw new Error(`migration ${file} was changed after it was applied`);
      continue;
    }
    todo.push({ file, sql, checksum });
  }
  if (todo.length === 0) return [];
  // all or nothing, the seal included
  await db.query('BEGIN');
  let current = '';
  try {
    for (const m of todo) {
      current = m.file;
      await db.query(m.sql);
      await db.query('INSERT INTO public.schema_migrations (name, checksum) VALUES ($1, $2)', [m.file, m.checksum]);
    }
    current = '';
    if (seal) await seal(todo[todo.length - 1].file);
    await db.query('COMMIT');
  } catch (e) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw new Error(current ? `migration ${current} failed: ${(e as Error).message}` : `sealing the schema after migrating failed: ${(e as Error).message}`);
  }
  return todo.map((m) => m.file);
}
