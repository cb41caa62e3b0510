import { Client, Pool } from 'pg';
import { LogicalReplicationService, Pgoutput, PgoutputPlugin } from 'pg-logical-replication';
import { PINNED_SETTINGS, withOptions } from '../db/pool';
import type { ChangeType } from './changes';
import { commitTimestamp } from './changes';

/*
 * The committed-data feed: logical replication with the built-in `pgoutput` plugin from one
 * publication, through `pg-logical-replication` (LogicalReplicationService + its pgoutput parser).
 * The library does what is needed once three things are set around it:
 *   - acknowledgements are ours (`acknowledge.auto: false, timeoutSeconds: 0`): the library would
 *     otherwise confirm every LSN the moment it arrives, and its timer confirms keepalive positions
 *     while changes are still being processed. We confirm a transaction's end LSN only after it has
 *     been dispatched, and a keepalive's position only when nothing is in flight;
 *   - slot creation and START_REPLICATION are ours (a PgoutputPlugin subclass): a temporary slot
 *     must be created on the replication connection itself, and the library's start adds the
 *     `messages` option that Postgres < 14 refuses;
 *   - values stay the WAL text (the subclass swaps the parser's per-column pg type parsers for the
 *     identity): jsonb, int8 and timestamps are converted by changes.ts the way the real server's
 *     `to_jsonb` cast does, not by node-postgres' parsers (Date objects lose microseconds).
 * Back-pressure towards Postgres pauses the replication socket (the library's private
 * `_connection.stream`) while too many transactions wait to be dispatched.
 *
 * Slot lifecycle (the choice, see also src/realtime/README.md):
 *   - no `slotName`: a TEMPORARY slot per replication connection (fresh name each time). Nothing
 *     outlives the server, nothing retains WAL. Any interruption loses the changes committed until
 *     the next connection, so the feed reports it as lossy (`onDown({ lossy: true })`) and the
 *     server errors its postgres_changes channels (phx_error) so clients rejoin and catch up.
 *   - `slotName`: a PERMANENT slot of that name, created if missing. Reconnects and server restarts
 *     resume from the slot's confirmed position, so nothing committed meanwhile is lost (a
 *     transaction may be re-sent after a Postgres crash; duplicates are skipped by LSN within one
 *     server process). If the slot has vanished and had to be re-created after the feed was live,
 *     that resume is lossy. An inactive permanent slot retains WAL on the server for as long as it
 *     exists: drop it with `close({ dropSlot: true })` or `dropSlot(url, name)`.
 */

export type FeedState = 'idle' | 'connecting' | 'live' | 'down' | 'closed';

export interface RelationColumn {
  name: string;
  typeOid: number;
  /** pg_type.typname: int8, text, jsonb, _text … */
  typname: string;
  /** format_type(): a type usable in a cast (integer, character varying(20) …) */
  sqlType: string;
}

export interface RelationInfo {
  oid: number;
  schema: string;
  table: string;
  columns: RelationColumn[];
  byName: Map<string, RelationColumn>;
  primaryKey: string[];
  rls: boolean;
  /** per role: the columns it may SELECT (filled by the server's Visibility) */
  selectable: Map<string, Promise<Set<string>>>;
}

export type WalRow = Record<string, string | null>;

export interface FeedChange {
  type: ChangeType;
  rel: RelationInfo;
  /** new row (INSERT, UPDATE) as WAL text */
  newRow: WalRow | null;
  /** old row: the replica identity (key) columns, or the full row with REPLICA IDENTITY FULL */
  oldRow: WalRow | null;
}

export interface FeedTransaction {
  xid: number;
  /** "YYYY-MM-DDTHH:MM:SS.mmmZ" */
  commitTimestamp: string;
  commitLsn: string;
  endLsn: string;
  changes: FeedChange[];
}

export interface FeedOptions {
  databaseUrl: string;
  publication: string;
  /** permanent slot of this name; temporary slots when absent */
  slotName?: string;
  /** catalog queries (types, primary keys, RLS flag) */
  pool: Pool;
  log: (entry: Record<string, unknown>) => void;
  /** called in commit order, one at a time; a throw restarts the feed */
  /** committed transactions in commit order: usually one, more when the consumer fell behind */
  onTransactions: (txs: FeedTransaction[]) => Promise<void>;
  /** synchronous: the stream is live (before any change of it is processed) */
  onLive: (info: { lossy: boolean; first: boolean }) => void;
  /** synchronous: the stream was live and is now interrupted */
  onDown: (info: { lossy: boolean; error: string }) => void;
}

