import { Pool, PoolConfig } from 'pg';
import { ENGINE_ROLE } from './scope';

/**
 * Every engine connection names the schema it reads, whatever the database or role says: a search_path set
 * with ALTER DATABASE or ALTER ROLE (`evil, public`) would otherwise put someone's views named `runs` or
 * `workflow_versions` in front of the engine's tables. Settings in the connection's start-up packet win over
 * both. pg_catalog is always searched first, without being named (naming it first would make CREATE put new
 * tables there).
 */
export const PINNED_SEARCH_PATH = '-c search_path=public';

/**
 * And prints dates and intervals the way node-postgres reads them. DateStyle and IntervalStyle set server-wide
 * (ALTER SYSTEM, postgresql.conf: not settings of this database or a role, so not sealed) reached every engine
 * session: under `SQL, DMY` every timestamp read back (an event's recorded_at, a seal's time) parsed as null,
 * each worker failed on every run it took up, and verify --all and tail stopped at a TypeError (the live-log
 * server's replication connection prints the WAL's timestamps in that style too). Pinned in the start-up packet,
 * they win over all of those.
 */
export const PINNED_SETTINGS = `${PINNED_SEARCH_PATH} -c datestyle=ISO,MDY -c intervalstyle=postgres`;

/**
 * A connection string and the start-up options to open it with: the URL's own `options` (a statement
 * timeout, a provider's endpoint) first, then the engine's, so that the engine's win (a later `-c` wins).
 * pg lets a URL's `options` replace the whole option string it is given, which would silently drop the
 * engine's role and its pinned search_path; so the URL's are taken out of the URL and put in front.
 */
export function withOptions(connectionString: string, engineOptions: Array<string | undefined>): { connectionString: string; options: string } {
  let url = connectionString;
  let fromUrl = '';
  try {
    const u = new URL(connectionString);
    if (u.searchParams.has('options')) {
      fromUrl = u.searchParams.get('options') ?? '';
      u.searchParams.delete('options');
      url = u.toString();
    }
  } catch {
    /* not a URL (a keyword=value string): left as it is */
  }
  return { connectionString: url, options: [fromUrl, ...engineOptions].filter(Boolean).join(' ') };
}

/**
 * A pool that survives its connections being cut: pg emits 'error' on clients
 * the server terminated, idle or checked out, and an unhandled 'error' would
 * end the process.
 */
export function openPool(connectionString: string, extra: PoolConfig = {}, onError?: (e: Error) => void): Pool {
  // TCP keepalive after 10 s idle: a connection to a host that vanished (partition, crashed VM) is found dead
  // by probes rather than by a query that hangs; behind a proxy the probes only reach the proxy
  const pool = new Pool({
    max: 10,
    idleTimeoutMillis: 10_000,
    connectionTimeoutMillis: 5_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    ...extra,
    ...withOptions(connectionString, [extra.options, PINNED_SETTINGS]),
  });
  pool.on('error', (e) => onError?.(e));
  // a client checked out when its connection is cut emits 'error' too; without a listener that ends the process
  pool.on('connect', (client) => client.on('error', (e) => onError?.(e)));
  return pool;
}

export function openEnginePool(connectionString: string, extra: PoolConfig = {}, onError?: (e: Error) => void): Pool {
  // the role after whatever the caller gives: nothing it passes can leave the owner's rights in place
  return openPool(connectionString, { ...extra, options: [extra.options, `-c role=${ENGINE_ROLE}`].filter(Boolean).join(' ') }, onError);
}
