// One DBOS Transact trial through its documented API (registerWorkflow/registerStep, launch, startWorkflow,
// getResult) on a fresh system database, `inflight` workflows at a time. Clock: first start → last result.
const { DBOS } = require('@dbos-inc/dbos-sdk');
const http = require('http');
const { url, createDb, dropDb, body, cpuOf, pgPids } = require('./common');

const [variant, trial, N = '1000', INFLIGHT = '8'] = process.argv.slice(2);
const n = +N;
const inflight = +INFLIGHT;
const db = `e2e_dbos_${variant}_${trial}_${process.pid}`;
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const postOrder = (o) =>
  new Promise((resolve, reject) => {
    const b = JSON.stringify(o);
    const req = http.request({ host: '127.0.0.1', port: Number(process.env.E2E_ORDERS_PORT), path: '/orders', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) } }, (res) => {
      let s = '';
      res.on('data', (c) => (s += c));
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(s) }));
    });
    req.on('error', reject);
    req.end(b);
  });
// the same three steps as the engine's workflows (wf-pure.json, wf-http.json), each a checkpointed DBOS step
const a = DBOS.registerStep(async (input) => ({ id: input.order.id, total: input.order.sum, n: input.order.items.length }), { name: 'a' });
const b = DBOS.registerStep(async (input, sa) => ({ id: sa.id, skus: input.order.items.map((x) => x.sku), total: sa.total }), { name: 'b' });
const c = DBOS.registerStep(async (sb) => ({ id: sb.id, skus: sb.skus.join(','), total: sb.total }), { name: 'c' });
const push = DBOS.registerStep(async (sa) => { const r = await postOrder(sa); return { status: r.status, body: r.body }; }, { name: 'push', retriesAllowed: true, maxAttempts: 3, intervalSeconds: 0.5, backoffRate: 2 });
const c2 = DBOS.registerStep(async (sa, p) => ({ id: sa.id, status: p.status }), { name: 'c2' });
const pure3 = DBOS.registerWorkflow(async (raw) => { const input = JSON.parse(raw); const sa = await a(input); const sb = await b(input, sa); return await c(sb); }, { name: 'pure3' });
const http1 = DBOS.registerWorkflow(async (raw) => { const input = JSON.parse(raw); const sa = await a(input); const p = await push(sa); return await c2(sa, p); }, { name: 'http1' });

(async () => {
  await createDb(db);
  DBOS.setConfig({ name: 'e2e-bench', systemDatabaseUrl: url(db), logLevel: 'warn' });
  await DBOS.launch();
  const wf = variant === 'http' ? http1 : pure3;
  await new Promise((r) => setTimeout(r, 1000));
  const cpu0 = { pg: cpuOf(pgPids()), me: process.cpuUsage() };
  const t0 = Date.now();
  let next = 0;
  let ok = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < n) {
        const i = next++;
        const r = await (await DBOS.startWorkflow(wf)(body(i))).getResult();
        if (r && r.id === `o-${i}`) ok++;
      }
    }),
  );
  const ms = Date.now() - t0;
  const me = process.cpuUsage(cpu0.me);
  const cpu = { dbos: (me.user + me.system) / 1000, pg: cpuOf(pgPids()) - cpu0.pg };
  await DBOS.shutdown();
  console.log(JSON.stringify({ contender: 'dbos', variant, trial: +trial, n, ok, ms, wfps: (ok / ms) * 1000, cpuMs: cpu }));
  await dropDb(db);
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