const BACKOFF_MS = [100, 250, 500, 1000];
/** at most this much is dispatched together when the consumer fell behind */
const MAX_BATCH_TXS = 64;
const MAX_BATCH_CHANGES = 500;
const PAUSE_ABOVE = 256;
const RESUME_BELOW = 32;
const STATUS_EVERY_MS = 1000;
const PING_EVERY_MS = 5000;
const SILENCE_LIMIT_MS = 20_000;

interface RawTx {
  xid: number;
  commitTime: bigint;
  commitLsn: string;
  endLsn?: string;
  changes: Array<{ type: ChangeType; relation: Pgoutput.MessageRelation; newRow: WalRow | null; oldRow: WalRow | null }>;
}

export function lsnToBigInt(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(parseInt(hi, 16)) << 32n) | BigInt(parseInt(lo, 16));
}

export function bigIntToLsn(v: bigint): string {
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

const identity = (raw: unknown) => raw;

class MeshhookPgoutput extends PgoutputPlugin {
  constructor(
    private readonly spec: {
      publication: string;
      temporary: boolean;
      startLsn: string;
      onSlot: (created: boolean) => void;
    },
  ) {
    super({ protoVersion: 1, publicationNames: [spec.publication] });
  }

  override parse(buffer: Buffer): Pgoutput.Message {
    const msg = super.parse(buffer);
    // keep WAL text: the parser caches this relation object and reads `parser` from it per column
    if (msg.tag === 'relation') for (const c of msg.columns) c.parser = identity;
    return msg;
  }

  override async start(client: Client, slotName: string): Promise<unknown> {
    const slot = quoteIdent(slotName);
    if (this.spec.temporary) {
      await client.query(`CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`);
      this.spec.onSlot(true);
    } else {
      try {
        await client.query(`CREATE_REPLICATION_SLOT ${slot} LOGICAL pgoutput NOEXPORT_SNAPSHOT`);
        this.spec.onSlot(true);
      } catch (e) {
        if ((e as { code?: string }).code !== '42710') throw e; // duplicate_object: the slot exists, resume it
        this.spec.onSlot(false);
      }
    }
    const pub = `'${quoteIdent(this.spec.publication).replace(/'/g, "''")}'`;
    return client.query(`START_REPLICATION SLOT ${slot} LOGICAL ${this.spec.startLsn} (proto_version '1', publication_names ${pub})`);
  }
}

interface Connection {
  gen: number;
  svc: LogicalReplicationService;
  live: boolean;
  /** position we may confirm on this connection */
  confirmed: string | null;
  lastSentStatus: string | null;
  lastStatusAt: number;
  lastRxAt: number;
  paused: boolean;
  watchdog: NodeJS.Timeout | null;
}

export class ReplicationFeed {
  state: FeedState = 'idle';
  /** the slot currently streamed (temporary ones change per connection) */
  slot: string | null = null;
  lastError: string | null = null;
  private readonly temporary: boolean;
  private readonly tempBase = `meshhook_rt_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  private conn: Connection | null = null;
  private gen = 0;
  private everLive = false;
  private closed = false;
  private running: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private current: RawTx | null = null;
  private readonly queue: RawTx[] = [];
  private draining = false;
  /** end LSN of the last transaction dispatched (dedupe and resume point) */
  private lastEnd: bigint | null = null;
  private readonly relations = new WeakMap<Pgoutput.MessageRelation, Promise<RelationInfo>>();

  constructor(private readonly opts: FeedOptions) {
    this.temporary = !opts.slotName;
  }

  /** start streaming (idempotent) */
  start(): void {
    if (this.running || this.closed) return;
    this.setState('connecting');
    this.running = this.loop().catch((e) => this.opts.log({ level: 'error', msg: 'realtime feed loop failed', error: String(e) }));
  }

  /** tear the replication connection down and reconnect (e.g. after a dispatch failure) */
  restart(reason: string): void {
    const c = this.conn;
    if (!c || this.closed) return;
    this.opts.log({ level: 'warn', msg: 'realtime feed restarting', reason });
    destroyService(c.svc);
  }

  async close(opts: { dropSlot?: boolean } = {}): Promise<void> {
    if (this.state === 'closed') return;
    this.closed = true;
    this.setState('closed');
    this.wake?.();
    const c = this.conn;
    if (c) {
      if (c.watchdog) clearInterval(c.watchdog);
      this.sendStatus(c, false, true);
      if (!this.temporary) await flushed(c.svc, 100); // the slot's confirmed position is what a successor resumes from
      const stopped = c.svc.stop().catch(() => undefined);
      const inTime = await Promise.race([stopped.then(() => true), sleep(300).then(() => false)]);
      if (!inTime) destroyService(c.svc);
      c.svc.removeAllListeners();
      c.svc.on('error', () => undefined);
    }
    await Promise.race([this.running ?? Promise.resolve(), sleep(300)]);
    if (opts.dropSlot && this.opts.slotName) await dropSlot(this.opts.databaseUrl, this.opts.slotName);
  }

  private setState(s: FeedState, extra: Record<string, unknown> = {}): void {
    if (this.state === s) return;
    this.state = s;
    if (s !== 'closed') this.opts.log({ level: s === 'down' ? 'warn' : 'info', msg: `realtime feed ${s}`, slot: this.slot, ...extra });
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    while (!this.closed) {
      let wasLive = false;
      let error = 'replication stream ended';
      try {
        wasLive = await this.connectOnce();
      } catch (e) {
        error = (e as Error)?.message ?? String(e);
        wasLive = this.conn?.live ?? false;
      }
      const c = this.conn;
      if (c?.watchdog) clearInterval(c.watchdog);
      if (c) {
        c.svc.removeAllListeners();
        c.svc.on('error', () => undefined);
        destroyService(c.svc);
      }
      this.conn = null;
      this.current = null;
      if (this.closed) break;
      this.lastError = error;
      if (wasLive) {
        attempt = 0;
        this.setState('down', { error });
        this.opts.onDown({ lossy: this.temporary, error });
      } else if (this.state !== 'down') {
        this.setState('down', { error });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
      attempt++;
    }
  }

  /** one replication connection; resolves/rejects when it ends; returns whether it was live */
  private async connectOnce(): Promise<boolean> {
    const gen = ++this.gen;
    const slot = this.temporary ? `${this.tempBase}_${gen}` : this.opts.slotName!;
    const svc = new LogicalReplicationService(
      // pgoutput prints each value in the walsender's DateStyle: pinned, as on every engine connection
      { ...withOptions(this.opts.databaseUrl, [PINNED_SETTINGS]), keepAlive: true, connectionTimeoutMillis: 5000 },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    const conn: Connection = {
      gen,
      svc,
      live: false,
      confirmed: this.lastEnd !== null ? bigIntToLsn(this.lastEnd) : null,
      lastSentStatus: null,
      lastStatusAt: 0,
      lastRxAt: Date.now(),
      paused: false,
      watchdog: null,
    };
    this.conn = conn;
    let created = false;
    let failed: Error | null = null;
    svc.on('error', (e: Error) => {
      failed = failed ?? e;
    });
    svc.on('start', () => {
      if (this.conn !== conn || this.closed) return;
      conn.live = true;
      this.slot = slot;
      const first = !this.everLive;
      const lossy = !first && !this.temporary && created;
      this.everLive = true;
      this.setState('live', { temporary: this.temporary, ...(lossy ? { lossy } : {}) });
      conn.watchdog = setInterval(() => this.watch(conn), 1000);
      conn.watchdog.unref();
      this.opts.onLive({ lossy, first });
    });
    svc.on('data', (lsn: string, msg: Pgoutput.Message) => {
      if (this.conn !== conn) return;
      conn.lastRxAt = Date.now();
      this.onMessage(conn, msg);
    });
    svc.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => {
      if (this.conn !== conn) return;
      conn.lastRxAt = Date.now();
      if (this.idle()) conn.confirmed = maxLsn(conn.confirmed, lsn);
      if (shouldRespond) this.sendStatus(conn, false, true);
    });
    const startLsn = this.temporary || this.lastEnd === null ? '0/0' : bigIntToLsn(this.lastEnd);
    const plugin = new MeshhookPgoutput({
      publication: this.opts.publication,
      temporary: this.temporary,
      startLsn,
      onSlot: (c) => {
        created = c;
      },
    });
    await svc.subscribe(plugin, slot);
    if (failed) throw failed;
    return conn.live;
  }

  private idle(): boolean {
    return this.current === null && this.queue.length === 0 && !this.draining;
  }

  private onMessage(conn: Connection, msg: Pgoutput.Message): void {
    switch (msg.tag) {
      case 'begin':
        this.current = { xid: msg.xid, commitTime: msg.commitTime as bigint, commitLsn: msg.commitLsn ?? '0/0', changes: [] };
        return;
      case 'insert':
        this.current?.changes.push({ type: 'INSERT', relation: msg.relation, newRow: msg.new as WalRow, oldRow: null });
        return;
      case 'update':
        this.current?.changes.push({ type: 'UPDATE', relation: msg.relation, newRow: msg.new as WalRow, oldRow: (msg.old ?? msg.key) as WalRow | null });
        return;
      case 'delete':
        this.current?.changes.push({ type: 'DELETE', relation: msg.relation, newRow: null, oldRow: (msg.old ?? msg.key) as WalRow | null });
        return;
      case 'commit': {
        const tx = this.current;
        this.current = null;
        if (!tx) return;
        tx.endLsn = msg.commitEndLsn ?? tx.commitLsn;
        if (this.lastEnd !== null && lsnToBigInt(tx.endLsn) <= this.lastEnd) return; // re-sent after a crash: already dispatched
        if (tx.changes.length === 0) {
          if (this.idle()) conn.confirmed = maxLsn(conn.confirmed, tx.endLsn);
          return;
        }
        this.queue.push(tx);
        if (this.queue.length > PAUSE_ABOVE && !conn.paused) {
          conn.paused = true;
          streamOf(conn.svc)?.pause?.();
        }
        void this.drain();
        return;
      }
      default:
        return; // relation (cached by the parser), type, origin, truncate, message
    }
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        // what queued up while the last dispatch ran goes out together (bounded), in order
        const batch: Array<{ raw: RawTx; end: bigint }> = [];
        let changeCount = 0;
        while (this.queue.length > 0 && batch.length < MAX_BATCH_TXS && changeCount < MAX_BATCH_CHANGES) {
          const raw = this.queue.shift()!;
          const end = lsnToBigInt(raw.endLsn!);
          const lastEnd = batch.length > 0 ? batch[batch.length - 1].end : this.lastEnd;
          if (lastEnd !== null && end <= lastEnd) continue;
          batch.push({ raw, end });
          changeCount += raw.changes.length;
        }
        if (batch.length === 0) continue;
        try {
          const txs: FeedTransaction[] = [];
          for (const { raw } of batch) {
            const changes: FeedChange[] = [];
            for (const ch of raw.changes) changes.push({ type: ch.type, rel: await this.relationInfo(ch.relation), newRow: ch.newRow, oldRow: ch.oldRow });
            txs.push({ xid: raw.xid, commitTimestamp: commitTimestamp(raw.commitTime), commitLsn: raw.commitLsn, endLsn: raw.endLsn!, changes });
          }
          await this.opts.onTransactions(txs);
        } catch (e) {
          // not dispatched: a permanent slot re-sends it after the restart; a temporary one reports the loss
          this.queue.length = 0;
          this.restart(`dispatch failed: ${(e as Error)?.message ?? String(e)}`);
          return;
        }
        const last = batch[batch.length - 1];
        this.lastEnd = last.end;
        const c = this.conn;
        if (c) {
          c.confirmed = maxLsn(c.confirmed, last.raw.endLsn!);
          if (c.paused && this.queue.length < RESUME_BELOW) {
            c.paused = false;
            streamOf(c.svc)?.resume?.();
          }
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private watch(conn: Connection): void {
    if (this.conn !== conn || this.closed) return;
    const now = Date.now();
    if (!conn.paused && now - conn.lastRxAt > SILENCE_LIMIT_MS) {
      this.opts.log({ level: 'warn', msg: 'realtime feed silent, reconnecting', silentMs: now - conn.lastRxAt });
      destroyService(conn.svc);
      return;
    }
    const ping = now - conn.lastStatusAt > PING_EVERY_MS;
    if (ping || (conn.confirmed !== conn.lastSentStatus && now - conn.lastStatusAt > STATUS_EVERY_MS)) this.sendStatus(conn, ping, false);
  }

  private sendStatus(conn: Connection, ping: boolean, force: boolean): void {
    if (!conn.live || !conn.confirmed) return;
    if (!force && !ping && conn.confirmed === conn.lastSentStatus) return;
    conn.lastSentStatus = conn.confirmed;
    conn.lastStatusAt = Date.now();
    conn.svc.acknowledge(conn.confirmed, ping).catch(() => undefined);
  }

  private relationInfo(rel: Pgoutput.MessageRelation): Promise<RelationInfo> {
    let p = this.relations.get(rel);
    if (!p) {
      p = loadRelation(this.opts.pool, rel);
      p.catch(() => this.relations.delete(rel));
      this.relations.set(rel, p);
    }
    return p;
  }
}

async function loadRelation(pool: Pool, rel: Pgoutput.MessageRelation): Promise<RelationInfo> {
  const oids = [...new Set(rel.columns.map((c) => c.typeOid))];
  const types = await pool.query<{ oid: number; typname: string }>('SELECT oid::int AS oid, typname::text FROM pg_type WHERE oid = ANY($1::oid[])', [oids]);
  const typname = new Map(types.rows.map((r) => [r.oid, r.typname]));
  const meta = await pool.query<{ rls: boolean; pk: string[] | null; fmt: Record<string, string> | null }>(
    `SELECT c.relrowsecurity AS rls,
            (SELECT array_agg(a.attname::text ORDER BY k.ord)
               FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
            (SELECT json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
               FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS fmt
       FROM pg_class c WHERE c.oid = $1`,
    [rel.relationOid],
  );
  const m = meta.rows[0];
  const columns: RelationColumn[] = rel.columns.map((c) => {
    const t = typname.get(c.typeOid) ?? String(c.typeOid);
    return { name: c.name, typeOid: c.typeOid, typname: t, sqlType: m?.fmt?.[c.name] ?? t };
  });
  return {
    oid: rel.relationOid,
    schema: rel.schema,
    table: rel.name,
    columns,
    byName: new Map(columns.map((c) => [c.name, c])),
    primaryKey: m?.pk ?? (m ? [] : rel.keyColumns),
    rls: m?.rls ?? false,
    selectable: new Map(),
  };
}

function maxLsn(a: string | null, b: string): string {
  if (a === null) return b;
  return lsnToBigInt(b) > lsnToBigInt(a) ? b : a;
}

/* The library keeps its pg Client and Connection private; reaching them is the price of back-pressure and a quick close. */
function streamOf(svc: LogicalReplicationService): { pause?: () => void; resume?: () => void; destroy?: () => void } | undefined {
  return (svc as unknown as { _connection?: { stream?: { pause?: () => void; resume?: () => void; destroy?: () => void } } })._connection?.stream;
}

async function flushed(svc: LogicalReplicationService, timeoutMs: number): Promise<void> {
  const stream = streamOf(svc) as { writableLength?: number; once?: (e: string, f: () => void) => void } | undefined;
  if (!stream?.writableLength || !stream.once) return;
  await Promise.race([new Promise<void>((resolve) => stream.once!('drain', resolve)), sleep(timeoutMs)]);
}

function destroyService(svc: LogicalReplicationService): void {
  const client = (svc as unknown as { _client?: { connection?: { stream?: { destroy?: () => void } } } })._client;
  client?.connection?.stream?.destroy?.();
  svc.stop().catch(() => undefined);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/**
 * Drop a permanent slot (terminating the walsender that holds it, if any).
 * Resolves true when a slot was dropped, false when there was none.
 */
export async function dropSlot(databaseUrl: string, slotName: string, timeoutMs = 3000): Promise<boolean> {
  // a role that may drop slots: its schema named and its calls qualified, so nothing put on a search_path runs as it
  const c = new Client({ ...withOptions(databaseUrl, [PINNED_SETTINGS]), connectionTimeoutMillis: 5000 });
  c.on('error', () => undefined);
  await c.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { rows } = await c.query<{ active_pid: number | null }>('SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1', [slotName]);
      if (rows.length === 0) return false;
      if (rows[0].active_pid) await c.query('SELECT pg_catalog.pg_terminate_backend($1)', [rows[0].active_pid]);
      try {
        await c.query('SELECT pg_catalog.pg_drop_replication_slot($1)', [slotName]);
        return true;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === '42704') return false; // undefined_object: gone meanwhile
        if (code !== '55006' || Date.now() > deadline) throw e; // object_in_use: the walsender is still exiting
        await sleep(50);
      }
    }
  } finally {
    await c.end().catch(() => undefined);
  }
}
