import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Pool, type ClientBase } from 'pg';
import { sha256 } from '../domain/canonical';
import type { ChainKey } from '../domain/hash-chain';
import { sealSchema } from '../integrity/schema-seal';

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
}

/**
 * Apply plain SQL migrations in file-name order, each once, recorded with its
 * checksum. Runs on one connection under an advisory lock, so two processes
 * starting on a fresh database do not race.
 */
export async function migrate(pool: Pool | ClientBase, opts: MigrateOptions = {}): Promise<string[]> {
  const db: ClientBase = pool instanceof Pool ? await pool.connect() : pool;
  try {
    await db.query('SELECT pg_advisory_lock($1, 0)', [MIGRATION_LOCK]);
    try {
      const done = await apply(db, opts.dir ?? MIGRATIONS_DIR);
      // sealed only by the call that changed the schema: a seal deleted later is not silently made again
      if (done.length && opts.seal) await sealSchema(db, opts.seal, done[done.length - 1]);
      return done;
    } finally {
      await db.query('SELECT pg_advisory_unlock($1, 0)', [MIGRATION_LOCK]);
    }
  } finally {
    if (pool instanceof Pool) (db as import('pg').PoolClient).release();
  }
}

async function apply(db: ClientBase, dir: string): Promise<string[]> {
  await db.query(`CREATE TABLE IF NOT EXISTS public.schema_migrations (
    name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
  const applied = new Map<string, string>(
    (await db.query<{ name: string; checksum: string }>('SELECT name, checksum FROM public.schema_migrations')).rows.map((r) => [r.name, r.checksum]),
  );
  const done: string[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.sql')).sort()) {
    const sql = readFileSync(path.join(dir, file), 'utf8');
    const checksum = sha256(sql);
    const previous = applied.get(file);
    if (previous) {
      if (previous !== checksum) throw new Error(`migration ${file} was changed after it was applied`);
      continue;
    }
    await db.query('BEGIN');
    try {
      await db.query(sql);
      await db.query('INSERT INTO public.schema_migrations (name, checksum) VALUES ($1, $2)', [file, checksum]);
      await db.query('COMMIT');
    } catch (e) {
      await db.query('ROLLBACK');
      throw new Error(`migration ${file} failed: ${(e as Error).message}`);
    }
    done.push(file);
  }
  return done;
}
