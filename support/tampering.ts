import type { Pool, PoolClient } from 'pg';

/**
 * Change what the database protects, as an intruder with DBA rights would:
 * switch the table's protecting trigger off, make the change, switch it back
 * on, all in one transaction so the protection is never off for anyone else.
 */
export async function withProtectionOff<T>(db: Pool, table: string, trigger: string, change: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    await client.query(`ALTER TABLE ${table} DISABLE TRIGGER ${trigger}`);
    const result = await change(client);
    await client.query(`ALTER TABLE ${table} ENABLE TRIGGER ${trigger}`);
    await client.query('COMMIT');
    return result;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}
