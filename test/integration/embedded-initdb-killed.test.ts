import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Client } from 'pg';
import { provisionPostgres } from '../../src/db/postgres';

/*
 * The first `meshhook up` killed while initdb runs (found by a kill-while-webhooks-flow run: SIGKILL of its process
 * group soon after start) left PG_VERSION and half a cluster, and every later `up` on that home failed ("could not
 * open file global/pg_control", or "database postgres does not exist"). The half-made directory is made again.
 */
describe('embedded Postgres: initdb killed half way', { timeout: 360_000 }, () => {
  it('the next start on the same data directory makes it again and starts', async (t) => {
    if (process.env.DATABASE_URL || process.env.MESHHOOK_DB) return t.skip('only for the embedded Postgres');
    const home = mkdtempSync(path.join(os.tmpdir(), 'mh-initdb-killed-'));
    const dataDir = path.join(home, 'pgdata');
    const child = spawn(
      process.execPath,
      ['-r', 'ts-node/register', '-e', `require(${JSON.stringify(path.resolve(__dirname, '../../src/db/postgres'))}).provisionPostgres({ dataDir: ${JSON.stringify(dataDir)}, persistent: true })`],
      { detached: true, stdio: 'ignore', env: { ...process.env, DATABASE_URL: '', MESHHOOK_DB: '' }, cwd: path.resolve(__dirname, '../..') },
    );
    const exited = new Promise((r) => child.once('exit', r));
    const deadline = Date.now() + 60_000;
    while (!existsSync(path.join(dataDir, 'PG_VERSION')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(existsSync(path.join(dataDir, 'PG_VERSION')), 'initdb started');
    process.kill(-child.pid!, 'SIGKILL'); // the process and its initdb, as a kill of `up`'s process group does
    await exited;
    assert.ok(!existsSync(path.join(dataDir, 'global', 'pg_control')) || existsSync(`${dataDir}.initialising`), 'killed before initdb finished');

    const pg = await provisionPostgres({ dataDir, persistent: true });
    try {
      const c = new Client({ connectionString: pg.urlFor('postgres') });
      await c.connect();
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
      await c.end();
      assert.ok(!existsSync(`${dataDir}.initialising`), 'the marker is gone once initdb finished');
    } finally {
      await pg.stop();
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('a data directory that already held files is refused at every start, and never emptied', async (t) => {
    if (process.env.DATABASE_URL || process.env.MESHHOOK_DB) return t.skip('only for the embedded Postgres');
    const home = mkdtempSync(path.join(os.tmpdir(), 'mh-initdb-not-empty-'));
    const dataDir = path.join(home, 'data');
    mkdirSync(dataDir);
    writeFileSync(path.join(dataDir, 'precious.txt'), 'not Postgres\n');
    try {
      // initdb refuses a directory that is not empty: the first start fails, and so must the second
      await assert.rejects(provisionPostgres({ dataDir, persistent: true }));
      await provisionPostgres({ dataDir, persistent: true }).then(
        (pg) => pg.stop().then(() => assert.fail('the second start made a cluster where the files were')),
        () => undefined,
      );
      assert.equal(readFileSync(path.join(dataDir, 'precious.txt'), 'utf8'), 'not Postgres\n', 'the files are still there');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
