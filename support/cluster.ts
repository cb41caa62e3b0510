import { randomBytes } from 'node:crypto';
import { Client, Pool } from 'pg';
import { ENGINE_ROLE } from '../src/db/scope';
import { Keyring } from '../src/security/keyring';
import { migrate } from '../src/db/migrate';
import { openPool } from '../src/db/pool';
import { provisionPostgres, PostgresServer } from '../src/db/postgres';

/*
 * One Postgres per cucumber worker process, one database per scenario. The
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

let cluster: Promise<Cluster> | null = null;
let counter = 0;
const tag = `${process.pid}`;

export function getCluster(): Promise<Cluster> {
  if (!cluster) cluster = boot();
  return cluster;
}

async function boot(): Promise<Cluster> {
  const server = await provisionPostgres();
  const admin = openPool(server.urlFor('postgres'), { max: 3 });
  const template = `mh_tpl_${tag}`;
  await admin.query(`DROP DATABASE IF EXISTS ${template}`);
  await admin.query(`CREATE DATABASE ${template}`);
  const c = new Client({ connectionString: server.urlFor(template) });
  await c.connect();
  try {
    await migrate(c);
  } finally {
    await c.end();
  }
  // the engine logs in as its own role (created by the migrations), with a password made up for this run
  const password = `engine-${randomBytes(12).toString('hex')}`;
  await admin.query(`ALTER ROLE ${ENGINE_ROLE} WITH LOGIN PASSWORD '${password}'`);
  const engineUrlFor = (database: string): string => {
    const u = new URL(server.urlFor(database));
    u.username = ENGINE_ROLE;
    u.password = password;
    return u.toString();
  };
  return { server, admin, template, engineUrlFor, keyring: Keyring.generate('suite') };
}

export async function createScenarioDatabase(): Promise<{ name: string; url: string; engineUrl: string }> {
  const { server, admin, template, engineUrlFor } = await getCluster();
  const name = `mh_s_${tag}_${++counter}`;
  await withRetry(() => admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`));
  return { name, url: server.urlFor(name), engineUrl: engineUrlFor(name) };
}

export async function dropScenarioDatabase(name: string): Promise<void> {
  const { admin } = await getCluster();
  await withRetry(() => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

export async function shutdownCluster(): Promise<void> {
  if (!cluster) return;
  const { server, admin, template } = await cluster;
  cluster = null;
  await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => undefined);
  await admin.end().catch(() => undefined);
  await server.stop();
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
