import type { ChainKeys } from '../src/domain/hash-chain';
import type { SupabaseClient } from '@supabase/supabase-js';
import type { Pool } from 'pg';
import { inProject } from '../src/db/scope';
import { TcpProxy } from '../src/faults/tcp-proxy';
import { closeRealtimeClient, LiveLog, openRealtimeClient, type CaughtUpEvent } from '../src/realtime/live-log';
import { RealtimeServer } from '../src/realtime/server';
import { signAnonKey, signProjectToken } from '../src/realtime/tokens';

/*
 * The scenario's live logs: a Realtime server of its own (or the one
 * MESHHOOK_REALTIME_URL names) and, for every project the scenario sets up, a
 * supabase-js client subscribed to that project's run events before any of its
 * runs starts. After the scenario, each run's live log must end equal to its
 * run log: the same events in the same order, no gap while subscribed, nothing
 * the run log does not hold.
 */

export interface ProjectLive {
  /** the real supabase-js client, joined with a token for this project alone */
  client: SupabaseClient;
  live: LiveLog;
  token: string;
}

/** Someone the scenario names who watches a project's live log with a token of their own. */
export interface Viewer {
  name: string;
  /** the project the viewer's token is for */
  signedInTo: string;
  /** the project whose live log the viewer asked for */
  watching: string;
  client: SupabaseClient;
  live: LiveLog;
  /** why the live log refused the viewer, if it did */
  refusal: string | null;
  /** a live log of the viewer's own project on the same connection (the positive control of an isolation check) */
  own?: LiveLog;
  /** the token the client presents (renewable) */
  credential: { token: string };
  /** the viewer's own network path to the server, so a scenario can stall it */
  connection: TcpProxy;
}

export class LiveLogs {
  server: RealtimeServer | null = null;
  url = '';
  anonKey = '';
  readonly byProject = new Map<string, ProjectLive>();
  readonly viewers = new Map<string, Viewer>();
  /** test-only failpoint a scenario may set: changes the server swallows instead of delivering */
  dropRule: ((c: { table: string; record: Record<string, unknown> }) => boolean) | null = null;
  /** what the server and the subscribers said (debug left out), for a failing scenario's report */
  readonly journal: string[] = [];
  private port = 0;

  constructor(
    private readonly opts: {
      ownerUrl: string;
      jwtSecret: string;
      /** the engine's chain keys: the server sends no run_events row the engine did not write */
      chainKeys?: ChainKeys;
      /** the engine's pool: catch-up reads the project's history as the engine does, under row-level security */
      engineDb: Pool;
      /** test-only: changes the server swallows, `table:column=value` (MESHHOOK_REALTIME_DROP) */
      drop?: (c: { table: string; record: Record<string, unknown> }) => boolean;
    },
  ) {}

  async start(): Promise<void> {
    const external = process.env.MESHHOOK_REALTIME_URL;
    if (external) {
      this.url = external;
    } else {
      this.dropRule = this.opts.drop ?? null;
      await this.startServer();
    }
    this.anonKey = await signAnonKey({ secret: this.opts.jwtSecret });
  }

  private async startServer(): Promise<void> {
    this.server = new RealtimeServer({
      databaseUrl: this.opts.ownerUrl,
      jwtSecret: this.opts.jwtSecret,
      chainKeys: this.opts.chainKeys,
      port: this.port,
      dropChange: (c) => this.dropRule?.(c) ?? false,
      log: (e) => this.note(e),
    });
    const { url, port } = await this.server.start();
    this.url = url;
    this.port = port;
  }

  private note(e: Record<string, unknown>): void {
    if (e.level === 'debug') return;
    this.journal.push(`${new Date().toISOString()} ${JSON.stringify(e)}`);
  }

  /** Stop the server and start a new one on the same port; subscribers reconnect by themselves. */
  async restartServer(): Promise<void> {
    if (!this.server) throw new Error('the live-log server is external (MESHHOOK_REALTIME_URL): the scenario cannot restart it');
    await this.server.close();
    await this.startServer();
  }

  /**
   * A named viewer opens a project's live log with a token for `signedInTo`
   * (the same project unless the scenario says otherwise). A refused join is
   * kept as the viewer's refusal, not thrown.
   */
  async openViewer(name: string, watching: string, opts: { signedInTo?: string; token?: string } = {}): Promise<Viewer> {
    const signedInTo = opts.signedInTo ?? watching;
    const token = opts.token ?? (await this.tokenFor(signedInTo));
    const credential = { token };
    const target = new URL(this.url.replace(/^ws/, 'http'));
    const connection = new TcpProxy({ targetHost: target.hostname, targetPort: Number(target.port || (target.protocol === 'https:' ? 443 : 80)) });
    const port = await connection.start();
    const viaProxy = new URL(target.href);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(port);
    const client = await openRealtimeClient({ url: viaProxy.origin, anonKey: this.anonKey, accessToken: () => Promise.resolve(credential.token) });
    const live = new LiveLog({ client, scope: { projectId: watching }, catchUp: (k) => this.catchUp(signedInTo, k, watching), ownsClient: true });
    const viewer: Viewer = { name, signedInTo, watching, client, live, refusal: null, credential, connection };
    if (signedInTo !== watching) {
      viewer.own = new LiveLog({ client, scope: { projectId: signedInTo }, catchUp: (k) => this.catchUp(signedInTo, k, signedInTo) });
    }
    const previous = this.viewers.get(name);
    await previous?.live.close();
    await previous?.connection.close();
    this.viewers.set(name, viewer);
    try {
      await live.ready(15_000);
      await viewer.own?.ready(15_000);
    } catch (e) {
      viewer.refusal = live.lastError ?? (e as Error).message;
    }
    return viewer;
  }

