import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';

/*
 * What a fresh process loads before it does anything: a worker or a CLI call
 * pays for every module at each start (a recovered worker, each `meshhook
 * verify`). Each check runs in a new node, since this one has loaded it all.
 */
const ROOT = path.resolve(__dirname, '..', '..');

function inFreshNode(code: string): Record<string, unknown> {
  const out = execFileSync(process.execPath, ['-r', 'sucrase/register/ts', '-e', code], { cwd: ROOT, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const loaded = `const cached = (part) => Object.keys(require.cache).some((f) => f.includes(part));`;

describe('what a fresh process loads', () => {
  it('load-pg loads pg without node\'s fetch, and leaves no navigator behind', () => {
    const before = inFreshNode(`console.log(JSON.stringify({ navigator: typeof navigator }))`);
    const r = inFreshNode(
      `${loaded} require('./src/db/load-pg'); console.log(JSON.stringify({ pg: cached('/node_modules/pg/lib/index.js'), fetch: process.moduleLoadList.some((m) => m.includes('undici')), navigator: typeof navigator }))`,
    );
    assert.deepEqual(r, { pg: true, fetch: false, navigator: before.navigator });
  });

  it('the CLI loads the HTTP server, the realtime server, supabase-js and the JWT library only for the commands that use them', () => {
    const r = inFreshNode(
      `${loaded} require('./src/cli/main'); console.log(JSON.stringify({ fastify: cached('/node_modules/fastify/'), supabase: cached('/node_modules/@supabase/'), jose: cached('/node_modules/jose/'), engine: cached('/src/engine.ts'), pg: cached('/node_modules/pg/lib/index.js') }))`,
    );
    assert.deepEqual(r, { fastify: false, supabase: false, jose: false, engine: false, pg: true });
  });
});
