import { randomUUID, timingSafeEqual } from 'node:crypto';
import { keptAsSent, plainlyKept } from '../domain/json-exact';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline, Transform } from 'node:stream';
import Fastify, { FastifyReply, FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { inProject } from '../db/scope';
import type { EngineFlags } from '../domain/decider';
import { engineInfo } from '../domain/decider';
import { TokenError, verifyToken } from '../realtime/tokens';
import { readRunView } from '../replay-service';
import { clientErrorAnswer, FRAGMENTED_BODY, GatheredRequest, clientErrorResponse, defaultMaxConnections, shareConnections } from '../security/http-limits';
import { Keyring, tokenSecret } from '../security/keyring';
import { findIntakeTarget, intakeCache, IntakeTarget, type LoadedVersion, NotFoundError, TamperedDefinitionError, TamperedProjectError } from '../store/registry';
import { DeliveryRecordBrokenError, DeliveryReusedError, runIdOfDelivery, startRun } from '../store/intake-start';
import { readEvents } from '../store/log-read';
import type { LoggedRun } from '../store/run-repository';
import type { Failpoints } from '../faults/failpoints';
import { HeadJournal } from '../integrity/checkpoints';
import { Clock, systemClock } from '../worker/clock';
import { computeSignature, DELIVERY_HEADER, SIGNATURE_HEADER } from './sign';

/*
 * The engine's HTTP face: webhook intake and a read API for runs. Every
 * refusal is a JSON `{ error: { code, message } }` and writes nothing. A
 * webhook is checked in this order, so that nothing about a project or
 * workflow can be learnt without its secret:
 *   400 bad_path              the path's names are not slugs (before the body is read)
 *   413 payload_too_large, 415 unsupported_media_type   (while reading it)
 *   400 missing_delivery_id   the MeshHook-Delivery id is missing or malformed
 *   401 bad_signature         no valid signature by the workflow's secret; an unknown
 *                             project or workflow is answered exactly like a wrong secret
 *   400 malformed_body, 404 no_published_version   (only once the sender has proven itself)
 * Success records the delivery and the run's first event in one transaction:
 * 202 for a new run, 200 (duplicate: true) for a delivery id seen before with
 * the same body, 409 when that id arrives with a different body. The
 * signature covers the delivery id and the target, so a captured webhook
 * re-sent under another id or to another workflow is refused.
 *
 * Runs are read with a project token (Authorization: Bearer <JWT with
 * project_id>, `meshhook token`): GET /runs, /runs/:id, /runs/:id/events.
 * Another project's run is "not found". A page of events holds at most `limit` events (10,000) and about 8 MiB
 * of their data; ask again after its last seq until a page is empty.
 */

export interface IntakeOptions {
  pool: Pool;
  /** opens signing secrets; its "tokens" subkey checks project tokens unless jwtSecret is given */
  keyring: Keyring;
  jwtSecret?: string;
  clock?: Clock;
  /** 0 (default) lets the OS pick a free port */
  port?: number;
  host?: string;
  bodyLimitBytes?: number;
  /** a request (headers and body) must have arrived within this many ms; default 30 s */
  requestTimeoutMs?: number;
  signatureToleranceSec?: number;
  /** recorded in each new run's RunStarted: the flags it is decided with for good */
  flags?: EngineFlags;
  log?: (entry: Record<string, unknown>) => void;
  /**
   * A run was started. `started` is the run as its first events left it and the version it runs: a worker of the
   * same process may carry it on from there at once (Worker.adopt), with no claim and no load.
   */
  onRunStarted?: (runId: string, started?: { run: LoggedRun; version: LoadedVersion; bytes: number }) => void;
  /** where the start of a run can be made to fail on purpose (the crash-point sweep) */
  failpoints?: Failpoints;
  /** connections held at once; more are closed as they come (default: 1,024, or a quarter of the process's file limit if lower) */
  maxConnections?: number;
  /** bytes of webhook bodies being received at once, all requests together; beyond it a webhook gets 503 (default 8 bodies at the limit, at least 32 MiB) */
  bodyBudgetBytes?: number;
  /**
   * the journal outside the database the workers write (MESHHOOK_HEAD_JOURNAL): the head of every run started
   * goes there too, so a run deleted before any worker took it up is named by `verify --all --checkpoints`
   */
  headJournal?: string;
}

export interface Intake {
  url: string;
  port: number;
  close(): Promise<void>;
}

export const DEFAULT_BODY_LIMIT = 2 * 1024 * 1024;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
export const DEFAULT_SIGNATURE_TOLERANCE_SEC = 300;
/** deeper JSON is refused: it would overflow recursive walkers and Postgres' jsonb parser */
export const MAX_BODY_DEPTH = 64;

const SLUG = /^[a-z][a-z0-9-]{0,62}$/;
const DELIVERY_ID = /^[A-Za-z0-9._:-]{1,200}$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BUSY = 'too many webhook bodies are being received at once; nothing was recorded, deliver again in a moment';
const MISMATCH = "the signature does not match (not signed with this workflow's secret, or the body, delivery id or target changed after signing)";
/** an unknown target is checked against this, so that it costs what a known one costs */
const NO_SECRET = `whsec_${randomUUID()}`;
/** how long a client may take to send a request's headers */
const HEADERS_TIMEOUT_MS = 10_000;
/** requests pipelined on one connection served at once; the next is answered 503 and the connection closed */
const MAX_IN_FLIGHT_PER_CONNECTION = 8;
/** how long an idle keep-alive connection is kept (Fastify's own default is 72 s) */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
type Target = IntakeTarget;

class Refusal extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function refuse(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send({ error: { code, message } });
}

/** Parse `t=<unix>,v2=<hex>[,v2=<hex>…]`; null when the header is not in that shape. */
export function parseSignatureHeader(value: string): { t: number; v2: string[]; v1: boolean } | null {
  let t: number | null = null;
  const v2: string[] = [];
  let v1 = false;
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    const val = part.slice(eq + 1).trim();
    if (key === 't' && /^\d{1,12}$/.test(val)) t = Number(val);
    else if (key === 'v2' && /^[0-9a-fA-F]{64}$/.test(val)) v2.push(val.toLowerCase());
    else if (key === 'v1') v1 = true;
  }
  return t === null || (v2.length === 0 && !v1) ? null : { t, v2, v1 };
}

