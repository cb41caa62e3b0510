import type { ClientBase, Pool } from 'pg';
import { canonicalJson, sha256 } from '../domain/canonical';
import { ChainKey, ChainKeys, hmacSha256Hex, signatureParts } from '../domain/hash-chain';
import { ENGINE_ROLE } from '../db/scope';

/*
 * The engine's schema, sealed. Row-level security, the append-only and
 * gap-free triggers, the policies, the grants, the constraints and the engine's
 * SQL functions are what keep projects apart and the log whole while the engine
 * runs. Someone with the database can weaken any of them without touching a
 * row the chain covers: nothing in the log would show it.
 *
 * So when the engine applies its migrations it writes down what each of those
 * objects is and signs that list with the chain key, which the database never
 * holds. `verify --all` reads the same list from the catalogs again and names
 * every object that is not as sealed: changed, switched off, gone, or added (a
 * second, permissive policy is as bad as a weakened one).
 *
 * Sealed: each engine table's row-level security, owner, grants and column
 * grants, its policies, triggers, constraints (with the triggers enforcing
 * them) and rules; the engine's roles (their attributes and memberships both
 * ways); every publication; the settings of the database and of any role that
 * apply here; every schema outside the system's, every extension, event
 * trigger, default privilege and user-defined cast; every function, procedure,
 * aggregate and operator in public, any added to pg_catalog, those the tables'
 * and event triggers call, and a hash of pg_catalog's built-in functions (a
 * superuser can replace one, e.g. one this read calls).
 *
 * The read resolves no operator or function an intruder could overload: it
 * selects raw catalog columns (and pg_catalog functions, qualified, on
 * arguments of their exact types) under a fixed search_path and printing
 * settings, and builds names and hashes in Node. An exact-type `||` in public
 * once made `'rls=' || false` answer `rls=true`.
 *
 * What it cannot see: a change made and undone between two verifications;
 * whether a role may log in (the deployment's choice, made after migrating:
 * the test harness gives the engine's role LOGIN); server-wide settings
 * other than those sealed below (postgresql.conf, ALTER SYSTEM; the libraries loaded into
 * sessions only where the engine's role may read them, as a member of pg_read_all_settings); built-in catalog
 * rows edited directly other than those of functions, operators, types, operator
 * classes, collations, casts, system views, aggregates, languages and access methods (each hashed as one); an index
 * whose contents lie (src/integrity/index-check.ts checks those against their
 * tables).
 */

/** The engine's tables: their row-level security, grants, policies, triggers, constraints and rules are sealed. */
export const ENGINE_TABLES = ['projects', 'workflows', 'workflow_versions', 'runs', 'run_events', 'deliveries', 'project_secrets', 'project_secret_removals', 'schema_migrations', 'schema_seals'] as const;

/** The roles the engine and its subscribers act as (migrations/002_tenancy.sql): their attributes and memberships are sealed. */
export const ENGINE_ROLES = [ENGINE_ROLE, 'authenticated', 'anon'] as const;

/** What each sealed object is, by a name that says what it is ("function meshhook_load_run(…)", "trigger … on …"). */
export type SchemaObjects = Record<string, string>;

/** Built-in catalog rows sealed as one hash each (see readObjects). */
const BUILT_IN_ROWS: ReadonlyArray<[string, string[]]> = [
  ["built-in operators of pg_catalog", ['pg_operator']],
  ["built-in types of pg_catalog", ['pg_type']],
  ["built-in operator classes of pg_catalog", ['pg_opclass', 'pg_opfamily', 'pg_amop', 'pg_amproc']],
];

/**
 * Since migration 022, under names of kinds of their own (a kind an older seal lists is compared as it is): the
 * collations (the order text is compared in), the casts (the read's own `::oid` is one) and the system views' queries (pg_settings and pg_roles are views
 * this read asks; one redefined in place keeps its oid).
 */
const BUILT_IN_ROWS_SINCE_022: ReadonlyArray<[string, string[]]> = [
  ['collations built into pg_catalog', ['pg_collation']],
  ['casts built into pg_catalog', ['pg_cast']],
  ['system views of pg_catalog', ['pg_rewrite']],
];

/**
 * Since migration 025: the built-in aggregates (`max(integer)` made to take `<` as its sort operator answers the
 * least seq to the log's gap-free check), the languages (plpgsql's handler runs every engine trigger and function)
 * and the access methods (btree's handler): each a plain UPDATE of its catalog, no DDL, that pg_proc's hash missed.
 */
const BUILT_IN_ROWS_SINCE_025: ReadonlyArray<[string, string[]]> = [
  ['aggregates built into pg_catalog', ['pg_aggregate']],
  ['languages built into pg_catalog', ['pg_language']],
  ['access methods built into pg_catalog', ['pg_am']],
];

/**
 * Since migration 029: pg_catalog's built-in functions row by row, every column. The hash of them above holds the
 * columns that say what a function runs (source, library, language, argument types, ...), not its default arguments
 * (`proargdefaults`: `jsonb_set`'s `create_if_missing` made false), the SQL body of one written in SQL
 * (`prosqlbody`: `lpad` given `rpad`'s), or its planner support function (`prosupport`, which may rewrite a call):
 * each a plain UPDATE of pg_proc that changed how a built-in answers while that hash stood.
 */
const BUILT_IN_ROWS_SINCE_029: ReadonlyArray<[string, string[]]> = [['definitions of pg_catalog\'s built-in functions', ['pg_proc']]];

/** The catalogs, functions and types the read below names: each must be initdb's own. */
const CATALOGS_READ = [
  'pg_database', 'pg_roles', 'pg_namespace', 'pg_class', 'pg_attribute', 'pg_attrdef', 'pg_index', 'pg_inherits', 'pg_policy',
  'pg_trigger', 'pg_constraint', 'pg_rewrite', 'pg_auth_members', 'pg_db_role_setting', 'pg_settings', 'pg_publication',
  'pg_publication_rel', 'pg_extension', 'pg_event_trigger', 'pg_default_acl', 'pg_cast', 'pg_operator', 'pg_proc',
  'pg_aggregate', 'pg_type', 'pg_opclass', 'pg_opfamily', 'pg_amop', 'pg_amproc', 'pg_collation', 'pg_language', 'pg_am',
];
const FUNCTIONS_READ = [
  'current_database()', 'pg_get_expr(pg_node_tree,oid)', 'format_type(oid,integer)', 'pg_get_indexdef(oid)', 'pg_get_triggerdef(oid)',
  'pg_get_constraintdef(oid)', 'pg_get_ruledef(oid)', 'pg_get_functiondef(oid)', 'pg_get_function_identity_arguments(oid)',
  'textout(text)', 'record_out(record)',
];
const TYPES_READ = ['oid', 'text', 'int4', 'name', 'bool', 'regclass', 'regprocedure', 'regtype'];

