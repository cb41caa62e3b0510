import { Pool, PoolConfig } from 'pg';
import { ENGINE_ROLE } from './scope';

/**
 * A pool that survives its connections being cut: pg emits 'error' on clients
 * the server terminated, idle or checked out, and an unhandled 'error' would
 * end the process.
 */
/**
 * Every engine connection names the schema it reads, whatever the database or role says: a search_path set
 * with ALTER DATABASE or ALTER ROLE (`evil, public`) would otherwise put someone's views named `runs` or
 * `workflow_versions` in front of the engine's tables. Settings in the connection's start-up packet win over
 * both. pg_catalog is always searched first, without being named (naming it first would make CREATE put new
 * tables there).
 */
export const PINNED_SEARCH_PATH = '-c search_path=public';

export function openPool(connectionString: string, extra: PoolConfig = {}, onError?: (e: Error) => void): Pool {
  // TCP keepalive after 10 s idle: a connection to a host that vanished (partition, crashed VM) is found dead
  // by probes rather than by a query that hangs; behind a proxy the probes only reach the proxy
  const pool = new Pool({
    connectionString,
    max: 10,
    idleTimeoutMillis: 10_000,
    connectionTimeoutMillis: 5_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    ...extra,
    options: [PINNED_SEARCH_PATH, extra.options].filter(Boolean).join(' '),
  });
  pool.on('error', (e) => onError?.(e));
  // a client checked out when its connection is cut emits 'error' too; without a listener that ends the process
  pool.on('connect', (client) => client.on('error', (e) => onError?.(e)));
  return pool;
}

/**
 * The engine's pool: whatever user the URL names, every connection acts as
 * meshhook_engine (it may read and append to the log, never change it, and
 * row-level security shows it one project at a time). With a URL for
 * meshhook_engine itself this changes nothing; with an owner's URL it drops
 * the owner's rights for the whole session.
 */
export function openEnginePool(connectionString: string, extra: PoolConfig = {}, onError?: (e: Error) => void): Pool {
  return openPool(connectionString, { options: `-c role=${ENGINE_ROLE}`, ...extra }, onError);
}
