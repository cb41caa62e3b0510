import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Pool } from 'pg';
import { openPool } from '../db/pool';
import { types as pgTypes } from 'pg';
import { ChainKeys, eventHash } from '../domain/hash-chain';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { clientErrorAnswer, FRAGMENTED_BODY, GatheredRequest, clientErrorResponse, defaultMaxConnections, shareConnections } from '../security/http-limits';
import { firstInexactNumber } from '../domain/exact-numbers';
import { nestedDeeperThan } from '../domain/json-exact';
import { Visibility } from './auth';
import { MAX_FILTER_LENGTH, parseBinding, filterMatches, walToJson, type ChangeType, type PgBinding } from './changes';
import { ReplicationFeed, dropSlot, type FeedChange, type FeedState, type FeedTransaction, type RelationInfo, type WalRow } from './feed';
import {
  FrameError,
  decodeFrame,
  encodeBroadcastBinary,
  encodeFrame,
  negotiateVsn,
  reply,
  type PhxMessage,
  type RawBroadcast,
  type Vsn,
} from './protocol';
import { TokenError, verifyToken, type TokenClaims } from './tokens';

/*
 * A Supabase-Realtime-compatible server for the unmodified supabase-js client
 * (protocol and design notes: src/realtime/README.md).
 *
 *   ws   /realtime/v1/websocket and /socket/websocket   (?apikey=<jwt>&vsn=1.0.0|2.0.0)
 *   POST /realtime/v1/api/broadcast (and /api/broadcast) → 202
 *   POST /realtime/v1/api/broadcast/<topic>/events/<event> (httpSend) → 202
 *   GET  /healthcheck
 *
 * postgres_changes come only from committed data (feed.ts: pgoutput logical replication) and are
 * authorised per subscriber role and claims under RLS (auth.ts).
 */

export interface DroppedChange {
  table: string;
  type: ChangeType;
  record: Record<string, unknown>;
  commitTimestamp: string;
}

export interface RealtimeServerOptions {
  /** a role with REPLICATION that may SET ROLE to the token roles (a superuser in tests) */
  databaseUrl: string;
  /** HS256 secret of the apikey and the channel tokens */
  jwtSecret: string;
  /** 0 (default) = a free port */
  port?: number;
  host?: string;
  /** default supabase_realtime */
  publication?: string;
  /** a permanent replication slot of this name; temporary slots when absent (see feed.ts) */
  slotName?: string;
  /** a socket that sends nothing (not even heartbeats) this long is closed; default 60 s */
  heartbeatTimeoutMs?: number;
  /** how long a postgres_changes join waits for the feed before an error reply; default 5 s (the client gives up at 10 s) */
  joinTimeoutMs?: number;
  /**
   * slow subscribers: a socket with more than this many bytes waiting to go out for 2 s, or more than 4 × this
   * at all, is closed (it reconnects and catches up); default 8 MiB
   */
  maxBufferedBytes?: number;
  /**
   * bytes waiting to go out to all sockets together; beyond it the slow readers holding the most are closed
   * (they reconnect and catch up; see sweepTotalBuffered); default 256 MiB
   */
  maxTotalBufferedBytes?: number;
  /** connections held at once; more are closed as they come (default: src/security/http-limits.ts) */
  maxConnections?: number;
  /** frames a socket may send a second, twice as many at once; beyond it the socket is closed with 1008 (default 1,000) */
  maxMessagesPerSecond?: number;
  /**
   * bytes of REST broadcast bodies being received at once, all requests together; beyond it a broadcast gets 503
   * (default 32 MiB: 32 bodies at the 1 MiB limit)
   */
  broadcastBodyBudgetBytes?: number;
  log?: (entry: Record<string, unknown>) => void;
  /**
   * The engine's chain keys: a run_events row whose keyed link does not hold (written into the table by
   * someone with the database, not by the engine) is not sent. Without them every committed row is sent,
   * as the real Realtime server does.
   */
  chainKeys?: ChainKeys;
  /** test-only failpoint: drop a matching change instead of delivering it (env MESHHOOK_REALTIME_DROP too) */
  dropChange?: (c: { table: string; record: Record<string, unknown> }) => boolean;
}

export interface RealtimeStats {
  /** open sockets */
  sockets: number;
  /** joined channels */
  channels: number;
  /** postgres_changes frames sent (one per channel per change) */
  changesDelivered: number;
  /** every frame sent */
  framesSent: number;
  /** postgres_changes frames whose data went out as the one buffer every channel's frame shares (large changes) */
  sharedDataFrames: number;
  /** presence states encoded for the joins sent them (once per topic per change of its presence, see presenceStateData) */
  presenceStatesEncoded: number;
  /** committed transactions handed over by the feed, and the deliveries they went out in (one visibility round each) */
  transactions: number;
  deliveries: number;
  /** changes the dropChange failpoint swallowed */
  dropped: DroppedChange[];
  /** sockets closed because they could not keep up */
  slowSocketsClosed: number;
  /** run_events rows not sent because the engine did not write them (their keyed link does not hold) */
  unsignedNotSent: number;
  feed: FeedState;
}

interface Conn {
  id: number;
  ws: WebSocket;
  vsn: Vsn;
  apikey: string;
  channels: Map<string, Channel>;
  pending: Map<string, PendingJoin>;
  hbTimer: NodeJS.Timeout;
  closed: boolean;
  /** since when more than maxBufferedBytes have been waiting to go out (null: not over) */
  overSince: number | null;
  /** the socket is corked until the end of this tick (see sendRaw) */
  corked?: boolean;
  /** how many counts in a row found SLOW_SHARE_BYTES or more waiting for it (see sweepTotalBuffered) */
  heavyCounts?: number;
  /** what its channels' postgres_changes bindings weigh (see MAX_BINDING_BYTES_PER_SOCKET) */
  bindingBytes: number;
  /** what its channels' presences weigh (see MAX_PRESENCE_BYTES_PER_SOCKET) */
  presenceBytes: number;
  /** its joins (see JOINS_PER_SECOND) */
  joins: TokenBucket;
  /** the frames it sends (see MESSAGES_PER_SECOND) */
  messages: TokenBucket;
  /** frames handed to its socket and not yet written out (see FRAME_OVERHEAD_BYTES) */
  framesWaiting: number;
  /** the callback of every frame sent to it: one written out */
  written: () => void;
}

interface PendingJoin {
  cancelled: boolean;
  timer: NodeJS.Timeout | null;
  complete: (() => void) | null;
}

interface Channel {
  conn: Conn;
  topic: string;
  name: string;
  joinRef: string | null;
  topicKey: string;
  claims: TokenClaims;
  claimsKey: string;
  role: string;
  bindings: PgBinding[];
  /** what its bindings weigh (see MAX_BINDING_BYTES_PER_SOCKET) */
  bindingBytes: number;
  /** the project whose budget its bindings count against, fixed at the join ('' for a token naming none) */
  space: string;
  self: boolean;
  ack: boolean;
  presenceEnabled: boolean;
  presenceKey: string;
  expTimer: NodeJS.Timeout | null;
  active: boolean;
}

interface PresenceEntry {
  channel: Channel;
  meta: Record<string, unknown>;
  /** what it adds to its topic's presence state (see MAX_PRESENCE_BYTES_PER_TOPIC) */
  bytes: number;
}

const SOCKET_PATHS = new Set(['/realtime/v1/websocket', '/socket/websocket']);
const BROADCAST_PATHS = new Set(['/realtime/v1/api/broadcast', '/api/broadcast']);

/**
 * Where a channel's broadcasts and presence live: its topic within the project its token is for (tokens with no
 * project, such as the public anon key, share one space of their own). Supabase's public channels are open to
 * every holder of the anon key; here the anon key is public too, so a dashboard's topic of one project is
 * neither readable nor writable by the anon key or another project's token.
 */
function broadcastKey(claims: TokenClaims, topic: string): string {
  return `public:${typeof claims.project_id === 'string' ? claims.project_id : '-'}:${topic}`;
}
const UNAVAILABLE = 'UnableToConnectToProject: Realtime was unable to connect to the project database';
const MAX_TIMER_MS = 2 ** 31 - 1;
// a connection that has not sent its headers soon, or its whole request, is let go
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** a socket over maxBufferedBytes this long, or over SLOW_HARD_FACTOR × maxBufferedBytes at all, is closed */
const SLOW_GRACE_MS = 2000;
const MAX_CHANNELS_PER_SOCKET = 100;
/**
 * Joins a socket may make: all its channels at once and a few rejoins (JOIN_BURST), then this many a second (a token
 * bucket). Every join is verified, checked and announced (and sent the topic's presence state): a loop of joins and
 * leaves on one socket freed its channel and binding budgets as fast as it took them and kept the server busy for
 * every other project. Beyond it a join is refused with Supabase's reason (its clients rejoin after a back-off).
 */
export const JOINS_PER_SECOND = 10;
const JOIN_BURST = MAX_CHANNELS_PER_SOCKET + 20;
/**
 * Frames a client may send by default: twice this many at once, then this many a second (a token bucket); beyond it the
 * socket is closed with 1008. supabase-js sends a heartbeat every 25 s and a frame per join, leave, token refresh,
 * broadcast or track. Every frame is parsed and most are answered on the one event loop: one socket with the public
 * anon key sending 60,000 heartbeats a second let 13 signed webhooks through in 5 s instead of 48, one of them waiting
 * 3.3 s.
 */
export const MESSAGES_PER_SECOND = 1000;
const MESSAGE_RATE_REFUSAL = 'ClientRateLimitReached: Too many messages per second';
const JOIN_RATE_REFUSAL = 'ClientJoinRateLimitReached: Too many joins per second';
/*
 * postgres_changes bindings are kept as long as their channel and checked against every change: a client
 * could otherwise join with megabytes of filters (an `in.(…)` of 90,000 ids, a hundred times a socket) and
 * grow the process until it dies, taking the intake and workers with it. Supabase allows 100 values in an
 * `in` filter (changes.ts); these bound the rest.
 */
const MAX_BINDINGS_PER_CHANNEL = 100;
/**
 * What a binding weighs: about what it holds in the heap once parsed (measured: 566 bytes for `seq=eq.5`, 4 kB for
 * a 4,000-character filter, 6.4 kB for an `in` list of 100 UUIDs). Counted as 64 bytes and the filter's length, the
 * 64 MiB in all held over 500 MB of short bindings.
 */
export function bindingWeight(filterText: string | null | undefined): number {
  return BINDING_BASE_BYTES + 2 * (filterText?.length ?? 0);
}
const BINDING_BASE_BYTES = 640;
const MAX_BINDING_BYTES_PER_SOCKET = 512 * 1024;
/**
 * Bindings are kept per project (the project its token names; tokens with none, like the public anon key, share
 * one space): with one budget for the whole server, anyone holding the anon key filled it from a few hundred
 * sockets and every project's live-log join was refused until they left. Another project's (or the anon key's)
 * bindings cannot use a project's budget; the total bounds the process.
 */
