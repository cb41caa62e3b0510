/*
 * The side-by-side benches answer --help (and refuse an option they do not know) before they start
 * anything: `npm run bench:dbos -- --help` used to run the whole bench, an embedded Postgres and
 * about two minutes of trials. DATABASE_URL points nowhere, so a bench that does start fails at
 * once instead of running (and this test fails rather than measures).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';

const root = path.resolve(__dirname, '..', '..');
const env = { ...process.env, DATABASE_URL: 'postgres://nobody@127.0.0.1:1/nowhere', MESHHOOK_DB: '' };
const run = (args: string[]) => spawnSync(process.execPath, args, { cwd: root, env, encoding: 'utf8', timeout: 60_000 });

describe('bench --help', () => {
  it('bench:dbos (bench/side-by-side.ts) prints its usage and exits 0; an unknown option exits 2', () => {
    const help = run(['-r', 'sucrase/register/ts', 'bench/side-by-side.ts', '--help']);
    assert.equal(help.status, 0, help.stdout + help.stderr);
    assert.match(help.stdout, /^usage: npm run bench:dbos -- \[--quick\] \[--scaling\]/);
    assert.match(help.stdout, /dbos-inline\/pure/);
    const bad = run(['-r', 'sucrase/register/ts', 'bench/side-by-side.ts', '--qiuck']);
    assert.equal(bad.status, 2, bad.stdout + bad.stderr);
    assert.match(bad.stderr, /unknown option --qiuck/);
  });

  it('bench:e2e (bench/end-to-end/run.js) prints its usage and exits 0; an unknown option exits 2', () => {
    const help = run(['bench/end-to-end/run.js', '--help']);
    assert.equal(help.status, 0, help.stdout + help.stderr);
    assert.match(help.stdout, /^usage: npm run bench:e2e -- \[--quick\]/);
    const bad = run(['bench/end-to-end/run.js', '--rounds=2']);
    assert.equal(bad.status, 2, bad.stdout + bad.stderr);
    assert.match(bad.stderr, /unknown option --rounds=2/);
  });
});