  get jwtSecret(): string {
    return this.opts.jwtSecret;
  }

  /** A fresh token for the viewer, sent on the open socket (supabase-js pushes access_token to every channel). */
  async renewToken(name: string): Promise<void> {
    const viewer = this.viewer(name);
    // a claim of its own makes it differ from the old token even within the same second
    viewer.credential.token = await signProjectToken({ secret: this.opts.jwtSecret, projectId: viewer.signedInTo, ttlSec: 3600, claims: { renewed_at: Date.now() } });
    await viewer.client.realtime.setAuth();
  }

  viewer(name: string): Viewer {
    const v = this.viewers.get(name);
    if (!v) throw new Error(`"${name}" has not opened a live log in this scenario`);
    return v;
  }

  /** Subscribe to a project's live log (once); resolves when changes arrive live. */
  async watch(projectId: string): Promise<ProjectLive> {
    const known = this.byProject.get(projectId);
    if (known) return known;
    const token = await this.tokenFor(projectId);
    const client = await openRealtimeClient({ url: this.url, anonKey: this.anonKey, accessToken: token });
    const live = new LiveLog({ client, scope: { projectId }, catchUp: (k) => this.catchUp(projectId, k, projectId), ownsClient: true, log: (e) => this.note({ project: projectId, ...e }) });
    const entry = { client, live, token };
    this.byProject.set(projectId, entry);
    await live.ready();
    return entry;
  }

  tokenFor(projectId: string, ttlSec = 3600): Promise<string> {
    return signProjectToken({ secret: this.opts.jwtSecret, projectId, ttlSec });
  }

  /** What a UI's history call returns: the project's events after what the subscriber already holds. */
  private async catchUp(signedInTo: string, known: Map<string, number>, watching: string): Promise<CaughtUpEvent[]> {
    // as the engine's history API would answer: for the caller's project, under row-level security
    const rows = await inProject(this.opts.engineDb, signedInTo, async (c) =>
      (await c.query<{ run_id: string; seq: number; type: string; payload: unknown; hash: string }>(
        'SELECT run_id::text, seq, type, payload, hash FROM run_events WHERE project_id = $1 ORDER BY run_id, seq',
        [watching],
      )).rows,
    ).catch(() => []); // the database may be down right now: the next rejoin asks again
    return rows
      .filter((r) => r.seq > (known.get(r.run_id) ?? 0))
      .map((r) => ({ runId: r.run_id, seq: r.seq, type: r.type, data: r.payload, hash: r.hash }));
  }

  /**
   * Runs a live log holds that are not its project's: a project's watcher, a viewer's own project and the
   * project a viewer watches may each hold only runs of the project the token is for (`projectOf` maps every
   * run id the database holds to its project id). Empty when no live log was sent another project's run.
   */
  strangers(projectOf: Map<string, string>): string[] {
    const found: string[] = [];
    const check = (who: string, live: LiveLog, allowed: string | null): void => {
      for (const runId of live.runIds()) {
        const owner = projectOf.get(runId) ?? 'no project the database knows';
        if (owner !== allowed) found.push(`${who} received run ${runId} of project ${owner}`);
      }
    };
    for (const [projectId, entry] of this.byProject) check(`the live log of project ${projectId}`, entry.live, projectId);
    for (const v of this.viewers.values()) {
      // a viewer whose token is for another project than the one they watch may receive nothing there at all
      check(`"${v.name}" (signed in to ${v.signedInTo}, watching ${v.watching})`, v.live, v.signedInTo === v.watching ? v.watching : null);
      if (v.own) check(`"${v.name}"'s own live log (${v.signedInTo})`, v.own, v.signedInTo);
    }
    return found;
  }

  /**
   * The first difference between a run's live log and its run log, once the
   * live log has had the time to receive everything (null when they agree).
   */
  async differenceFrom(projectId: string, runId: string, runLog: Array<{ seq: number; type: string; hash: string }>): Promise<string | null> {
    const entry = this.byProject.get(projectId);
    if (!entry) return null;
    const last = runLog.length ? runLog[runLog.length - 1].seq : 0;
    await entry.live.waitUntilHolds(runId, last, 20_000).catch(() => undefined);
    return entry.live.compareWith(runId, runLog);
  }

  /** Every frame's content the subscribers received, as text (the leak check reads them). */
  frames(): string[] {
    const out: string[] = [];
    for (const live of [...[...this.byProject.values()].map((p) => p.live), ...[...this.viewers.values()].flatMap((v) => (v.own ? [v.live, v.own] : [v.live]))]) {
      for (const runId of live.runIds()) for (const e of live.eventsOf(runId)) out.push(JSON.stringify(e));
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.viewers.values()].map(async (v) => {
      await v.own?.close();
      await v.live.close();
      await v.connection.close();
    }));
    this.viewers.clear();
    await Promise.allSettled([...this.byProject.values()].map((p) => p.live.close()));
    this.byProject.clear();
    await this.server?.close().catch(() => undefined);
  }
}

export { closeRealtimeClient, openRealtimeClient };
