import type { Pool, PoolClient } from 'pg';
import { waitForMoment } from './moments';
import type { Fault, Moment } from './parameter-types';
import type { WorkerProcess } from './worker-process';
import { FINISHED, ReplayWorld } from './world';

/*
 * The mechanics behind the fault steps: stalling a worker at a named moment so
 * a database or network fault lands mid-step, finding which database sessions
 * belong to the engine, crashing and restarting Postgres, and getting the
 * scenario's own connections back afterwards. Feature files never see any of it.
 */

/** How long a stalled worker pauses at its moment: long enough to inject a fault while it waits. */
export const STALL_MS = 2_000;

/** Failpoint that pauses a worker the first time it reaches a moment. */
export function stallSpec(moment: Moment): string {
  return `${moment.site}#1=delay:${STALL_MS}`;
}

export function crashSpec(moment: Moment): string {
  return `${moment.site}=crash`;
}

export interface Stall {
  worker: WorkerProcess;
  site: string;
  firedAt: Date;
}

/** The worker armed to stall, once it has reached its moment (the failpoint log says so). */
export async function whenStalled(world: ReplayWorld): Promise<Stall> {
  const armed = world.workers.filter((w) => /=delay:/.test(w.opts.failpoints ?? ''));
  if (armed.length === 0) throw new Error('no worker was set to stall: add "Given the worker will stall <moment>" first');
  const worker = armed[armed.length - 1];
  let stall: Stall | null = null;
  const reached = () => {
    const hit = world.firedFailpoints().find((f) => f.pid === worker.pid && f.action === 'delay');
    if (hit) stall = { worker, site: `${hit.name}${hit.step ? `@${hit.step}` : ''}`, firedAt: new Date(hit.at) };
    return stall !== null;
  };
  const moment = world.armedAt.get(worker.opts.id);
  if (moment) await waitForMoment(world, worker, moment, 'stall', reached);
  else await world.waitUntil(`worker ${worker.opts.id} to stall at ${worker.opts.failpoints}`, async () => reached());
  return stall!;
}

/** Sites at which the stalled worker sits inside its open commit transaction. */
export function stallsInsideTransaction(stall: Stall): boolean {
  return /^(before-view-update|scheduling-next)\b/.test(stall.site);
}

/**
 * A fault proves something about a moment only if it landed while the worker
 * was still paused there: the proof is kept when `injectedAt` falls inside the
 * stall; a fault that came too late is an error that says by how much.
 */
export function landedDuringStall(stall: Stall, injectedAt: Date, proof: string | null): string | null {
  if (!proof) return null;
  const margin = stall.firedAt.getTime() + STALL_MS - injectedAt.getTime();
  if (margin <= 0) throw new Error(`it landed ${-margin} ms after the worker had moved on from ${stall.site}, so it hit no particular moment`);
  return `${proof}, ${margin} ms before the worker moved on`;
}

/** Postgres sessions that are the scenario's own (its pool, the intake): everything else on the database is the engine. */
export async function ownBackendPids(pool: Pool): Promise<number[]> {
  const n = Math.max(pool.totalCount, 1);
  const clients: PoolClient[] = [];
  try {
    for (let i = 0; i < n; i++) clients.push(await pool.connect());
    const pids: number[] = [];
    for (const c of clients) pids.push((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid);
    return pids;
  } finally {
    for (const c of clients) c.release();
  }
}

/** The engine's sessions on the scenario database, as the server sees them. */
export async function engineBackends(world: ReplayWorld): Promise<Array<{ pid: number; app: string; state: string }>> {
  const own = [...(await ownBackendPids(world.db)), ...(await ownBackendPids(world.engineDb))];
  const { admin } = await world.cluster();
  const { rows } = await admin.query<{ pid: number; app: string; state: string }>(
    `SELECT pid, application_name AS app, coalesce(state, '') AS state FROM pg_stat_activity
      WHERE datname = $1 AND backend_type = 'client backend' AND pid <> ALL($2::int[]) AND pid <> pg_backend_pid()`,
    [world.dbName, own],
  );
  return rows;
}

/** Cut every engine session from the server side; the scenario's own sessions stay. */
export async function terminateEngineBackends(world: ReplayWorld): Promise<Array<{ pid: number; app: string; state: string }>> {
  const victims = await engineBackends(world);
  const { admin } = await world.cluster();
  const killed: Array<{ pid: number; app: string; state: string }> = [];
  for (const v of victims) {
    const { rows } = await admin.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [v.pid]);
    if (rows[0].ok) killed.push(v);
  }
  return killed;
}

/**
 * After Postgres crashed, pooled connections are dead. A pool drops a client
 * that errors, so touch every pooled connection once and throw the dead ones
 * away, until a whole round comes back healthy.
 */
