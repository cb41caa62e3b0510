import { Client } from 'pg';
import { migrate } from './src/db/migrate';
import { provisionPostgres } from './src/db/postgres';
import { runEngineTrial } from './bench/contenders/engine';

async function main() {
  const pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  for (let i = 0; i < 3; i++) {
    await admin.query(`DROP DATABASE IF EXISTS st_prof${i}`);
    await admin.query(`CREATE DATABASE st_prof${i}`);
    const url = pg.urlFor(`st_prof${i}`);
    const c = new Client({ connectionString: url }); await c.connect(); await migrate(c as never); await c.end();
    const r = await runEngineTrial({ databaseUrl: url, adminUrl: pg.urlFor('postgres'), workflows: 1500, variant: 'pure', targetUrl: 'http://127.0.0.1:1/' } as never);
    console.log(i, r.wfPerSec, 'wf/s', r.details.nodeCpuMs, r.details.pgCpuMs);
  }
  await admin.end(); await pg.stop();
}
main();
