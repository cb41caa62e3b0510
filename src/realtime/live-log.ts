import { createClient, type RealtimeChannel, type SupabaseClient } from '@supabase/supabase-js';
import { EventEmitter } from 'node:events';
import { WebSocket } from 'ws';

/*
 * The live-log subscriber: the real supabase-js client on a `postgres_changes` INSERT subscription
 * to public.run_events, scoped to a project (`project_id=eq.…`) or one run (`run_id=eq.…`).
 *
 * It holds each run's events in seq order, deduplicated by (runId, seq). Every time the channel
 * reports SUBSCRIBED (first join and every rejoin) — and again when the server's `system`
 * postgres_changes ok arrives — it asks the caller's `catchUp(known)` for what it missed (the
 * caller reads the engine's history; `known` is, per run, the highest seq held without a hole).
 *
 * Gap detection: a live event for a run whose highest held seq is not seq−1 is a *gap* when the
 * channel has been continuously subscribed since that previous event was held (the continuity
 * token below changes with every status change and system message). A jump across a reconnect is
 * not a gap: the rejoin's catch-up fills it. A gap is recorded and then filled by a catch-up too,
 * so the held log ends complete, as a UI would; `compareWith` still reports it.
 *
 * Reconnection is supabase-js's own (1 s, 2 s, 5 s, 10 s).
 */

export interface LiveEvent {
  runId: string;
  seq: number;
  type: string;
  /** the event's payload */
  data: unknown;
  hash: string;
  via: 'live' | 'catch-up';
}

export type CaughtUpEvent = Omit<LiveEvent, 'via'>;

export interface LiveGap {
  runId: string;
  expectedSeq: number;
  gotSeq: number;
}

export type LiveScope = { projectId: string } | { runId: string };
export type LiveStatus = 'JOINING' | 'SUBSCRIBED' | 'CHANNEL_ERROR' | 'TIMED_OUT' | 'CLOSED';

export interface OpenRealtimeClientOptions {
  /** base URL, what createClient takes (http://host:port of the compatible server, or the gateway of a real one) */
  url: string;
  /** the apikey: an anon JWT */
  anonKey: string;
  /** the user token the channels join with; a function lets supabase-js refresh it at each heartbeat */
  accessToken: string | (() => Promise<string>);
  /** extra socket query parameters (e.g. log_level) */
  params?: Record<string, string>;
  vsn?: '1.0.0' | '2.0.0';
  heartbeatIntervalMs?: number;
  /** push timeout (join, leave, ack), default 10 s */
  timeout?: number;
}

/**
 * A supabase-js client whose realtime channels join with `accessToken`: the `accessToken` option
 * alone would send the first join without a token (auth resolves after subscribe() has built the
 * payload, so the channel would run with the anon key's claims), hence `realtime.setAuth()` before
 * any subscribe. `ws` is the transport (Node 20 has no global WebSocket; createClient throws without one).
 */
export async function openRealtimeClient(opts: OpenRealtimeClientOptions): Promise<SupabaseClient> {
  const token = opts.accessToken;
  const client = createClient(opts.url, opts.anonKey, {
    accessToken: typeof token === 'function' ? token : async () => token,
    realtime: {
      transport: WebSocket as unknown as NonNullable<NonNullable<Parameters<typeof createClient>[2]>['realtime']>['transport'],
      params: { ...opts.params },
      ...(opts.vsn ? { vsn: opts.vsn } : {}),
      ...(opts.heartbeatIntervalMs ? { heartbeatIntervalMs: opts.heartbeatIntervalMs } : {}),
      ...(opts.timeout ? { timeout: opts.timeout } : {}),
    },
  });
  await client.realtime.setAuth();
  return client;
}

/**
 * Leave every channel and close the socket. Prefer this to `client.realtime.disconnect()`:
 * in realtime-js 2.109 `disconnect()` arms a 10 s timer it never clears, which holds a Node
 * process open for 10 s after everything has closed. When the client's internals are the
 * expected ones, the phoenix socket is closed directly (after cancelling the client's own
 * deferred disconnect); otherwise this falls back to `disconnect()`.
 */