const MAX_BINDING_BYTES_PER_PROJECT = 16 * 1024 * 1024;
const MAX_BINDING_BYTES_TOTAL = 256 * 1024 * 1024;
/** a frame from a client: broadcasts and joins are far smaller (the REST broadcast takes 1 MiB a request too) */
const MAX_CLIENT_FRAME_BYTES = 1024 * 1024;
/**
 * the pieces a client's message may come in: supabase-js (a browser's WebSocket, or ws) sends each in one. ws keeps the
 * pieces of a message until its last, one Buffer each, and allowed 16,384: 500 sockets with the public anon key, each
 * sending that many one-byte pieces of a message never ended, took the process from 470 MB to 1 GB. Beyond it the socket is
 * closed with 1008 "Too many message fragments".
 */
const MAX_CLIENT_FRAGMENTS = 64;
/**
 * requests pipelined on one connection served at once: node serves each as soon as it is parsed, and one connection
 * with the public anon key pipelining 50,000 empty REST broadcasts kept 63% of a core busy verifying their tokens and
 * held the intake's answers up to 1.7 s
 */
const MAX_IN_FLIGHT_PER_CONNECTION = 8;
/** a REST broadcast's body, and what all of them being received at once may hold by default */
const REST_BODY_LIMIT = 1024 * 1024;
const DEFAULT_BROADCAST_BODY_BUDGET = 32 * 1024 * 1024;
/**
 * messages in one REST broadcast: a 1 MiB body held some 22,000 tiny messages, each sent to every subscriber of its
 * topic in one synchronous loop (40 subscribers: 889,000 frames from one request, the process stalled for seconds)
 */
export const MAX_REST_MESSAGES = 100;
/**
 * deliveries (messages × the subscribers of their topic) a project's broadcasts may make a second, REST and websocket
 * together (tokens naming no project, like the public anon key, share one budget): a token bucket of this size,
 * refilled at this rate. A request or frame beyond it sends nothing and is refused (429 / an error reply).
 */
export const FANOUT_PER_SECOND = 10_000;
/** a REST broadcast lets other work in after this many frames (a request's fan-out is within FANOUT_PER_SECOND) */
const FANOUT_SLICE_FRAMES = 1000;
const FANOUT_REFUSAL = `Too many messages per second: a project's broadcasts and presence changes may make at most ${FANOUT_PER_SECOND} deliveries (messages × subscribers) a second; nothing was sent, send again in a moment`;
const MAX_PRESENCE_BYTES = 32 * 1024;
/** how deep a presence payload may nest (as a webhook body: src/intake/server.ts MAX_BODY_DEPTH) */
const MAX_PRESENCE_DEPTH = 64;
/**
 * what all the presences of one topic weigh together: every join of the topic is sent the whole state, so without
 * a bound a topic filled by a thousand sockets of 32 kB each made every further join (one small frame, repeatable
 * from one socket) cost a 32 MB frame
 */
const MAX_PRESENCE_BYTES_PER_TOPIC = 1024 * 1024;
/**
 * what one socket's presences weigh together, over all its channels: a presence per topic, a hundred topics a
 * socket, at 32 kB each let the anon key hold 3.3 MB a socket (3.4 GB from a thousand)
 */
const MAX_PRESENCE_BYTES_PER_SOCKET = 128 * 1024;
/** a topic, an event name, a presence key: names, which every frame and every member's diff repeats */
const MAX_NAME_BYTES = 255;
const SLOW_HARD_FACTOR = 4;
/** a change's data at least this long goes out as a fragment every channel's frame shares (see sendFragments) */
const SHARED_DATA_BYTES = 16 * 1024;
const V1_TAIL = Buffer.from('},"ref":null}');
const V2_TAIL = Buffer.from('}]');
const PRESENCE_V1_TAIL = Buffer.from(',"ref":null}');
const PRESENCE_V2_TAIL = Buffer.from(']');
const EMPTY_PRESENCE_STATE = Buffer.from('{}');
/**
 * What a frame waiting to go out holds beyond its bytes (ws's and the socket's records of it): a socket's backlog, and
 * all sockets' together, are weighed as their bytes and this much a frame. Counted by bytes alone, 30 sockets with the
 * public anon key sending heartbeats and never reading the replies (90 bytes each) stayed under every limit and took
 * the process from 86 MB to 1 GB: about 340 bytes of memory a reply.
 */
const FRAME_OVERHEAD_BYTES = 256;
/** over the total budget, a socket holding at least this much is the one let go */
const SLOW_SHARE_BYTES = 1024 * 1024;

/**
 * A token bucket: `capacity` at most, refilled at `perSecond`. A cost above the capacity is taken from a full bucket
 * and leaves it in debt (a broadcast to more subscribers than the budget goes out, and the next waits for the refill).
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    readonly capacity: number,
    readonly perSecond: number,
    now = Date.now(),
  ) {
    this.tokens = capacity;
    this.at = now;
  }

  take(cost: number, now = Date.now()): boolean {
    this.tokens = Math.min(this.capacity, this.tokens + (Math.max(0, now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < Math.min(cost, this.capacity)) return false;
    this.tokens -= cost;
    return true;
  }

  /** whether it would be full now (and so can be forgotten) */
  full(now = Date.now()): boolean {
    return this.tokens + (Math.max(0, now - this.at) / 1000) * this.perSecond >= this.capacity;
  }
}

/** `table:column=value[,column=value][;table:…]` (env MESHHOOK_REALTIME_DROP) → a dropChange predicate */
export function parseDropSpec(spec: string): (c: { table: string; record: Record<string, unknown> }) => boolean {
  const rules = spec
    .split(';')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const colon = s.indexOf(':');
      if (colon <= 0) throw new Error(`MESHHOOK_REALTIME_DROP: expected table:column=value, got "${s}"`);
      const table = s.slice(0, colon);
      const conds = s
        .slice(colon + 1)
        .split(',')
        .map((kv) => {
          const eq = kv.indexOf('=');
          if (eq <= 0) throw new Error(`MESHHOOK_REALTIME_DROP: expected column=value, got "${kv}"`);
          return [kv.slice(0, eq).trim(), kv.slice(eq + 1).trim()] as const;
        });
      return { table, conds };
    });
  return (c) =>
    rules.some(
      (r) =>
        (r.table === c.table || r.table === `public.${c.table}`) &&
        r.conds.every(([k, v]) => {
          const x = c.record[k];
          return x !== undefined && x !== null && (typeof x === 'object' ? JSON.stringify(x) : String(x)) === v;
        }),
    );
}

export class RealtimeServer {
  readonly stats: RealtimeStats = { sockets: 0, channels: 0, changesDelivered: 0, framesSent: 0, sharedDataFrames: 0, presenceStatesEncoded: 0, transactions: 0, deliveries: 0, dropped: [], slowSocketsClosed: 0, unsignedNotSent: 0, feed: 'idle' };
  private readonly opts: Required<Pick<RealtimeServerOptions, 'host' | 'publication' | 'heartbeatTimeoutMs' | 'joinTimeoutMs' | 'maxBufferedBytes'>> &
    RealtimeServerOptions;
  private readonly log: (entry: Record<string, unknown>) => void;
  private readonly dropChange: RealtimeServerOptions['dropChange'];
  private readonly http: http.Server;
  private readonly wss: WebSocketServer;
  private readonly pool: Pool;
  private readonly visibility: Visibility;
  private readonly feed: ReplicationFeed;
  private readonly conns = new Set<Conn>();
  private sweeper: NodeJS.Timeout | null = null;
  private readonly topics = new Map<string, Set<Channel>>();
  private readonly pgChannels = new Set<Channel>();
  /** the same channels by the project their token names ('' for none): a change is matched only against its project's */
  private readonly pgByProject = new Map<string, Map<string, Set<Channel>>>();
  private readonly presence = new Map<string, Map<string, Map<string, PresenceEntry>>>();
  /** what each topic's presence state weighs (see MAX_PRESENCE_BYTES_PER_TOPIC) */
  private readonly presenceBytes = new Map<string, number>();
  /** each topic's presence state as JSON, encoded at the first join after it changed (see presenceStateData) */
  private readonly presenceEncoded = new Map<string, Buffer>();
  private readonly waitingJoins = new Set<PendingJoin>();
  private nextConnId = 1;
  /** what each project's channels' bindings weigh ('' for tokens that name none; see MAX_BINDING_BYTES_PER_PROJECT) */
  private readonly bindingBytesByProject = new Map<string, number>();
  /** what every channel's postgres_changes bindings weigh together (see MAX_BINDING_BYTES_TOTAL) */
  private bindingBytes = 0;
  /** bytes of REST broadcast bodies being received now (see broadcastBodyBudgetBytes) */
  private broadcastBodyBytes = 0;
  /** the same by the project the sender's token names ('' for none, like the public anon key) */
  private readonly broadcastBodyBytesBySpace = new Map<string, number>();
  /** each project's budget of broadcast deliveries ('' for tokens naming none; see FANOUT_PER_SECOND) */
  private readonly fanOutBudgets = new Map<string, TokenBucket>();
  private closing: Promise<void> | null = null;
  /** requests being served on each connection (see MAX_IN_FLIGHT_PER_CONNECTION) */
  private readonly inFlight = new WeakMap<object, number>();
  private address: { url: string; port: number } | null = null;