/** "built-in", or each catalog, function or type this read names that is not initdb's own any more. */
async function catalogsRead(q: (sql: string, params?: unknown[]) => Promise<Row[]>, version: number): Promise<string> {
  const names: Array<[string, string]> = [
    ...[...CATALOGS_READ, ...(version >= 150000 ? ['pg_publication_namespace', 'pg_parameter_acl'] : [])].map((n): [string, string] => [`pg_catalog.${n}`, 'regclass']),
    ...FUNCTIONS_READ.map((f): [string, string] => [`pg_catalog.${f}`, 'regprocedure']),
    ...TYPES_READ.map((t): [string, string] => [`pg_catalog.${t}`, 'regtype']),
  ];
  const [row] = await q(`SELECT ${names.map(([n, as], i) => `'${n}'::pg_catalog.${as}::pg_catalog.oid AS o${i}`).join(', ')}`);
  const replaced = names.flatMap(([n], i) => (Number(row[`o${i}`]) < FIRST_USER_OID ? [] : [`${n} (oid ${row[`o${i}`]})`]));
  return replaced.length ? `replaced: ${replaced.join(', ')}` : 'built-in';
}

/** Each catalog (and system view) the read names, with a hash of its columns' positions, names and types. */
async function catalogColumns(q: (sql: string, params?: unknown[]) => Promise<Row[]>, version: number): Promise<Array<[string, string]>> {
  const catalogs = [...CATALOGS_READ, ...(version >= 150000 ? ['pg_publication_namespace', 'pg_parameter_acl'] : [])];
  const [row] = await q(`SELECT ${catalogs.map((n, i) => `'pg_catalog.${n}'::pg_catalog.regclass::pg_catalog.oid AS o${i}`).join(', ')}`);
  const oids = catalogs.map((_, i) => Number(row[`o${i}`]));
  const columns = new Map<number, Array<[number, string]>>();
  for (const a of await q('SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.attisdropped FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($1::pg_catalog.oid[])', [oids])) {
    if (a.attnum <= 0) continue;
    columns.set(a.attrelid, [...(columns.get(a.attrelid) ?? []), [a.attnum, JSON.stringify([a.attnum, a.attname, a.atttypid, a.attisdropped])]]);
  }
  return catalogs.map((n, i): [string, string] => [n, hash((columns.get(oids[i]) ?? []).sort((x, y) => x[0] - y[0]).map(([, c]) => c).join('\n'))]);
}

/** FirstNormalObjectId: every object with a lower oid came with initdb. */
const FIRST_USER_OID = 16384;

/*
 * Fixed for the read, so that a definition prints the same at sealing and at
 * verifying whatever the database's or role's settings: names outside
 * pg_catalog are printed schema-qualified, constants in one style.
 */
const PRINTING = `SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL quote_all_identifiers = off; SET LOCAL datestyle = 'ISO, YMD';
  SET LOCAL intervalstyle = postgres; SET LOCAL timezone = 'UTC'; SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = hex`;

/** A catalog row as node-postgres parses it (oids as numbers, booleans, arrays; ACLs as text). */
type Row = Record<string, any>;

const hash = (text: string): string => sha256(text);
const acl = (v: unknown): string => (v == null ? '' : String(v));
/** An ACL that grants nothing (what REVOKE of the last column privilege leaves) is no ACL. */
const noneIfEmpty = (v: unknown): string => (v == null || v === '{}' ? '' : String(v));

/**
 * What the engine's schema objects are now, read from the catalogs. `inTransaction`: the client is inside a
 * transaction of its own (a migration's, which seals what it changed before it commits): the read then runs in a
 * savepoint that is rolled back, so it neither commits that transaction nor leaves its settings behind in it.
 */
