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

/** pg_type oids of regclass and boolean (fixed since Postgres 7) */
const [REGCLASS, BOOL] = [2205, 16];

export interface IndexCheck {
  /** false: amcheck is not installed or not granted to this role (a Postgres without its contrib modules) */
  available: boolean;
  /** one sentence for each index that does not hold what its table holds */
  problems: string[];
}

export async function checkIndexes(db: Pool): Promise<IndexCheck> {
  // amcheck's own bt_index_check(regclass, boolean[, boolean]): a member of the extension (sealed with its schema and version),
  // in the C library it ships with, and the one the call below resolves to. Found by name alone, the first of any
  // schema's would do: a superuser put one that checks nothing into pg_toast (a schema the seal passes over),
  // re-created the extension after it so that theirs was read first, and an index that lied was never named
  const { rows: fns } = await db.query<{ oid: number; schema: string; args: string; lang: string; probin: string | null; prosrc: string; member: boolean }>(
    `SELECT p.oid, n.nspname AS schema, p.proargtypes::pg_catalog.text AS args, l.lanname AS lang, p.probin, p.prosrc,
            EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                      AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e' AND e.extname = 'amcheck') AS member
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN pg_catalog.pg_language l ON l.oid = p.prolang
     WHERE p.proname = 'bt_index_check' AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')`,
  );
  // amcheck 1.4 (Postgres 17) and later also checks that a unique index holds no key twice (checkunique): without it,
  // a key's uniqueness switched off for a moment (pg_index.indisunique) let a second row in, index entry and all, and
  // amcheck found every row in its index and in order. A vault secret's earlier value, written back beside the
  // current one, was what a worker read first, while verify --checkpoints compared the current one
  const genuine = async (types: string, args: string): Promise<'none' | 'replaced' | string> => {
    const members = fns.filter((f) => f.member && f.args === types);
    if (members.length === 0) return 'none';
    const fn = members.find((f) => f.lang === 'c' && f.probin === '$libdir/amcheck' && f.prosrc === 'bt_index_check');
    if (!fn) return 'replaced';
    const call = `"${fn.schema.replace(/"/g, '""')}".bt_index_check(${args})`;
    const [resolved] = (await db.query<{ oid: number }>('SELECT $1::pg_catalog.regprocedure::pg_catalog.oid AS oid', [call])).rows;
    return Number(resolved.oid) === Number(fn.oid) ? `"${fn.schema.replace(/"/g, '""')}"` : 'replaced';
  };
  const withUnique = await genuine(`${REGCLASS} ${BOOL} ${BOOL}`, 'pg_catalog.regclass, pg_catalog.bool, pg_catalog.bool');
  const plain = withUnique === 'none' ? await genuine(`${REGCLASS} ${BOOL}`, 'pg_catalog.regclass, pg_catalog.bool') : withUnique;
  if (plain === 'none') return { available: false, problems: [] };
  if (plain === 'replaced') {
    return { available: true, problems: [`amcheck's bt_index_check is not the extension's own (replaced, or another answers its name), so no index was checked against its table`] };
  }
  const schema = plain;
  const checkUnique = withUnique !== 'none' ? ', true::pg_catalog.bool' : '';
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
      await db.query(`SELECT ${schema}.bt_index_check($1::pg_catalog.oid::pg_catalog.regclass, true::pg_catalog.bool${checkUnique})`, [r.index_oid]);
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
