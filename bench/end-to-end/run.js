/*
 * npm run bench:e2e — the engine and DBOS Transact end to end, as their users drive them (after an outside
 * reviewer's method, 2026-12-07): the engine only through its public surface (`meshhook up`, `meshhook publish`,
 * HMAC-signed webhooks over HTTP from 16 keep-alive senders, 2 workers × 4 in flight as `up` starts them), DBOS
 * through its documented API (`startWorkflow`, 8 in flight). `npm run bench:dbos` measures execution alone (runs
 * created and workflows enqueued before the clock, on both sides); this one puts the engine's webhook intake on
 * the clock, which is what a user of it pays.
 *
 * One embedded Postgres for all trials (the engine's flags: fsync on), a fresh database per trial, a local order
 * service on loopback. Rounds interleave the contenders and turn their order; each variant's ratio is the median
 * of the rounds' paired ratios. Figures only: nothing here is a timed test.
 *   E2E_ROUNDS (3), E2E_WORKFLOWS (1000); --quick: 1 round of 300; E2E_PROFILE_DIR: CPU profiles of `up` there
 */
const { execFileSync, spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');

const root = path.resolve(__dirname, '../..');
const USAGE = `usage: npm run bench:e2e -- [--quick]

The engine and DBOS Transact end to end as their users drive them: signed webhooks through \`meshhook up\`
(16 keep-alive senders, 2 workers × 4) against DBOS's startWorkflow → getResult (8 in flight), the same three
steps, pure and with one POST, fresh databases on one embedded Postgres, rounds interleaved. Each variant's
ratio is the median of the rounds' paired ratios. Writes reports/bench-e2e.json.

  --quick   1 round of 300 workflows (figures not for quoting)

environment: E2E_ROUNDS (3), E2E_WORKFLOWS (1000), E2E_PROFILE_DIR (CPU profiles of each engine trial's up),
             E2E_DBOS_INFLIGHT (8; a list such as 8,16 runs a DBOS trial for each, the first in the ratio)`;
const unknown = process.argv.slice(2).filter((a) => !['--quick', '--help', '-h'].includes(a));
if (process.argv.includes('--help') || process.argv.includes('-h')) {
  // before anything starts: \`--help\` used to run the whole bench
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}
if (unknown.length) {
  process.stderr.write(`unknown option ${unknown.join(' ')}\n${USAGE}\n`);
  process.exit(2);
}
const quick = process.argv.includes('--quick');
const rounds = Number(process.env.E2E_ROUNDS ?? (quick ? 1 : 3));
const workflows = Number(process.env.E2E_WORKFLOWS ?? (quick ? 300 : 1000));
/** DBOS's in-flight counts: the first is the paired ratio's; the others are run beside it, for reference */
const dbosInflight = String(process.env.E2E_DBOS_INFLIGHT ?? '8')
  .split(',')
  .map(Number)
  .filter((x) => Number.isInteger(x) && x > 0);
if (dbosInflight.length === 0) throw new Error('E2E_DBOS_INFLIGHT: a comma-separated list of whole numbers');
/** the median; of an even count, the mean of the two middle values (it took the upper one before 2026-12-08) */
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const r2 = (x) => Math.round(x * 100) / 100;

function trial(script, args, env) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [path.join(__dirname, script), ...args], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) => {
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (code !== 0 || !line) return reject(new Error(`${script} ${args.join(' ')} exited ${code}: ${out}`));
      resolve(JSON.parse(line));
    });
  });
}

