import { Pool, PoolConfig } from 'pg';

/**
 * A pool that survives its connections being cut: pg emits 'error' on idle
 * clients the server terminated, and an unhandled 'error' would end the process.
 */
export function openPool(connectionString: string, extra: PoolConfig = {}, onError?: (e: Error) => void): Pool {
  const pool = new Pool({ connectionString, max: 10, idleTimeoutMillis: 10_000, connectionTimeoutMillis: 5_000, ...extra });
  pool.on('error', (e) => onError?.(e));
  return pool;
}