export async function readSchemaObjects(db: Pool | ClientBase, inTransaction = false): Promise<SchemaObjects> {
  const client = typeof (db as Pool).totalCount === 'number' ? null : (db as ClientBase);
  if (inTransaction && client) {
    await client.query('SAVEPOINT meshhook_schema_read');
    try {
      await client.query(PRINTING);
      return await readObjects(async (sql, params) => (await client.query(sql, params)).rows as Row[]);
    } finally {
      await client.query('ROLLBACK TO SAVEPOINT meshhook_schema_read');
      await client.query('RELEASE SAVEPOINT meshhook_schema_read');
    }
  }
  const run = async (c: ClientBase): Promise<SchemaObjects> => {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      await c.query(PRINTING);
      const out = await readObjects(async (sql, params) => (await c.query(sql, params)).rows as Row[]);
      await c.query('COMMIT');
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

/*
 * Every query selects from pg_catalog; the only operators are `=` on oids
 * (oid = oid, oid = ANY(oid[]): exact matches that cannot be overloaded);
 * every other filter is applied here.
 */
async function readObjects(q: (sql: string, params?: unknown[]) => Promise<Row[]>): Promise<SchemaObjects> {
  const out: SchemaObjects = {};
  const version = Number((await q('SHOW server_version_num'))[0].server_version_num);
  // ───── first, that what this read asks is what it reads: with allow_system_table_mods a superuser can rename a
  // catalog and put a view that lies under its name (Postgres itself finds its catalogs by oid and goes on working),
  // or a function of their own in place of pg_get_functiondef, and every later line here would be told what they
  // chose. A name written as a regclass or regprocedure constant is looked up when the statement is parsed, so each
  // must still be the object initdb made (an oid below FirstNormalObjectId)
  out['catalogs the seal reads'] = await catalogsRead(q, version);
  // ───── (since migration 031) and that each column it asks for by name is the column initdb gave that name. The
  // names of a catalog's (or a system view's) columns are rows of pg_attribute that a superuser can UPDATE, no DDL,
  // and Postgres itself reads its catalogs by position: two columns of pg_constraint swapping names (conpfeqop,
  // sealed since 029, and conexclop, which a foreign key never reads, given the genuine operators) and a foreign key
  // compared with <> while this read, asking for "conpfeqop", was answered the genuine operators. (pg_attribute and
  // pg_class themselves are read by names Postgres holds in its own code, not by theirs in pg_attribute)
  for (const [catalog, columns] of await catalogColumns(q, version)) out[`names of ${catalog}'s columns`] = columns;

  const [{ db }] = await q('SELECT pg_catalog.current_database() AS db');
  const database = (await q('SELECT d.* FROM pg_catalog.pg_database d')).find((d) => d.datname === db);
  const databaseOid = database?.oid;
  // ───── the database's locale: the order every text index (delivery ids, slugs) was built in. Changed under them
  // (a UPDATE of pg_database, no DDL), their lookups search in another order and miss rows that are there: a
  // re-delivery then looked new
  if (database) {
    out['database locale'] = ['encoding', 'datlocprovider', 'datcollate', 'datctype', 'datlocale', 'daticulocale', 'daticurules']
      .filter((f) => f in database)
      .map((f) => `${f.replace(/^dat/, '')}=${database[f] ?? ''}`)
      .join(' ');
  }

  const roles = new Map<number, Row>((await q('SELECT r.oid, r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls FROM pg_catalog.pg_roles r')).map((r) => [r.oid, r]));
  const roleName = (oid: number): string => (oid === 0 ? 'public' : (roles.get(oid)?.rolname ?? `#${oid}`));

  const schemas = await q('SELECT n.oid, n.nspname, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n');
  const schemaName = new Map<number, string>(schemas.map((n) => [n.oid, n.nspname]));
  const oidOf = (name: string): number => schemas.find((n) => n.nspname === name)!.oid;
  const [publicOid, catalogOid] = [oidOf('public'), oidOf('pg_catalog')];

  // ───── every schema outside the system's: a new one can shadow the engine's tables if a search_path names it first
  for (const n of schemas) {
    if (n.nspname === 'pg_catalog' || n.nspname === 'information_schema' || /^pg_(toast|temp_\d|toast_temp_\d)/.test(n.nspname)) continue;
    out[`schema ${n.nspname}`] = `owner=${roleName(n.nspowner)} acl=${acl(n.nspacl)}`;
  }

  // ───── the engine's tables
  const inPublic = await q(
    'SELECT c.oid, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relowner, c.relacl, c.relhastriggers, c.relhasindex, c.relpersistence, c.relchecks FROM pg_catalog.pg_class c WHERE c.relnamespace = $1',
    [publicOid],
  );
  // ───── (round 8) relations in pg_catalog that initdb did not make, or that bear the name of one in public. Postgres
  // looks in pg_catalog before the path it is given, so the engine's pinned search_path=public did not keep
  // `CREATE VIEW pg_catalog.project_secrets` (with allow_system_table_mods) from answering every engine query for
  // the table: one that told its readers apart by their query's text handed workers a revoked secret and verify the
  // current one. Listed only when there is one, so seals made before say the same of a schema without any
  const publicNames = new Set(inPublic.map((c) => c.relname));
  const shadows = (await q('SELECT c.oid, c.relname, c.relkind FROM pg_catalog.pg_class c WHERE c.relnamespace = $1', [catalogOid]))
    .filter((c) => c.oid >= FIRST_USER_OID || publicNames.has(c.relname))
    .map((c) => `${c.relname}(${c.relkind})`);
  if (shadows.length) out['relations added to pg_catalog'] = [...new Set(shadows)].sort().join(',');
  const tables = inPublic
    .filter((c) => (c.relkind === 'r' || c.relkind === 'p') && (ENGINE_TABLES as readonly string[]).includes(c.relname));
  const tableName = new Map<number, string>(tables.map((t) => [t.oid, t.relname]));
  const tableOids = tables.map((t) => t.oid);
  for (const t of tables) out[`table ${t.relname}`] = `rls=${t.relrowsecurity} force=${t.relforcerowsecurity} owner=${roleName(t.relowner)} acl=${acl(t.relacl)}`;

  const columnGrants = new Map<number, string[]>();
  for (const a of await q('SELECT a.attrelid, a.attnum, a.attname, a.attisdropped, a.attacl FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($1::pg_catalog.oid[])', [tableOids])) {
    if (a.attnum <= 0 || a.attisdropped || !noneIfEmpty(a.attacl)) continue;
    columnGrants.set(a.attrelid, [...(columnGrants.get(a.attrelid) ?? []), `${a.attnum}:${a.attname}=${a.attacl}`]);
  }
  for (const [rel, grants] of columnGrants) {
    const sorted = grants.sort((x, y) => Number(x.split(':')[0]) - Number(y.split(':')[0])).map((g) => g.slice(g.indexOf(':') + 1));
    out[`column grants on ${tableName.get(rel)}`] = sorted.join(' ');
  }

  // ───── columns (type, NOT NULL, default, generated, collation) and indexes: a default runs as whoever inserts, a
  // NOT NULL dropped lets a composite foreign key pass unchecked, and an index switched off in pg_index (not unique,
  // not ready) leaves the constraint it enforces in pg_constraint as it was while it no longer refuses duplicates
  const defaults = new Map<string, string>(
    (await q('SELECT d.adrelid, d.adnum, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def FROM pg_catalog.pg_attrdef d WHERE d.adrelid = ANY($1::pg_catalog.oid[])', [tableOids])).map((d) => [
      `${d.adrelid}:${d.adnum}`,
      d.def,
    ]),
  );
  const columns = new Map<number, string[]>();
  for (const a of await q(
    `SELECT a.attrelid, a.attnum, a.attname, a.attisdropped, a.attnotnull, a.attgenerated, a.attidentity, a.attcollation,
            pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
     FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($1::pg_catalog.oid[])`,
    [tableOids],
  )) {
    if (a.attnum <= 0 || a.attisdropped) continue;
    const column = JSON.stringify([a.attnum, a.attname, a.type, a.attnotnull, a.attgenerated, a.attidentity, a.attcollation, defaults.get(`${a.attrelid}:${a.attnum}`) ?? null]);
    columns.set(a.attrelid, [...(columns.get(a.attrelid) ?? []), column]);
  }
  for (const [rel, list] of columns) out[`columns of ${tableName.get(rel)}`] = hash(list.sort((x, y) => JSON.parse(x)[0] - JSON.parse(y)[0]).join('\n'));
  for (const i of await q(
    `SELECT i.*, c.relname AS index_name, pg_catalog.pg_get_indexdef(i.indexrelid) AS def
     FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = ANY($1::pg_catalog.oid[])`,
    [tableOids],
  )) {
    const flags = ['indisunique', 'indisprimary', 'indisexclusion', 'indimmediate', 'indisvalid', 'indisready', 'indislive', 'indnullsnotdistinct']
      .filter((f) => f in i)
      .map((f) => `${f.slice(5)}=${i[f]}`);
    out[`index ${i.index_name} on ${tableName.get(i.indrelid)}`] = `${flags.join(' ')} definition=${hash(i.def)}`;
  }
  // a table that inherits from an engine table: its rows are read with the engine table's, outside its constraints
  for (const h of await q('SELECT h.inhrelid, h.inhparent FROM pg_catalog.pg_inherits h WHERE h.inhparent = ANY($1::pg_catalog.oid[])', [tableOids])) {
    const key = `tables inheriting from ${tableName.get(h.inhparent)}`;
    out[key] = [...new Set([...(out[key] ? out[key].split(',') : []), String(h.inhrelid)])].sort().join(',');
  }

  for (const p of await q(
    `SELECT p.polname, p.polrelid, p.polcmd, p.polpermissive, p.polroles,
            pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual, pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS withcheck
     FROM pg_catalog.pg_policy p WHERE p.polrelid = ANY($1::pg_catalog.oid[])`,
    [tableOids],
  )) {
    const to = (p.polroles as number[]).map(roleName).sort().join(',');
    out[`policy ${p.polname} on ${tableName.get(p.polrelid)}`] = hash([p.polcmd, p.polpermissive, to, p.qual ?? '', p.withcheck ?? ''].join('|'));
  }

  // triggers: the internal ones enforce constraints, and are sealed with them
  const triggers = await q(
    `SELECT g.tgname, g.tgrelid, g.tgenabled, g.tgisinternal, g.tgconstraint, g.tgfoid, g.tgtype, g.tgdeferrable, g.tginitdeferred,
            g.tgnargs, g.tgattr, g.tgargs, g.tgqual,
            CASE WHEN g.tgisinternal THEN NULL ELSE pg_catalog.pg_get_triggerdef(g.oid) END AS def
     FROM pg_catalog.pg_trigger g WHERE g.tgrelid = ANY($1::pg_catalog.oid[])`,
    [tableOids],
  );
  const enforcing = new Map<number, string[]>();
  for (const g of triggers) {
    if (g.tgisinternal) enforcing.set(g.tgconstraint, [...(enforcing.get(g.tgconstraint) ?? []), triggerState(g.tgenabled)]);
    else out[`trigger ${g.tgname} on ${tableName.get(g.tgrelid)}`] = `${triggerState(g.tgenabled)} ${hash(g.def)}`;
  }

  const constraintName = new Map<number, string>();
  const constraints = await q(
    'SELECT k.oid, k.conname, k.conrelid, k.contype, k.conpfeqop, k.conppeqop, k.conffeqop, pg_catalog.pg_get_constraintdef(k.oid) AS def FROM pg_catalog.pg_constraint k WHERE k.conrelid = ANY($1::pg_catalog.oid[])',
    [tableOids],
  );
  for (const k of constraints) {
    constraintName.set(k.oid, `${k.conname} on ${tableName.get(k.conrelid)}`);
    const states = (enforcing.get(k.oid) ?? []).sort();
    out[`constraint ${k.conname} on ${tableName.get(k.conrelid)}`] = `${k.contype} ${hash(k.def)}${states.length ? ` triggers=${states.join(',')}` : ''}`;
  }

  for (const r of await q(
    'SELECT r.rulename, r.ev_class, r.ev_type, r.ev_enabled, r.is_instead, pg_catalog.pg_get_ruledef(r.oid) AS def FROM pg_catalog.pg_rewrite r WHERE r.ev_class = ANY($1::pg_catalog.oid[])',
    [tableOids],
  )) {
    if (r.rulename === '_RETURN') continue; // a view's own query, not a rule anyone added
    out[`rule ${r.rulename} on ${tableName.get(r.ev_class)}`] = `${triggerState(r.ev_enabled)} ${hash(r.def)}`;
  }

  // ───── the roles the engine acts as: what they may do and whose rights they carry
  const memberships = await q('SELECT m.* FROM pg_catalog.pg_auth_members m');
  const grantOf = (m: Row, other: number): string => {
    const opts = ['admin', 'inherit', 'set'].filter((o) => m[`${o}_option`] === true);
    return `${roleName(other)}${opts.length ? `(${opts.join(',')})` : ''}`;
  };
  const list = (xs: string[]): string => [...new Set(xs)].sort().join(',');
  for (const r of roles.values()) {
    if (!(ENGINE_ROLES as readonly string[]).includes(r.rolname)) continue;
    const memberOf = list(memberships.filter((m) => m.member === r.oid).map((m) => grantOf(m, m.roleid)));
    const members = list(memberships.filter((m) => m.roleid === r.oid).map((m) => grantOf(m, m.member)));
    out[`role ${r.rolname}`] =
      `superuser=${r.rolsuper} inherit=${r.rolinherit} createrole=${r.rolcreaterole} createdb=${r.rolcreatedb} replication=${r.rolreplication} bypassrls=${r.rolbypassrls} member_of=${memberOf} members=${members}`;
  }

  // ───── (since migration 029) who may set which server setting beyond what it allows by itself (GRANT SET | ALTER
  // SYSTEM ON PARAMETER, Postgres 15 and later): `GRANT SET ON PARAMETER session_replication_role TO meshhook_engine`
  // let the engine's role switch off the log's append-only and gap-free triggers and every foreign key in its own
  // sessions, while the role itself was as sealed
  if (version >= 150000) {
    for (const p of await q('SELECT p.parname, p.paracl FROM pg_catalog.pg_parameter_acl p')) {
      if (noneIfEmpty(p.paracl)) out[`parameter ${p.parname}`] = `acl=${acl(p.paracl)}`;
    }
  }

  // ───── settings every connection to this database starts with
  // (the database's own, ALTER DATABASE … SET, and every role's in every database, ALTER ROLE ALL SET, share one
  // name: both are held under it, the database's first. Written one over the other, the one read last hid the
  // other: ALTER ROLE ALL SET synchronous_commit = off, then the database's own setting set again to move its row
  // after it, and the seal read the database's setting as sealed)
  const settings = new Map<string, Array<[number, string]>>();
  for (const s of await q('SELECT s.setdatabase, s.setrole, s.setconfig FROM pg_catalog.pg_db_role_setting s')) {
    if (s.setdatabase !== 0 && s.setdatabase !== databaseOid) continue;
    const whose = s.setrole === 0 ? 'the database' : `role ${roleName(s.setrole)}${s.setdatabase === 0 ? '' : ' in the database'}`;
    settings.set(`settings for ${whose}`, [...(settings.get(`settings for ${whose}`) ?? []), [s.setdatabase === 0 ? 1 : 0, (s.setconfig as string[]).join('; ')]]);
  }
  for (const [name, each] of settings) out[name] = each.sort((a, b) => a[0] - b[0]).map(([, config]) => config).join('; ');

  // ───── server-wide settings every engine session starts with that switch its defences off (readable by any role,
  // though only a superuser may set them): `session_replication_role = replica` in postgresql.auto.conf stops every
  // trigger on the log (append-only, gap-free) and every foreign key for every session, and a preloaded library runs
  // in each of them
  const serverSettings = new Map<string, string>();
  for (const s of await q('SELECT s.name, s.setting FROM pg_catalog.pg_settings s')) {
    if ((SERVER_SETTINGS as readonly string[]).includes(s.name)) out[`server setting ${s.name}`] = String(s.setting);
    if ((LIBRARY_SETTINGS as readonly string[]).includes(s.name)) serverSettings.set(s.name, String(s.setting ?? ''));
  }

  // ───── (since migration 032) the libraries Postgres loads into sessions, and where it finds one named without a
  // directory. A library runs inside Postgres and can make it do and say anything: `ALTER SYSTEM SET
  // session_preload_libraries` and a reload ran one in every engine session. Only a superuser or a member of
  // pg_read_all_settings may read these, so they are sealed when the engine's role is such a member (migration
  // 032 makes it one where whoever migrates may grant that), whoever reads
  const readAll = [...roles.values()].find((r) => r.rolname === 'pg_read_all_settings')?.oid;
  const engineOid = [...roles.values()].find((r) => r.rolname === ENGINE_ROLE)?.oid;
  const engineReadsAll = memberships.some((m) => m.member === engineOid && m.roleid === readAll && m.inherit_option !== false);
  out['preloaded libraries'] = engineReadsAll
    ? LIBRARY_SETTINGS.map((n) => `${n}=${serverSettings.has(n) ? serverSettings.get(n) : '(not shown)'}`).join(' ')
    : `not readable by ${ENGINE_ROLE} (not a member of pg_read_all_settings)`;

  // ───── publications: which engine tables the live logs (or anyone) stream, and which changes
  const publications = await q('SELECT p.* FROM pg_catalog.pg_publication p');
  const published = await q('SELECT r.* FROM pg_catalog.pg_publication_rel r');
  const pubSchemas = version >= 150000 ? await q('SELECT s.* FROM pg_catalog.pg_publication_namespace s') : [];
  for (const p of publications) {
    const flags = Object.keys(p).filter((k) => k.startsWith('pub') && k !== 'pubname' && k !== 'pubowner').sort().map((k) => `${k.slice(3)}=${p[k]}`);
    const rels = published
      .filter((r) => r.prpubid === p.oid && tableName.has(r.prrelid))
      .map((r) => `${tableName.get(r.prrelid)}${r.prqual || r.prattrs ? `(${hash(`${r.prqual ?? ''}|${r.prattrs ?? ''}`).slice(0, 16)})` : ''}`);
    const inSchemas = pubSchemas.filter((s) => s.pnpubid === p.oid).map((s) => schemaName.get(s.pnnspid) ?? `#${s.pnnspid}`);
    out[`publication ${p.pubname}`] = `owner=${roleName(p.pubowner)} ${flags.join(' ')} tables=${list(rels)} schemas=${list(inSchemas)}`;
  }

  // ───── extensions, event triggers, default privileges, casts
  for (const e of await q('SELECT e.extname, e.extversion, e.extnamespace, e.extowner FROM pg_catalog.pg_extension e')) {
    out[`extension ${e.extname}`] = `version=${e.extversion} schema=${schemaName.get(e.extnamespace)} owner=${roleName(e.extowner)}`;
  }
  const eventTriggers = await q('SELECT e.evtname, e.evtevent, e.evtowner, e.evtfoid, e.evtenabled, e.evttags FROM pg_catalog.pg_event_trigger e');
  for (const d of await q('SELECT d.defaclrole, d.defaclnamespace, d.defaclobjtype, d.defaclacl FROM pg_catalog.pg_default_acl d')) {
    const where = d.defaclnamespace === 0 ? '' : ` in schema ${schemaName.get(d.defaclnamespace)}`;
    out[`default privileges of role ${roleName(d.defaclrole)}${where} on ${DEFAULT_ACL_KINDS[d.defaclobjtype] ?? d.defaclobjtype}`] = acl(d.defaclacl);
  }
  const casts = (await q('SELECT c.oid, c.castsource, c.casttarget, c.castfunc, c.castcontext, c.castmethod FROM pg_catalog.pg_cast c')).filter((c) => c.oid >= FIRST_USER_OID);
  const operators = (await q('SELECT o.oid, o.oprname, o.oprnamespace, o.oprowner, o.oprkind, o.oprleft, o.oprright, o.oprresult, o.oprcode::pg_catalog.oid AS fn, o.oprcom, o.oprnegate FROM pg_catalog.pg_operator o'))
    .filter((o) => o.oprnamespace === publicOid || (o.oprnamespace === catalogOid && o.oid >= FIRST_USER_OID));

  // ───── functions: pg_catalog's own (hashed as one), those in public or added to pg_catalog, and whatever the above calls
  const procs = await q(
    `SELECT p.oid, p.proname, p.pronamespace, p.prokind, p.prolang, p.prosecdef, p.proleakproof, p.proisstrict, p.proretset,
            p.provolatile, p.prorettype, p.proargtypes, p.prosrc, p.probin, p.proconfig
     FROM pg_catalog.pg_proc p`,
  );
  const builtIn = procs.filter((p) => p.pronamespace === catalogOid && p.oid < FIRST_USER_OID).sort((a, b) => a.oid - b.oid);
  out["pg_catalog's built-in functions"] = hash(builtIn.map((p) => JSON.stringify(Object.values(p))).join('\n'));
  // the rows of the built-in operators, types and operator classes, which a superuser can edit in place (the uuid
  // `=` made to call `<=`): each catalog's built-in rows hashed as one, read as text and ordered here
  for (const [what, catalogs] of [...BUILT_IN_ROWS, ...BUILT_IN_ROWS_SINCE_022, ...BUILT_IN_ROWS_SINCE_025, ...BUILT_IN_ROWS_SINCE_029]) {
    const rows: Array<{ oid: number; row: string }> = [];
    for (const table of catalogs) {
      if (table === 'pg_collation') {
        // all but collversion, which ALTER COLLATION … REFRESH VERSION (advised after a libc or ICU upgrade) changes
        for (const c of await q('SELECT t.* FROM pg_catalog.pg_collation t'))
          if (c.oid < FIRST_USER_OID) rows.push({ oid: c.oid, row: JSON.stringify(Object.entries(c).filter(([k]) => k !== 'collversion')) });
        continue;
      }
      // (pg_aggregate has no oid of its own: its rows are known by their function's)
      const oid = table === 'pg_aggregate' ? 't.aggfnoid::pg_catalog.oid AS oid' : 't.oid';
      rows.push(...((await q(`SELECT ${oid}, t::pg_catalog.text AS row FROM pg_catalog.${table} t`)) as Array<{ oid: number; row: string }>).filter((r) => r.oid < FIRST_USER_OID));
    }
    out[what] = hash(rows.sort((a, b) => a.oid - b.oid).map((r) => r.row).join('\n'));
  }

  // ───── (since migration 025) whether Postgres fires the tables' triggers at all and keeps their indexes, and what
  // the triggers enforcing their constraints are. Each is a plain UPDATE of pg_class or pg_trigger, no DDL, and
  // changes nothing the lines above print: `relhastriggers = false` and Postgres loads no trigger of the table (the
  // append-only and gap-free triggers and every foreign key go quiet while pg_trigger still lists them enabled);
  // `relhasindex = false` and inserts skip its indexes (its primary key no longer refuses a duplicate); an internal
  // trigger's tgtype or tgfoid changed and its foreign key stops checking inserts while pg_constraint is as it was
  // (whether each is enabled is sealed with its constraint, above)
  const procLabel = new Map<number, string>(procs.map((p) => [p.oid, `${schemaName.get(p.pronamespace) ?? p.pronamespace}.${p.proname}`]));
  const text = (v: unknown): string => (v == null ? '' : Buffer.isBuffer(v) ? v.toString('hex') : String(v));
  for (const t of tables) out[`firing on ${t.relname}`] = `hastriggers=${t.relhastriggers} hasindex=${t.relhasindex} persistence=${t.relpersistence}`;
  const enforcedBy = new Map<string, string[]>();
  for (const g of triggers) {
    if (!g.tgisinternal) continue;
    // (a trigger on an engine table enforcing another table's foreign key into it is named by that constraint's oid)
    const named = constraintName.get(g.tgconstraint);
    const of = named ? `enforcement of constraint ${named}` : `enforcement of another table's constraint #${g.tgconstraint}`;
    const what = [tableName.get(g.tgrelid), procLabel.get(g.tgfoid) ?? `#${g.tgfoid}`, g.tgtype, g.tgdeferrable, g.tginitdeferred, g.tgnargs, text(g.tgattr), text(g.tgargs), text(g.tgqual)];
    enforcedBy.set(of, [...(enforcedBy.get(of) ?? []), JSON.stringify(what)]);
  }
  for (const [of, list] of enforcedBy) out[of] = hash(list.sort().join('\n'));

  // ───── (since migration 029) whether Postgres checks the tables' CHECK constraints at all, and the operators each
  // foreign key compares with. Again plain UPDATEs, no DDL, that nothing above prints: `pg_class.relchecks = 0` and
  // Postgres loads no CHECK constraint of the table (a project slug, a secret name, a run's status no longer
  // checked), while pg_constraint lists each as it was; `pg_constraint.conpfeqop` set to `<>` on the run id and the
  // foreign key tying an event to its run asks for any other run of the project, and takes an event of a run that
  // does not exist, while pg_get_constraintdef prints it as it was
  for (const t of tables) out[`checking on ${t.relname}`] = `checks=${t.relchecks}`;
  const oids = (v: unknown): string => (Array.isArray(v) ? v.join(',') : v == null ? '' : String(v));
  for (const k of constraints) {
    if (k.contype !== 'f') continue;
    out[`comparisons of constraint ${k.conname} on ${tableName.get(k.conrelid)}`] = `pf=${oids(k.conpfeqop)} pp=${oids(k.conppeqop)} ff=${oids(k.conffeqop)}`;
  }

  const called = new Set<number>([
    ...triggers.filter((g) => !g.tgisinternal).map((g) => g.tgfoid),
    ...eventTriggers.map((e) => e.evtfoid),
    ...casts.map((c) => c.castfunc).filter((f) => f !== 0),
    ...operators.map((o) => o.fn).filter((f) => f !== 0),
  ]);
  // an extension's functions in public are sealed one by one like any other (an extension is also sealed by its version)
  const sealedProcs = procs.filter((p) => p.pronamespace === publicOid || (p.pronamespace === catalogOid && p.oid >= FIRST_USER_OID) || called.has(p.oid));
  const procOids = sealedProcs.map((p) => p.oid);
  const about = new Map<number, Row>(
    (await q('SELECT p.oid, p.proowner, p.proacl, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args FROM pg_catalog.pg_proc p WHERE p.oid = ANY($1::pg_catalog.oid[])', [procOids])).map((r) => [r.oid, r]),
  );
  const aggregates = sealedProcs.filter((p) => p.prokind === 'a').map((p) => p.oid);
  const definitions = new Map<number, string>(
    (await q('SELECT p.oid, pg_catalog.pg_get_functiondef(p.oid) AS def FROM pg_catalog.pg_proc p WHERE p.oid = ANY($1::pg_catalog.oid[])', [procOids.filter((o) => !aggregates.includes(o))])).map((r) => [r.oid, r.def]),
  );
  // an aggregate has no CREATE to print: its functions and states are what it is
  for (const a of await q('SELECT a.aggfnoid::pg_catalog.oid AS fn, a.* FROM pg_catalog.pg_aggregate a WHERE a.aggfnoid = ANY($1::pg_catalog.oid[])', [aggregates])) {
    definitions.set(a.fn, JSON.stringify(a));
  }
  const procName = new Map<number, string>();
  for (const p of sealedProcs) {
    const schema = p.pronamespace === publicOid ? '' : `${schemaName.get(p.pronamespace)}.`;
    procName.set(p.oid, `${schema}${p.proname}(${about.get(p.oid)?.args ?? ''})`);
  }
  for (const p of sealedProcs) {
    const a = about.get(p.oid);
    out[`${PROC_KINDS[p.prokind] ?? 'function'} ${procName.get(p.oid)}`] = `${hash(definitions.get(p.oid) ?? '')} owner=${roleName(a?.proowner)} acl=${acl(a?.proacl)}`;
  }
  for (const e of eventTriggers) {
    out[`event trigger ${e.evtname}`] = `${triggerState(e.evtenabled)} event=${e.evtevent} tags=${(e.evttags ?? []).join(',')} function=${procName.get(e.evtfoid)} owner=${roleName(e.evtowner)}`;
  }

  // ───── operators and casts, by their types (printed by pg_catalog.format_type on exact argument types)
  const typeOids = [...new Set([...operators.flatMap((o) => [o.oprleft, o.oprright, o.oprresult]), ...casts.flatMap((c) => [c.castsource, c.casttarget])])];
  const typeName = new Map<number, string>(
    (await q('SELECT t.oid, pg_catalog.format_type(t.oid, NULL::pg_catalog.int4) AS name FROM pg_catalog.pg_type t WHERE t.oid = ANY($1::pg_catalog.oid[])', [typeOids])).map((t) => [t.oid, t.name]),
  );
  const typ = (oid: number): string => (oid === 0 ? 'NONE' : (typeName.get(oid) ?? `#${oid}`));
  for (const o of operators) {
    const what = `function=${procName.get(o.fn) ?? o.fn} result=${typ(o.oprresult)} commutator=${o.oprcom} negator=${o.oprnegate}`;
    out[`operator ${schemaName.get(o.oprnamespace)}.${o.oprname}(${typ(o.oprleft)},${typ(o.oprright)})`] = `${what} owner=${roleName(o.oprowner)}`;
  }
  for (const c of casts) {
    out[`cast (${typ(c.castsource)} AS ${typ(c.casttarget)})`] = `function=${c.castfunc === 0 ? '-' : procName.get(c.castfunc)} context=${c.castcontext} method=${c.castmethod}`;
  }
  return out;
}

/** Server-wide settings (postgresql.conf, ALTER SYSTEM) that weaken what the seal covers, and that any role can read. */
const SERVER_SETTINGS = ['session_replication_role', 'row_security', 'local_preload_libraries', 'default_transaction_read_only'] as const;

/** Server-wide settings that load a library into sessions, or say where one is found (superuser-only to read). */
const LIBRARY_SETTINGS = ['shared_preload_libraries', 'session_preload_libraries', 'jit_provider', 'dynamic_library_path'] as const;

const PROC_KINDS: Record<string, string> = { f: 'function', w: 'function', p: 'procedure', a: 'aggregate' };
const DEFAULT_ACL_KINDS: Record<string, string> = { r: 'tables', S: 'sequences', f: 'functions', T: 'types', n: 'schemas', L: 'large objects' };

function triggerState(c: string): string {
  return c === 'D' ? 'disabled' : c === 'O' ? 'enabled' : c === 'R' ? 'replica only' : 'always';
}

/*
 * A seal signs when it was made, so that an earlier seal written back after a later one (to make an earlier,
 * weaker schema pass again) is told apart by a checkpoint that saw the later one. Seals made before seals
 * carried their time are signed without it, and still verify.
 */
function sealMac(key: Buffer, migration: string, objects: SchemaObjects, sealedAt: string | null): string {
  return hmacSha256Hex(key, `meshhook-schema-seal\n${migration}\n${sealedAt === null ? '' : `${sealedAt}\n`}${canonicalJson(objects)}`);
}

/** Seal the schema as it is now, after `migration` (the last one applied). */
export async function sealSchema(
  db: Pool | ClientBase,
  chain: ChainKey,
  migration: string,
  inTransaction = false,
  /** objects a seal leaves out: what an earlier release's seal did not cover yet (the upgrade tests) */
  leaveOut?: (name: string) => boolean,
): Promise<SchemaObjects> {
  const all = await readSchemaObjects(db, inTransaction);
  const objects = leaveOut ? Object.fromEntries(Object.entries(all).filter(([name]) => !leaveOut(name))) : all;
  // the database's clock, and after every seal already there: "the latest" must not depend on which host's
  // clock sealed (one running fast would keep every later seal from being read)
  const { rows } = await db.query<{ at: Date }>(
    `SELECT pg_catalog.date_trunc('milliseconds', GREATEST(pg_catalog.clock_timestamp(), (SELECT max(sealed_at) FROM public.schema_seals) + interval '1 millisecond')) AS at`,
  );
  const sealedAt = rows[0].at.toISOString();
  // the id is the next after the seals there, not the sequence's: a superuser who ran the sequence to its end
  // (setval to the largest bigint, which verify cannot see) would otherwise fail every later migration's seal
  await db.query('INSERT INTO schema_seals (id, migration, objects, mac, sealed_at) VALUES ((SELECT coalesce(max(id), 0) + 1 FROM public.schema_seals), $1, $2, $3, $4)', [
    migration,
    JSON.stringify(objects),
    `${chain.kid}:${sealMac(chain.key, migration, objects, sealedAt)}`,
    sealedAt,
  ]);
  return objects;
}

export interface SchemaCheck {
  /** when the seal checked against was written (null: none) */
  sealedAt: string | null;
  /** the seal's time is signed (seals made before seals carried their time are not) */
  timeSigned: boolean;
  /** every object not as sealed, one sentence each; empty when the schema is as the engine sealed it */
  problems: string[];
}

/** The latest seal, if it is genuine: when it was made, and whether that time is signed. */
export async function latestSeal(
  db: Pool | ClientBase,
  keys: ChainKeys,
): Promise<{ seal: { migration: string; objects: SchemaObjects; sealedAt: string; timeSigned: boolean } | null; problem: string | null }> {
  // the latest by the time it was sealed, not by its id: an id is anyone's to choose, a signed time is not
  const { rows } = await db.query<{ migration: string; objects: SchemaObjects; mac: string; sealed_at: Date }>(
    'SELECT migration, objects, mac, sealed_at FROM schema_seals ORDER BY sealed_at DESC, id DESC',
  );
  if (rows.length === 0) return { seal: null, problem: "the engine's schema carries no seal: its migrations were applied without the chain key, or the seal was deleted (`meshhook seal-schema` seals it as it is now)" };
  const judged = rows.map((row) => {
    const sealedAt = row.sealed_at.toISOString();
    const { kid, key, mac } = signatureParts(keys, row.mac);
    const timeSigned = key !== null && mac === sealMac(key, row.migration, row.objects, sealedAt);
    const genuine = timeSigned || (key !== null && mac === sealMac(key, row.migration, row.objects, null));
    return { row, sealedAt, kid, key, timeSigned, genuine };
  });
  const latest = judged[0];
  if (!latest.key) return { seal: null, problem: `the schema's seal is signed with key "${latest.kid.slice(0, 40)}", which is not in the keyring` };
  if (!latest.genuine) return { seal: null, problem: "the schema's seal is not as the engine signed it (it was edited in the database)" };
  // a seal that does not sign its time (made before seals did) can be given any time: once one that signs it
  // exists, such a seal in front of it was put there
  if (!latest.timeSigned && judged.some((j) => j.timeSigned)) {
    return { seal: null, problem: "the schema's latest seal is an older kind that does not sign its time, put in front of the engine's own latest seal" };
  }
  return { seal: { migration: latest.row.migration, objects: latest.row.objects, sealedAt: latest.sealedAt, timeSigned: latest.timeSigned }, problem: null };
}

/**
 * The engine's schema against its latest seal; with `sawSealedAt` (the latest seal a checkpoint outside the
 * database saw), a seal older than that one is named as an earlier seal written back.
 */
export async function checkSchema(db: Pool | ClientBase, keys: ChainKeys, checkpoint?: { sealedAt: string; at: string } | null): Promise<SchemaCheck> {
  const { seal, problem } = await latestSeal(db, keys);
  if (!seal) {
    const at = (await db.query<{ sealed_at: Date }>('SELECT sealed_at FROM schema_seals ORDER BY sealed_at DESC, id DESC LIMIT 1')).rows[0]?.sealed_at;
    return { sealedAt: at ? at.toISOString() : null, timeSigned: false, problems: [problem!] };
  }
  const problems = schemaDifferences(seal.objects, await readSchemaObjects(db));
  // every migration the engine applies with the key is sealed after: one recorded later than the seal was not applied
  // by the engine (a row written into schema_migrations ahead of an upgrade keeps that migration, say a fix, from
  // ever running, and nothing else would differ), or was applied without the key
  // (the engine's role reads the table from migration 018 on; before, the check waits for that migration)
  const names = await db.query<{ name: string }>('SELECT name FROM public.schema_migrations').then(
    (r) => r.rows.map((row) => row.name).sort(),
    (e: { code?: string }) => {
      if (e.code === '42501') return [] as string[];
      throw e;
    },
  );
  const last = names[names.length - 1];
  if (last !== undefined && seal.migration !== '' && last > seal.migration) {
    problems.push(
      `migration ${last} is recorded as applied, but the schema was last sealed after ${seal.migration}: a migration recorded without the engine applying it (a row written into schema_migrations behind its back), or applied without the chain key; check it, then \`meshhook seal-schema --confirm\``,
    );
  }
  if (checkpoint && (!seal.timeSigned || seal.sealedAt < checkpoint.sealedAt)) {
    problems.unshift(
      `a checkpoint taken ${checkpoint.at} saw the schema sealed ${checkpoint.sealedAt}, but the seal now is ${seal.timeSigned ? `from ${seal.sealedAt}` : 'one that does not sign its time'}: an earlier seal written back behind the engine's back`,
    );
  }
  return { sealedAt: seal.sealedAt, timeSigned: seal.timeSigned, problems };
}

/** Each object that differs between the sealed list and the one read now, as a sentence. */
export function schemaDifferences(sealed: SchemaObjects, now: SchemaObjects): string[] {
  const out: string[] = [];
  for (const [name, was] of Object.entries(sealed)) {
    const is = now[name];
    // a constraint dropped or added takes the triggers enforcing it and its comparisons with it: named once, as the constraint
    if (ofConstraint(name) && is === undefined && now[ofConstraint(name)!] === undefined) continue;
    if (is === undefined) out.push(`${name} ${plural(name) ? 'are' : 'is'} gone`);
    else if (is !== was) out.push(`${name} ${changeOf(name, was, is)}`);
  }
  for (const [name, is] of Object.entries(now)) {
    if (name in sealed) continue;
    if (ofConstraint(name) && !(ofConstraint(name)! in sealed)) continue;
    // a setting says itself what it does: `search_path=evil, public`
    out.push(`${name} ${plural(name) ? 'were' : 'was'} added behind the engine's back${name.startsWith('settings ') || name.startsWith('parameter ') || name === 'relations added to pg_catalog' ? ` (${is})` : ''}`);
  }
  return out.sort();
}

/** "constraint … on …" for what is part of a constraint ("enforcement of constraint …", "comparisons of constraint …"). */
function ofConstraint(name: string): string | null {
  const m = /^(?:enforcement|comparisons) of (constraint .*)$/.exec(name);
  return m ? m[1] : null;
}

/** "column grants on runs", "settings for …", "pg_catalog's built-in functions": one entry, many things. */
function plural(name: string): boolean {
  return /^(column grants|columns of|tables inheriting|settings|default privileges|pg_catalog's built-in functions|built-in |collations |casts |system views |catalogs the seal|aggregates |languages |access methods |definitions of pg_catalog|comparisons of |names of |preloaded libraries|relations added to pg_catalog)/.test(name);
}

/** `key=value key=value` (a value may hold `=` but no ` key=`), with a leading word or hash under "". */
function fieldsOf(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(/ (?=[a-z_]+=)/)) {
    const eq = part.search(/^[a-z_]+=/) === 0 ? part.indexOf('=') : -1;
    if (eq < 0) out[''] = part;
    else out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

const LABELS: Record<string, string> = {
  rls: 'row-level security',
  force: 'forced row-level security',
  bypassrls: 'bypassing row-level security',
  createrole: 'creating roles',
  createdb: 'creating databases',
  member_of: 'the roles it is a member of',
  members: 'its members',
  tables: 'the engine tables it publishes',
  schemas: 'the schemas it publishes',
  acl: 'its grants',
  owner: 'its owner',
  hastriggers: 'whether Postgres fires its triggers at all (pg_class.relhastriggers)',
  hasindex: 'whether Postgres keeps its indexes and unique keys on insert (pg_class.relhasindex)',
  persistence: 'its persistence (p: logged, u: unlogged, emptied by a crash)',
  checks: 'how many CHECK constraints Postgres loads for it (pg_class.relchecks; 0: none is checked)',
};

const LISTS = new Set(['member_of', 'members', 'tables', 'schemas']);

function changeOf(name: string, was: string, is: string): string {
  if (name.startsWith('trigger ') || name.startsWith('rule ')) {
    const [wasState] = was.split(' ');
    const [isState] = is.split(' ');
    if (wasState !== isState) return `is ${isState} (it was ${wasState})`;
    return 'was redefined';
  }
  if (name.startsWith('function ') || name.startsWith('procedure ') || name.startsWith('aggregate ')) {
    return was.split(' ')[0] !== is.split(' ')[0] ? 'was replaced' : 'changed owner or grants';
  }
  if (name.startsWith('enforcement of ')) return 'was edited in pg_trigger: a trigger enforcing it calls another function or fires on other events';
  if (name.startsWith('comparisons of ')) return `were edited in pg_constraint: its foreign key compares with other operators (${is}; they were ${was})`;
  if (name.startsWith('definitions of pg_catalog')) return 'were changed: a row of pg_proc was edited in place (a default argument, a SQL body, a planner support function, ...)';
  if (name.startsWith('constraint ')) {
    const [a, b] = [fieldsOf(was), fieldsOf(is)];
    if (a[''] !== b['']) return 'was redefined';
    return `is enforced by triggers ${b.triggers ?? 'none'} (they were ${a.triggers ?? 'none'})`;
  }
  if (name === "pg_catalog's built-in functions") return 'were changed: one was replaced or redefined';
  if (name.startsWith('built-in ') || / built into pg_catalog$/.test(name) || name === 'system views of pg_catalog') return 'were changed: a row of the catalog was edited in place';
  if (name === 'catalogs the seal reads') return `are not the ones initdb made: ${is.replace(/^replaced: /, '')} (a catalog renamed and something else put under its name, or a function replaced)`;
  if (name.startsWith('server setting ')) return `is ${is || 'empty'} (it was ${was || 'empty'}): set server-wide (ALTER SYSTEM or postgresql.conf)`;
  if (name === 'preloaded libraries') return `are ${is} (they were ${was}): set server-wide (ALTER SYSTEM or postgresql.conf); a library loaded into the engine's sessions can make Postgres do and say anything`;
  if (name.startsWith('names of ')) return "were changed: pg_attribute was edited, and a column is asked for by another's name (two columns swapping names: a defence switched off in one while the seal read the other)";
  if (name.startsWith('columns of ')) return 'were changed: a column added, dropped or renamed, or its type, NOT NULL, default or collation changed';
  if (plural(name)) return `are ${is || 'none'} (they were ${was || 'none'})`;
  if (!/^(table|role|schema|publication|extension|event trigger|operator|cast|index|database|firing|checking|parameter) /.test(name)) return 'was changed';
  const [a, b] = [fieldsOf(was), fieldsOf(is)];
  const onOff = (v: string) => (v === 'true' ? 'on' : v === 'false' ? 'off' : v);
  const changes: string[] = [];
  for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])]) {
    if (a[key] === b[key]) continue;
    const label = key === '' ? 'its state' : (LABELS[key] ?? key);
    if (key === 'acl') changes.push(`its grants are ${b.acl || 'the defaults'} (they were ${a.acl || 'the defaults'})`);
    else if (key === 'owner') changes.push(`its owner is ${b.owner} (it was ${a.owner})`);
    else if (LISTS.has(key)) changes.push(`${label} are ${b[key] || 'none'} (they were ${a[key] || 'none'})`);
    else changes.push(`${label} is ${onOff(b[key] ?? '') || 'none'} (it was ${onOff(a[key] ?? '') || 'none'})`);
  }
  return `changed: ${changes.join(', ')}`;
}
