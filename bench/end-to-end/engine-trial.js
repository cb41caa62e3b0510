// One engine trial through the public surface only, as a user drives it: `meshhook up` on a fresh database,
// `meshhook publish --json`, then signed webhooks over HTTP from `concurrency` keep-alive senders.
// Clock: the first request's start → the last run's finished_at. Prints one JSON line.
const { spawn, execFileSync } = require('child_process');
const { createHmac, randomUUID } = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { Client } = require('pg');
const { url, createDb, dropDb, body, cpuOf, pgPids, treePids } = require('./common');

const [variant, trial, N = '1000', CONCURRENCY = '16'] = process.argv.slice(2);
const n = +N;
const conc = +CONCURRENCY;
const MESH = path.resolve(__dirname, '../../bin/meshhook.js');
const wf = variant === 'http' ? 'http1' : 'pure3';
const db = `e2e_engine_${variant}_${trial}_${process.pid}`;
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'mh-e2e-'));

(async () => {
  await createDb(db);
  const def = path.join(home, 'workflow.json');
  fs.writeFileSync(def, fs.readFileSync(path.join(__dirname, `wf-${variant === 'http' ? 'http' : 'pure'}.json`), 'utf8').replace('ORDER_SERVICE_URL', `http://127.0.0.1:${process.env.E2E_ORDERS_PORT}/orders`));
  const env = { ...process.env, MESHHOOK_HOME: home };
  const profile = process.env.E2E_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.E2E_PROFILE_DIR}`] : [];
  const up = spawn(process.execPath, [...profile, MESH, 'up', '--database-url', url(db), '--port', '0', '--realtime-port', '0', '--data-dir', home], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let upOut = '';
  up.stdout.on('data', (d) => (upOut += d));
  up.stderr.on('data', (d) => (upOut += d));
  for (const t = Date.now(); !/is up/.test(upOut); await new Promise((r) => setTimeout(r, 50))) {
    if (up.exitCode !== null || Date.now() - t > 60000) throw new Error(`up did not come up:\n${upOut}`);
  }
  const port = Number(/intake:\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(upOut)[1]);
  const published = JSON.parse(execFileSync(process.execPath, [MESH, 'publish', def, '--project', 'bench', '--allow-private-targets', '--json', '--database-url', url(db)], { env, encoding: 'utf8' }));
  const secret = published.signingSecret;
  await new Promise((r) => setTimeout(r, 1000)); // let up settle
  const admin = new Client(url(db));
  await admin.connect();
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
  const post = (i) =>
    new Promise((resolve, reject) => {
      const b = body(i);
      const id = `dlv_${randomUUID()}`;
      const t = Math.floor(Date.now() / 1000);
      const mac = createHmac('sha256', secret).update(`${t}.${id}.bench/${wf}.`).update(b).digest('hex');
      const req = http.request(
        { host: '127.0.0.1', port, path: `/hooks/bench/${wf}`, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b), 'MeshHook-Signature': `t=${t},v2=${mac}`, 'MeshHook-Delivery': id } },
        (res) => {
          let s = '';
          res.on('data', (c) => (s += c));
          res.on('end', () => resolve({ status: res.statusCode, s }));
        },
      );
      req.on('error', reject);
      req.end(b);
    });
  const cpu0 = { up: cpuOf(treePids(up.pid)), pg: cpuOf(pgPids()) };
  const t0 = Date.now();
  let next = 0;
  const statuses = {};
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < n) {
        const r = await post(next++);
        statuses[r.status] = (statuses[r.status] || 0) + 1;
        if (r.status !== 202 && statuses[r.status] < 3) console.error('intake', r.status, r.s);
      }
    }),
  );
  let rows;
  for (;;) {
    rows = (await admin.query(`SELECT count(*) FILTER (WHERE status IN ('succeeded','failed','canceled'))::int AS done, count(*) FILTER (WHERE status = 'succeeded')::int AS ok, (extract(epoch FROM max(finished_at)) * 1000)::float8 AS last FROM runs`)).rows[0];
    if (rows.done >= n || Date.now() - t0 > 300000) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  const cpu = { engine: cpuOf(treePids(up.pid)) - cpu0.up, pg: cpuOf(pgPids()) - cpu0.pg };
  await admin.end();
  agent.destroy();
  await new Promise((r) => {
    const k = setTimeout(() => (up.kill('SIGKILL'), r()), 15000);
    up.on('exit', () => (clearTimeout(k), r()));
    up.kill('SIGINT');
  });
  const ms = rows.last - t0;
  console.log(JSON.stringify({ contender: 'engine', variant, trial: +trial, n, ok: rows.ok, statuses, ms, wfps: (rows.ok / ms) * 1000, cpuMs: cpu }));
  await dropDb(db);
  fs.rmSync(home, { recursive: true, force: true });
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