  constructor(options: RealtimeServerOptions) {
    if (!options.databaseUrl) throw new Error('RealtimeServer: databaseUrl is required');
    if (!options.jwtSecret) throw new Error('RealtimeServer: jwtSecret is required');
    this.opts = {
      host: '127.0.0.1',
      publication: 'supabase_realtime',
      heartbeatTimeoutMs: 60_000,
      joinTimeoutMs: 5_000,
      maxBufferedBytes: 8 * 1024 * 1024,
      maxTotalBufferedBytes: 256 * 1024 * 1024,
      ...options,
    };
    const userLog = options.log ?? (() => undefined);
    this.log = (entry) => {
      try {
        userLog({ component: 'realtime', ...entry });
      } catch {
        /* a logger must not break the server */
      }
    };
    const envDrop = process.env.MESHHOOK_REALTIME_DROP;
    this.dropChange = options.dropChange ?? (envDrop ? parseDropSpec(envDrop) : undefined);
    // openPool listens on every client, checked out or idle: pg emits 'error' on a client whose connection the
    // database cut (a crash, a restart), and an unheard one would end the process hosting this server
    this.pool = openPool(options.databaseUrl, { max: 4, keepAliveInitialDelayMillis: 0 }, (e) => this.log({ level: 'warn', msg: 'realtime pool connection error', error: e.message }));
    this.visibility = new Visibility(this.pool);
    this.feed = new ReplicationFeed({
      databaseUrl: options.databaseUrl,
      publication: this.opts.publication,
      slotName: options.slotName,
      pool: this.pool,
      log: this.log,
      onTransactions: (txs) => this.dispatch(txs),
      onLive: ({ lossy }) => this.onFeedLive(lossy),
      onDown: ({ lossy, error }) => this.onFeedDown(lossy, error),
    });
    Object.defineProperty(this.stats, 'feed', { get: () => this.feed.state, enumerable: true });
    // a connection that sends no request soon is let go (Node waits a minute by default), and beyond the cap a new
    // one is closed as it comes: a flood of idle connections cannot take every file descriptor of the process
    // (a body is gathered into blocks as it arrives, and one cut into tiny pieces is refused: see GatheredRequest)
    this.http = http.createServer({ IncomingMessage: GatheredRequest, headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1_000 }, (req, res) => this.onHttp(req, res));
    this.http.maxConnections = options.maxConnections ?? defaultMaxConnections();
    // and once they run short, one address (sockets of the public anon key from a single host) cannot take the rest
    shareConnections(this.http, this.http.maxConnections, (source, held) => this.log({ level: 'warn', msg: 'realtime connection refused', reason: 'its address holds a quarter of the connections and they run short', source, held }));
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket as Duplex, head));
    // a CONNECT (a proxy tunnel) is not served: a status and why, instead of a connection that just ends
    this.http.on('connect', (_req, socket: Duplex) => {
      socket.on('error', () => socket.destroy());
      socket.end(clientErrorResponse(405, 'Method Not Allowed', { error: 'this server is not a proxy: CONNECT is not served' }));
      // the socket is the server's no longer (no request or keep-alive timeout applies to it): a client that never
      // hangs up would hold a connection slot (maxConnections) and keep close() waiting, for good
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    // bytes the HTTP parser refused (a token too long for the headers, a malformed request) get a status and why,
    // as a browser's or supabase-js's error shows it, instead of a connection that just ends
    this.http.on('clientError', (e: NodeJS.ErrnoException, socket) => {
      if (e.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
      const [status, reason, code, message] = clientErrorAnswer(e.code, HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
      this.log({ level: 'info', msg: 'realtime request refused', status, code, reason: e.code ?? 'unknown' });
      socket.end(clientErrorResponse(status, reason, { error: message }));
    });
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_CLIENT_FRAME_BYTES, maxFragments: MAX_CLIENT_FRAGMENTS });
  }

  /** where supabase-js should point: createClient(url, anonKey) */
  get url(): string {
    if (!this.address) throw new Error('RealtimeServer: not started');
    return this.address.url;
  }

  get feedState(): FeedState {
    return this.feed.state;
  }

  async start(): Promise<{ url: string; port: number }> {
    if (this.address) return this.address;
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.opts.port ?? 0, this.opts.host, () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    const port = (this.http.address() as AddressInfo).port;
    const host = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
    this.address = { url: `http://${host}:${port}`, port };
    this.sweeper = setInterval(() => this.sweepTotalBuffered(), 500).unref();
    this.log({ level: 'info', msg: 'realtime listening', url: this.address.url, publication: this.opts.publication, slot: this.opts.slotName ?? '(temporary)' });
    return this.address;
  }

  /** End every socket and the replication connection. `dropSlot` drops a permanent slot too. */
  close(opts: { dropSlot?: boolean } = {}): Promise<void> {
    if (!this.closing) {
      this.closing = this.shutdown(opts);
      return this.closing;
    }
    // closed already, and now asked to drop the slot too
    if (opts.dropSlot && this.opts.slotName) {
      const slot = this.opts.slotName;
      return this.closing.then(async () => void (await dropSlot(this.opts.databaseUrl, slot)));
    }
    return this.closing;
  }

  private async shutdown(opts: { dropSlot?: boolean }): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    for (const p of this.waitingJoins) {
      p.cancelled = true;
      if (p.timer) clearTimeout(p.timer);
    }
    this.waitingJoins.clear();
    const closed: Promise<void>[] = [];
    for (const conn of this.conns) {
      closed.push(new Promise<void>((resolve) => (conn.ws.readyState === WebSocket.CLOSED ? resolve() : conn.ws.once('close', () => resolve()))));
      this.dropConn(conn);
      try {
        conn.ws.close(1001, 'server shutting down');
      } catch {
        conn.ws.terminate();
      }
    }
    this.http.close();
    this.http.closeAllConnections();
    const all = Promise.all(closed);
    if (!(await Promise.race([all.then(() => true), sleep(250).then(() => false)]))) {
      for (const conn of this.conns) conn.ws.terminate();
    }
    this.conns.clear();
    this.wss.close();
    await this.feed.close({ dropSlot: opts.dropSlot });
    await Promise.race([this.pool.end().catch(() => undefined), sleep(300)]);
    this.log({ level: 'info', msg: 'realtime closed' });
  }

  // ---------------------------------------------------------------- HTTP and upgrade

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const u = requestUrl(req);
    if (!u) return refuse(socket, 400, 'Bad Request: the path is not a URL path');
    const path = withoutTrailingSlashes(u.pathname);
    if (!SOCKET_PATHS.has(path)) return refuse(socket, 404, 'Not Found');
    if (this.closing) return refuse(socket, 503, 'Realtime is shutting down');
    const vsn = negotiateVsn(u.searchParams.get('vsn'));
    if (!vsn) return refuse(socket, 400, `unsupported vsn ${u.searchParams.get('vsn')}`);
    const header = req.headers['x-api-key'];
    const apikey = (Array.isArray(header) ? header[0] : header) || u.searchParams.get('apikey') || '';
    if (!apikey) return refuse(socket, 401, 'Unauthorized: apikey is required');
    verifyToken(this.opts.jwtSecret, apikey).then(
      (claims) => {
        if (this.closing) return refuse(socket, 503, 'Realtime is shutting down');
        try {
          this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, vsn, apikey, claims));
        } catch {
          socket.destroy();
        }
      },
      (e) => {
        this.log({ level: 'info', msg: 'realtime connection refused', reason: reasonOf(e) });
        refuse(socket, 401, reasonOf(e));
      },
    );
  }

  private onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    // requests pipelined on one connection are served as they are parsed: beyond a few in flight, the next is
    // answered 503 and the connection closed (as the intake does)
    const socket = req.socket;
    const held = (this.inFlight.get(socket) ?? 0) + 1;
    this.inFlight.set(socket, held);
    res.once('close', () => this.inFlight.set(socket, (this.inFlight.get(socket) ?? 1) - 1));
    if (held > MAX_IN_FLIGHT_PER_CONNECTION) {
      res.setHeader('retry-after', '1');
      res.setHeader('connection', 'close');
      sendJson(res, 503, { error: `Service Unavailable: more than ${MAX_IN_FLIGHT_PER_CONNECTION} requests at once on one connection: wait for the answers, or open another connection` });
      res.on('finish', () => req.destroy());
      return;
    }
    const u = requestUrl(req);
    if (!u) return sendJson(res, 400, { error: 'the path is not a URL path' });
    const path = withoutTrailingSlashes(u.pathname);
    if (req.method === 'GET' && (path === '/healthcheck' || path === '/realtime/v1/healthcheck')) return sendJson(res, 200, { status: 'ok' });
    const single = /^(?:\/realtime\/v1)?\/api\/broadcast\/([^/]+)\/events\/([^/]+)$/.exec(path);
    if (req.method === 'POST' && (BROADCAST_PATHS.has(path) || single)) {
      let named: { topic: string; event: string } | null = null;
      try {
        named = single ? { topic: decodeURIComponent(single[1]), event: decodeURIComponent(single[2]) } : null;
      } catch {
        return sendJson(res, 400, { error: 'the topic or event in the path is not valid percent-encoding' });
      }
      // answered before the body is read, and the connection let go instead of draining what is still coming
      const refuseUnread = (status: number, error: string, headers: Record<string, string> = {}) => {
        for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
        res.setHeader('connection', 'close');
        sendJson(res, status, { error });
        res.on('finish', () => req.destroy());
      };
      const announced = Number(req.headers['content-length']);
      if (Number.isFinite(announced) && announced > REST_BODY_LIMIT) return refuseUnread(413, 'Payload Too Large');
      // what this request holds of the budget is given back when its connection ends, which may be before its
      // sender is known: a listener added only after that check would never run (a sender that hangs up during it
      // kept its share for good, and a few such requests closed REST broadcast for everyone)
      let held = 0;
      let space = '';
      let gone = false;
      res.once('close', () => {
        gone = true;
        if (!held) return;
        this.broadcastBodyBytes -= held;
        const left = (this.broadcastBodyBytesBySpace.get(space) ?? 0) - held;
        if (left > 0) this.broadcastBodyBytesBySpace.set(space, left);
        else this.broadcastBodyBytesBySpace.delete(space);
        held = 0;
      });
      // who sends comes from the headers alone: a body is read only for a sender with a valid token, and only
      // within a budget of all bodies being read at once, so that many slow senders of megabyte bodies (with no
      // token at all, or the public anon key) cannot make the process, which the intake and workers share, grow
      // by a gigabyte
      this.broadcastSender(req, u)
        .then((sender) => {
          if (gone) return;
          if (typeof sender === 'string') return refuseUnread(401, sender);
          const share = Number.isSafeInteger(announced) && announced >= 0 ? announced : REST_BODY_LIMIT;
          const budget = this.opts.broadcastBodyBudgetBytes ?? DEFAULT_BROADCAST_BODY_BUDGET;
          // one project's senders (or all senders whose token names none: the anon key is public) take at most a
          // quarter of it, so that slow senders holding the anon key cannot close REST broadcast for every project
          space = typeof sender.project_id === 'string' ? sender.project_id : '';
          const ofSpace = this.broadcastBodyBytesBySpace.get(space) ?? 0;
          if (this.broadcastBodyBytes + share > budget || ofSpace + share > Math.max(2 * REST_BODY_LIMIT, Math.floor(budget / 4))) {
            this.log({ level: 'warn', msg: 'realtime REST broadcast refused', why: 'too many bodies being received at once', bodyBytesHeld: this.broadcastBodyBytes, ofProject: ofSpace });
            return refuseUnread(503, 'Service Unavailable: too many broadcasts are being received at once; send again in a moment', { 'retry-after': '1' });
          }
          this.broadcastBodyBytes += share;
          this.broadcastBodyBytesBySpace.set(space, ofSpace + share);
          held = share;
          return readBody(req, REST_BODY_LIMIT).then(
            (body) => this.restBroadcast(u, body, named, res, sender),
            (e) => (e instanceof FragmentedBody ? refuseUnread(400, FRAGMENTED_BODY) : refuseUnread(413, 'Payload Too Large')),
          );
        })
        .catch((e) => {
          this.log({ level: 'error', msg: 'realtime REST broadcast failed', error: String(e) });
          if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        });
      return;
    }
    sendJson(res, 404, { error: 'Not Found' });
  }

  /** The claims a REST broadcast is sent under, from its headers (or apikey query), or why it is refused. */
  private async broadcastSender(req: http.IncomingMessage, u: URL): Promise<TokenClaims | string> {
    const header = req.headers['apikey'] ?? req.headers['x-api-key'];
    const apikey = (Array.isArray(header) ? header[0] : header) || u.searchParams.get('apikey') || '';
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    try {
      // at least one signed token: an `sb_` key beside the apikey is only a label, never a credential on its own
      const jwtBearer = bearer && !bearer.startsWith('sb_') ? bearer : null;
      if (!apikey && !jwtBearer) throw new TokenError('InvalidJWTToken', 'Fields `role` and `exp` are required in JWT');
      const byKey = apikey ? await verifyToken(this.opts.jwtSecret, apikey) : null;
      const byBearer = jwtBearer ? await verifyToken(this.opts.jwtSecret, jwtBearer) : null;
      // the bearer speaks for the sender, as it does for the real server's RLS check
      return (byBearer ?? byKey)!;
    } catch (e) {
      return reasonOf(e);
    }
  }

  private async restBroadcast(
    u: URL,
    body: Buffer,
    single: { topic: string; event: string } | null,
    res: http.ServerResponse,
    sender: TokenClaims,
  ): Promise<void> {
    const req = res.req;
    let messages: Array<{ topic?: unknown; event?: unknown; payload?: unknown; private?: unknown }>;
    if (single) {
      const isPrivate = u.searchParams.get('private') === 'true';
      let payload: unknown;
      if ((req.headers['content-type'] ?? '').startsWith('application/octet-stream')) {
        const problem = broadcastProblem(`realtime:${single.topic}`, single.event, null, { event: single.event, meta: null, bytes: body }, undefined);
        if (problem) return sendJson(res, 400, { error: problem });
        const key = broadcastKey(sender, `realtime:${single.topic}`);
        if (!isPrivate && !this.takeFanOut(spaceOf(sender), this.topics.get(key)?.size ?? 0)) return this.tooManyMessages(res, spaceOf(sender));
        if (!isPrivate) this.fanOut(key, null, single.event, null, { event: single.event, meta: null, bytes: body });
        res.writeHead(202).end();
        return;
      }
      try {
        payload = body.length ? JSON.parse(body.toString('utf8')) : {};
      } catch {
        return sendJson(res, 400, { error: 'body is not JSON' });
      }
      messages = [{ topic: single.topic, event: single.event, payload, private: isPrivate }];
    } else {
      try {
        const parsed = JSON.parse(body.toString('utf8')) as { messages?: unknown };
        if (!Array.isArray(parsed.messages)) throw new Error('messages');
        messages = parsed.messages;
      } catch {
        return sendJson(res, 400, { error: 'expected {"messages": [{"topic", "event", "payload"}]}' });
      }
      if (messages.length > MAX_REST_MESSAGES) return sendJson(res, 413, { error: `Too many messages: a broadcast request may carry at most ${MAX_REST_MESSAGES}` });
    }
    const valid = messages.filter((m) => m !== null && typeof m === 'object' && typeof m.topic === 'string' && typeof m.event === 'string') as Array<{ topic: string; event: string; payload?: unknown; private?: unknown }>;
    // all or none: a message that cannot be sent is refused before any is
    for (const m of valid) {
      const problem = broadcastProblem(`realtime:${m.topic}`, m.event, m.payload ?? {}, null, undefined);
      if (problem) return sendJson(res, 400, { error: problem });
    }
    // private channels cannot be joined here (see join): nothing listens there
    const sent = valid.filter((m) => m.private !== true);
    // the whole request's deliveries are taken from the project's budget before any is made: all or none
    let cost = 0;
    for (const m of sent) cost += this.topics.get(broadcastKey(sender, `realtime:${m.topic}`))?.size ?? 0;
    if (!this.takeFanOut(spaceOf(sender), cost)) return this.tooManyMessages(res, spaceOf(sender));
    let slice = 0;
    for (const m of sent) {
      // a large fan-out goes out in slices, letting the intake, the workers and the live logs in between
      if (slice >= FANOUT_SLICE_FRAMES) {
        slice = 0;
        await new Promise((r) => setImmediate(r));
      }
      slice += this.fanOut(broadcastKey(sender, `realtime:${m.topic}`), null, m.event, { type: 'broadcast', event: m.event, payload: m.payload ?? {} });
    }
    res.writeHead(202).end();
  }

  /** take `cost` deliveries from the project's broadcast budget (see FANOUT_PER_SECOND) */
  private takeFanOut(space: string, cost: number): boolean {
    if (cost <= 0) return true;
    let bucket = this.fanOutBudgets.get(space);
    if (!bucket) this.fanOutBudgets.set(space, (bucket = new TokenBucket(FANOUT_PER_SECOND, FANOUT_PER_SECOND)));
    return bucket.take(cost);
  }

  private tooManyMessages(res: http.ServerResponse, space: string): void {
    this.log({ level: 'warn', msg: 'realtime REST broadcast refused', why: 'over the fan-out budget', project: space || '(none)' });
    res.setHeader('retry-after', '1');
    sendJson(res, 429, { error: FANOUT_REFUSAL });
  }

  // ---------------------------------------------------------------- sockets

  private onConnection(ws: WebSocket, vsn: Vsn, apikey: string, claims: TokenClaims): void {
    const conn: Conn = {
      id: this.nextConnId++,
      ws,
      vsn,
      apikey,
      channels: new Map(),
      pending: new Map(),
      bindingBytes: 0,
      presenceBytes: 0,
      joins: new TokenBucket(JOIN_BURST, JOINS_PER_SECOND),
      messages: new TokenBucket(2 * (this.opts.maxMessagesPerSecond ?? MESSAGES_PER_SECOND), this.opts.maxMessagesPerSecond ?? MESSAGES_PER_SECOND),
      framesWaiting: 0,
      written: () => void conn.framesWaiting--,
      hbTimer: setTimeout(() => this.heartbeatTimeout(conn), this.opts.heartbeatTimeoutMs),
      closed: false,
      overSince: null,
    };
    this.conns.add(conn);
    this.stats.sockets = this.conns.size;
    this.log({ level: 'debug', msg: 'realtime socket open', socket: conn.id, vsn, role: claims.role });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      // (a socket being closed: what it still sends is not read)
      if (conn.closed) return;
      if (!conn.messages.take(1)) {
        this.log({ level: 'warn', msg: 'realtime socket closed', socket: conn.id, why: MESSAGE_RATE_REFUSAL });
        this.dropConn(conn);
        ws.close(1008, MESSAGE_RATE_REFUSAL);
        setTimeout(() => ws.terminate(), 1000).unref();
        return;
      }
      conn.hbTimer.refresh();
      let msg: PhxMessage & { raw?: RawBroadcast };
      try {
        msg = decodeFrame(vsn, toBuffer(data), isBinary);
      } catch (e) {
        this.log({ level: 'warn', msg: 'realtime bad frame', socket: conn.id, error: e instanceof FrameError ? e.message : String(e) });
        return;
      }
      try {
        this.onMessage(conn, msg);
      } catch (e) {
        this.log({ level: 'error', msg: 'realtime message handler failed', socket: conn.id, event: msg.event, error: String(e) });
      }
    });
    ws.on('close', () => {
      this.dropConn(conn);
      this.conns.delete(conn);
      this.stats.sockets = this.conns.size;
    });
    ws.on('error', (e) => this.log({ level: 'debug', msg: 'realtime socket error', socket: conn.id, error: e.message }));
  }

  private heartbeatTimeout(conn: Conn): void {
    if (conn.closed) return;
    this.log({ level: 'info', msg: 'realtime heartbeat timeout', socket: conn.id, afterMs: this.opts.heartbeatTimeoutMs });
    this.dropConn(conn);
    conn.ws.close(1000, 'heartbeat timeout');
    setTimeout(() => conn.ws.terminate(), 1000).unref();
  }

  /** forget a socket's channels and pending joins (the socket itself is closed by the caller or already) */
  private dropConn(conn: Conn): void {
    if (conn.closed) return;
    conn.closed = true;
    clearTimeout(conn.hbTimer);
    for (const p of conn.pending.values()) this.cancelPending(p);
    conn.pending.clear();
    for (const ch of [...conn.channels.values()]) this.removeChannel(ch);
  }

  private send(conn: Conn, msg: PhxMessage): boolean {
    return this.sendRaw(conn, encodeFrame(conn.vsn, msg));
  }

  /** `text`: a Buffer that holds a text (JSON) frame; a string always is one */
  private sendRaw(conn: Conn, data: string | Buffer, text = typeof data === 'string'): boolean {
    if (!this.admit(conn)) return false;
    conn.framesWaiting++;
    conn.ws.send(data, { binary: !text }, conn.written);
    this.stats.framesSent++;
    return true;
  }

  /**
   * One text frame written as fragments, sent in one go (nothing can come between them): a postgres_changes frame
   * is its channel's topic and binding ids around the change's data, which is the same for every subscriber of a
   * role, so every channel's frame refers to one buffer of it instead of holding a copy. (A socket joined to a
   * hundred channels of one project was queued a hundred copies of each change: thirty such sockets made one
   * 1 MB event hold over a gigabyte and stall the event loop for nearly two seconds.)
   */
  private sendFragments(conn: Conn, parts: Buffer[], change = true): boolean {
    if (!this.admit(conn)) return false;
    conn.framesWaiting += parts.length;
    for (let i = 0; i < parts.length; i++) conn.ws.send(parts[i], { binary: false, fin: i === parts.length - 1 }, conn.written);
    this.stats.framesSent++;
    if (parts.length > 1 && change) this.stats.sharedDataFrames++;
    return true;
  }

  /** Whether a frame may be sent to this socket now; a slow one is closed instead. Corks the socket for this tick. */
  private admit(conn: Conn): boolean {
    const ws = conn.ws;
    if (conn.closed && ws.readyState !== WebSocket.OPEN) return false;
    if (ws.readyState !== WebSocket.OPEN) return false;
    const buffered = backlog(conn);
    if (buffered <= this.opts.maxBufferedBytes) conn.overSince = null;
    else if (conn.overSince === null) conn.overSince = Date.now();
    if (conn.overSince !== null && (Date.now() - conn.overSince > SLOW_GRACE_MS || buffered > SLOW_HARD_FACTOR * this.opts.maxBufferedBytes)) {
      // back-pressure policy: a subscriber that stays over the limit (or far over it) is cut off; it reconnects
      // and catches up, and the feed and every other subscriber go on without waiting for it
      this.stats.slowSocketsClosed++;
      this.log({ level: 'warn', msg: 'realtime slow subscriber closed', socket: conn.id, bufferedBytes: ws.bufferedAmount, framesWaiting: conn.framesWaiting });
      this.dropConn(conn);
      ws.terminate();
      return false;
    }
    // frames sent in one turn of the event loop (a transaction's changes) leave in one write
    const socket = (ws as unknown as { _socket?: import('node:net').Socket })._socket;
    if (socket && !conn.corked) {
      conn.corked = true;
      socket.cork();
      process.nextTick(() => {
        conn.corked = false;
        socket.uncork();
      });
    }
    return true;
  }

  /**
   * Many slow readers together, each under its own limit: every half second the bytes waiting for all sockets
   * are counted, and over the budget the sockets that have held at least SLOW_SHARE_BYTES at two counts in a row
   * (slow readers, whose backlog stays) are closed, the heaviest first, until half the budget is left; they
   * reconnect and catch up. A burst (a transaction's changes are written in one turn) is gone by the next count,
   * so a reader that keeps up never loses its socket to one.
   */
  private sweepTotalBuffered(): void {
    for (const [space, bucket] of this.fanOutBudgets) if (bucket.full()) this.fanOutBudgets.delete(space);
    let total = 0;
    for (const c of this.conns) {
      const held = backlog(c);
      total += held;
      c.heavyCounts = held >= SLOW_SHARE_BYTES ? (c.heavyCounts ?? 0) + 1 : 0;
    }
    const budget = this.opts.maxTotalBufferedBytes ?? Infinity;
    if (total <= budget) return;
    const heaviest = [...this.conns].filter((c) => (c.heavyCounts ?? 0) >= 2).sort((a, b) => backlog(b) - backlog(a));
    for (const c of heaviest) {
      if (total <= budget / 2) break;
      const held = backlog(c);
      this.stats.slowSocketsClosed++;
      this.log({ level: 'warn', msg: 'realtime slow subscriber closed', socket: c.id, bufferedBytes: c.ws.bufferedAmount, framesWaiting: c.framesWaiting, why: 'all sockets together over the budget' });
      this.dropConn(c);
      c.ws.terminate();
      total -= held;
    }
  }

  private onMessage(conn: Conn, msg: PhxMessage & { raw?: RawBroadcast }): void {
    if (conn.closed) return;
    if (msg.topic === 'phoenix') {
      if (msg.event === 'heartbeat') this.send(conn, reply(msg, 'ok', {}));
      return;
    }
    switch (msg.event) {
      case 'phx_join':
        this.join(conn, msg).catch((e) => {
          this.log({ level: 'error', msg: 'realtime join failed', socket: conn.id, topic: msg.topic, error: String(e).slice(0, 200) });
          // answered, and no longer counted among the socket's channels
          const p = conn.pending.get(msg.topic);
          if (p) {
            this.cancelPending(p);
            conn.pending.delete(msg.topic);
          }
          if (!conn.closed) this.send(conn, reply(msg, 'error', { reason: 'the join could not be read' }));
        });
        return;
      case 'phx_leave': {
        const p = conn.pending.get(msg.topic);
        if (p) {
          this.cancelPending(p);
          conn.pending.delete(msg.topic);
        }
        const ch = conn.channels.get(msg.topic);
        if (ch) this.removeChannel(ch);
        this.send(conn, reply(msg, 'ok', {}));
        return;
      }
    }
    const ch = conn.channels.get(msg.topic);
    if (!ch) {
      this.send(conn, reply(msg, 'error', { reason: 'unmatched topic' }));
      return;
    }
    switch (msg.event) {
      case 'broadcast':
        return this.clientBroadcast(ch, msg);
      case 'presence':
        return this.clientPresence(ch, msg);
      case 'access_token':
        this.refreshToken(ch, msg).catch((e) => this.log({ level: 'error', msg: 'realtime token refresh failed', topic: ch.topic, error: String(e) }));
        return;
      default:
        this.log({ level: 'debug', msg: 'realtime unknown event', socket: conn.id, event: msg.event });
    }
  }

  // ---------------------------------------------------------------- join / leave / tokens

  private channelToken(conn: Conn, payload: Record<string, unknown>): string {
    for (const k of ['access_token', 'user_token']) {
      const t = payload[k];
      if (typeof t === 'string' && t !== '' && !t.startsWith('sb_')) return t;
    }
    return conn.apikey;
  }

  private async join(conn: Conn, msg: PhxMessage): Promise<void> {
    const topic = msg.topic;
    if (!topic.startsWith('realtime:')) {
      this.send(conn, reply(msg, 'error', { reason: 'unmatched topic' }));
      return;
    }
    const name = topic.slice('realtime:'.length);
    if (Buffer.byteLength(topic) > MAX_NAME_BYTES) {
      this.send(conn, reply(msg, 'error', { reason: `Topic too long: at most ${MAX_NAME_BYTES} bytes` }));
      return;
    }
    // the join's ref is kept with its channel for as long as it lives (and repeated in its presence_state and
    // phx_close frames): a ref of a megabyte, a hundred channels a socket, held 100 MB a socket for the anon key
    for (const r of [msg.join_ref, msg.ref]) {
      if (r !== null && Buffer.byteLength(r) > MAX_NAME_BYTES) {
        this.send(conn, reply(msg, 'error', { reason: `join_ref too long: at most ${MAX_NAME_BYTES} bytes` }));
        return;
      }
    }
    const presenceKey = (msg.payload as { config?: { presence?: { key?: unknown } } } | null)?.config?.presence?.key;
    if (typeof presenceKey === 'string' && Buffer.byteLength(presenceKey) > MAX_NAME_BYTES) {
      this.send(conn, reply(msg, 'error', { reason: `Presence key too long: at most ${MAX_NAME_BYTES} bytes` }));
      return;
    }
    // a socket holds a bounded number of channels (Supabase's own limit per client is 100), so one client cannot
    // grow the server's memory without end
    if (!conn.channels.has(topic) && !conn.pending.has(topic) && conn.channels.size + conn.pending.size >= MAX_CHANNELS_PER_SOCKET) {
      this.send(conn, reply(msg, 'error', { reason: `Too many channels: a socket may join at most ${MAX_CHANNELS_PER_SOCKET}` }));
      return;
    }
    if (!conn.joins.take(1)) {
      this.log({ level: 'debug', msg: 'realtime join refused', socket: conn.id, topic, reason: JOIN_RATE_REFUSAL });
      this.send(conn, reply(msg, 'error', { reason: JOIN_RATE_REFUSAL }));
      return;
    }
    const previous = conn.pending.get(topic);
    if (previous) this.cancelPending(previous);
    // a join on a joined topic replaces the channel (Phoenix closes the old one on its old join_ref)
    const old = conn.channels.get(topic);
    if (old) {
      this.removeChannel(old);
      this.send(conn, { join_ref: old.joinRef, ref: old.joinRef, topic, event: 'phx_close', payload: {} });
    }
    const pending: PendingJoin = { cancelled: false, timer: null, complete: null };
    conn.pending.set(topic, pending);
    const payload = (msg.payload && typeof msg.payload === 'object' ? msg.payload : {}) as Record<string, unknown>;
    const config = (payload.config && typeof payload.config === 'object' ? payload.config : {}) as Record<string, any>;
    const fail = (reason: string) => {
      if (conn.pending.get(topic) === pending) conn.pending.delete(topic);
      this.log({ level: 'info', msg: 'realtime join refused', socket: conn.id, topic, reason });
      this.send(conn, reply(msg, 'error', { reason }));
    };
    let claims: TokenClaims;
    try {
      claims = await verifyToken(this.opts.jwtSecret, this.channelToken(conn, payload));
    } catch (e) {
      if (!pending.cancelled && !conn.closed) fail(reasonOf(e));
      return;
    }
    if (pending.cancelled || conn.closed) return;
    // a role above row-level security would see every project's rows: never, whoever signed the token
    if (await this.visibility.bypassesPolicies(claims.role).catch(() => false)) {
      if (!pending.cancelled && !conn.closed) fail(`Unauthorized: role "${claims.role}" is not bound by row-level security`);
      return;
    }
    if (pending.cancelled || conn.closed) return;
    if (config.private === true) {
      // private channels need realtime.messages policies, which this server does not implement: refused like a
      // real server without such a policy
      fail(`Unauthorized: You do not have permissions to read from this Channel topic: ${name}`);
      return;
    }
    const requested: unknown[] = Array.isArray(config.postgres_changes) ? config.postgres_changes : [];
    if (requested.length > MAX_BINDINGS_PER_CHANNEL) {
      fail(`Too many postgres_changes bindings: a channel may have at most ${MAX_BINDINGS_PER_CHANNEL}`);
      return;
    }
    const tooLong = requested.find((r) => typeof (r as { filter?: unknown } | null)?.filter === 'string' && ((r as { filter: string }).filter.length > MAX_FILTER_LENGTH));
    if (tooLong) {
      fail(`postgres_changes filter too long: at most ${MAX_FILTER_LENGTH} characters`);
      return;
    }
    // a binding's event, schema and table are kept with it (and echoed) as sent: names, not counted in its weight
    const longName = requested.find((r) => r !== null && typeof r === 'object' && ['event', 'schema', 'table'].some((k) => typeof (r as Record<string, unknown>)[k] === 'string' && Buffer.byteLength((r as Record<string, string>)[k]) > MAX_NAME_BYTES));
    if (longName) {
      fail(`postgres_changes event, schema and table are names: at most ${MAX_NAME_BYTES} bytes each`);
      return;
    }
    const bindings = requested.map(parseBinding);
    const bindingBytes = bindings.reduce((n, b) => n + bindingWeight(b.filterText), 0);
    const space = typeof claims.project_id === 'string' ? claims.project_id : '';
    const complete = () => {
      if (pending.cancelled || conn.closed) return;
      // counted when the channel is made (a pending join holds its bindings only until then)
      const overSocket = conn.bindingBytes + bindingBytes > MAX_BINDING_BYTES_PER_SOCKET;
      const overProject = (this.bindingBytesByProject.get(space) ?? 0) + bindingBytes > MAX_BINDING_BYTES_PER_PROJECT;
      const overServer = this.bindingBytes + bindingBytes > MAX_BINDING_BYTES_TOTAL;
      if (bindingBytes > 0 && (overSocket || overProject || overServer)) {
        if (pending.timer) clearTimeout(pending.timer);
        this.waitingJoins.delete(pending);
        fail(
          overSocket
            ? `Too many postgres_changes bindings on this socket: their filters may weigh at most ${MAX_BINDING_BYTES_PER_SOCKET / 1024} KiB`
            : overProject
              ? `Too many postgres_changes subscriptions for this ${space ? 'project' : 'key'}: try again later`
              : 'Too many postgres_changes subscriptions on this server: try again later',
        );
        return;
      }
      if (pending.timer) clearTimeout(pending.timer);
      this.waitingJoins.delete(pending);
      conn.pending.delete(topic);
      const ch: Channel = {
        conn,
        topic,
        name,
        joinRef: msg.join_ref ?? msg.ref,
        topicKey: broadcastKey(claims, topic),
        claims,
        claimsKey: JSON.stringify(claims),
        role: claims.role,
        bindings,
        bindingBytes,
        space,
        self: config.broadcast?.self === true,
        ack: config.broadcast?.ack === true,
        presenceEnabled: config.presence?.enabled === true,
        presenceKey: typeof config.presence?.key === 'string' && config.presence.key !== '' ? config.presence.key : randomUUID(),
        expTimer: null,
        active: true,
      };
      this.addChannel(ch);
      this.send(conn, reply(msg, 'ok', { postgres_changes: bindings.map((b) => b.echo) }));
      if (ch.presenceEnabled) this.sendPresenceState(ch);
      if (bindings.length > 0)
        this.announceSubscription(ch).catch((e) => this.log({ level: 'error', msg: 'realtime system message failed', topic: ch.topic, error: String(e) }));
      this.log({ level: 'debug', msg: 'realtime joined', socket: conn.id, topic, role: ch.role, bindings: bindings.length });
    };
    if (bindings.length === 0 || this.feed.state === 'live') {
      complete();
      return;
    }
    // postgres_changes need the feed: hold the join until it is live (then complete synchronously,
    // before any change of the new stream is dispatched) or answer with an error after joinTimeoutMs
    this.feed.start();
    pending.complete = complete;
    pending.timer = setTimeout(() => {
      if (pending.cancelled || conn.closed) return;
      this.waitingJoins.delete(pending);
      pending.cancelled = true;
      fail(UNAVAILABLE);
    }, this.opts.joinTimeoutMs);
    this.waitingJoins.add(pending);
  }

  private cancelPending(p: PendingJoin): void {
    p.cancelled = true;
    if (p.timer) clearTimeout(p.timer);
    this.waitingJoins.delete(p);
  }

  private addChannel(ch: Channel): void {
    ch.conn.channels.set(ch.topic, ch);
    ch.conn.bindingBytes += ch.bindingBytes;
    this.bindingBytes += ch.bindingBytes;
    this.bindingBytesByProject.set(ch.space, (this.bindingBytesByProject.get(ch.space) ?? 0) + ch.bindingBytes);
    let set = this.topics.get(ch.topicKey);
    if (!set) this.topics.set(ch.topicKey, (set = new Set()));
    set.add(ch);
    if (ch.bindings.length > 0) {
      this.pgChannels.add(ch);
      this.indexPg(ch);
    }
    this.armExpiry(ch);
    this.stats.channels++;
  }

  /**
   * postgres_changes channels by the project their token names ('' for none) and then by role: a change is matched
   * only against its project's channels and those naming none, and a role that may not read the table is passed
   * over whole (the anon key's channels, candidates for every project's changes, cost nothing on the run log)
   */
  private indexPg(ch: Channel): void {
    const k = projectOf(ch);
    let byRole = this.pgByProject.get(k);
    if (!byRole) this.pgByProject.set(k, (byRole = new Map()));
    let set = byRole.get(ch.role);
    if (!set) byRole.set(ch.role, (set = new Set()));
    set.add(ch);
  }

  private unindexPg(ch: Channel): void {
    const k = projectOf(ch);
    const byRole = this.pgByProject.get(k);
    const set = byRole?.get(ch.role);
    set?.delete(ch);
    if (set?.size === 0) byRole!.delete(ch.role);
    if (byRole?.size === 0) this.pgByProject.delete(k);
  }

  private removeChannel(ch: Channel): void {
    if (!ch.active) return;
    ch.active = false;
    ch.conn.bindingBytes -= ch.bindingBytes;
    this.bindingBytes -= ch.bindingBytes;
    const left = (this.bindingBytesByProject.get(ch.space) ?? 0) - ch.bindingBytes;
    if (left > 0) this.bindingBytesByProject.set(ch.space, left);
    else this.bindingBytesByProject.delete(ch.space);
    if (ch.expTimer) clearTimeout(ch.expTimer);
    if (ch.conn.channels.get(ch.topic) === ch) ch.conn.channels.delete(ch.topic);
    const set = this.topics.get(ch.topicKey);
    set?.delete(ch);
    if (set && set.size === 0) this.topics.delete(ch.topicKey);
    this.pgChannels.delete(ch);
    this.unindexPg(ch);
    this.untrack(ch);
    this.stats.channels--;
  }

  /** close a channel from the server side: system error, then phx_close (the client does not rejoin) */
  private stopChannel(ch: Channel, reason: string): void {
    if (!ch.active) return;
    this.log({ level: 'info', msg: 'realtime channel stopped', socket: ch.conn.id, topic: ch.topic, reason });
    this.send(ch.conn, { join_ref: ch.joinRef, ref: null, topic: ch.topic, event: 'system', payload: { extension: 'system', status: 'error', message: reason } });
    this.send(ch.conn, { join_ref: ch.joinRef, ref: ch.joinRef, topic: ch.topic, event: 'phx_close', payload: {} });
    this.removeChannel(ch);
  }

  private armExpiry(ch: Channel): void {
    if (ch.expTimer) clearTimeout(ch.expTimer);
    const ms = ch.claims.exp * 1000 - Date.now();
    ch.expTimer = setTimeout(
      () => {
        if (!ch.active) return;
        if (ch.claims.exp * 1000 > Date.now()) return this.armExpiry(ch);
        this.stopChannel(ch, `InvalidJWTToken: Token has expired ${Math.max(0, Math.floor(Date.now() / 1000 - ch.claims.exp))} seconds ago`);
      },
      Math.min(Math.max(ms + 5, 0), MAX_TIMER_MS),
    );
    ch.expTimer.unref();
  }

  private async refreshToken(ch: Channel, msg: PhxMessage): Promise<void> {
    const token = (msg.payload as Record<string, unknown> | null)?.access_token;
    if (typeof token !== 'string' || token === '' || token.startsWith('sb_')) return;
    try {
      const claims = await verifyToken(this.opts.jwtSecret, token);
      if (!ch.active) return;
      // a channel's broadcasts and presence belong to one project: a token for another cannot move it there
      if (broadcastKey(claims, ch.topic) !== ch.topicKey) return this.stopChannel(ch, 'Unauthorized: the new token is for another project than the channel');
      // a role above row-level security would see every project's rows, as at a join: never, whoever signed the token
      if (await this.visibility.bypassesPolicies(claims.role).catch(() => false)) {
        if (ch.active) this.stopChannel(ch, `Unauthorized: role "${claims.role}" is not bound by row-level security`);
        return;
      }
      if (!ch.active) return;
      // (the project cannot change, checked above; the role can, and the channel is indexed by it)
      const indexed = this.pgChannels.has(ch);
      if (indexed) this.unindexPg(ch);
      ch.claims = claims;
      ch.claimsKey = JSON.stringify(claims);
      ch.role = claims.role;
      if (indexed) this.indexPg(ch);
      this.armExpiry(ch);
    } catch (e) {
      if (ch.active) this.stopChannel(ch, reasonOf(e));
    }
  }

  /** the `system` postgres_changes message, once the feed carries this channel's bindings */
  private async announceSubscription(ch: Channel): Promise<void> {
    const problems: string[] = [];
    try {
      for (const b of ch.bindings) {
        if (b.error) problems.push(b.error);
        else if (!(await this.visibility.published(this.opts.publication, b.schema, b.table)))
          problems.push(`[schema: ${b.schema ?? '*'}, table: ${b.table ?? '*'}, filters: ${b.filter ? `[${b.filter.column}, ${b.filter.op}, ${b.filter.values.join(',')}]` : '[]'}]`);
      }
      if (!(await this.visibility.roleExists(ch.role))) problems.push(`role "${ch.role}" does not exist`);
    } catch (e) {
      this.log({ level: 'warn', msg: 'realtime subscription check failed', topic: ch.topic, error: String(e) });
    }
    if (!ch.active) return;
    const payload =
      problems.length === 0
        ? { extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL', channel: ch.name }
        : {
            extension: 'postgres_changes',
            status: 'error',
            message: `Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: ${problems.join('; ')}`,
            channel: ch.name,
          };
    this.send(ch.conn, { join_ref: ch.joinRef, ref: null, topic: ch.topic, event: 'system', payload });
  }

  // ---------------------------------------------------------------- feed state

  private onFeedLive(lossy: boolean): void {
    if (lossy) this.errorPgChannels('replication slot was re-created: changes may have been lost');
    for (const p of [...this.waitingJoins]) p.complete?.();
  }

  private onFeedDown(lossy: boolean, error: string): void {
    if (lossy) this.errorPgChannels(`replication interrupted (${error}): changes may be lost`);
  }

  /** phx_error on every postgres_changes channel: the client rejoins (held until the feed is back) and catches up */
  private errorPgChannels(why: string): void {
    const chans = [...this.pgChannels];
    if (chans.length === 0) return;
    this.log({ level: 'warn', msg: 'realtime erroring postgres_changes channels', channels: chans.length, why });
    for (const ch of chans) {
      this.send(ch.conn, { join_ref: ch.joinRef, ref: ch.joinRef, topic: ch.topic, event: 'phx_error', payload: {} });
      this.removeChannel(ch);
    }
  }

  // ---------------------------------------------------------------- postgres_changes

  /**
   * Deliver a run of committed transactions, in commit order. While the server
   * keeps up this is one transaction; when it falls behind, the feed hands over
   * what queued up, and the visibility checks for all of it take one round trip.
   */
  private async dispatch(txs: FeedTransaction[]): Promise<void> {
    this.stats.transactions += txs.length;
    this.stats.deliveries++;
    interface Prepared {
      tx: FeedTransaction;
      change: FeedChange;
      record: Record<string, unknown> | null;
      oldRecord: Record<string, unknown> | null;
      /** claims as they were when matched (an access_token refresh may land while the checks run) */
      targets: Array<{ ch: Channel; ids: number[]; role: string; claims: Record<string, unknown>; claimsKey: string }>;
      needsCheck: boolean;
    }
    const prepared: Prepared[] = [];
    // which roles may read which of the changed tables at all: asked once per role and table (cached)
    const readable = new Map<string, boolean>();
    const roles = new Set<string>();
    for (const ch of this.pgChannels) roles.add(ch.role);
    for (const tx of txs)
      for (const change of tx.changes)
        for (const role of roles) {
          const k = `${role}\u0000${change.rel.oid}`;
          if (!readable.has(k)) readable.set(k, (await this.visibility.selectableColumns(change.rel, role).catch(() => new Set<string>([' ']))).size > 0);
        }
    for (const tx of txs) for (const change of tx.changes) {
      const rel = change.rel;
      const record = change.newRow ? jsonRow(rel, change.newRow) : null;
      const oldRecord = change.oldRow ? jsonRow(rel, change.oldRow) : null;
      if (this.dropChange) {
        const subject = (change.type === 'DELETE' ? oldRecord : record) ?? {};
        let drop = false;
        try {
          drop = this.dropChange({ table: rel.table, record: subject });
        } catch {
          drop = false;
        }
        if (drop) {
          this.stats.dropped.push({ table: rel.table, type: change.type, record: subject, commitTimestamp: tx.commitTimestamp });
          this.log({ level: 'warn', msg: 'realtime failpoint dropped a change', table: rel.table, type: change.type });
          continue;
        }
      }
      const filterRow = change.type === 'DELETE' ? change.oldRow : change.newRow;
      const rowProject = filterRow?.project_id;
      const targets: Prepared['targets'] = [];
      // a second wall behind row-level security: a token for one project is never sent another project's row,
      // even by a database whose policies were weakened; and only those channels are matched, so one project's
      // subscribers (or anyone's with many bindings) cost nothing on another project's changes
      // the channels of tokens naming no project (the public anon key's) are candidates for every project's changes:
      // a role that may read no column of the table (the anon key on the run log) is never sent a row of it, and its
      // channels are passed over as one set (looked at one by one, 26,000 anon-key channels, within their binding
      // budget, made every project's webhooks cost 7 times the CPU)
      const candidates: Array<Set<Channel> | undefined> = [];
      if (rowProject == null) candidates.push(this.pgChannels);
      else
        for (const space of [String(rowProject), ''])
          for (const [role, set] of this.pgByProject.get(space) ?? []) if (readable.get(`${role}\u0000${rel.oid}`) !== false) candidates.push(set);
      for (const set of candidates) for (const ch of set ?? []) {
        if (typeof ch.claims.project_id === 'string' && rowProject != null && rowProject !== ch.claims.project_id) continue;
        if (readable.get(`${ch.role}\u0000${rel.oid}`) === false) continue;
        const ids: number[] = [];
        for (const b of ch.bindings) if (bindingMatches(b, change.type, rel, filterRow, change.oldRow)) ids.push(b.id);
        if (ids.length > 0) targets.push({ ch, ids: [...new Set(ids)], role: ch.role, claims: ch.claims, claimsKey: ch.claimsKey });
      }
      if (targets.length === 0) continue;
      // a row of the log the engine did not sign is not the run's: a subscriber would hold it in place of the
      // real event of that number, which may come once the forged row is gone (src/realtime/live-log.ts).
      // Checked only for a row someone would be sent: with no subscriber it costs nothing.
      if (this.opts.chainKeys && rel.table === 'run_events' && change.newRow && change.type !== 'DELETE') {
        const why = unsignedEvent(change.newRow, this.opts.chainKeys);
        if (why) {
          this.stats.unsignedNotSent++;
          this.log({ level: 'warn', msg: 'realtime change not sent: a run_events row the engine did not write', run: change.newRow.run_id, seq: change.newRow.seq, why });
          continue;
        }
      }
      prepared.push({ tx, change, record, oldRecord, targets, needsCheck: rel.rls && change.type !== 'DELETE' && rel.primaryKey.length > 0 });
    }
    if (prepared.length === 0) return;

    // the columns each role may read, first: a role that may not read a row's key (the anon key on the run log)
    // can never be shown the row, and left in the batch below its refusal would stop the whole batch and send
    // every subscriber's check down the slow path, one transaction each
    const columnsFor = new Map<string, Set<string>>();
    for (const p of prepared) {
      for (const t of p.targets) {
        const k = `${t.role}\u0000${p.change.rel.oid}`;
        if (!columnsFor.has(k)) columnsFor.set(k, await this.visibility.selectableColumns(p.change.rel, t.role));
      }
      if (p.needsCheck) p.targets = p.targets.filter((t) => p.change.rel.primaryKey.every((c) => columnsFor.get(`${t.role}\u0000${p.change.rel.oid}`)!.has(c)));
    }

    // one visibility query per (claims, table) for the whole transaction
    const groups = new Map<string, { role: string; claims: Record<string, unknown>; rel: RelationInfo; keys: Array<Array<string | null>>; index: Map<string, number> }>();
    for (const p of prepared) {
      if (!p.needsCheck) continue;
      const rel = p.change.rel;
      const key = rel.primaryKey.map((c) => p.change.newRow?.[c] ?? null);
      const keyText = JSON.stringify(key);
      for (const t of p.targets) {
        const g = `${t.claimsKey}\u0000${rel.oid}`;
        let group = groups.get(g);
        if (!group) groups.set(g, (group = { role: t.role, claims: t.claims, rel, keys: [], index: new Map() }));
        if (!group.index.has(keyText)) {
          group.index.set(keyText, group.keys.length);
          group.keys.push(key);
        }
      }
    }
    // one round trip for every group, once the commit is visible to new snapshots
    const verdicts = new Map<string, boolean[]>();
    const groupList = [...groups];
    const answers = await this.visibility.visibleGroups([...new Set(txs.map((t) => t.xid))], groupList.map(([, group]) => group));
    groupList.forEach(([g], i) => verdicts.set(g, answers[i]));

    for (const p of prepared) {
      const rel = p.change.rel;
      // let the sockets flush between changes when a big transaction piles frames up: a subscriber is only
      // cut off when what it was sent before is still waiting (sendRaw), not for one transaction's burst
      if (p.targets.some((t) => backlog(t.ch.conn) > this.opts.maxBufferedBytes / 2)) await new Promise((r) => setImmediate(r));
      const keyText = p.needsCheck ? JSON.stringify(rel.primaryKey.map((c) => p.change.newRow?.[c] ?? null)) : '';
      const dataByRole = new Map<string, Buffer>();
      for (const { ch, ids, role, claimsKey } of p.targets) {
        if (!ch.active) continue;
        if (p.needsCheck) {
          const g = `${claimsKey}\u0000${rel.oid}`;
          const group = groups.get(g);
          const verdict = group ? verdicts.get(g)?.[group.index.get(keyText) ?? -1] : false;
          if (!verdict) continue;
        }
        const selectable = columnsFor.get(`${role}\u0000${rel.oid}`) ?? new Set<string>();
        if (selectable.size === 0) continue;
        // the change's data is the same for every subscriber of a role: serialised once, framed per channel
        let data = dataByRole.get(role);
        if (data === undefined) dataByRole.set(role, (data = Buffer.from(JSON.stringify(this.changeData(p.tx, p.change.type, rel, selectable, p.record, p.oldRecord)))));
        const head =
          ch.conn.vsn === '2.0.0'
            ? `[null,null,${JSON.stringify(ch.topic)},"postgres_changes",{"ids":${JSON.stringify(ids)},"data":`
            : `{"topic":${JSON.stringify(ch.topic)},"event":"postgres_changes","payload":{"ids":${JSON.stringify(ids)},"data":`;
        const frame = data.length < SHARED_DATA_BYTES ? [Buffer.concat([Buffer.from(head), data, ch.conn.vsn === '2.0.0' ? V2_TAIL : V1_TAIL])] : [Buffer.from(head), data, ch.conn.vsn === '2.0.0' ? V2_TAIL : V1_TAIL];
        if (this.sendFragments(ch.conn, frame)) this.stats.changesDelivered++;
      }
    }
  }

  private changeData(
    tx: FeedTransaction,
    type: ChangeType,
    rel: RelationInfo,
    selectable: Set<string>,
    record: Record<string, unknown> | null,
    oldRecord: Record<string, unknown> | null,
  ): Record<string, unknown> {
    const columns = rel.columns.filter((c) => selectable.has(c.name)).map((c) => ({ name: c.name, type: c.typname }));
    const pick = (row: Record<string, unknown> | null, only?: string[]) => {
      const out: Record<string, unknown> = {};
      if (!row) return out;
      for (const c of rel.columns) {
        if (!selectable.has(c.name) || !(c.name in row)) continue;
        if (only && !only.includes(c.name)) continue;
        out[c.name] = row[c.name];
      }
      return out;
    };
    const noKey = rel.primaryKey.length === 0;
    const errors = noKey ? ['Error 400: Bad Request, no primary key'] : null;
    const data: Record<string, unknown> = { schema: rel.schema, table: rel.table, commit_timestamp: tx.commitTimestamp, type, columns };
    if (type === 'INSERT' || type === 'UPDATE') data.record = noKey ? {} : pick(record);
    if (type === 'UPDATE') data.old_record = noKey ? {} : oldRecord ? pick(oldRecord) : pick(record, rel.primaryKey);
    if (type === 'DELETE') data.old_record = noKey ? {} : pick(oldRecord, rel.rls ? rel.primaryKey : undefined);
    data.errors = errors;
    return data;
  }

  // ---------------------------------------------------------------- broadcast and presence

  private clientBroadcast(ch: Channel, msg: PhxMessage & { raw?: RawBroadcast }): void {
    const p = (msg.payload ?? {}) as Record<string, unknown>;
    const event = typeof p.event === 'string' ? p.event : '';
    const problem = broadcastProblem(ch.topic, event, msg.raw ? null : (p.payload ?? {}), msg.raw ?? null, p.meta);
    if (problem) {
      this.send(ch.conn, reply(msg, 'error', { reason: problem }));
      return;
    }
    const subscribers = this.topics.get(ch.topicKey)?.size ?? 0;
    if (!this.takeFanOut(ch.space, ch.self ? subscribers : subscribers - 1)) {
      this.send(ch.conn, reply(msg, 'error', { reason: FANOUT_REFUSAL }));
      return;
    }
    if (msg.raw) this.fanOut(ch.topicKey, ch.self ? null : ch, event, null, msg.raw);
    else {
      const out: Record<string, unknown> = { type: 'broadcast', event, payload: p.payload ?? {} };
      if (p.meta !== undefined) out.meta = p.meta;
      this.fanOut(ch.topicKey, ch.self ? null : ch, event, out);
    }
    if (ch.ack) this.send(ch.conn, reply(msg, 'ok', {}));
  }

  /** send a broadcast to the topic's channels; returns how many frames went out */
  private fanOut(topicKey: string, except: Channel | null, event: string, payload: Record<string, unknown> | null, raw?: RawBroadcast): number {
    const set = this.topics.get(topicKey);
    if (!set) return 0;
    let sent = 0;
    // every channel of the set has the same topic: each kind of frame is encoded once, and the one buffer is
    // what every socket sends (a 1 MiB broadcast to 300 sockets is 1 MiB held, not 300)
    const frames = new Map<string, Buffer>();
    const frameFor = (ch: Channel): Buffer => {
      const kind = raw ? 'raw' : ch.conn.vsn;
      let frame = frames.get(kind);
      if (!frame) {
        frame = raw ? encodeBroadcastBinary(ch.topic, event, raw.bytes, raw.meta) : Buffer.from(encodeFrame(ch.conn.vsn, { join_ref: null, ref: null, topic: ch.topic, event: 'broadcast', payload }));
        frames.set(kind, frame);
      }
      return frame;
    };
    for (const ch of [...set]) {
      if (ch === except || !ch.active) continue;
      try {
        // raw bytes only travel as binary kind 4, which vsn 1 clients cannot read
        if (raw && ch.conn.vsn !== '2.0.0') continue;
        if (this.sendRaw(ch.conn, frameFor(ch), !raw)) sent++;
      } catch (e) {
        // broadcastProblem() refuses what cannot be sent before any is: this is one subscriber's trouble, not the rest's
        this.log({ level: 'warn', msg: 'realtime broadcast not sent to one subscriber', socket: ch.conn.id, topic: ch.topic, error: String(e).slice(0, 200) });
      }
    }
    return sent;
  }

  private clientPresence(ch: Channel, msg: PhxMessage): void {
    const p = (msg.payload ?? {}) as Record<string, unknown>;
    // a track or untrack is sent to every member of the topic: taken from the project's fan-out budget as a
    // broadcast is (a loop of tracks to a topic of 100 sockets made 190,000 deliveries a second, and the intake's
    // answers took 4 s)
    if ((p.event === 'track' || p.event === 'untrack') && !this.takeFanOut(ch.space, this.topics.get(ch.topicKey)?.size ?? 0)) {
      this.send(ch.conn, reply(msg, 'error', { reason: FANOUT_REFUSAL }));
      return;
    }
    if (p.event === 'track') {
      const meta = p.payload && typeof p.payload === 'object' ? (p.payload as Record<string, unknown>) : {};
      // what is tracked is written again inside every diff and state frame, a few levels deeper: a payload nested
      // near the depth JSON.stringify can write got no reply, and was kept in the state though no diff went out
      if (nestedDeeperThan(meta, MAX_PRESENCE_DEPTH)) {
        this.send(ch.conn, reply(msg, 'error', { reason: `presence payload nested deeper than ${MAX_PRESENCE_DEPTH} levels` }));
        return;
      }
      // every member of the topic is sent what one tracks: a bounded size keeps one client from filling memory
      const size = Buffer.byteLength(JSON.stringify(meta));
      if (size > MAX_PRESENCE_BYTES) {
        this.send(ch.conn, reply(msg, 'error', { reason: `presence payload over ${MAX_PRESENCE_BYTES} bytes` }));
        return;
      }
      const bytes = size + Buffer.byteLength(ch.presenceKey) + 64;
      let own = 0;
      for (const metas of this.presence.get(ch.topicKey)?.values() ?? []) for (const e of metas.values()) if (e.channel === ch) own += e.bytes;
      if (ch.conn.presenceBytes - own + bytes > MAX_PRESENCE_BYTES_PER_SOCKET) {
        this.send(ch.conn, reply(msg, 'error', { reason: `presence payloads of this socket may weigh at most ${MAX_PRESENCE_BYTES_PER_SOCKET / 1024} KiB together` }));
        return;
      }
      if ((this.presenceBytes.get(ch.topicKey) ?? 0) - own + bytes > MAX_PRESENCE_BYTES_PER_TOPIC) {
        this.send(ch.conn, reply(msg, 'error', { reason: `presence state of this topic is full: its members' payloads may weigh at most ${MAX_PRESENCE_BYTES_PER_TOPIC / 1024} KiB together` }));
        return;
      }
      const leaves = this.untrack(ch, false);
      const ref = randomBytes(8).toString('base64url');
      let byKey = this.presence.get(ch.topicKey);
      if (!byKey) this.presence.set(ch.topicKey, (byKey = new Map()));
      let metas = byKey.get(ch.presenceKey);
      if (!metas) byKey.set(ch.presenceKey, (metas = new Map()));
      metas.set(ref, { channel: ch, meta: { ...meta, phx_ref: ref }, bytes });
      this.presenceEncoded.delete(ch.topicKey);
      this.presenceBytes.set(ch.topicKey, (this.presenceBytes.get(ch.topicKey) ?? 0) + bytes);
      ch.conn.presenceBytes += bytes;
      this.presenceDiff(ch.topicKey, { [ch.presenceKey]: { metas: [{ ...meta, phx_ref: ref }] } }, leaves);
      this.send(ch.conn, reply(msg, 'ok', {}));
    } else if (p.event === 'untrack') {
      this.untrack(ch);
      this.send(ch.conn, reply(msg, 'ok', {}));
    } else {
      this.send(ch.conn, reply(msg, 'error', { reason: 'unknown presence event' }));
    }
  }

  /** remove the channel's presences; with `announce`, push the diff; returns the leaves */
  private untrack(ch: Channel, announce = true): Record<string, { metas: unknown[] }> {
    const byKey = this.presence.get(ch.topicKey);
    // (by presence key, which a client chooses: no prototype, where "constructor" or "__proto__" would already be found;
    // `leaves.constructor.metas.push` threw when the socket closed, and the throw ended the process)
    const leaves: Record<string, { metas: unknown[] }> = Object.create(null);
    if (!byKey) return leaves;
    for (const [key, metas] of byKey) {
      for (const [ref, entry] of metas) {
        if (entry.channel !== ch) continue;
        metas.delete(ref);
        this.presenceBytes.set(ch.topicKey, (this.presenceBytes.get(ch.topicKey) ?? 0) - entry.bytes);
        ch.conn.presenceBytes -= entry.bytes;
        (leaves[key] ??= { metas: [] }).metas.push(entry.meta);
      }
      if (metas.size === 0) byKey.delete(key);
    }
    if (Object.keys(leaves).length > 0) this.presenceEncoded.delete(ch.topicKey);
    if (byKey.size === 0) {
      this.presence.delete(ch.topicKey);
      this.presenceBytes.delete(ch.topicKey);
    }
    if (announce && Object.keys(leaves).length > 0) this.presenceDiff(ch.topicKey, {}, leaves);
    return leaves;
  }

  private presenceDiff(topicKey: string, joins: Record<string, unknown>, leaves: Record<string, unknown>): void {
    const set = this.topics.get(topicKey);
    if (!set) return;
    // every channel of the set has the same topic: the diff is encoded once per protocol version and the one buffer
    // is what every socket sends (encoded per member, a 32 kB track to a topic of 200 members was 200 encodings
    // and 6.5 MB held, for one small frame in)
    const frames = new Map<Vsn, Buffer>();
    for (const ch of [...set]) {
      if (!ch.active || !ch.presenceEnabled) continue;
      let frame = frames.get(ch.conn.vsn);
      if (!frame) frames.set(ch.conn.vsn, (frame = Buffer.from(encodeFrame(ch.conn.vsn, { join_ref: null, ref: null, topic: ch.topic, event: 'presence_diff', payload: { joins, leaves } }))));
      this.sendRaw(ch.conn, frame, true);
    }
  }

  /**
   * The topic's presence state as JSON, encoded once per change of it and shared by every join's frame: re-encoded
   * for each join, a socket re-joining a topic holding its 1 MiB of presence in a loop made 400 joins cost 391 MiB
   * of JSON encoded on the loop the intake and the workers share, in 7.6 s.
   */
  private presenceStateData(topicKey: string): Buffer {
    if (!this.presence.has(topicKey)) return EMPTY_PRESENCE_STATE;
    let data = this.presenceEncoded.get(topicKey);
    if (!data) {
      this.presenceEncoded.set(topicKey, (data = Buffer.from(JSON.stringify(this.presenceState(topicKey)))));
      this.stats.presenceStatesEncoded++;
    }
    return data;
  }

  /** `presence_state` to a channel that has just joined: the topic's encoded state framed for it (as encodeFrame would) */
  private sendPresenceState(ch: Channel): void {
    const data = this.presenceStateData(ch.topicKey);
    const v2 = ch.conn.vsn === '2.0.0';
    const head = Buffer.from(v2 ? `[${JSON.stringify(ch.joinRef)},null,${JSON.stringify(ch.topic)},"presence_state",` : `{"topic":${JSON.stringify(ch.topic)},"event":"presence_state","payload":`);
    const tail = v2 ? PRESENCE_V2_TAIL : PRESENCE_V1_TAIL;
    this.sendFragments(ch.conn, data.length < SHARED_DATA_BYTES ? [Buffer.concat([head, data, tail])] : [head, data, tail], false);
  }

  private presenceState(topicKey: string): Record<string, { metas: unknown[] }> {
    // (by presence key: no prototype, so a key "__proto__" is listed like any other, see untrack)
    const out: Record<string, { metas: unknown[] }> = Object.create(null);
    for (const [key, metas] of this.presence.get(topicKey) ?? []) out[key] = { metas: [...metas.values()].map((e) => e.meta) };
    return out;
  }
}

