#!/usr/bin/env node
// Runs cucumber-js with the arguments given, then reads the message stream and
// prints one plain line "N passed, N failed". It fails loudly when the
// selection (tags, profile, paths) matched no scenario at all: cucumber-js
// itself would exit 0 on that, and a mistyped tag in CI would pass silently.
// A scenario selected but never finished (a BeforeAll hook that failed, a
// worker process that died) counts as failed, so the line never reads short.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const dryRun = args.includes('--dry-run') || args.includes('-d');

// our own copy of the message stream, so the count is this run's alone
const tmp = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'acceptance-'));
const messages = path.join(tmp, 'messages.ndjson');
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const cli = path.join(root, 'node_modules', '@cucumber', 'cucumber', 'bin', 'cucumber.js');
const started = Date.now();
const res = spawnSync(process.execPath, [cli, ...args, '--format', `message:${messages}`], { stdio: 'inherit', cwd: root, env: process.env });
const wallSeconds = (Date.now() - started) / 1000;
if (res.error) throw res.error;
const code = res.status ?? 1;
suggestForUndefined(messages);
if (dryRun) process.exit(code);

const summary = summarise(messages);
if (!summary) {
  console.error('\nacceptance: cucumber-js wrote no message stream (it failed before running anything); see the output above.');
  console.log('0 passed, 1 failed');
  process.exit(code || 1);
}
const { passed, failed, skipped, total, failures } = summary;
if (total === 0) {
  console.error(`\nacceptance: no scenario matched the selection (${args.join(' ') || 'default profile'}). Check the tag, profile or path.`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
// the failed scenarios again, last, so a log cut to its tail still names them
if (failures.length) {
  console.log(`\nfailed scenarios:`);
  for (const f of failures) console.log(`  ${f.where}  ${f.name}\n      ${f.status}: ${f.message}`);
}
recordWallTime({ passed, failed, skipped, total });
console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
// a skipped scenario proves nothing: it never counts as a pass
process.exit(code !== 0 || failed > 0 || skipped > 0 ? code || 1 : 0);

/**
 * The suite's cost, tracked per selection: each run's wall time is kept in
 * reports/suite-wall-times.json under its profile (and tags or paths, when
 * given), so `smoke` and `ci` can be compared from run to run.
 */
function recordWallTime(counts) {
  const at = (flag) => {
    const i = args.findIndex((a) => a === flag || a === (flag === '-p' ? '--profile' : flag));
    return i >= 0 ? args[i + 1] : null;
  };
  const positional = args.filter((a, i) => !a.startsWith('-') && !(i > 0 && args[i - 1].startsWith('-')));
  const key = [at('-p') ?? 'default', at('--tags'), positional.join(' ') || null].filter(Boolean).join(' ');
  const file = path.join(root, 'reports', 'suite-wall-times.json');
  let all = {};
  try {
    all = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    // first run, or an unreadable file: start again
  }
  all[key] = { at: new Date().toISOString(), seconds: Math.round(wallSeconds * 10) / 10, scenarios: counts.total, passed: counts.passed, failed: counts.failed, skipped: counts.skipped, cpus: require('node:os').cpus().length, node: process.version };
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
  } catch {
    // figures only
  }
  console.log(`\nsuite cost: ${key} took ${all[key].seconds} s for ${counts.total} scenarios (reports/suite-wall-times.json)`);
}

function summarise(file) {
  if (!fs.existsSync(file)) return null;
  const rank = { PASSED: 0, UNKNOWN: 1, SKIPPED: 2, PENDING: 3, UNDEFINED: 4, AMBIGUOUS: 5, FAILED: 6 };
  const testCaseOfStarted = new Map();
  const worst = new Map(); // testCaseStartedId -> status
  const finalByCase = new Map(); // testCaseId -> status of its last attempt
  const firstError = new Map(); // testCaseStartedId -> first line of the first failing step's message
  const pickleOfCase = new Map(); // testCaseId -> pickleId
  const pickles = new Map(); // pickleId -> { name, uri, astNodeId }
  const lines = new Map(); // scenario or example-row astNodeId -> line
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const m = JSON.parse(line);
    if (m.gherkinDocument) collectScenarioLines(m.gherkinDocument.feature, lines);
    else if (m.pickle) pickles.set(m.pickle.id, { name: m.pickle.name, uri: m.pickle.uri, astNodeIds: m.pickle.astNodeIds });
    else if (m.testCase) pickleOfCase.set(m.testCase.id, m.testCase.pickleId);
    else if (m.testCaseStarted) {
      testCaseOfStarted.set(m.testCaseStarted.id, m.testCaseStarted.testCaseId);
      worst.set(m.testCaseStarted.id, 'PASSED');
    } else if (m.testStepFinished) {
      const id = m.testStepFinished.testCaseStartedId;
      const r = m.testStepFinished.testStepResult;
      const s = r.status;
      if (rank[s] > rank[worst.get(id) ?? 'PASSED']) worst.set(id, s);
      if (s !== 'PASSED' && s !== 'SKIPPED' && !firstError.has(id)) firstError.set(id, (r.message ?? s).split('\n').find((l) => l.trim()) ?? s);
    } else if (m.testCaseFinished && !m.testCaseFinished.willBeRetried) {
      const id = m.testCaseFinished.testCaseStartedId;
      finalByCase.set(testCaseOfStarted.get(id), { status: worst.get(id) ?? 'PASSED', message: firstError.get(id) });
    }
  }
  const failures = [];
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const [caseId, { status: s, message }] of finalByCase) {
    if (s === 'PASSED') passed++;
    else if (s === 'SKIPPED') skipped++;
    else {
      failed++;
      const p = pickles.get(pickleOfCase.get(caseId)) ?? { name: '?', uri: '?', astNodeIds: [] };
      const line = lines.get(p.astNodeIds[p.astNodeIds.length - 1]) ?? lines.get(p.astNodeIds[0]) ?? '?';
      failures.push({ where: `${p.uri}:${line}`, name: p.name, status: s, message: (message ?? '').trim().slice(0, 300) });
    }
  }
  // a scenario selected but never finished (a BeforeAll hook failed, a worker process died) is a failure, never a silence
  for (const [caseId, pickleId] of pickleOfCase) {
    if (finalByCase.has(caseId)) continue;
    failed++;
    const p = pickles.get(pickleId) ?? { name: '?', uri: '?', astNodeIds: [] };
    const line = lines.get(p.astNodeIds[p.astNodeIds.length - 1]) ?? lines.get(p.astNodeIds[0]) ?? '?';
    failures.push({ where: `${p.uri}:${line}`, name: p.name, status: 'NOT RUN', message: 'cucumber-js stopped before this scenario finished; see the error above' });
  }
  return { passed, failed, skipped, total: passed + failed + skipped, failures };
}

