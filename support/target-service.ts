import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createHash } from 'node:crypto';

/**
 * The scriptable HTTP service a workflow's http_call step talks to (an order or
 * payment API in the specs). It records every attempt and, like a real payment
 * API, dedupes side effects by Idempotency-Key, so a spec can tell "retried" apart
 * from "did it twice".
 *
 * Rules:
 * - Keys are global to the service (not per path), as in Stripe-like APIs, so an
 *   engine that reuses one key for two different calls gets the first call's
 *   stored response back and fewer effects than expected — a visible bug.
 * - Like Stripe, a known key that arrives with other bytes (method, path or the
 *   exact body) is refused with 400 idempotency_error and flagged keyMismatch:
 *   every retry under one key must send exactly what the first attempt sent.
 * - Only 2xx answers create effects and only those are stored for replay; a key
 *   whose first attempt failed is processed afresh next time.
 * - Scripted behaviours are consumed before the dedupe lookup: they model the
 *   transport/server misbehaving, which happens whether or not the key is known.
 * - 'slow' commits the effect on arrival and answers late: a client that times out
 *   and retries with the same key gets the stored answer. 'stall' and 'reset' do
 *   not commit unless commit: true (the "done, but the answer was lost" case).
 */

export type Outcome = 'answered' | 'failed' | 'reset' | 'stalled';

export interface RecordedRequest {
  /** Position in requests[]. */
  index: number;
  method: string;
  /** Pathname without the query string; scripts and defaults match on it. */
  path: string;
  /** Raw request URL including the query string. */
  url: string;
  /** Lowercased names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  /** Parsed JSON when content-type mentions json (null when empty), else the raw string. */
  body: unknown;
  /** The body exactly as its bytes arrived (UTF-8). */
  raw: string;
  idempotencyKey: string | null;
  at: Date;
  outcome: Outcome;
  /** Status sent (or that would have been sent, for stall/reset); null when none was decided. */
  status: number | null;
  /** Answered from the idempotency store without creating an effect. */
  replayed: boolean;
  /** A replayed key arrived with a different method, path or body than the original. */
  keyMismatch: boolean;
}

export interface Effect {
  id: string;
  method: string;
  path: string;
  idempotencyKey: string | null;
  body: unknown;
  at: Date;
  /** Index in requests[] of the request that created it. */
  requestIndex: number;
  status: number;
}

export type Behaviour =
  | { kind: 'fail'; status?: number; body?: unknown; times?: number }
  | { kind: 'stall'; times?: number; commit?: boolean }
  | { kind: 'slow'; ms: number; times?: number }
  | { kind: 'reset'; times?: number; commit?: boolean }
  | { kind: 'respond'; status: number; body: unknown; headers?: Record<string, string>; times?: number };

export type ResponseBody = unknown | ((req: RecordedRequest) => unknown);

export interface TargetServiceStats {
  attempts: number;
  effects: number;
  byOutcome: Record<Outcome, number>;
}

export interface TargetServiceOptions {
  /** Prefix of generated ids. Default 'ord_'. */
  idPrefix?: string;
}

interface StoredResponse {
  status: number;
  headers: Record<string, string>;
  payload: Buffer;
  /** Fingerprint of the original request, to flag key reuse with different input. */
  fingerprint: string;
  effectId: string;
}

interface Prepared {
  status: number;
  headers: Record<string, string>;
  payload: Buffer;
}

const HOST = '127.0.0.1';

export class TargetService {
  readonly requests: RecordedRequest[] = [];
  private readonly effectList: Effect[] = [];
  private readonly store = new Map<string, StoredResponse>();
  private readonly scripts = new Map<string, Array<{ behaviour: Behaviour; remaining: number }>>();
  private readonly defaults = new Map<string, { status: number; body: ResponseBody }>();
  /** Sockets we are deliberately not answering yet (stall, slow); destroyed on reset()/close(). */
  private readonly pending = new Map<Socket, NodeJS.Timeout | null>();
  private server: http.Server | null = null;
  private url: string | null = null;
  private readonly idPrefix: string;
  /** when any are set, only requests carrying `Authorization: Bearer <one of them>` reach the business logic */
  private readonly bearers = new Set<string>();

  /** when set, the service does what every request asks, key or not (a service with no idempotency) */
  private ignoreKeys = false;

  /** Act on every request as new, as a service that does not honour Idempotency-Key would. */
  ignoreIdempotencyKeys(): void {
    this.ignoreKeys = true;
  }

