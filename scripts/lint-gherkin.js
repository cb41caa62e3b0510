#!/usr/bin/env node
// Gherkin checks that run with the tests: gherkin-lint (style, BRIEF-ish step
// caps, mechanics kept out of scenarios) plus what it does not check — every
// feature opens with a paragraph saying what promise it checks, and every
// scenario is tagged into some area a profile can select.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { AstBuilder, GherkinClassicTokenMatcher, Parser } = require('@cucumber/gherkin');
const { IdGenerator } = require('@cucumber/messages');

const root = path.resolve(__dirname, '..');
const lint = spawnSync(process.execPath, [require.resolve('gherkin-lint/dist/main.js'), '-c', '.gherkin-lintrc', 'features'], { cwd: root, stdio: 'inherit' });

const AREAS = ['@replay', '@crash', '@db-faults', '@sweep', '@intake', '@realtime', '@tenancy', '@intervention', '@tamper', '@secrets', '@bad-input'];
const problems = [];
const files = [];
(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.feature')) files.push(p);
  }
})(path.join(root, 'features'));

for (const file of files) {
  const rel = path.relative(root, file);
  const parser = new Parser(new AstBuilder(IdGenerator.uuid()), new GherkinClassicTokenMatcher());
  const doc = parser.parse(fs.readFileSync(file, 'utf8'));
  const feature = doc.feature;
  if (!feature) continue;
  if (!feature.description || feature.description.trim().split(/\s+/).length < 12) {
    problems.push(`${rel}: the feature must open with a short paragraph saying what promise it checks`);
  }
  const featureTags = feature.tags.map((t) => t.name);
  const scenarios = feature.children.flatMap((c) => (c.rule ? c.rule.children : [c])).filter((c) => c.scenario).map((c) => c.scenario);
  for (const s of scenarios) {
    const tags = [...featureTags, ...s.tags.map((t) => t.name)];
    if (!tags.some((t) => AREAS.includes(t))) problems.push(`${rel}:${s.location.line}: "${s.name}" has no area tag (${AREAS.join(' ')})`);
  }
}
// the README's "run one scenario by line" examples must still point at a scenario
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
for (const [, file, line] of readme.matchAll(/(features\/[\w/.-]+\.feature):(\d+)/g)) {
  const full = path.join(root, file);
  const text = fs.existsSync(full) ? fs.readFileSync(full, 'utf8').split('\n')[Number(line) - 1] ?? '' : null;
  if (text === null) problems.push(`README.md names ${file}, which does not exist`);
  else if (!/^\s*(Scenario|Scenario Outline|Example):/.test(text)) problems.push(`README.md runs ${file}:${line}, which is not a Scenario line`);
}
for (const p of problems) console.error(p);
const failed = lint.status !== 0 || problems.length > 0;
console.log(failed ? `gherkin lint: problems found in ${files.length} feature files` : `gherkin lint: ${files.length} feature files ok`);
process.exit(failed ? 1 : 0);
