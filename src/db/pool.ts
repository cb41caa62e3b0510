import { Pool, PoolConfig } from 'pg';

/**
 * A pool that survives its connections being cut: pg emits 'error' on clients
 * the server terminated, idle or checked out, and an unhandled 'error' would
 * end the process.
 */
export function openPool(connectionString: string, extra: PoolConfig = {}, onError?: (e: Error) => void): Pool {
  // keepAlive: a connection to a host that vanished (partition, crashed VM) is noticed by TCP, not only by the next query
  const pool = new Pool({ connectionString, max: 10, idleTimeoutMillis: 10_000, connectionTimeoutMillis: 5_000, keepAlive: true, ...extra });
  pool.on('error', (e) => onError?.(e));
  // a client checked out when its connection is cut emits 'error' too; without a listener that ends the process
  pool.on('connect', (client) => client.on('error', (e) => onError?.(e)));
  return pool;
}