/**
 * What is wrong with a signature header before any secret or byte of the body is needed (missing, not of the
 * form, v1 only, outside the time window), or the header taken apart when nothing is.
 */
export function signatureHeaderProblem(header: string | undefined, now: Date, toleranceSec: number): string | { t: number; v2: string[] } {
  if (!header) return 'the MeshHook-Signature header is missing';
  const parsed = parseSignatureHeader(header);
  if (!parsed) return 'the MeshHook-Signature header is not of the form t=<unix seconds>,v2=<hex HMAC-SHA256>';
  if (parsed.v2.length === 0) return 'v1 signatures (over the body alone) are no longer accepted: sign "<t>.<delivery id>.<project>/<workflow>.<body>" as v2';
  const nowSec = Math.floor(now.getTime() / 1000);
  if (Math.abs(nowSec - parsed.t) > toleranceSec) return `the signature timestamp is outside the ${toleranceSec} s tolerance`;
  return parsed;
}

/**
 * Check a signature header; returns why it fails, or null when it is good.
 * The shape and the time window are checked before any secret is used, so
 * those answers are the same whether the target exists or not.
 */
export function checkSignature(
  header: string | undefined,
  secret: string,
  target: { deliveryId: string; project: string; workflow: string },
  rawBody: Buffer,
  now: Date,
  toleranceSec: number,
): string | null {
  const parsed = signatureHeaderProblem(header, now, toleranceSec);
  if (typeof parsed === 'string') return parsed;
  const expected = Buffer.from(computeSignature(secret, parsed.t, target, rawBody), 'hex');
  const match = parsed.v2.some((candidate) => {
    const given = Buffer.from(candidate, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  return match ? null : MISMATCH;
}

/**
 * Parse a webhook body: JSON, an object or an array, storable in jsonb (no NUL,
 * no lone surrogate, bounded nesting). Throws a Refusal explaining what is wrong.
 */
export { plainlyKept };

export function parseWebhookBody(raw: Buffer): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new Refusal(400, 'malformed_body', 'the body is not valid UTF-8');
  }
  if (text.trim() === '') throw new Refusal(400, 'malformed_body', 'the body is empty: a webhook carries a JSON object or array');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Refusal(400, 'malformed_body', `the body is not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (value === null || typeof value !== 'object') {
    throw new Refusal(400, 'malformed_body', 'the body must be a JSON object or array');
  }
  const walk = { members: 0 };
  const problem = unstorable(value, 0, walk) ?? keptAsSent(text, walk.members);
  if (problem) throw new Refusal(400, 'malformed_body', problem);
  return value;
}

function badString(s: string): string | null {
  if (s.includes('\u0000')) return 'the body contains a NUL character (\\u0000), which cannot be stored';
  if (LONE_SURROGATE.test(s)) return 'the body contains an unpaired UTF-16 surrogate, which cannot be stored';
  return null;
}

/**
 * A number JSON.parse could not keep as sent: out of a double's range (it would be stored as null) or an
 * integer past 2^53 (stored rounded). Refused, so the run's input is always what the sender signed.
 */
function badNumber(n: number): string | null {
  if (!Number.isFinite(n)) return 'the body holds a number too large to keep (it would become null): send it as a string';
  if (Number.isInteger(n) && !Number.isSafeInteger(n)) return `the body holds an integer beyond ${Number.MAX_SAFE_INTEGER}, which cannot be kept exactly: send it as a string`;
  return null;
}

/** What in a parsed body cannot be stored as sent (null: nothing), counting the objects' members as it goes. */
function unstorable(value: unknown, depth: number, walk: { members: number }): string | null {
  if (typeof value === 'string') return badString(value);
  if (typeof value === 'number') return badNumber(value);
  if (value === null || typeof value !== 'object') return null;
  if (depth >= MAX_BODY_DEPTH) return `the body is nested deeper than ${MAX_BODY_DEPTH} levels`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = unstorable(value[i], depth + 1, walk);
      if (p) return p;
    }
    return null;
  }
  const keys = Object.keys(value);
  walk.members += keys.length;
  for (let i = 0; i < keys.length; i++) {
    const p = badString(keys[i]) ?? unstorable((value as Record<string, unknown>)[keys[i]], depth + 1, walk);
    if (p) return p;
  }
  return null;
}

/** The database is gone or going, not the request wrong: the sender should deliver again (503). */
export function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return (
    // EMFILE / ENFILE: out of file descriptors for now (a flood of open connections), not a bad request
    /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EMFILE|ENFILE|57P0[1-3]|08\d{3})$/.test(code) ||
    // pg's own words for a connection that died under a pooled client (no code): seen when the postmaster is killed mid-request
    /Connection terminated|timeout exceeded when trying to connect|connection error and is not queryable/i.test((e as Error).message ?? '')
  );
}

/**
 * What a page of a run's log holds at most besides its count: about this many bytes of its events' data as JSON (and
 * always one event). A page of 10,000 events was read and written whole: four reads of a run whose 400 events held
 * answers of a megabyte took the process from 92 MB to 940 MB and held other projects' webhooks 3.8 s.
 */
export const MAX_PAGE_BYTES = 8 * 1024 * 1024;

/** Events after `after`, at most `limit` of them and about MAX_PAGE_BYTES of data: read a few at a time, as many as fit. */
async function readPage(c: Parameters<typeof readEvents>[0], projectId: string, runId: string, after: number, limit: number): Promise<Awaited<ReturnType<typeof readEvents>>> {
  const page: Awaited<ReturnType<typeof readEvents>> = [];
  let bytes = 0;
  // a first few, then as many as the ones read so far say will fit
  let ask = Math.min(10, limit);
  while (page.length < limit && bytes < MAX_PAGE_BYTES) {
    const batch = await readEvents(c, projectId, runId, { after, limit: ask });
    for (const e of batch) {
      if (page.length > 0 && bytes >= MAX_PAGE_BYTES) break;
      page.push(e);
      bytes += JSON.stringify(e.data).length;
      after = e.seq;
    }
    if (batch.length < ask) break;
    const average = bytes / page.length;
    ask = Math.max(1, Math.min(limit - page.length, 1_000, Math.floor((MAX_PAGE_BYTES - bytes) / Math.max(average, 1))));
  }
  return page;
}

/** A value from a request, fit for a log line: cut short (control characters are escaped by the JSON log itself). */
function loggable(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  return v.length > 120 ? `${v.slice(0, 120)}…(${v.length} chars)` : v;
}

/**
 * What a webhook's headers alone make wrong, in the order a sender would fix them: the body's type, the
 * delivery id, the signature's form and time. Null when the headers are fine as far as they go.
 */
function webhookHeaderProblem(req: FastifyRequest, now: Date, toleranceSec: number): { status: number; code: string; message: string } | null {
  const given = (name: string): string[] => req.raw.headersDistinct?.[name] ?? (req.headers[name] === undefined ? [] : [String(req.headers[name])]);
  const [type, ...params] = (req.headers['content-type'] ?? '').split(';').map((p) => p.trim().toLowerCase());
  if (type !== 'application/json') return { status: 415, code: 'unsupported_media_type', message: 'webhook bodies must be sent as application/json' };
  const charset = params.find((p) => p.startsWith('charset='))?.slice(8).replace(/"/g, '');
  if (charset && charset !== 'utf-8' && charset !== 'utf8') return { status: 415, code: 'unsupported_media_type', message: `webhook bodies are UTF-8 JSON, not ${charset.slice(0, 40)}` };
  const encoding = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
  if (encoding && encoding !== 'identity') return { status: 415, code: 'unsupported_content_encoding', message: `webhook bodies are sent as they are, without a Content-Encoding (${encoding.slice(0, 40)} is not read)` };
  // a transfer coding other than chunked (gzip, chunked) is not undone by the HTTP parser either: the signature would
  // be checked against the compressed bytes and fail as if the secret were wrong
  const transfer = String(req.headers['transfer-encoding'] ?? '').split(',').map((t) => t.trim().toLowerCase()).filter((t) => t && t !== 'chunked' && t !== 'identity');
  if (transfer.length > 0) return { status: 415, code: 'unsupported_content_encoding', message: `webhook bodies are sent as they are, chunked or not (a Transfer-Encoding of ${transfer.join(', ').slice(0, 40)} is not read)` };
  const deliveries = given(DELIVERY_HEADER);
  if (deliveries.length > 1) return { status: 400, code: 'missing_delivery_id', message: 'MeshHook-Delivery is given more than once: a delivery has one id' };
  const deliveryId = deliveries[0];
  if (!deliveryId) return { status: 400, code: 'missing_delivery_id', message: 'the MeshHook-Delivery header is missing' };
  if (!DELIVERY_ID.test(deliveryId)) return { status: 400, code: 'missing_delivery_id', message: 'MeshHook-Delivery must be 1 to 200 characters of A-Z a-z 0-9 . _ : -' };
  const signatures = given(SIGNATURE_HEADER);
  if (signatures.length > 1) return { status: 401, code: 'bad_signature', message: 'MeshHook-Signature is given more than once: send one header (several v2 values go in it, comma-separated)' };
  const why = signatureHeaderProblem(signatures[0], now, toleranceSec);
  return typeof why === 'string' ? { status: 401, code: 'bad_signature', message: why } : null;
}

export async function startIntake(opts: IntakeOptions): Promise<Intake> {
  const pool = opts.pool;
  const clock = opts.clock ?? systemClock;
  const host = opts.host ?? '127.0.0.1';
  const tolerance = opts.signatureToleranceSec ?? DEFAULT_SIGNATURE_TOLERANCE_SEC;
  const log = opts.log ?? (() => undefined);
  const jwtSecret = opts.jwtSecret ?? tokenSecret(opts.keyring);
  const targets = new WeakMap<FastifyRequest, Target | null>();
  // secrets opened and versions verified, by the exact rows they came from (see findIntakeTarget)
  const targetCache = intakeCache();
  const bodyLimit = opts.bodyLimitBytes ?? DEFAULT_BODY_LIMIT;
  const journal = opts.headJournal ? new HeadJournal(opts.headJournal, opts.keyring.chainKey()) : null;

  const requestTimeout = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const headersTimeout = Math.min(HEADERS_TIMEOUT_MS, requestTimeout);
  // bodies being received are held in memory until they are whole: all together get a budget, so that many
  // slow senders of large bodies cannot make the process grow without bound
  const bodyBudget = opts.bodyBudgetBytes ?? Math.max(32 * 1024 * 1024, 8 * bodyLimit);
  let bodyBytesHeld = 0;
  // one project's bodies (or all unknown targets' together) take at most a quarter of it, so that senders to one
  // target cannot fill it for every project
  const projectBodyBudget = Math.max(2 * bodyLimit, Math.floor(bodyBudget / 4));
  const bodyBytesByProject = new Map<string, number>();
  const app = Fastify({
    logger: false,
    bodyLimit,
    // an idle keep-alive connection is let go soon: each one holds a file descriptor
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // a request must arrive whole within this time: one that stops half way does not hold its socket for ever
    requestTimeout,
    http: {
      // headers come first and are small: a client trickling them gets less time than a whole body
      headersTimeout,
      // node checks those limits on a timer (30 s by default, so a body could trickle in for a minute): every second
      connectionsCheckingInterval: 1_000,
      // node would answer a missing Host with an empty 400 of its own: refused below, in our format
      requireHostHeader: false,
      // a body is gathered into blocks as it arrives, and one cut into tiny pieces is refused (see GatheredRequest)
      IncomingMessage: GatheredRequest,
    },
    // long names get a clear 400 from our own check instead of a route miss
    routerOptions: { maxParamLength: 16_384 },
    // close(): idle keep-alive sockets are closed at once, requests in flight are answered first
    forceCloseConnections: 'idle',
    // a URL that cannot be decoded still gets our JSON error
    frameworkErrors: (err, _req, reply) => {
      void refuse(reply, 400, 'bad_request', `the request could not be read: ${err.message.slice(0, 120)}`);
    },
    // bytes that are not HTTP at all: answer in our format, then close
    clientErrorHandler: (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
      const [status, reason, code, message] = clientErrorAnswer(err.code, headersTimeout, requestTimeout);
      log({ level: 'warn', msg: 'request refused', status, code, reason: err.code ?? 'unknown' });
      socket.end(clientErrorResponse(status, reason, { error: { code, message } }));
    },
  });

  // beyond this many connections at once, a new one is closed as it comes: a flood of idle connections cannot take
  // every file descriptor this process has (its database connections and Postgres's watchdog need some)
  app.server.maxConnections = opts.maxConnections ?? defaultMaxConnections();
  // and once they run short, one address (slow headers from a single host) cannot take the rest of them
  shareConnections(app.server, app.server.maxConnections, (source, held) => log({ level: 'warn', msg: 'connection refused', reason: 'its address holds a quarter of the connections and they run short', source: loggable(source), held }));
  // a sender that asks before sending its body (Expect: 100-continue) is told 413 at once when the body it
  // announces is over the limit, instead of "go on" and then 413 after megabytes it need not have sent
  app.server.on('checkContinue', (req, res) => {
    const announced = Number(req.headers['content-length']);
    if (Number.isFinite(announced) && announced > bodyLimit) {
      log({ level: 'warn', msg: 'request refused', method: req.method, status: 413, code: 'payload_too_large', reason: 'announced body over the limit' });
      const body = JSON.stringify({ error: { code: 'payload_too_large', message: `the body is larger than ${bodyLimit} bytes` } });
      res.writeHead(413, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' }).end(body);
      return;
    }
    res.writeContinue();
    app.server.emit('request', req, res);
  });

  // Only JSON is accepted, and as raw bytes: the signature covers the exact body.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  const refused = (req: FastifyRequest, status: number, code: string, extra: Record<string, unknown> = {}): void => {
    log({ level: 'warn', msg: 'request refused', method: req.method, route: req.routeOptions.url ?? '(no route)', status, code, ...extra });
  };

  // Requests pipelined on one connection are answered in order anyway, but node starts serving each as soon as it is
  // parsed: one connection that sent 3,000 requests at once started 3,000 target lookups before any signature was
  // checked, took every database connection, and other projects' signed webhooks got 503. Beyond a few in flight
  // on one connection, the next is answered 503 busy and the connection closed
  const inFlight = new WeakMap<object, number>();
  // HTTP/1.1 requires a Host header; every refusal is JSON, so it is checked here rather than by node
  app.addHook('onRequest', async (req, reply) => {
    const socket = req.raw.socket;
    const held = (inFlight.get(socket) ?? 0) + 1;
    inFlight.set(socket, held);
    reply.raw.once('close', () => inFlight.set(socket, (inFlight.get(socket) ?? 1) - 1));
    if (held > MAX_IN_FLIGHT_PER_CONNECTION) {
      refused(req, 503, 'busy', { reason: `more than ${MAX_IN_FLIGHT_PER_CONNECTION} requests in flight on one connection` });
      void reply.header('retry-after', '1').header('connection', 'close');
      return refuse(reply, 503, 'busy', `more than ${MAX_IN_FLIGHT_PER_CONNECTION} requests at once on one connection: wait for the answers, or open another connection`);
    }
    if (req.raw.httpVersion === '1.1' && !req.headers.host) {
      refused(req, 400, 'bad_request', { reason: 'no Host header' });
      void reply.header('connection', 'close');
      return refuse(reply, 400, 'bad_request', 'the request has no Host header, which HTTP/1.1 requires');
    }
    // a request for no route reads no body: Fastify would read it whole (up to the body limit) before answering
    // 404, outside the webhook bodies' budget, so that 450 connections with no secret sending 2 MiB to /nope and
    // holding back the last byte grew the process by 850 MB. Answered at once, the connection closed instead of
    // draining what is still coming
    if (req.is404 && (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0)) {
      const path = req.url.split('?')[0];
      refused(req, 404, 'not_found', { path: loggable(path), reason: 'a body for no route is not read' });
      void reply.header('connection', 'close');
      return refuse(reply, 404, 'not_found', `no route for ${req.method} ${path.slice(0, 200)}`);
    }
  });
  // a CONNECT (a proxy tunnel) is not served here: answered in our format instead of a connection that just ends
  app.server.on('connect', (req: import('node:http').IncomingMessage, socket: Socket) => {
    log({ level: 'warn', msg: 'request refused', method: req.method, status: 405, code: 'method_not_allowed' });
    socket.on('error', () => socket.destroy());
    socket.end(clientErrorResponse(405, 'Method Not Allowed', { error: { code: 'method_not_allowed', message: 'this server is not a proxy: CONNECT is not served' } }));
    // the socket is the server's no longer (no request or keep-alive timeout applies to it): a client that never
    // hangs up would hold a connection slot (maxConnections) and keep close() waiting, for good
    setTimeout(() => socket.destroy(), 1000).unref();
  });
  // an Expect this server does not meet (anything but 100-continue): 417, in our format instead of node's empty one
  app.server.on('checkExpectation', (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    log({ level: 'warn', msg: 'request refused', method: req.method, status: 417, code: 'expectation_failed', expect: loggable(req.headers.expect) });
    const body = JSON.stringify({ error: { code: 'expectation_failed', message: 'this server meets only "Expect: 100-continue"' } });
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });

  app.setNotFoundHandler((req, reply) => {
    refused(req, 404, 'not_found', { path: loggable(req.url.split('?')[0]) });
    return refuse(reply, 404, 'not_found', `no route for ${req.method} ${req.url.split('?')[0].slice(0, 200)}`);
  });

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
    const t = targets.get(req);
    const where = t ? { project: t.project.slug, workflow: t.workflow.slug } : {};
    if (err instanceof Refusal) {
      // refused while its body was arriving: the rest of it is not waited for
      if (err.code === 'busy') void reply.header('retry-after', '1').header('connection', 'close');
      else refused(req, err.status, err.code, where);
      if (err.code === 'body_too_fragmented') void reply.header('connection', 'close');
      return refuse(reply, err.status, err.code, err.message);
    }
    if (err instanceof TamperedDefinitionError) {
      log({ level: 'error', msg: 'published version failed its integrity check', ...where, version: err.version });
      return refuse(reply, 503, 'workflow_unavailable', 'the workflow cannot run until it is published again; nothing was recorded');
    }
    if (err instanceof TamperedProjectError) {
      log({ level: 'error', msg: 'project name failed its integrity check', project: loggable(err.slug), problem: err.problem });
      return refuse(reply, 503, 'project_unavailable', 'the project cannot take webhooks until its owner has checked it; nothing was recorded');
    }
    if (err instanceof DeliveryRecordBrokenError) {
      log({ level: 'error', msg: 'delivery record does not match its run: changed outside the engine (meshhook verify --all names it)', ...where, deliveryId: loggable(err.deliveryId) });
      return refuse(reply, 503, 'delivery_record_broken', 'this delivery cannot be taken until its record is repaired; nothing was recorded, send it again later');
    }
    if (err instanceof DeliveryReusedError) {
      refused(req, 409, 'delivery_id_reused', { ...where, deliveryId: loggable(err.deliveryId) });
      return refuse(reply, 409, 'delivery_id_reused', err.message);
    }
    switch (err.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        refused(req, 413, 'payload_too_large', where);
        return refuse(reply, 413, 'payload_too_large', `the body is larger than ${bodyLimit} bytes`);
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      case 'FST_ERR_CTP_INVALID_TYPE':
        refused(req, 415, 'unsupported_media_type', where);
        return refuse(reply, 415, 'unsupported_media_type', 'webhook bodies must be sent as application/json');
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        refused(req, 400, 'malformed_body', where);
        return refuse(reply, 400, 'malformed_body', 'the body is empty');
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      // a sender that went away half way (the HTTP parser's own refusal is logged by clientErrorHandler)
      if (req.raw.readableAborted || req.raw.socket?.destroyed) {
        refused(req, err.statusCode, 'incomplete_request', { ...where, reason: 'the connection ended before the body was whole' });
        return refuse(reply, err.statusCode, 'incomplete_request', 'the connection ended before the body was whole');
      }
      refused(req, err.statusCode, 'bad_request', where);
      return refuse(reply, err.statusCode, 'bad_request', 'the request could not be read');
    }
    if (isConnectionError(err)) {
      log({ level: 'error', msg: 'database unavailable', error: err.message, ...where });
      return refuse(reply, 503, 'unavailable', 'the database is unavailable; deliver again later');
    }
    log({ level: 'error', msg: 'request failed', error: err.message, ...where });
    return refuse(reply, 500, 'internal', 'the request failed; deliver again later');
  });

  // healthy only when the database answers: a load balancer must not send webhooks that would get 503
  app.get('/healthz', async (_req, reply) => {
    try {
      await Promise.race([pool.query('SELECT 1'), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 2_000))]);
      return { ok: true, database: 'up' };
    } catch {
      return reply.code(503).send({ ok: false, database: 'down' });
    }
  });

  // ───── reading runs: a project token decides which project's runs exist

  const projectOfToken = async (req: FastifyRequest): Promise<string> => {
    const header = req.headers.authorization;
    const token = typeof header === 'string' && /^Bearer\s+/i.test(header) ? header.replace(/^Bearer\s+/i, '').trim() : null;
    if (!token) throw new Refusal(401, 'unauthenticated', 'send a project token: Authorization: Bearer <token> (`meshhook token --project <slug>`)');
    try {
      const claims = await verifyToken(jwtSecret, token);
      if (typeof claims.project_id !== 'string' || !UUID.test(claims.project_id)) throw new Refusal(401, 'unauthenticated', 'the token names no project');
      return claims.project_id;
    } catch (e) {
      if (e instanceof TokenError) throw new Refusal(401, 'unauthenticated', e.reason);
      throw e;
    }
  };

  app.get<{ Querystring: { limit?: string } }>('/runs', async (req) => {
    const projectId = await projectOfToken(req);
    const limit = Math.min(Math.max(Number(req.query.limit ?? 500) || 500, 1), 5000);
    const rows = await inProject(pool, projectId, async (c) =>
      (
        await c.query(
          `SELECT r.id, w.slug AS workflow, r.status, r.last_seq, r.created_at FROM runs r JOIN workflows w ON w.id = r.workflow_id
           WHERE r.project_id = $1 ORDER BY r.created_at DESC LIMIT $2`,
          [projectId, limit],
        )
      ).rows,
    );
    return { runs: rows.map((r) => ({ runId: r.id, workflow: r.workflow, status: r.status, lastSeq: r.last_seq, createdAt: r.created_at.toISOString() })) };
  });

  app.get<{ Params: { runId: string } }>('/runs/:runId', async (req, reply) => {
    const projectId = await projectOfToken(req);
    const view = UUID.test(req.params.runId) ? await readRunView(pool, projectId, req.params.runId) : null;
    if (!view) {
      refused(req, 404, 'unknown_run');
      return refuse(reply, 404, 'unknown_run', 'no such run in this project');
    }
    const { projectId: _p, workflowId: _w, ...visible } = view;
    return visible;
  });

  app.get<{ Params: { runId: string }; Querystring: { after?: string; limit?: string } }>('/runs/:runId/events', async (req, reply) => {
    const projectId = await projectOfToken(req);
    // an event number: what Postgres's integer holds, whatever the query says (1e400, -3, 0.5)
    const after = Math.min(Math.max(Math.floor(Number(req.query.after ?? 0)) || 0, 0), 2 ** 31 - 1);
    const limit = Math.min(Math.max(Number(req.query.limit ?? 10_000) || 10_000, 1), 10_000);
    const found = UUID.test(req.params.runId)
      ? await inProject(pool, projectId, async (c) => {
          const run = await c.query('SELECT 1 FROM runs WHERE id = $1 AND project_id = $2', [req.params.runId, projectId]);
          if (!run.rowCount) return null;
          // a page of the log, not the whole log cut down: a long run's log is not read for every page
          return readPage(c, projectId, req.params.runId, after, limit);
        })
      : null;
    if (!found) {
      refused(req, 404, 'unknown_run');
      return refuse(reply, 404, 'unknown_run', 'no such run in this project');
    }
    return { runId: req.params.runId, events: found.map((e) => ({ seq: e.seq, type: e.type, data: e.data, recordedAt: e.recordedAt, hash: e.hash })) };
  });

  // ───── webhooks

  app.post<{ Params: { project: string; workflow: string }; Body: Buffer | undefined }>(
    '/hooks/:project/:workflow',
    {
      // names are checked and the target looked up before the body is read; what was found is not told until the signature is
      onRequest: async (req, reply) => {
        const { project: projectSlug, workflow: workflowSlug } = req.params;
        if (!SLUG.test(projectSlug) || !SLUG.test(workflowSlug)) {
          refused(req, 400, 'bad_path');
          return refuse(reply, 400, 'bad_path', 'project and workflow names are slugs: a lower-case letter, then up to 62 lower-case letters, digits or -');
        }
        // what the headers alone say is wrong is answered before a byte of the body is read (and before the target
        // is looked up: these answers are the same for every target, so they tell a prober nothing)
        const headerProblem = webhookHeaderProblem(req, clock.now(), tolerance);
        if (headerProblem) {
          refused(req, headerProblem.status, headerProblem.code, { project: projectSlug, workflow: workflowSlug, reason: headerProblem.message });
          // the body announced is not wanted: the connection closes after the answer instead of waiting to drain it
          void reply.header('connection', 'close');
          return refuse(reply, headerProblem.status, headerProblem.code, headerProblem.message);
        }
        // the budget of all bodies being received is full: answered before a byte of this one is read
        if (bodyBytesHeld >= bodyBudget) {
          refused(req, 503, 'busy', { project: projectSlug, workflow: workflowSlug, bodyBytesHeld });
          void reply.header('retry-after', '1').header('connection', 'close');
          return refuse(reply, 503, 'busy', BUSY);
        }
        // one round trip, whether the project and workflow exist or not (an unknown one's refusal comes a little
        // sooner than a wrong signature's: names are not secrets, README Security); the version is checked only
        // once the signature holds
        targets.set(req, await findIntakeTarget(pool, opts.keyring, projectSlug, workflowSlug, targetCache));
      },
      // Bodies are counted as their bytes arrive, against the budget of all bodies being received and against
      // their target project's share of it (unknown targets share one), and given back when the answer is sent.
      // Reserving the length a request announced let 17 connections with no secret, each announcing 2 MiB and
      // sending a byte, hold the whole budget: every project's webhooks got 503 for as long as they trickled.
      preParsing: async (req, reply, payload) => {
        const bucket = targets.get(req)?.project.id ?? '';
        let counted = 0;
        let answered = false;
        reply.raw.once('close', () => {
          // what still passes after the answer (a body refused as too large, still arriving) is no longer held
          answered = true;
          bodyBytesHeld -= counted;
          const left = (bodyBytesByProject.get(bucket) ?? 0) - counted;
          if (left > 0) bodyBytesByProject.set(bucket, left);
          else bodyBytesByProject.delete(bucket);
          counted = 0;
        });
        const counter = new Transform({
          transform(chunk: Buffer, _encoding, next) {
            if (answered) return next();
            const ofProject = bodyBytesByProject.get(bucket) ?? 0;
            if (bodyBytesHeld + chunk.length > bodyBudget || ofProject + chunk.length > projectBodyBudget) {
              refused(req, 503, 'busy', { project: req.params.project, workflow: req.params.workflow, bodyBytesHeld, ofProject });
              next(new Refusal(503, 'busy', BUSY));
              return;
            }
            bodyBytesHeld += chunk.length;
            bodyBytesByProject.set(bucket, ofProject + chunk.length);
            counted += chunk.length;
            // (it arrives in blocks however its sender cut it, see GatheredRequest)
            if ((req.raw as GatheredRequest).fragmented) {
              next(new Refusal(400, 'body_too_fragmented', FRAGMENTED_BODY));
              return;
            }
            next(null, chunk);
          },
        });
        pipeline(payload, counter, () => undefined);
        return counter;
      },
    },
    async (req, reply) => {
      const target = targets.get(req) ?? null;
      const { project: projectSlug, workflow: workflowSlug } = req.params;
      const where = { project: projectSlug, workflow: workflowSlug };
      const raw = req.body;
      if (!Buffer.isBuffer(raw)) {
        // no content type at all: nothing was parsed
        refused(req, 415, 'unsupported_media_type', where);
        return refuse(reply, 415, 'unsupported_media_type', 'webhook bodies must be sent as application/json');
      }
      // (its presence and form were checked before the body was read)
      const deliveryId = req.headers[DELIVERY_HEADER] as string;
      const sigHeader = req.headers[SIGNATURE_HEADER];
      const why = checkSignature(
        typeof sigHeader === 'string' ? sigHeader : undefined,
        target?.workflow.signingSecret ?? NO_SECRET,
        { deliveryId, project: projectSlug, workflow: workflowSlug },
        raw,
        clock.now(),
        tolerance,
      );
      if (why || !target) {
        // an unknown project or workflow is refused exactly like a wrong secret (it is logged as what it is)
        refused(req, 401, 'bad_signature', { ...where, reason: target ? why : 'unknown project or workflow' });
        return refuse(reply, 401, 'bad_signature', why ?? MISMATCH);
      }
      const input = parseWebhookBody(raw);
      let version;
      try {
        version = target.latest();
      } catch (e) {
        if (e instanceof NotFoundError) {
          refused(req, 404, 'no_published_version', where);
          return refuse(reply, 404, 'no_published_version', 'the workflow has no published version');
        }
        throw e;
      }
      // the signed definition names its workflow: a workflow row renamed (or two swapped) behind the engine's back is not run by the wrong name
      if (version.definition.name !== target.workflow.slug) {
        throw new TamperedDefinitionError(target.workflow.id, version.version, `was published as workflow "${version.definition.name.slice(0, 80)}", not "${target.workflow.slug}" (the workflow was renamed behind the engine's back)`);
      }
      const started = await startRun(pool, {
        runId: runIdOfDelivery(opts.keyring.runIdKey(), target.project.id, target.workflow.id, deliveryId),
        projectId: target.project.id,
        projectSlug: target.project.slug,
        workflowSlug: target.workflow.slug,
        version,
        deliveryId,
        input,
        rawBody: raw,
        at: clock.now(),
        engine: engineInfo(opts.flags),
        chain: opts.keyring.chainKey(),
        keys: opts.keyring.chainKeys(),
        failpoints: opts.failpoints,
      });
      log({ level: 'info', msg: started.duplicate ? 'delivery repeated' : 'run started', ...where, deliveryId, runId: started.runId, version: version.version });
      if (started.head) journal?.record({ projectId: target.project.id, runId: started.runId, ...started.head }, new Date());
      if (!started.duplicate) {
        const run: LoggedRun | undefined =
          started.head && started.state
            ? { runId: started.runId, projectId: target.project.id, workflowId: target.workflow.id, version: version.version, state: started.state, seq: started.head.seq, lastHash: started.head.hash }
            : undefined;
        opts.onRunStarted?.(started.runId, run && { run, version, bytes: raw.length });
      }
      return reply.code(started.duplicate ? 200 : 202).send({ runId: started.runId, deliveryId, duplicate: started.duplicate });
    },
  );

  await app.listen({ port: opts.port ?? 0, host });
  const port = (app.server.address() as AddressInfo).port;
  let closed: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    close: () => (closed ??= app.close().then(() => journal?.flush())),
  };
}
