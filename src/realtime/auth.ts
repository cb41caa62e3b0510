import type { Pool, PoolClient } from 'pg';
import { quoteIdent, type RelationInfo } from './feed';

/*
 * Who may see a change, decided the way the real server's `realtime.apply_rls` does:
 * under the subscriber's role and JWT claims, in a transaction that is always rolled back,
 *
 *   BEGIN; SET LOCAL ROLE <claims.role>;
 *   SELECT set_config('request.jwt.claims', <claims json>, true);
 *   SELECT EXISTS (SELECT 1 FROM <schema>.<table> WHERE <pk> = <values>);   -- batched, see below
 *   ROLLBACK;
 *
 * The row is looked up as it is *now* (after the commit), like the real server. Batching: the server
 * asks once per (role, claims, table) per transaction with every primary key of that transaction in
 * one VALUES list, and gets back the visible ones. Deterministic refusals (no privilege, unknown role)
 * mean "not visible"; any other error is thrown so the feed retries the transaction instead of
 * silently dropping it.
 */

const DENIED = new Set(['42501', '42704', '42P01', '22023', '3F000']);
const CHUNK = 500;

export function isDenial(e: unknown): boolean {
  return DENIED.has((e as { code?: string })?.code ?? '');
}

// Is this 32-bit xid (as pgoutput gives it) still in progress? Widened to
// xid8 against the snapshot's own epoch so wraparound cannot confuse it.
const RUNNING_SQL = `WITH s AS (SELECT pg_current_snapshot() AS snap),
     e AS (SELECT snap, pg_snapshot_xmax(snap)::text::numeric AS xmax8 FROM s),
     c AS (SELECT snap, xmax8, floor(xmax8 / 4294967296) * 4294967296 + x AS cand FROM e, unnest($1::numeric[]) AS x)
SELECT COALESCE(bool_or(NOT pg_visible_in_snapshot((CASE WHEN cand > xmax8 + 2147483648 THEN cand - 4294967296 ELSE cand END)::text::xid8, snap)), false) AS running FROM c`;

export interface VisibilityGroup {
  rel: RelationInfo;
  role: string;
  claims: Record<string, unknown>;
  keys: Array<Array<string | null>>;
}

/*
 * A visibility check looks rows up by primary key, and row-level security adds
 * its own filter (for the log: the subscriber's project, read from the JWT
 * claims). Left to its estimates, the planner may answer that with a scan of
 * the whole table, or of a project's whole index, evaluating the policy row by
 * row: a check then costs time in proportion to the table, and one that runs
 * past its deadline withholds changes that were visible. In the check's own
 * transaction it may only look rows up by key, with the policy as a filter.
 */
const KEY_LOOKUPS_ONLY =
  "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), " +
  // nor a hash or merge join over the whole table: each key is looked up on its own
  "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)";

/** how long a catalog answer is kept, and how many are kept at most (see Visibility.cached) */
const CATALOG_TTL_MS = 5_000;
const CATALOG_MAX_ENTRIES = 10_000;

export class Visibility {
  constructor(private readonly pool: Pool) {}