/** create and start a server */
export async function startRealtimeServer(options: RealtimeServerOptions): Promise<RealtimeServer> {
  const server = new RealtimeServer(options);
  await server.start();
  return server;
}

export { dropSlot };

function bindingMatches(b: PgBinding, type: ChangeType, rel: RelationInfo, row: WalRow | null, oldRow: WalRow | null): boolean {
  if (b.error) return false;
  if (b.event !== '*' && b.event !== type) return false;
  if (b.schema !== null && b.schema !== rel.schema) return false;
  if (b.table !== null && b.table !== rel.table) return false;
  if (!b.filter) return true;
  const col = rel.byName.get(b.filter.column);
  if (!col) return false;
  if (row && filterMatches(b.filter, col.typname, row[col.name])) return true;
  // DELETEs are also tried against the old values (only the key without REPLICA IDENTITY FULL)
  return type === 'DELETE' && oldRow !== row && !!oldRow && filterMatches(b.filter, col.typname, oldRow[col.name]);
}

function jsonRow(rel: RelationInfo, row: WalRow): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of rel.columns) {
    if (!(c.name in row) || row[c.name] === undefined) continue;
    out[c.name] = walToJson(c.typname, row[c.name]);
  }
  return out;
}

function reasonOf(e: unknown): string {
  if (e instanceof TokenError) return e.reason;
  return `MalformedJWT: The token provided is not a valid JWT`;
}

