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

/**
 * Everything that protects the run log (append-only, gap-free numbering)
 * switched off for one transaction, as its owner could: the change is made,
 * the protection is back before anyone else sees the table.
 */
export async function withLogProtectionOff<T>(db: Pool, change: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    await client.query('ALTER TABLE run_events DISABLE TRIGGER USER');
    const result = await change(client);
    await client.query('ALTER TABLE run_events ENABLE TRIGGER USER');
    await client.query('COMMIT');
    return result;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}
