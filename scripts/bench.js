#!/usr/bin/env node
// `npm run bench`: every benchmark in turn, then one page of their figures
// (reports/bench.md, a chart per benchmark). `--quick` (under a minute, run in
// CI) is a smaller run of the side-by-side, verify and replay benches: it shows
// they still work and roughly where the ratios stand, not figures to quote.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const quick = process.argv.includes('--quick');
const node = (args, env = {}) => [process.execPath, ['-r', 'ts-node/register', ...args], { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true', ...env }];

const benches = quick
  ? [
      ['side by side with DBOS', ...node(['bench/side-by-side.ts', '--quick'])],
      ['verify at scale', ...node(['bench/verify-at-scale.ts'], { BENCH_VERIFY_RUNS: '1000', BENCH_REPEATS: '1' })],
      ['replay at scale', ...node(['--expose-gc', 'bench/replay-at-scale.ts'], { BENCH_REPLAY_SIZES: '1000,10000', BENCH_REPEATS: '1' })],
    ]
  : [
      ['engine vs state-stored', ...node(['bench/run.ts'])],
      ['side by side with DBOS', ...node(['bench/side-by-side.ts', '--scaling'])],
      ['end to end with DBOS, through the intake', process.execPath, ['bench/end-to-end/run.js'], process.env],
      ['verify at scale', ...node(['bench/verify-at-scale.ts'])],
      ['replay at scale', ...node(['--expose-gc', 'bench/replay-at-scale.ts'])],
      ['recovery after every worker is killed', ...node(['bench/recovery.ts'])],
      ['live logs', ...node(['bench/live-logs.ts'])],
    ];

const failed = [];
// the benches run engine processes and threads from dist/ (as users do): built first, unless the caller just built it
if (!process.argv.includes('--no-build')) {
  console.log('━━━ bench: build ━━━');
  const built = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status ?? 1);
}
for (const [name, cmd, args, env] of benches) {
  console.log(`\n━━━ bench: ${name}${quick ? ' (quick)' : ''} ━━━`);
  const started = Date.now();
  const res = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  console.log(`(${((Date.now() - started) / 1000).toFixed(1)} s)`);
  if (res.status !== 0) failed.push(name);
}
console.log('\n━━━ bench: report ━━━');
const report = spawnSync(...node(['bench/report.ts']).slice(0, 2), { cwd: root, stdio: 'inherit', env: node([])[2] });
if (report.status !== 0) failed.push('report');
if (failed.length) {
  console.log(`benchmarks that did not finish: ${failed.join(', ')}`);
  process.exit(1);
}