export async function refreshPool(pool: Pool, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const n = Math.max(pool.totalCount, 1);
    const clients = await Promise.all(Array.from({ length: n }, () => pool.connect().catch(() => null)));
    let broken = 0;
    await Promise.all(
      clients.map(async (c) => {
        if (!c) return void broken++;
        try {
          await c.query('SELECT 1');
          c.release();
        } catch (e) {
          broken++;
          c.release(e as Error);
        }
      }),
    );
    if (broken === 0) return;
    if (Date.now() > deadline) throw new Error(`the ${what} connections did not come back after the database restarted`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The scenario's own connections and the cluster's admin pool, usable again after a database crash. */
export async function refreshOwnConnections(world: ReplayWorld): Promise<void> {
  const { admin } = await world.cluster();
  await refreshPool(admin, 'admin');
  await refreshPool(world.db, "scenario's own");
  await refreshPool(world.engineDb, "scenario's engine");
}

/** Run a query from the scenario's side, once more on a fresh connection if the first one was dead. */
export async function retryOnce<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch {
    await new Promise((r) => setTimeout(r, 200));
    return fn();
  }
}

/** SIGKILL the postmaster (a real crash, no shutdown checkpoint) and start it again on the same data directory. */
export async function crashAndRestartDatabase(
  world: ReplayWorld,
): Promise<{ before: number | null; after: number | null; killedAt: Date }> {
  const { server } = await world.cluster();
  if (!server.canCrash) throw new Error(`the ${server.kind} Postgres cannot be crashed by the suite`);
  const before = server.pid();
  await server.kill();
  // taken once the postmaster is gone: a late kill must not pass as one inside the stall
  const killedAt = new Date();
  await server.restart();
  const after = server.pid();
  await refreshOwnConnections(world);
  return { before, after, killedAt };
}

/** The worker whose lock session holds the run right now, if any. */
export async function workerHoldingRun(world: ReplayWorld, runId: string): Promise<WorkerProcess | null> {
  const { rows } = await world.db.query<{ app: string }>(
    `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = $2 AND l.objid::bigint = ((hashtext($1)::bigint + 4294967296) % 4294967296)`,
    [runId, 0x4d48],
  );
  const app = rows[0]?.app;
  if (!app) return null;
  return world.workers.find((w) => app === `meshhook-lock-${w.opts.id}` && w.alive) ?? null;
}

/** Runs of the scenario that have not finished yet. */
export async function unfinishedRuns(world: ReplayWorld): Promise<number> {
  const { rows } = await world.db.query<{ n: number }>('SELECT count(*)::int AS n FROM runs WHERE NOT (status = ANY($1))', [FINISHED]);
  return rows[0].n;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Strike {
  /** when the fault hit the engine (the start of it, for faults that last) */
  injectedAt: Date;
  /** what shows it fired, or null when it touched nothing */
  proof: string | null;
}

/**
 * Make a database or network fault happen now and say what it hit. What the
 * engine had committed is acknowledged at the moment of the fault, so the
 * scenario can later show none of it was lost. Given the stall it lands in,
 * cutting connections inside a commit must cut the session holding it open.
 */
export async function strike(world: ReplayWorld, fault: Fault, stall?: Stall): Promise<Strike> {
  switch (fault.kind) {
    case 'drop-connections': {
      const killed = await terminateEngineBackends(world);
      const injectedAt = new Date();
      await world.acknowledgeCommitted();
      const hitTheTransaction = !stall || !stallsInsideTransaction(stall) || killed.some((k) => k.state.startsWith('idle in transaction'));
      const sessions = killed.map((k) => `${k.pid} ${k.app || '(pool)'} ${k.state}`).join(', ');
      return { injectedAt, proof: killed.length > 0 && hitTheTransaction ? `pg_terminate_backend cut ${killed.length} engine session(s): ${sessions}` : null };
    }
    case 'sever': {
      const before = world.proxy.stats().severed;
      world.proxy.sever();
      const injectedAt = new Date();
      const severed = world.proxy.stats().severed - before;
      await world.acknowledgeCommitted();
      return { injectedAt, proof: severed > 0 ? `${severed} engine connection(s) reset` : null };
    }
    case 'silence': {
      world.proxy.blackhole();
      const injectedAt = new Date();
      await world.acknowledgeCommitted();
      await sleep(fault.ms);
      // whatever crossed into the silence, either way, is delivered when the network comes back: a worker waiting
      // for the answer to a query it sent just before sends nothing more, but that answer is held
      const before = world.proxy.stats();
      world.proxy.heal();
      const after = world.proxy.stats();
      const up = after.bytesUp - before.bytesUp;
      const down = after.bytesDown - before.bytesDown;
      return { injectedAt, proof: up + down > 0 ? `${up} bytes the engine sent and ${down} the database answered were held back until the network healed` : null };
    }
    case 'unreachable': {
      const before = world.proxy.stats();
      world.proxy.refuse();
      world.proxy.sever();
      const injectedAt = new Date();
      await world.acknowledgeCommitted();
      await sleep(fault.ms);
      const during = world.proxy.stats();
      world.proxy.heal();
      const refused = during.refused - before.refused;
      const severed = during.severed - before.severed;
      return { injectedAt, proof: refused > 0 ? `${severed} engine connection(s) cut and ${refused} reconnect attempt(s) refused` : null };
    }
    case 'db-crash': {
      // what was committed before the crash must come back from the write-ahead log
      await world.acknowledgeCommitted();
      const { before, after, killedAt } = await crashAndRestartDatabase(world);
      const { admin } = await world.cluster();
      const up = await admin.query('SELECT 1').then(
        () => true,
        () => false,
      );
      return {
        injectedAt: killedAt,
        proof: before && after && before !== after && up ? `postmaster ${before} SIGKILLed, restarted as ${after}, accepting connections` : null,
      };
    }
  }
}