export async function closeRealtimeClient(client: SupabaseClient): Promise<void> {
  const rt = client.realtime;
  await Promise.all(rt.getChannels().map((ch) => Promise.race([rt.removeChannel(ch).catch(() => undefined), sleep(1000)])));
  const internals = rt as unknown as {
    _cancelPendingDisconnect?: () => void;
    socketAdapter?: { getSocket?: () => { disconnect?: (cb: () => void, code?: number, reason?: string) => void } };
  };
  const socket = internals.socketAdapter?.getSocket?.();
  if (typeof internals._cancelPendingDisconnect === 'function' && typeof socket?.disconnect === 'function') {
    internals._cancelPendingDisconnect();
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 1000);
      t.unref();
      socket.disconnect!(() => {
        clearTimeout(t);
        resolve();
      });
    });
  } else {
    await Promise.race([rt.disconnect().catch(() => undefined), sleep(1000)]);
  }
}

export interface LiveLogOptions {
  client: SupabaseClient;
  scope: LiveScope;
  /** events after `known.get(runId)` for known runs, whole logs of runs not in `known`, for the whole scope */
  catchUp: (known: Map<string, number>) => Promise<CaughtUpEvent[]>;
  schema?: string;
  table?: string;
  channelName?: string;
  /** wait for the server's `system` postgres_changes ok before ready() (default true) */
  waitForSystem?: boolean;
  /** disconnect the client on close() (LiveLog.open sets it) */
  ownsClient?: boolean;
  log?: (entry: Record<string, unknown>) => void;
}

interface Held extends LiveEvent {
  /** continuity token when it was held */
  token: number;
}

export class LiveLog {
  readonly gaps: LiveGap[] = [];
  /** events held under a number the log then showed another event under (see onLive) */
  readonly conflicts: Array<{ runId: string; seq: number; held: string; got: string }> = [];
  status: LiveStatus = 'JOINING';
  subscribedCount = 0;
  catchUpCount = 0;
  lastError: string | null = null;
  readonly channel: RealtimeChannel;
  private readonly runs = new Map<string, Map<number, Held>>();
  private readonly events = new EventEmitter();
  private token = 0;
  private catchUpDoneToken = -1;
  private systemOk = false;
  private wantCatchUp = false;
  private catchingUp = false;
  private closed = false;
  private readyState: 'pending' | 'ready' | 'failed' = 'pending';
  private readonly readyPromise: Promise<void>;
  private resolveReady!: () => void;
  private rejectReady!: (e: Error) => void;

  /** open a client and a live log that owns it */
  static async open(opts: OpenRealtimeClientOptions & Omit<LiveLogOptions, 'client' | 'ownsClient'>): Promise<LiveLog> {
    const client = await openRealtimeClient(opts);
    return new LiveLog({ ...opts, client, ownsClient: true });
  }

  constructor(private readonly opts: LiveLogOptions) {
    this.events.setMaxListeners(0);
    this.readyPromise = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.readyPromise.catch(() => undefined);
    const scope = opts.scope;
    const filter = 'projectId' in scope ? `project_id=eq.${scope.projectId}` : `run_id=eq.${scope.runId}`;
    const name = opts.channelName ?? `live-log:${'projectId' in scope ? scope.projectId : scope.runId}:${Math.random().toString(36).slice(2, 8)}`;
    this.channel = opts.client.channel(name);
    this.channel
      .on('postgres_changes', { event: 'INSERT', schema: opts.schema ?? 'public', table: opts.table ?? 'run_events', filter }, (payload) =>
        this.onLive(payload.new as Record<string, unknown>),
      )
      .on('system', {}, (payload: { extension?: string; status?: string; message?: string }) => this.onSystem(payload))
      .subscribe((status, err) => this.onStatus(status as LiveStatus, err));
  }