/**
 * For every step no definition matches, print the closest existing steps by
 * their words, so a new scenario's author sees what to write instead of only
 * a snippet to implement.
 */
function suggestForUndefined(file) {
  if (!fs.existsSync(file)) return;
  const defs = [];
  const pickleSteps = new Map(); // pickleStepId -> { text, uri, astNodeIds }
  const astLines = new Map(); // astNodeId -> line
  const undefinedSteps = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const m = JSON.parse(line);
    if (m.stepDefinition) defs.push(m.stepDefinition.pattern.source);
    else if (m.gherkinDocument) collectLines(m.gherkinDocument.feature, astLines);
    else if (m.pickle) for (const st of m.pickle.steps) pickleSteps.set(st.id, { text: st.text, uri: m.pickle.uri, astNodeIds: st.astNodeIds });
    else if (m.testCase) for (const ts of m.testCase.testSteps) if (ts.pickleStepId && ts.stepDefinitionIds && ts.stepDefinitionIds.length === 0) undefinedSteps.push(ts.pickleStepId);
  }
  const seen = new Set();
  const STOP = new Set(['the', 'a', 'an', 'of', 'to', 'is', 'it', 'its', 'and', 'by', 'in', 'on', 'at', 'with', 'that', 'as']);
  const words = (t) =>
    t
      .replace(/"[^"]*"/g, ' {string} ')
      .replace(/\b\d+(\.\d+)?\b/g, ' {int} ')
      .replace(/\{(float|int)\}/g, '{int}')
      .toLowerCase()
      .split(/[^a-z{}']+/)
      .filter((w) => w && !STOP.has(w));
  const defWords = defs.map((d) => ({ d, w: new Set(words(d.replace(/\{(project|workflow|step|viewer|operator|string)\}/g, '{string}'))) }));
  for (const id of undefinedSteps) {
    const st = pickleSteps.get(id);
    if (!st || seen.has(st.text)) continue;
    seen.add(st.text);
    const mine = new Set(words(st.text));
    const ranked = defWords
      .map(({ d, w }) => {
        let common = 0;
        for (const x of mine) if (w.has(x)) common++;
        return { d, score: common / (mine.size + w.size - common || 1) };
      })
      .sort((x, y) => y.score - x.score)
      .slice(0, 3)
      .filter((x) => x.score > 0);
    const where = `${st.uri}:${astLines.get(st.astNodeIds[0]) ?? '?'}`;
    if (seen.size === 1)
      console.error('\nNo step matches the lines below. The snippets cucumber printed above are for whoever adds a new step to step-definitions/; a scenario writer uses an existing step instead:');
    console.error(`\nundefined step: ${st.text}  (${where})`);
    if (ranked.length === 0) console.error('  no existing step is close; see docs/steps.md');
    else {
      console.error('  closest existing steps (docs/steps.md lists them all):');
      for (const r of ranked) console.error(`    ${r.d}`);
    }
  }
}

function collectScenarioLines(node, out) {
  if (!node) return;
  for (const child of node.children ?? []) {
    if (child.rule) collectScenarioLines(child.rule, out);
    const sc = child.scenario;
    if (!sc) continue;
    out.set(sc.id, sc.location.line);
    for (const ex of sc.examples ?? []) for (const row of ex.tableBody ?? []) out.set(row.id, row.location.line);
  }
}

function collectLines(node, out) {
  if (!node) return;
  for (const child of node.children ?? []) {
    const block = child.background ?? child.scenario ?? child.rule;
    if (child.rule) collectLines(child.rule, out);
    if (!block) continue;
    for (const st of block.steps ?? []) out.set(st.id, st.location.line);
  }
}
