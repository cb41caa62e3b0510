import type { Pool } from 'pg';
import { ENGINE_TABLES } from './schema-seal';

/*
 * The engine's indexes checked against their tables. An index can be made to lie without a sealed object
 * changing: its file swapped for another table's (pg_class.relfilenode), entries left out while a superuser had
 * indisready off, or the database's collation changed under it. Lookups through it then miss rows that are there:
 * a re-delivery's record and first event were not found, the intake took an older version for the latest.
 * amcheck's bt_index_check (migrations/024), with heapallindexed, checks that every row of the table is in the
 * index and that the index is in order under today's collation.
 */

export interface IndexCheck {
  /** false: amcheck is not installed or not granted to this role (a Postgres without its contrib modules) */
  available: boolean;
  /** one sentence for each index that does not hold what its table holds */
  problems: string[];
}

export async function checkIndexes(db: Pool): Promise<IndexCheck> {
  const { rows: fns } = await db.query<{ schema: string }>(
    `SELECT n.nspname AS schema FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE p.proname = 'bt_index_check' AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE') LIMIT 1`,
  );
  if (!fns[0]) return { available: false, problems: [] };
  const schema = fns[0].schema.replace(/"/g, '""');
  const { rows } = await db.query<{ index_oid: number; index_name: string; table_name: string }>(
    `SELECT i.indexrelid AS index_oid, ic.relname AS index_name, c.relname AS table_name
     FROM pg_catalog.pg_index i
     JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
     JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
     JOIN pg_catalog.pg_am am ON am.oid = ic.relam
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relname = ANY($1::text[]) AND am.amname = 'btree'
     ORDER BY c.relname, ic.relname`,
    [[...ENGINE_TABLES]],
  );
  const problems: string[] = [];
  for (const r of rows) {
    try {
      await db.query(`SELECT "${schema}".bt_index_check($1::pg_catalog.oid::pg_catalog.regclass, true)`, [r.index_oid]);
    } catch (e) {
      // only what amcheck says of the index's contents (data_corrupted, index_corrupted); a lost connection or a
      // cancel is not a finding about the index, and fails the verification as the error it is
      const code = (e as { code?: string }).code;
      if (code !== 'XX001' && code !== 'XX002') throw e;
      problems.push(`index ${r.index_name} on ${r.table_name} does not hold what its table holds (lookups through it can miss rows that are there): ${(e as Error).message}`);
    }
  }
  return { available: true, problems };
}
