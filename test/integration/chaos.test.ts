import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

/*
 * The short version of `npm run chaos` that CI runs: the real `meshhook up`
 * SIGKILLed (whole group, node only, postmaster) while signed webhooks flow,
 * then every invariant checked. And the same check shown to fail when the order
 * service stops honouring Idempotency-Key, so a pass means something.
 * Runs the built CLI (`npm run build` first; `npm test` does).
 */

const root = path.resolve(__dirname, '../..');

function chaos(...args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, ['-r', 'ts-node/register', 'scripts/chaos.ts', ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: 240_000,
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true' },
  });
  const out = `${r.stdout}${r.stderr}`;
  // a failing run keeps its data directory for diagnosis; the planted failure's is not needed
  const kept = /kept in (\S+)/.exec(out)?.[1];
  if (kept && r.status === 1 && args.some((a) => a.startsWith('--plant-'))) rmSync(kept, { recursive: true, force: true });
  return { code: r.status, out };
}

describe('npm run chaos (short)', () => {
  it('keeps every invariant while meshhook up is killed under load', () => {
    const r = chaos('--seed', '1', '--minutes', '0.3');
    const line = r.out.split('\n').find((l) => l.startsWith('chaos seed=1')) ?? '';
    assert.equal(r.code, 0, r.out);
    assert.match(line, /, 0 stuck\)/);
    assert.match(line, /\(0 keys duplicated, 0 with other bytes, 0 stale sends\), verify ok, rebuild ok$/);
    // the faults fired: at least one kill, and it found runs in flight
    const kills = Number(/ (\d+) kills/.exec(line)?.[1]);
    assert.ok(kills >= 1, line);
  });

  it('keeps them with workers in processes of their own beside up\'s (runs handed over race with their claims)', () => {
    // up's in-process workers and a `meshhook worker`: worker processes SIGKILLed or SIGSTOPped across a database
    // crash, up killed right after a 202 or while it starts, each process keeping a head journal
    const r = chaos('--seed', '21', '--minutes', '0.3', '--topology', 'mixed', '--only', 'worker,pause-db,after-ack,startup', '--journals', '--delay-step');
    const line = r.out.split('\n').find((l) => l.startsWith('chaos seed=21')) ?? '';
    assert.equal(r.code, 0, r.out);
    assert.match(line, /, 0 stuck\), topology mixed, /);
    assert.match(line, /\(0 keys duplicated, 0 with other bytes, 0 stale sends\), verify ok, rebuild ok$/);
  });

  it('fails when no delivery was acknowledged, since then nothing was checked', () => {
    const r = chaos('--seed', '4', '--minutes', '0');
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /no delivery was acknowledged, so no invariant was put to the test/);
    const kept = /kept in (\S+)/.exec(r.out)?.[1];
    if (kept) rmSync(kept, { recursive: true, force: true });
  });

  it('fails when the order service ignores idempotency keys', () => {
    const r = chaos('--seed', '4', '--minutes', '0.2', '--plant-duplicates');
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /keys with more than one effect/);
  });

  it('fails when a request reaches the order service after its run recorded the answer (a stale send)', () => {
    const r = chaos('--seed', '4', '--minutes', '0.2', '--plant-stale-send');
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /after its run recorded the answer: a stale send/);
    assert.match(r.out, /\(0 keys duplicated, 0 with other bytes, 1 stale sends\)/, 'the same key and bytes: only the stale-send check sees it');
  });
});
