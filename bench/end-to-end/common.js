// Shared by the end-to-end trials (bench/end-to-end/run.js sets E2E_PG_URL, E2E_PG_PID and E2E_ORDERS_PORT).
const fs = require('fs');
const { Client } = require('pg');

const base = new URL(process.env.E2E_PG_URL);
const url = (db) => Object.assign(new URL(base), { pathname: `/${db}` }).toString();
const ADMIN = url('postgres');

async function createDb(db) {
  const c = new Client(ADMIN);
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await c.query(`CREATE DATABASE ${db}`);
  await c.end();
}
async function dropDb(db) {
  const c = new Client(ADMIN);
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch((e) => console.error('drop', e.message));
  await c.end();
}
/** the webhook body of workflow i: an order with two lines */
function body(i) {
  return JSON.stringify({ order: { id: `o-${i}`, sum: 10 + (i % 97), items: [{ sku: 'A' + (i % 7), qty: 1 }, { sku: 'B' + (i % 5), qty: 2 }] } });
}
/** CPU (user + system, ms) of some processes, read from /proc */
function cpuOf(pids) {
  let t = 0;
  for (const p of pids) {
    try {
      const s = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      t += (+f[11] + +f[12]) * 10;
    } catch {
      /* gone */
    }
  }
  return t;
}
/** a process and all its descendants */
function treePids(root) {
  const kids = {};
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const pp = s.slice(s.lastIndexOf(')') + 2).split(' ')[1];
      (kids[pp] ||= []).push(d);
    } catch {
      /* gone */
    }
  }
  const out = [];
  const st = [String(root)];
  while (st.length) {
    const p = st.pop();
    out.push(p);
    st.push(...(kids[p] || []));
  }
  return out;
}
/** this bench's own Postgres (the postmaster and its backends), not anyone else's */
const pgPids = () => treePids(process.env.E2E_PG_PID);

module.exports = { url, createDb, dropDb, body, cpuOf, pgPids, treePids };
