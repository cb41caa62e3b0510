#!/usr/bin/env node
// Gherkin checks that run with the tests: gherkin-lint (style, BRIEF-ish step
// caps, mechanics kept out of scenarios) plus what it does not check — every
// feature opens with a paragraph saying what promise it checks, every
// scenario is tagged into some area a profile can select, every tag is one we
// know (a typo would silently leave a scenario out of a tagged CI job), no
// quoted value is empty (it would match every answer), and every table's
// columns line up. `--fix` lines the tables up in place.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { AstBuilder, GherkinClassicTokenMatcher, Parser } = require('@cucumber/gherkin');
const { IdGenerator } = require('@cucumber/messages');

const root = path.resolve(__dirname, '..');
const lint = spawnSync(process.execPath, [require.resolve('gherkin-lint/dist/main.js'), '-c', '.gherkin-lintrc', 'features'], { cwd: root, stdio: 'inherit' });

const AREAS = ['@replay', '@crash', '@db-faults', '@sweep', '@intake', '@realtime', '@tenancy', '@intervention', '@tamper', '@secrets', '@bad-input'];
// tags that pick or shape a run rather than name an area (see cucumber.js and the README's tag table)
const OTHER_TAGS = ['@smoke', '@slow', '@db-crash', '@timeline', '@recipes', '@wip'];
const fix = process.argv.includes('--fix');
const problems = [];
const badFiles = new Set();
const problem = (file, text) => {
  badFiles.add(file);
  problems.push(text);
};
const files = [];
(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.feature')) files.push(p);
  }
})(path.join(root, 'features'));

/** The text with each table's cells padded so that every row's pipes line up (widths in code points). */
function alignTables(text) {
  const lines = text.split('\n');
  const isRow = (l) => /^\s*\|.*\|\s*$/.test(l);
  for (let i = 0; i < lines.length; ) {
    if (!isRow(lines[i])) {
      i++;
      continue;
    }
    let end = i;
    while (end < lines.length && isRow(lines[end])) end++;
    const indent = lines[i].match(/^\s*/)[0];
    // cells split on pipes that are not escaped (\| is a pipe inside a cell)
    const rows = lines.slice(i, end).map((l) => l.trim().slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim()));
    const width = (c) => [...c].length;
    const cols = Math.max(...rows.map((r) => r.length));
    const widths = Array.from({ length: cols }, (_, k) => Math.max(...rows.map((r) => width(r[k] ?? ''))));
    for (let k = 0; k < rows.length; k++)
      lines[i + k] = `${indent}| ${widths.map((w, j) => (rows[k][j] ?? '') + ' '.repeat(w - width(rows[k][j] ?? ''))).join(' | ')} |`;
    i = end;
  }
  return lines.join('\n');
}

for (const file of files) {
  const rel = path.relative(root, file);
  const parser = new Parser(new AstBuilder(IdGenerator.uuid()), new GherkinClassicTokenMatcher());
  const doc = parser.parse(fs.readFileSync(file, 'utf8'));
  const feature = doc.feature;
  if (!feature) continue;
  if (!feature.description || feature.description.trim().split(/\s+/).length < 12) {
    problem(rel, `${rel}: the feature must open with a short paragraph saying what promise it checks`);
  }
  const featureTags = feature.tags.map((t) => t.name);
  const scenarios = feature.children.flatMap((c) => (c.rule ? c.rule.children : [c])).filter((c) => c.scenario).map((c) => c.scenario);
  for (const s of scenarios) {
    const tags = [...featureTags, ...s.tags.map((t) => t.name)];
    if (!tags.some((t) => AREAS.includes(t))) problem(rel, `${rel}:${s.location.line}: "${s.name}" has no area tag (${AREAS.join(' ')})`);
    for (const t of [...s.tags, ...s.examples.flatMap((e) => e.tags)])
      if (!AREAS.includes(t.name) && !OTHER_TAGS.includes(t.name))
        problem(rel, `${rel}:${t.location.line}: unknown tag ${t.name} (areas: ${AREAS.join(' ')}; others: ${OTHER_TAGS.join(' ')})`);
  }
  for (const t of feature.tags)
    if (!AREAS.includes(t.name) && !OTHER_TAGS.includes(t.name))
      problem(rel, `${rel}:${t.location.line}: unknown tag ${t.name} (areas: ${AREAS.join(' ')}; others: ${OTHER_TAGS.join(' ')})`);
  // an empty quoted value ("" in a step, or an empty cell a "<column>" takes) is a substring of every answer, so a
  // step that matches words (`the run fails because ""`, `the action is refused because "<reason>"`) could never fail
  const backgroundSteps = feature.children.filter((c) => c.background).flatMap((c) => c.background.steps);
  for (const st of backgroundSteps)
    if (/(^|[^\\])""/.test(st.text)) problem(rel, `${rel}:${st.location.line}: an empty quoted value ("") matches anything, so the step cannot fail: say what is expected`);
  for (const s of scenarios) {
    for (const st of s.steps) {
      if (/(^|[^\\])""/.test(st.text)) problem(rel, `${rel}:${st.location.line}: an empty quoted value ("") matches anything, so the step cannot fail: say what is expected`);
      for (const [, col] of st.text.matchAll(/"<([^>]+)>"/g))
        for (const ex of s.examples) {
          const k = (ex.tableHeader?.cells ?? []).findIndex((c) => c.value === col);
          if (k < 0) continue;
          for (const row of ex.tableBody)
            if (row.cells[k].value.trim() === '')
              problem(rel, `${rel}:${row.location.line}: an empty "<${col}>" matches anything, so the step cannot fail: say what is expected`);
        }
    }
  }
  // tables: every row's pipes in the same columns, as a reader (and a diff) expects
  const text = fs.readFileSync(file, 'utf8');
  const aligned = alignTables(text);
  if (aligned !== text) {
    if (fix) {
      fs.writeFileSync(file, aligned);
      console.log(`${rel}: tables lined up`);
    } else {
      const a = text.split('\n');
      const b = aligned.split('\n');
      const line = a.findIndex((l, i) => l !== b[i]) + 1;
      problem(rel, `${rel}:${line}: the table's columns do not line up (npm run lint:gherkin -- --fix lines them up)`);
    }
  }
}
// the README's "run one scenario by line" examples must still point at a scenario
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
for (const [, file, line] of readme.matchAll(/(features\/[\w/.-]+\.feature):(\d+)/g)) {
  const full = path.join(root, file);
  const text = fs.existsSync(full) ? fs.readFileSync(full, 'utf8').split('\n')[Number(line) - 1] ?? '' : null;
  if (text === null) problem('README.md', `README.md names ${file}, which does not exist`);
  else if (!/^\s*(Scenario|Scenario Outline|Example):/.test(text)) problem('README.md', `README.md runs ${file}:${line}, which is not a Scenario line`);
}
for (const p of problems) console.error(p);
const failed = lint.status !== 0 || problems.length > 0;
console.log(
  failed
    ? problems.length
      ? `gherkin lint: ${problems.length} problem${problems.length === 1 ? '' : 's'} in ${badFiles.size} of ${files.length} files${lint.status !== 0 ? ', and gherkin-lint\'s above' : ''}`
      : 'gherkin lint: gherkin-lint found the problems above'
    : `gherkin lint: ${files.length} feature files ok`,
);
process.exit(failed ? 1 : 0);