(async () => {
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
  const { provisionPostgres } = require(path.join(root, 'dist/db/postgres'));
  const pg = await provisionPostgres({});
  const orders = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(201, { 'content-type': 'application/json' }).end('{"created":true}'));
  });
  await new Promise((r) => orders.listen(0, '127.0.0.1', r));
  const env = { ...process.env, DATABASE_URL: '', E2E_PG_URL: pg.urlFor('postgres'), E2E_PG_PID: String(pg.pid()), E2E_ORDERS_PORT: String(orders.address().port) };
  const results = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const variant of ['pure', 'http']) {
        const dbosRuns = dbosInflight.map((k) => ['dbos', k]);
        const order = round % 2 ? [['engine', 16], ...dbosRuns] : [...dbosRuns, ['engine', 16]];
        for (const [c, k] of order) {
          const res = c === 'engine' ? await trial('engine-trial.js', [variant, String(round), String(workflows), String(k)], env) : await trial('dbos-trial.js', [variant, String(round), String(workflows), String(k)], env);
          if (res.ok !== workflows) throw new Error(`${c} ${variant}: ${res.ok} of ${workflows} workflows succeeded`);
          results.push({ round, inflight: k, ...res, contender: c === 'dbos' && k !== dbosInflight[0] ? `dbos@${k}` : c });
          process.stdout.write(`round ${round} ${variant} ${c}${c === 'dbos' ? ` (${k} in flight)` : ''}: ${res.wfps.toFixed(1)} wf/s\n`);
        }
      }
    }
  } finally {
    orders.close();
    await pg.stop();
  }
  const summary = {};
  for (const variant of ['pure', 'http']) {
    const of = (c) => results.filter((x) => x.variant === variant && x.contender === c);
    const ratios = of('engine').map((e) => e.wfps / of('dbos').find((d) => d.round === e.round).wfps);
    const cpu = (c, k) => r2(median(of(c).map((x) => x.cpuMs[k] / x.n)));
    summary[variant] = {
      engineWfPerSec: r2(median(of('engine').map((x) => x.wfps))),
      dbosWfPerSec: r2(median(of('dbos').map((x) => x.wfps))),
      engineOverDbos: r2(median(ratios)),
      ratios: ratios.map(r2),
      cpuMsPerWorkflow: { engine: cpu('engine', 'engine'), enginePostgres: cpu('engine', 'pg'), dbos: cpu('dbos', 'dbos'), dbosPostgres: cpu('dbos', 'pg') },
      dbosInflight: dbosInflight[0],
      // DBOS with other in-flight counts, run in the same rounds (E2E_DBOS_INFLIGHT): engine ÷ each, medians of the rounds
      dbosOther: Object.fromEntries(
        dbosInflight.slice(1).map((k) => {
          const other = of(`dbos@${k}`);
          const rs = of('engine').map((e) => e.wfps / other.find((d) => d.round === e.round).wfps);
          return [k, { dbosWfPerSec: r2(median(other.map((x) => x.wfps))), engineOverDbos: r2(median(rs)), ratios: rs.map(r2) }];
        }),
      ),
    };
  }
  fs.mkdirSync(path.join(root, 'reports'), { recursive: true });
  fs.writeFileSync(path.join(root, 'reports', 'bench-e2e.json'), JSON.stringify({ at: new Date().toISOString(), rounds, workflows, dbosInflight, summary, results }, null, 2) + '\n');
  for (const [variant, s] of Object.entries(summary)) {
    process.stdout.write(`\n${variant}: engine (webhook → done) ÷ DBOS (startWorkflow → result): ${s.engineOverDbos}× [${s.ratios.join(', ')}]; engine ${s.engineWfPerSec}, DBOS ${s.dbosWfPerSec} wf/s; CPU a workflow, node + Postgres: engine ${s.cpuMsPerWorkflow.engine} + ${s.cpuMsPerWorkflow.enginePostgres} ms, DBOS ${s.cpuMsPerWorkflow.dbos} + ${s.cpuMsPerWorkflow.dbosPostgres} ms`);
    for (const [k, o] of Object.entries(s.dbosOther)) process.stdout.write(`\n  ${variant}, DBOS with ${k} in flight instead: ${o.dbosWfPerSec} wf/s; engine ÷ it ${o.engineOverDbos}× [${o.ratios.join(', ')}]`);
  }
  process.stdout.write('\nreports/bench-e2e.json\n');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
