#!/usr/bin/env node
// `npm test`: everything CI runs, in order — type check, Gherkin lint, step
// catalogue check, unit tests, integration tests against a real Postgres,
// then the acceptance suite (profile `ci`). Every stage runs even when one
// before it failed, so one run shows everything that is wrong. The last line
// is the acceptance result, "N passed, N failed".
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const npx = (bin) => path.join(root, 'node_modules', '.bin', bin);
const extra = process.argv.slice(2);

const stages = [
  ['type check', npx('tsc'), ['--noEmit', '-p', 'tsconfig.json']],
  ['build', npx('tsc'), ['-p', 'tsconfig.build.json']],
  ['gherkin lint', process.execPath, ['scripts/lint-gherkin.js']],
  ['step catalogue', process.execPath, ['scripts/steps-doc.js', '--check']],
  ['unit tests', 'sh', ['-c', 'node --test -r ts-node/register test/unit/*.test.ts']],
  ['integration tests', 'sh', ['-c', 'node --test --test-concurrency=1 -r ts-node/register test/integration/*.test.ts']],
  // figures only (nothing asserts a timing): shows the benchmarks still run and writes reports/bench.md
  ['benchmarks (quick)', process.execPath, ['scripts/bench.js', '--quick', '--no-build']],
  ['acceptance (profile ci)', process.execPath, ['scripts/acceptance.js', '-p', 'ci', ...extra]],
];

const results = [];
// each cucumber worker writes how long its scenarios waited for a fresh database (support/cluster.ts)
const costDir = path.join(root, 'reports', 'suite-cost');
fs.rmSync(costDir, { recursive: true, force: true });
let acceptanceLine = null;
let failedScenarios = [];
for (const [name, cmd, args] of stages) {
  console.log(`\n━━━ ${name} ━━━`);
  const started = Date.now();
  const isAcceptance = name.startsWith('acceptance');
  const res = spawnSync(cmd, args, { cwd: root, stdio: isAcceptance ? ['inherit', 'pipe', 'inherit'] : 'inherit', env: process.env, maxBuffer: 256 * 1024 * 1024 });
  if (isAcceptance && res.stdout) {
    const out = res.stdout.toString();
    process.stdout.write(out);
    const lines = out.split('\n');
    acceptanceLine = [...lines].reverse().find((l) => /^\d+ passed, \d+ failed/.test(l.trim())) ?? null;
    const from = lines.lastIndexOf('failed scenarios:');
    if (from >= 0) {
      const end = lines.findIndex((l, i) => i > from && !l.startsWith('  '));
      failedScenarios = lines.slice(from, end < 0 ? undefined : end);
    }
  }
  results.push({ name, ok: res.status === 0, seconds: ((Date.now() - started) / 1000).toFixed(1) });
}

console.log('\n━━━ summary ━━━');
for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'}  ${r.name} (${r.seconds} s)`);
reportSuiteCost();
const failed = results.filter((r) => !r.ok);
if (failed.length) console.log(`failed stages: ${failed.map((r) => r.name).join(', ')}`);
if (failedScenarios.length) console.log(failedScenarios.join('\n'));
// the plain closing line CI reads: the acceptance scenarios
console.log(acceptanceLine ? acceptanceLine.trim() : '0 passed, 1 failed');
process.exit(failed.length ? 1 : 0);

/** The suite's cost, tracked: stage times and the time to give a scenario a fresh database, in reports/suite-cost.json. */
function reportSuiteCost() {
  let fresh = [];
  try {
    for (const f of fs.readdirSync(costDir)) fresh = fresh.concat(JSON.parse(fs.readFileSync(path.join(costDir, f), 'utf8')).freshDatabaseMs);
  } catch {
    // no acceptance stage ran
  }
  const sorted = [...fresh].sort((a, b) => a - b);
  const at = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] : null);
  const cost = {
    at: new Date().toISOString(),
    node: process.version,
    cpus: require('node:os').cpus().length,
    stages: Object.fromEntries(results.map((r) => [r.name, Number(r.seconds)])),
    freshDatabaseMs: { scenarios: sorted.length, p50: at(0.5), p95: at(0.95), max: sorted.length ? sorted[sorted.length - 1] : null },
  };
  try {
    fs.mkdirSync(path.join(root, 'reports'), { recursive: true });
    fs.writeFileSync(path.join(root, 'reports', 'suite-cost.json'), JSON.stringify(cost, null, 2) + '\n');
  } catch {
    // figures only
  }
  if (sorted.length) console.log(`suite cost: a fresh database per scenario took ${cost.freshDatabaseMs.p50} ms (median; p95 ${cost.freshDatabaseMs.p95} ms) over ${sorted.length} databases; reports/suite-cost.json`);
}
