import type { Pool, PoolClient } from 'pg';

/*
 * The engine acts for one project at a time. Row-level security shows a
 * transaction only the rows of the project named by `meshhook.project`
 * (migrations/002_tenancy.sql), so every read and write of project data runs
 * inside `inProject`. Forgetting it shows nothing rather than everything.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The role every engine connection acts as (see openEnginePool). */
export const ENGINE_ROLE = 'meshhook_engine';

export function assertProjectId(projectId: string): void {
  if (typeof projectId !== 'string' || !UUID.test(projectId)) throw new Error(`not a project id: ${JSON.stringify(String(projectId).slice(0, 60))}`);
}

/**
 * BEGIN and name the project in one round trip (the id is checked to be a UUID, so it is safe to inline).
 * A snapshot transaction reads one consistent state of the database from its first statement to its
 * last (a run's head and all the pages of its log agree even while a worker appends) and writes nothing.
 */
export function beginInProject(projectId: string, snapshot = false): string {
  assertProjectId(projectId);
  return `BEGIN${snapshot ? ' ISOLATION LEVEL REPEATABLE READ READ ONLY' : ''}; SELECT set_config('meshhook.project', '${projectId}', true)`;
}

/**
 * Run `fn` in one transaction that sees only `projectId`'s rows. A client
 * whose connection failed is not given back to the pool.
 */
export async function inProject<T>(db: Pool, projectId: string, fn: (client: PoolClient) => Promise<T>, opts: { snapshot?: boolean } = {}): Promise<T> {
  const begin = beginInProject(projectId, opts.snapshot);
  const client = await db.connect();
  let broken = false;
  const onLost = (): void => {
    broken = true;
  };
  client.on('error', onLost);
  try {
    await client.query(begin);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw e;
  } finally {
    client.off('error', onLost);
    client.release(broken ? true : undefined);
  }
}
