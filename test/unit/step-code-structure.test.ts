import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

/*
 * The step code keeps one home per concept: the World declares every field a
 * scenario keeps (support/world.ts), shared helpers and data live in support/,
 * and step files never import each other — so a QA engineer adding a step
 * finds everything it can use in one place.
 */

const root = path.resolve(__dirname, '..', '..');
const files = (dir: string) =>
  readdirSync(path.join(root, dir))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => ({ name: `${dir}/${f}`, text: readFileSync(path.join(root, dir, f), 'utf8') }));

test('no file grows the World from outside support/world.ts', () => {
  const growing = [...files('step-definitions'), ...files('support')].filter((f) => /declare module ['"][^'"]*world['"]/.test(f.text)).map((f) => f.name);
  assert.deepEqual(growing, []);
});

test('step files import support code, never another step file', () => {
  const crossing = files('step-definitions').flatMap((f) => [...f.text.matchAll(/from '(\.\/[^']+)'/g)].map((m) => `${f.name} imports ${m[1]}`));
  assert.deepEqual(crossing, []);
});
