import { Client } from 'pg';
import { migrate } from '../src/db/migrate';
import type { PostgresServer } from '../src/db/postgres';

/**
 * A database migrated once and cloned for every scenario or test (CREATE
 * DATABASE … TEMPLATE costs milliseconds). Shared by the acceptance suite's
 * cluster and the integration tests. A migration that fails stops the server
 * it was given before rethrowing: a Postgres left running would keep the
 * process (and CI) waiting instead of failing in seconds.
 */
export async function createMigratedTemplate(server: PostgresServer, name: string, seal: NonNullable<Parameters<typeof migrate>[1]>['seal']): Promise<void> {
  try {
    const admin = new Client({ connectionString: server.urlFor('postgres') });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    const c = new Client({ connectionString: server.urlFor(name) });
    await c.connect();
    try {
      await migrate(c, { seal });
    } finally {
      await c.end();
    }
  } catch (e) {
    await server.stop().catch(() => undefined);
    throw e;
  }
}