  /**
   * Require a bearer token, as a real order API would (401 without one): each call adds a key it accepts (one
   * per customer, as each project keeps its own), null accepts any request again.
   */
  requireBearer(token: string | null): void {
    if (token === null) this.bearers.clear();
    else this.bearers.add(token);
  }

  constructor(opts: TargetServiceOptions = {}) {
    this.idPrefix = opts.idPrefix ?? 'ord_';
  }

  get baseUrl(): string {
    if (!this.url) throw new Error('TargetService not started: call start() first');
    return this.url;
  }

  start(): Promise<string> {
    if (this.server) return Promise.reject(new Error('TargetService already started'));
    const server = http.createServer((req, res) => this.onRequest(req, res));
    this.server = server;
    return new Promise<string>((resolve, reject) => {
      const onError = (err: Error) => {
        this.server = null;
        reject(err);
      };
      server.once('error', onError);
      server.listen(0, HOST, () => {
        server.off('error', onError);
        this.url = `http://${HOST}:${(server.address() as AddressInfo).port}`;
        resolve(this.url);
      });
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    this.releasePending();
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // Keep-alive and stalled sockets would otherwise hold close() open.
    server.closeAllConnections();
    await closed;
  }

  effects(path?: string): Effect[] {
    return path === undefined ? [...this.effectList] : this.effectList.filter((e) => e.path === path);
  }

  /** Queue a behaviour for a path ('*' = any path). Path-specific queues are consulted first. */
  script(path: string, behaviour: Behaviour): void {
    const times = behaviour.times ?? 1;
    if (!(times > 0)) throw new Error(`TargetService.script: times must be > 0, got ${times}`);
    const queue = this.scripts.get(path) ?? [];
    queue.push({ behaviour, remaining: times });
    this.scripts.set(path, queue);
  }

  /** Replace the default answer for a path ('*' = any path). body may be a function of the request. */
  setDefaultResponse(path: string, status: number, body: ResponseBody): void {
    this.defaults.set(path, { status, body });
  }

  /** Drop every scripted trouble not yet spent: from now on each request gets the default answer. */
  clearScripts(): void {
    this.scripts.clear();
  }

  /** Forget everything (requests, effects, idempotency store, scripts, defaults); stays listening. */
  reset(): void {
    this.releasePending();
    this.requests.length = 0;
    this.effectList.length = 0;
    this.store.clear();
    this.scripts.clear();
    this.defaults.clear();
  }

  stats(): TargetServiceStats {
    const byOutcome: Record<Outcome, number> = { answered: 0, failed: 0, reset: 0, stalled: 0 };
    for (const r of this.requests) byOutcome[r.outcome]++;
    return { attempts: this.requests.length, effects: this.effectList.length, byOutcome };
  }

  /** The id the default answer uses for a key; lets a step predict it. */
  idFor(idempotencyKey: string): string {
    return this.idPrefix + sha256(idempotencyKey).slice(0, 10);
  }

  private releasePending(): void {
    for (const [sock, timer] of this.pending) {
      if (timer) clearTimeout(timer);
      sock.destroy();
    }
    this.pending.clear();
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const at = new Date();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      try {
        this.handle(req, res, at, Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        // A bug here must not look like a scripted failure; make it loud in the body.
        if (!res.headersSent) send(res, json(500, { error: 'target-service internal error', message: String(err) }));
      }
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, at: Date, raw: string): void {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    }
    const url = req.url ?? '/';
    const path = url.split('?')[0] || '/';
    const contentType = headers['content-type'] ?? '';
    let body: unknown = raw;
    if (/json/i.test(contentType)) {
      try {
        body = raw === '' ? null : JSON.parse(raw);
      } catch {
        body = raw; // keep what was sent; a spec can assert on it
      }
    }
    const rec: RecordedRequest = {
      index: this.requests.length,
      method: req.method ?? 'GET',
      path,
      url,
      headers,
      body,
      raw,
      idempotencyKey: headers['idempotency-key'] ?? null,
      at,
      outcome: 'answered',
      status: null,
      replayed: false,
      keyMismatch: false,
    };
    this.requests.push(rec);
    const auth = rec.headers.authorization ?? '';
    if (this.bearers.size > 0 && !(auth.startsWith('Bearer ') && this.bearers.has(auth.slice(7)))) {
      rec.outcome = 'failed';
      rec.status = 401;
      send(res, json(401, { error: { type: 'unauthorized', message: 'a valid bearer token is required' } }));
      return;
    }
    const behaviour = this.nextBehaviour(path);
    const sock = req.socket;

    switch (behaviour?.kind) {
      case 'fail': {
        const r = json(behaviour.status ?? 500, behaviour.body ?? { error: 'scripted failure' });
        rec.outcome = 'failed';
        rec.status = r.status;
        send(res, r);
        return;
      }
      case 'reset': {
        const r = behaviour.commit ? this.commit(rec, undefined) : null;
        rec.outcome = 'reset';
        rec.status = r?.status ?? null;
        abort(sock);
        return;
      }
      case 'stall': {
        const r = behaviour.commit ? this.commit(rec, undefined) : null;
        rec.outcome = 'stalled';
        rec.status = r?.status ?? null;
        this.pending.set(sock, null);
        sock.once('close', () => this.pending.delete(sock));
        return;
      }
      case 'slow': {
        const r = this.commit(rec, undefined);
        rec.status = r.status;
        const onClose = () => {
          clearTimeout(timer);
          this.pending.delete(sock);
        };
        const timer = setTimeout(() => {
          // Keep-alive sockets carry many requests; don't pile up listeners on them.
          sock.off('close', onClose);
          this.pending.delete(sock);
          send(res, r);
        }, behaviour.ms);
        this.pending.set(sock, timer);
        sock.once('close', onClose);
        return;
      }
      case 'respond':
      case undefined: {
        const r = this.commit(rec, behaviour);
        rec.status = r.status;
        send(res, r);
        return;
      }
    }
  }

  private nextBehaviour(path: string): Behaviour | undefined {
    for (const key of [path, '*']) {
      const queue = this.scripts.get(key);
      if (!queue || queue.length === 0) continue;
      const head = queue[0];
      if (--head.remaining <= 0) queue.shift();
      return head.behaviour;
    }
    return undefined;
  }

  /**
   * Decide the answer for a request that reaches the business logic: the stored
   * answer for a known key, else a fresh one, committing an effect when it is 2xx.
   */
  private commit(rec: RecordedRequest, scripted: Extract<Behaviour, { kind: 'respond' }> | undefined): Prepared {
    const key = rec.idempotencyKey;
    const fingerprint = `${rec.method} ${rec.path} ${sha256(rec.raw)}`;
    if (key !== null && !this.ignoreKeys) {
      const stored = this.store.get(key);
      if (stored && stored.fingerprint !== fingerprint) {
        rec.keyMismatch = true;
        return json(400, {
          error: { type: 'idempotency_error', message: 'Keys for idempotent requests can only be used with the same parameters they were first used with.' },
        });
      }
      if (stored) {
        rec.replayed = true;
        return { status: stored.status, headers: { ...stored.headers, 'idempotent-replayed': 'true' }, payload: stored.payload };
      }
    }
    const id = key !== null && !this.ignoreKeys ? this.idFor(key) : this.idPrefix + sha256(`nokey:${this.effectList.length}`).slice(0, 10);
    let prepared: Prepared;
    if (scripted) {
      prepared = encode(scripted.status, scripted.body, scripted.headers);
    } else {
      const def = this.defaults.get(rec.path) ?? this.defaults.get('*');
      if (def) {
        const b = typeof def.body === 'function' ? (def.body as (r: RecordedRequest) => unknown)(rec) : def.body;
        prepared = encode(def.status, b);
      } else {
        prepared = json(200, { ok: true, id, received: rec.body });
      }
    }
    if (prepared.status >= 200 && prepared.status < 300) {
      this.effectList.push({
        id,
        method: rec.method,
        path: rec.path,
        idempotencyKey: key,
        body: rec.body,
        at: rec.at,
        requestIndex: rec.index,
        status: prepared.status,
      });
      if (key !== null && !this.ignoreKeys) this.store.set(key, { ...prepared, fingerprint, effectId: id });
    }
    return prepared;
  }
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function json(status: number, body: unknown): Prepared {
  return encode(status, body);
}

/** Strings go out raw when the caller set a content-type; everything else is JSON. */
function encode(status: number, body: unknown, extra: Record<string, string> = {}): Prepared {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(extra)) headers[k.toLowerCase()] = v;
  let payload: Buffer;
  if (typeof body === 'string' && headers['content-type']) {
    payload = Buffer.from(body, 'utf8');
  } else {
    payload = Buffer.from(JSON.stringify(body === undefined ? null : body), 'utf8');
    headers['content-type'] ??= 'application/json; charset=utf-8';
  }
  return { status, headers, payload };
}

function send(res: http.ServerResponse, r: Prepared): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(r.status, { ...r.headers, 'content-length': String(r.payload.length) });
  res.end(r.payload);
}

/** RST rather than FIN so the client sees a broken connection, not an empty reply. */
function abort(sock: Socket): void {
  try {
    sock.resetAndDestroy();
  } catch {
    sock.destroy();
  }
}