function refuse(socket: Duplex, status: number, error: string): void {
  const body = JSON.stringify({ error });
  try {
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\n` +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n\r\n' +
        body,
    );
  } catch {
    socket.destroy();
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}

/**
 * The request's URL, or null when its target cannot be one: `new URL` throws on a path like `//%%%/x` (read as
 * a host), and a throw here would reach no handler and end the whole process.
 */
/**
 * Why a broadcast cannot be sent to anyone, or null: checked once before it is fanned out, so that one bad
 * message is refused whole instead of failing half way through its subscribers. Binary frames carry topic,
 * event and meta in at most 255 bytes each; JSON must be writable (not nested beyond what can be written).
 */
function broadcastProblem(topic: string, event: string, payload: unknown, raw: RawBroadcast | null, meta: unknown): string | null {
  const bytes = (v: string): number => Buffer.byteLength(v, 'utf8');
  if (bytes(topic) > MAX_NAME_BYTES || bytes(event) > MAX_NAME_BYTES) return `a broadcast's topic and event are at most ${MAX_NAME_BYTES} bytes each`;
  if (raw) {
    if (bytes(topic) > 255 || bytes(event) > 255 || bytes(raw.meta ? JSON.stringify(raw.meta) : '') > 255) return 'a binary broadcast takes a topic, an event and meta of at most 255 bytes each';
    return null;
  }
  try {
    JSON.stringify([payload, meta]);
  } catch {
    return 'the broadcast payload cannot be sent: it is nested too deep';
  }
  return null;
}

/** The project a token names, '' for none (the anon key). */
function spaceOf(claims: TokenClaims): string {
  return typeof claims.project_id === 'string' ? claims.project_id : '';
}

/** The project a channel's token names, '' for none (the anon key). */
function projectOf(ch: Channel): string {
  return typeof ch.claims.project_id === 'string' ? ch.claims.project_id : '';
}

const parseTimestamptz = pgTypes.getTypeParser(1184, 'text') as (text: string) => Date;

/** Why a run_events row (as WAL text) is not a link the engine wrote, or null when its keyed hash holds. */
export function unsignedEvent(row: Record<string, string | null>, keys: ChainKeys): string | null {
  try {
    const kid = row.kid;
    if (!kid) return 'it is not signed with the chain key';
    const key = keys(kid);
    if (!key) return `it is signed with key "${kid.slice(0, 40)}", which is not in the keyring`;
    const content = {
      runId: String(row.run_id),
      project: String(row.project_id),
      seq: Number(row.seq),
      type: String(row.type),
      version: Number(row.version),
      data: JSON.parse(String(row.payload)),
      recordedAt: parseTimestamptz(String(row.recorded_at)).toISOString(),
    };
    if (eventHash(String(row.prev_hash), content, key) !== row.hash) return 'its content does not match its keyed hash';
    // its link covers the doubles its numbers read as: digits beyond them were written outside the engine
    return firstInexactNumber(String(row.payload)) === null ? null : 'it holds a number the engine never wrote (digits beyond what its hash covers)';
  } catch {
    return 'it cannot be read as an event';
  }
}

/**
 * The path without its trailing slashes. Not `replace(/\/+$/, '')`: that regex tries every run of slashes to the
 * end, so a path of 16,000 slashes followed by a letter took a second of the event loop that the intake and the
 * workers share, for one unauthenticated request.
 */
export function withoutTrailingSlashes(path: string): string {
  let end = path.length;
  while (end > 0 && path.charCodeAt(end - 1) === 0x2f) end--;
  return end === path.length ? path : path.slice(0, end);
}

function requestUrl(req: http.IncomingMessage): URL | null {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return null;
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

class FragmentedBody extends Error {}

/** what a socket's frames waiting to go out hold: their bytes, and what each frame costs besides (FRAME_OVERHEAD_BYTES) */
function backlog(conn: Conn): number {
  return conn.ws.bufferedAmount + Math.max(0, conn.framesWaiting) * FRAME_OVERHEAD_BYTES;
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // it arrives in blocks however its sender cut it (the server's requests are GatheredRequests): a 1 MiB broadcast
    // sent with the public anon key as a million one-byte chunks was held as a million Buffers, 416 MB
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // the caller answers 413 and then closes; what else arrives is dropped
        req.removeAllListeners('data');
        req.resume();
        reject(new Error('too large'));
        return;
      }
      chunks.push(c);
      if ((req as GatheredRequest).fragmented) {
        req.removeAllListeners('data');
        reject(new FragmentedBody());
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks, size)));
    req.on('error', reject);
  });
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data as ArrayBuffer);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