  /**
   * Wait until a transaction that logical decoding has already handed us is
   * visible to new snapshots. Postgres writes (and streams) the commit record
   * before it takes the transaction out of the running set, so for a moment a
   * decoded commit is still invisible to everyone else, and a visibility check
   * in that moment would wrongly withhold the change. One short query, usually
   * answered at once; gives up after `timeoutMs` (the check then decides).
   */
  async awaitCommitted(xid: number, timeoutMs = 2000): Promise<void> {
    // (one xid at a time; visibleGroups asks for a whole batch in its own round trip)
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let running: boolean;
      try {
        const { rows } = await this.pool.query<{ running: boolean }>(
          RUNNING_SQL,
          [[String(xid)]],
        );
        running = rows[0]?.running === true;
      } catch {
        return; // the visibility check that follows reports the database's trouble
      }
      if (!running || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /**
   * Every group's verdicts in one round trip: a single simple-protocol batch
   * (BEGIN, the running-xid check, then role and claims / lookup per group,
   * ROLLBACK) with values as escaped literals. A commit still in
   * progress (see awaitCommitted) is asked again after a millisecond. Anything
   * unusual (an error, a denial, a huge key list) falls back to one
   * transaction per group, which sorts denials from failures.
   *
   * The lookup is prepared once per table and executed for each group, as the
   * real server's apply_rls does: with 50 subscribers the statement was parsed,
   * rewritten with its policies and planned 50 times a round, and those checks
   * were the largest cost live logs put on the database (npm run bench:live).
   * Postgres re-applies a prepared statement's row-level security when the role
   * changes, and the policies read the claims when the statement runs, so each
   * group is still judged under its own role and claims.
   */
  async visibleGroups(xids: number[], groups: VisibilityGroup[], timeoutMs = 2000): Promise<boolean[][]> {
    if (groups.length === 0) return [];
    if (groups.some((g) => g.keys.length > 4 * CHUNK) || groups.some((g) => g.rel.primaryKey.length === 0 || g.rel.primaryKey.some((n) => !g.rel.byName.get(n)))) {
      for (const xid of xids) await this.awaitCommitted(xid, timeoutMs);
      return this.oneByOne(groups);
    }
    const deadline = Date.now() + timeoutMs;
    let client: PoolClient | null = null;
    let round: { text: string; lookups: number[]; prepared: string[] } | null = null;
    try {
      client = await this.pool.connect();
      for (;;) {
        round = this.batchFor(client, xids, groups);
        const results = (await client.query(round.text)) as unknown as Array<{ rows: Array<Record<string, unknown>> }>;
        const running = results[1]?.rows[0]?.running === true;
        if (running && Date.now() <= deadline) {
          await new Promise((r) => setTimeout(r, 1));
          continue;
        }
        const { lookups } = round;
        return groups.map((g, k) => {
          const out = g.keys.map(() => false);
          for (const row of results[lookups[k]].rows) out[Number(row.i) - 1] = true;
          return out;
        });
      }
    } catch {
      // the batch stopped part way (a role that may not read the table, say): its transaction is rolled back
      // and its prepared statements, which belong to the session, are let go; a connection that cannot is dropped
      if (client) {
        let broken = false;
        await client.query('ROLLBACK').catch(() => (broken = true));
        for (const name of broken ? [] : (round?.prepared ?? [])) await client.query(`DEALLOCATE ${name}`).catch((e) => (broken = (e as { code?: string }).code !== '26000'));
        client.release(broken);
      }
      client = null;
      return this.oneByOne(groups);
    } finally {
      client?.release();
    }
  }

  private rounds = 0;

  /** One round's batch, and where each group's lookup result is among the batch's results. */
  private batchFor(client: PoolClient, xids: number[], groups: VisibilityGroup[]): { text: string; lookups: number[]; prepared: string[] } {
    const lit = (v: string): string => client.escapeLiteral(v);
    const round = ++this.rounds;
    const sql: string[] = ['BEGIN', RUNNING_SQL.replace('$1::numeric[]', `ARRAY[${xids.map((x) => Math.trunc(x)).join(',') || 'NULL'}]::numeric[]`), KEY_LOOKUPS_ONLY];
    // one plan per table for every group: the first group's role is taken before preparing, so the
    // statement is rewritten with that role's policies from the start
    sql.push(`SELECT set_config('role', ${lit(groups[0].role)}, true), set_config('plan_cache_mode', 'force_generic_plan', true)`);
    const prepared = new Map<number, string>();
    for (const g of groups) {
      if (prepared.has(g.rel.oid)) continue;
      const name = `meshhook_rt_visible_${round}_${prepared.size}`;
      const pk = g.rel.primaryKey.map((n) => g.rel.byName.get(n)!);
      const names = pk.map((_, j) => `k${j}`);
      const where = pk.map((c, j) => `t.${quoteIdent(c.name)} = v.${names[j]}`).join(' AND ');
      sql.push(
        `PREPARE ${name}(${pk.map((c) => `${c.sqlType}[]`).join(', ')}) AS SELECT v.i FROM unnest(${pk.map((_, j) => `$${j + 1}`).join(', ')}) WITH ORDINALITY AS v(${names.join(', ')}, i) ` +
          `WHERE EXISTS (SELECT 1 FROM ${quoteIdent(g.rel.schema)}.${quoteIdent(g.rel.table)} t WHERE ${where})`,
      );
      prepared.set(g.rel.oid, name);
    }
    const lookups: number[] = [];
    for (const g of groups) {
      const pk = g.rel.primaryKey.map((n) => g.rel.byName.get(n)!);
      // role and claims in one statement, as realtime.apply_rls sets them
      sql.push(`SELECT set_config('role', ${lit(g.role)}, true), set_config('request.jwt.claims', ${lit(JSON.stringify(g.claims))}, true)`);
      const columns = pk.map((c, j) => `ARRAY[${g.keys.map((key) => (key[j] === null ? 'NULL' : lit(key[j]!))).join(', ')}]::${c.sqlType}[]`);
      lookups.push(sql.length);
      sql.push(g.keys.length === 0 ? 'SELECT NULL::int8 AS i WHERE false' : `EXECUTE ${prepared.get(g.rel.oid)}(${columns.join(', ')})`);
    }
    sql.push('ROLLBACK');
    // prepared statements belong to the session, not the transaction
    for (const name of prepared.values()) sql.push(`DEALLOCATE ${name}`);
    return { text: sql.join(';\n'), lookups, prepared: [...prepared.values()] };
  }

  private oneByOne(groups: VisibilityGroup[]): Promise<boolean[][]> {
    return Promise.all(groups.map((g) => this.visibleKeys(g.rel, g.role, g.claims, g.keys)));
  }

  /** For each primary key tuple (WAL text, in rel.primaryKey order): is that row visible to role + claims now? */
  async visibleKeys(rel: RelationInfo, role: string, claims: Record<string, unknown>, keys: Array<Array<string | null>>): Promise<boolean[]> {
    const out = keys.map(() => false);
    if (keys.length === 0 || rel.primaryKey.length === 0) return out;
    const pk = rel.primaryKey.map((name) => rel.byName.get(name));
    if (pk.some((c) => !c)) return out;
    let client: PoolClient | null = null;
    let broken = false;
    try {
      client = await this.pool.connect();
      await client.query('BEGIN');
      await client.query(KEY_LOOKUPS_ONLY);
      await client.query(`SET LOCAL ROLE ${quoteIdent(role)}`);
      await client.query(`SELECT set_config('request.jwt.claims', $1, true)`, [JSON.stringify(claims)]);
      const table = `${quoteIdent(rel.schema)}.${quoteIdent(rel.table)}`;
      const names = pk.map((_, j) => `k${j}`);
      const where = pk.map((c, j) => `t.${quoteIdent(c!.name)} = v.${names[j]}`).join(' AND ');
      for (let from = 0; from < keys.length; from += CHUNK) {
        const slice = keys.slice(from, from + CHUNK);
        const params: unknown[] = [];
        const rows = slice.map((key, i) => {
          params.push(from + i);
          const cells = [`$${params.length}::int4`];
          key.forEach((v, j) => {
            params.push(v);
            cells.push(`$${params.length}::${pk[j]!.sqlType}`);
          });
          return `(${cells.join(', ')})`;
        });
        const sql = `SELECT v.i FROM (VALUES ${rows.join(', ')}) AS v(i, ${names.join(', ')}) WHERE EXISTS (SELECT 1 FROM ${table} t WHERE ${where})`;
        const res = await client.query<{ i: number }>(sql, params);
        for (const r of res.rows) out[r.i] = true;
      }
      await client.query('ROLLBACK');
      return out;
    } catch (e) {
      if (client) await client.query('ROLLBACK').catch(() => (broken = true));
      if (isDenial(e)) return out;
      broken = true;
      throw e;
    } finally {
      client?.release(broken);
    }
  }

  /** Columns of the relation the role may SELECT (cached per relation message and role). */
  selectableColumns(rel: RelationInfo, role: string): Promise<Set<string>> {
    let p = rel.selectable.get(role);
    if (!p) {
      p = this.pool
        .query<{ attname: string }>(
          `SELECT a.attname::text AS attname FROM pg_attribute a
            WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
              AND has_column_privilege($2::text, a.attrelid, a.attnum, 'SELECT')`,
          [rel.oid, role],
        )
        .then(
          (r) => new Set(r.rows.map((x) => x.attname)),
          (e) => {
            if (isDenial(e)) return new Set<string>();
            rel.selectable.delete(role);
            throw e;
          },
        );
      rel.selectable.set(role, p);
    }
    return p;
  }

  private readonly unbound = new Map<string, Promise<boolean>>();

  /**
   * Whether a role is above row-level security (a superuser, or BYPASSRLS): a token naming one would see
   * every project's rows, so such a role never subscribes. Asked once per role; false when it does not exist.
   */
  bypassesPolicies(role: string): Promise<boolean> {
    let p = this.unbound.get(role);
    if (!p) {
      p = this.pool
        .query<{ above: boolean }>('SELECT rolsuper OR rolbypassrls AS above FROM pg_roles WHERE rolname = $1', [role])
        .then((r) => r.rows[0]?.above === true);
      p.catch(() => this.unbound.delete(role));
      this.unbound.set(role, p);
    }
    return p;
  }

  /**
   * Answers about the catalog (does a role exist, is a table published) for a few seconds: a join is announced
   * with one lookup per binding, and a hundred sockets joining channels of a hundred bindings each would otherwise
   * queue tens of thousands of queries on the four connections that also check every live-log change.
   */
  private readonly catalog = new Map<string, { at: number; answer: Promise<boolean> }>();

  private cached(key: string, ask: () => Promise<boolean>): Promise<boolean> {
    const now = Date.now();
    const hit = this.catalog.get(key);
    if (hit && now - hit.at < CATALOG_TTL_MS) return hit.answer;
    if (this.catalog.size >= CATALOG_MAX_ENTRIES) this.catalog.clear();
    const answer = ask();
    this.catalog.set(key, { at: now, answer });
    answer.catch(() => this.catalog.get(key)?.answer === answer && this.catalog.delete(key));
    return answer;
  }

  roleExists(role: string): Promise<boolean> {
    return this.cached(`role\u0000${role}`, async () => (await this.pool.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount === 1);
  }

  /**
   * The publication's tables (`schema\u0000table`), asked in one query shared by every caller while it runs and kept
   * for CATALOG_TTL_MS: a join's bindings name their tables, and a question per name (cached per name) let a client
   * joining and leaving with bindings on made-up tables queue a catalog query per name on the four connections
   * that check every project's live-log changes (their latency went from milliseconds to seconds for minutes).
   */
  private readonly publications = new Map<string, { at: number; tables: Promise<Set<string>> }>();

  publishedTables(publication: string): Promise<Set<string>> {
    const now = Date.now();
    const hit = this.publications.get(publication);
    if (hit && now - hit.at < CATALOG_TTL_MS) return hit.tables;
    const tables = this.pool
      .query<{ schemaname: string; tablename: string }>('SELECT schemaname::text AS schemaname, tablename::text AS tablename FROM pg_publication_tables WHERE pubname = $1', [publication])
      .then((r) => new Set(r.rows.map((x) => `${x.schemaname}\u0000${x.tablename}`)));
    // (the server names one publication; the map only keeps one answer per name it was asked)
    this.publications.set(publication, { at: now, tables });
    tables.catch(() => this.publications.get(publication)?.tables === tables && this.publications.delete(publication));
    return tables;
  }

  /** Is schema.table (any table of the schema when table is null; any table when both are) in the publication? */
  async published(publication: string, schema: string | null, table: string | null): Promise<boolean> {
    const tables = await this.publishedTables(publication);
    if (schema !== null && table !== null) return tables.has(`${schema}\u0000${table}`);
    for (const t of tables) {
      const [s, n] = t.split('\u0000');
      if ((schema === null || s === schema) && (table === null || n === table)) return true;
    }
    return false;
  }
}
