// Cucumber profiles. `npm run acceptance` runs `default`; add `-p <name>` for
// another, or `--tags`, or a path with a line number. See README.md.
// 3 workers on our 2 cores: scenarios mostly wait on workers, timers and faults (ci: 5m05 against 6m03 with 2)
const parallel = Number(process.env.CUCUMBER_PARALLEL_WORKERS ?? 3);

const common = {
  requireModule: ['ts-node/register'],
  require: ['support/**/*.ts', 'step-definitions/**/*.ts'],
  format: [
    'progress-bar',
    ['html', 'reports/acceptance.html'],
    ['junit', 'reports/acceptance.xml'],
    ['message', 'reports/acceptance.ndjson'],
    ['rerun', 'reports/rerun.txt'],
  ],
  formatOptions: { snippetInterface: 'async-await', junit: { suiteName: 'meshhook-replay' } },
  parallel,
  worldParameters: {
    runTimeoutMs: Number(process.env.MESHHOOK_RUN_TIMEOUT_MS ?? 20000),
    // the fault matrix (crash-point-sweep.feature) runs a seeded sample of its crash points except in `sweep`
    sweepShare: Number(process.env.MESHHOOK_SWEEP_SHARE ?? 0.1),
    // faulted runs that go side by side in one scenario, each on a database of its own
    sweepLanes: Number(process.env.MESHHOOK_SWEEP_LANES ?? 3),
  },
};

const profile = (tags) => ({ ...common, tags });

module.exports = {
  default: profile('not @wip and not @slow'),
  smoke: profile('@smoke and not @wip'),
  ci: profile('not @wip'),
  replay: profile('@replay and not @wip'),
  crash: profile('@crash and not @wip'),
  'db-faults': profile('@db-faults and not @wip'),
  // every crash point of every reference under every disruption (nightly in CI)
  sweep: { ...profile('@sweep and not @wip'), worldParameters: { ...common.worldParameters, sweepShare: Number(process.env.MESHHOOK_SWEEP_SHARE ?? 1) } },
  intake: profile('@intake and not @wip'),
  intervention: profile('@intervention and not @wip'),
  tamper: profile('@tamper and not @wip'),
  realtime: profile('@realtime and not @wip'),
  security: profile('(@tenancy or @secrets or @bad-input) and not @wip'),
  wip: profile('@wip'),
  // the step catalogue (npm run steps): every scenario, no reports written
  catalogue: { requireModule: common.requireModule, require: common.require, tags: 'not @wip', format: ['summary'] },
};