  /** resolves after the first SUBSCRIBED (and system ok) and the catch-up that followed it */
  ready(timeoutMs = 30_000): Promise<void> {
    if (this.readyState !== 'pending') return this.readyPromise;
    return new Promise<void>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`live log not ready after ${timeoutMs} ms (status ${this.status}${this.lastError ? `, last error: ${this.lastError}` : ''})`)),
        timeoutMs,
      );
      this.readyPromise.then(
        () => {
          clearTimeout(t);
          resolve();
        },
        (e) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }

  /**
   * Resolves when the channel is subscribed (with the server's system ok, unless waitForSystem is
   * false) and the catch-up that followed has completed: from then on new events arrive live.
   */
  settled(timeoutMs = 30_000): Promise<void> {
    if (this.isSettled()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.isSettled()) {
          cleanup();
          resolve();
        }
      };
      const t = setTimeout(() => {
        cleanup();
        reject(new Error(`live log not settled after ${timeoutMs} ms (status ${this.status}${this.lastError ? `, last error: ${this.lastError}` : ''})`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(t);
        this.events.off('change', check);
      };
      this.events.on('change', check);
    });
  }

  /** the events held for a run, in seq order */
  /** Called whenever the log holds something new (live or caught up); returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  eventsOf(runId: string): LiveEvent[] {
    const run = this.runs.get(runId);
    if (!run) return [];
    return [...run.values()].sort((a, b) => a.seq - b.seq).map(({ token: _t, ...e }) => e);
  }

  runIds(): string[] {
    return [...this.runs.keys()];
  }

  /** highest seq held without a hole (0 when none) */
  heldThrough(runId: string): number {
    const run = this.runs.get(runId);
    let n = 0;
    while (run?.has(n + 1)) n++;
    return n;
  }

  /** One readable line for the first difference from the run's log, or null when they agree and no gap was seen. */
  compareWith(runId: string, runLog: Array<{ seq: number; type: string; hash: string }>): string | null {
    const mine = new Map(this.eventsOf(runId).map((e) => [e.seq, e]));
    const theirs = new Map(runLog.map((e) => [e.seq, e]));
    const last = Math.max(0, ...mine.keys(), ...theirs.keys());
    for (let seq = 1; seq <= last; seq++) {
      const a = mine.get(seq);
      const b = theirs.get(seq);
      if (!a && !b) continue;
      if (!a) return `run ${runId}: the live log is missing event ${seq} (${b!.type})`;
      if (!b) return `run ${runId}: the live log holds event ${seq} (${a.type}) that the run log does not have`;
      if (a.type !== b.type) return `run ${runId}: event ${seq} is ${a.type} in the live log but ${b.type} in the run log`;
      if ((a.hash ?? '') !== (b.hash ?? '')) return `run ${runId}: event ${seq} (${a.type}) has hash ${short(a.hash)} in the live log but ${short(b.hash)} in the run log`;
    }
    const gap = this.gaps.find((g) => g.runId === runId);
    if (gap)
      return `run ${runId}: gap while subscribed: event ${gap.expectedSeq} never arrived live (event ${gap.gotSeq} came next; catch-up filled it)`;
    return null;
  }

  /** resolves once events 1..lastSeq of the run are all held */
  waitUntilHolds(runId: string, lastSeq: number, timeoutMs = 10_000): Promise<void> {
    if (this.heldThrough(runId) >= lastSeq) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.heldThrough(runId) >= lastSeq) {
          cleanup();
          resolve();
        }
      };
      const t = setTimeout(() => {
        cleanup();
        const held = this.eventsOf(runId).map((e) => e.seq);
        reject(
          new Error(
            `live log did not hold run ${runId} through event ${lastSeq} within ${timeoutMs} ms: holds [${held.join(', ')}], status ${this.status}` +
              (this.lastError ? `, last error: ${this.lastError}` : ''),
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(t);
        this.events.off('change', check);
      };
      this.events.on('change', check);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.readyState === 'pending') this.failReady(new Error('live log closed before it was ready'));
    const client = this.opts.client;
    await Promise.race([client.removeChannel(this.channel).catch(() => undefined), sleep(1000)]);
    if (this.opts.ownsClient) await closeRealtimeClient(client);
    this.events.removeAllListeners();
  }

  // ------------------------------------------------------------------ internals

  private log(entry: Record<string, unknown>): void {
    try {
      this.opts.log?.({ component: 'live-log', ...entry });
    } catch {
      /* ignore */
    }
  }

  private onStatus(status: LiveStatus, err?: Error): void {
    if (this.closed) return;
    this.token++;
    this.status = status;
    if (status === 'SUBSCRIBED') {
      this.subscribedCount++;
      this.systemOk = false;
      this.log({ msg: 'subscribed', count: this.subscribedCount });
      this.requestCatchUp();
    } else {
      if (err) this.lastError = err.message;
      this.log({ msg: 'channel status', status, error: err?.message });
      if (status === 'CLOSED' && this.readyState === 'pending') this.failReady(new Error(`live log channel closed${err ? `: ${err.message}` : ''}`));
    }
    this.events.emit('change');
  }

  private onSystem(p: { extension?: string; status?: string; message?: string }): void {
    if (this.closed || p.extension !== 'postgres_changes') {
      if (p.extension === 'system' && p.status === 'error') this.lastError = p.message ?? 'system error';
      return;
    }
    this.token++;
    if (p.status === 'ok') {
      this.systemOk = true;
      this.requestCatchUp();
    } else {
      this.lastError = p.message ?? 'postgres_changes subscription failed';
      if (this.readyState === 'pending') this.failReady(new Error(this.lastError));
    }
  }

  private onLive(row: Record<string, unknown>): void {
    if (this.closed || !row) return;
    const e = toEvent(row);
    if ('runId' in this.opts.scope && e.runId !== this.opts.scope.runId) return;
    const run = this.runs.get(e.runId);
    const held = run?.get(e.seq);
    if (held && held.hash === e.hash) return; // already held (a catch-up got there first)
    if (held) {
      // two events under one number: the one held was not the log's (a row written into the table and taken out
      // again by someone with the database). What is held from there on is let go, and the log read again.
      this.conflicts.push({ runId: e.runId, seq: e.seq, held: held.hash, got: e.hash });
      this.log({ msg: 'two events under one number: reading the log again', runId: e.runId, seq: e.seq });
      for (const seq of [...run!.keys()]) if (seq >= e.seq) run!.delete(seq);
      this.hold({ ...e, via: 'live', token: this.token });
      this.requestCatchUp();
      this.events.emit('change');
      return;
    }
    const max = run && run.size > 0 ? Math.max(...run.keys()) : 0;
    if (e.seq > max + 1) {
      const trusted = this.status === 'SUBSCRIBED' && (max > 0 ? run!.get(max)!.token === this.token : this.catchUpDoneToken === this.token);
      if (trusted) {
        const gap = { runId: e.runId, expectedSeq: max + 1, gotSeq: e.seq };
        this.gaps.push(gap);
        this.log({ msg: 'gap while subscribed', ...gap });
      }
      this.hold({ ...e, via: 'live', token: this.token });
      this.requestCatchUp();
    } else {
      this.hold({ ...e, via: 'live', token: this.token });
    }
    this.events.emit('change');
  }

  private hold(e: Held): void {
    let run = this.runs.get(e.runId);
    if (!run) this.runs.set(e.runId, (run = new Map()));
    if (!run.has(e.seq)) run.set(e.seq, e);
  }

  private requestCatchUp(): void {
    this.wantCatchUp = true;
    if (!this.catchingUp) void this.runCatchUps();
  }

  private async runCatchUps(): Promise<void> {
    this.catchingUp = true;
    let failures = 0;
    try {
      while (this.wantCatchUp && !this.closed && this.status === 'SUBSCRIBED') {
        this.wantCatchUp = false;
        const startToken = this.token;
        const known = new Map<string, number>();
        for (const runId of this.runs.keys()) known.set(runId, this.heldThrough(runId));
        let got: CaughtUpEvent[];
        try {
          got = await this.opts.catchUp(known);
        } catch (e) {
          failures++;
          this.lastError = `catch-up failed: ${(e as Error)?.message ?? String(e)}`;
          this.log({ msg: 'catch-up failed', error: this.lastError, failures });
          this.wantCatchUp = true;
          await sleep(Math.min(5000, 250 * 2 ** Math.min(failures, 5)));
          continue;
        }
        failures = 0;
        if (this.closed) return;
        for (const c of got) {
          const e = toEvent({ run_id: c.runId, seq: c.seq, type: c.type, payload: c.data, hash: c.hash });
          if ('runId' in this.opts.scope && e.runId !== this.opts.scope.runId) continue;
          // the log read from the database is the truth: an event held under the same number that differs goes
          const held = this.runs.get(e.runId)?.get(e.seq);
          if (held && held.hash !== e.hash) this.runs.get(e.runId)!.delete(e.seq);
          this.hold({ ...e, via: 'catch-up', token: startToken });
        }
        this.catchUpDoneToken = startToken;
        this.catchUpCount++;
        this.events.emit('change');
        this.checkReady();
      }
    } finally {
      this.catchingUp = false;
    }
  }

  private isSettled(): boolean {
    if (this.closed || this.status !== 'SUBSCRIBED' || this.catchUpDoneToken !== this.token || this.wantCatchUp) return false;
    return !(this.opts.waitForSystem ?? true) || this.systemOk;
  }

  private checkReady(): void {
    if (this.readyState !== 'pending' || !this.isSettled()) return;
    this.readyState = 'ready';
    this.resolveReady();
  }

  private failReady(e: Error): void {
    if (this.readyState !== 'pending') return;
    this.readyState = 'failed';
    this.rejectReady(e);
  }
}

function toEvent(row: Record<string, unknown>): Omit<LiveEvent, 'via'> {
  return {
    runId: String(row.run_id),
    seq: Number(row.seq),
    type: String(row.type),
    data: row.payload,
    hash: row.hash === null || row.hash === undefined ? '' : String(row.hash),
  };
}

function short(h: string | undefined): string {
  if (!h) return '(none)';
  return h.length > 12 ? `${h.slice(0, 12)}…` : h;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
