import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Pool } from 'pg';
import { ENGINE_ROLE } from '../src/db/scope';
import { Keyring } from '../src/security/keyring';
import { createMigratedTemplate } from './template-database';
import { openPool } from '../src/db/pool';
import { provisionPostgres, PostgresServer } from '../src/db/postgres';

/*
 * One Postgres per cucumber worker process (and one more per lane of the
 * crash-point sweep), one database per scenario. The
 * scenario database is cloned from a migrated template (CREATE DATABASE …
 * TEMPLATE …), which costs milliseconds. A scenario that crashes "the
 * database" crashes only its own worker's server, so parallel workers never
 * see each other's faults.
 */

export interface Cluster {
  server: PostgresServer;
  admin: Pool;
  template: string;
  /** a database's URL as the engine logs in: the meshhook_engine role, never the owner */
  engineUrlFor(database: string): string;
  /** the engine's keys for this cucumber worker (sealed secrets, keyed hash chain, tokens) */
  keyring: Keyring;
}

const clusters = new Map<number, Promise<Cluster>>();
let counter = 0;
const tag = `${process.pid}`;

/**
 * The Postgres of this cucumber worker (slot 0), or of one of the sweep's
 * lanes (slot 1, 2…): an embedded server each, so a lane can crash its own
 * database without touching the others. A server the suite does not start
 * (DATABASE_URL, testcontainers) is shared by every slot.
 */
export function getCluster(slot = 0): Promise<Cluster> {
  const key = lanesHaveOwnServers() ? slot : 0;
  let c = clusters.get(key);
  if (!c) {
    c = boot(key);
    clusters.set(key, c);
  }
  return c;
}

/** Whether each lane gets a Postgres of its own (the embedded default) or shares the one it was given. */
export function lanesHaveOwnServers(): boolean {
  return !process.env.DATABASE_URL && process.env.MESHHOOK_DB !== 'testcontainers';
}

async function boot(slot: number): Promise<Cluster> {
  // one keyring per cucumber worker, whichever server a scenario or lane uses
  const keyring = slot === 0 ? Keyring.generate('suite') : (await getCluster(0)).keyring;
  const server = await provisionPostgres({ durable: false });
  const admin = openPool(server.urlFor('postgres'), { max: 3 });
  const template = `mh_tpl_${tag}_${slot}`;
  await createMigratedTemplate(server, template, keyring.chainKey()).catch(async (e) => {
    await admin.end().catch(() => undefined);
    throw e;
  });
  // the engine logs in as its own role (created by the migrations), with a password made up for this run
  const password = `engine-${randomBytes(12).toString('hex')}`;
  await admin.query(`ALTER ROLE ${ENGINE_ROLE} WITH LOGIN PASSWORD '${password}'`);
  const engineUrlFor = (database: string): string => {
    const u = new URL(server.urlFor(database));
    u.username = ENGINE_ROLE;
    u.password = password;
    return u.toString();
  };
  return { server, admin, template, engineUrlFor, keyring };
}

export async function createScenarioDatabase(slot = 0): Promise<{ name: string; url: string; engineUrl: string }> {
  const { server, admin, template, engineUrlFor } = await getCluster(slot);
  const name = `mh_s_${tag}_${slot}_${++counter}`;
  const t0 = performance.now();
  await withRetry(() => admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`));
  freshDatabaseMs.push(performance.now() - t0);
  return { name, url: server.urlFor(name), engineUrl: engineUrlFor(name) };
}

export async function dropScenarioDatabase(name: string, slot = 0): Promise<void> {
  const { admin } = await getCluster(slot);
  await withRetry(() => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

/*
 * What the suite costs, tracked (scripts/test.js sums it up): how long each
 * scenario waited for its fresh database, written by every cucumber worker
 * process as it stops. Figures only: nothing asserts a timing.
 */
const freshDatabaseMs: number[] = [];

function writeSuiteCost(): void {
  if (freshDatabaseMs.length === 0) return;
  try {
    const dir = path.join('reports', 'suite-cost');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `${process.pid}.json`), JSON.stringify({ pid: process.pid, freshDatabaseMs: freshDatabaseMs.map((ms) => Math.round(ms * 10) / 10) }) + '\n');
  } catch {
    // a report that cannot be written must not fail the suite
  }
}

export async function shutdownCluster(): Promise<void> {
  writeSuiteCost();
  const all = [...clusters.values()];
  clusters.clear();
  await Promise.allSettled(
    all.map(async (cluster) => {
      const { server, admin, template } = await cluster;
      await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => undefined);
      await admin.end().catch(() => undefined);
      await server.stop();
    }),
  );
}

/** After a database crash and restart the admin pool's old connections are dead: try once more on a fresh one. */
async function withRetry<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    await new Promise((r) => setTimeout(r, 200));
    return fn();
  }
}
