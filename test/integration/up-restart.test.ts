import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

/*
 * `meshhook up` killed with SIGKILL cannot stop its embedded Postgres; the
 * next `up` on the same data directory must stop the leftover postmaster and
 * start cleanly, and SIGHUP/SIGINT stop everything and leave no state behind.
 * Real processes, real signals (runs the built CLI: `npm run build` first).
 */

const BIN = path.resolve(__dirname, '../../bin/meshhook.js');
const home = mkdtempSync(path.join(os.tmpdir(), 'mh-up-'));
const started: ChildProcess[] = [];

function up(): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  let out = '';
  const child = spawn(process.execPath, [BIN, 'up', '--port', '0', '--realtime-port', '0', '--workers', '1'], {
    cwd: home,
    env: { ...process.env, MESHHOOK_HOME: home, DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function until(what: string, probe: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function postmasterPid(): number | null {
  try {
    return Number(readFileSync(path.join(home, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]) || null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

after(() => {
  for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
  const pid = postmasterPid();
  if (pid && alive(pid)) process.kill(pid, 'SIGINT');
  rmSync(home, { recursive: true, force: true });
});

describe('meshhook up owns its Postgres across kills', { timeout: 180_000 }, () => {
  it('starts again on the same data directory after a SIGKILL, and SIGHUP stops everything', async () => {
    const first = up();
    await until('the first up', () => /MeshHook Replay is up/.test(first.output()));
    const orphan = postmasterPid();
    assert.ok(orphan && alive(orphan), 'the first up started a postmaster');
    first.child.kill('SIGKILL');
    await first.exited;
    assert.ok(alive(orphan!), 'the postmaster outlived the killed up (the situation the next up must handle)');

    const second = up();
    await until('the second up', () => /MeshHook Replay is up|meshhook up:/.test(second.output()));
    assert.match(second.output(), /MeshHook Replay is up/, second.output());
    assert.ok(!alive(orphan!), 'the leftover postmaster was stopped');
    assert.ok(existsSync(path.join(home, 'state.json')));

    second.child.kill('SIGHUP');
    assert.equal(await second.exited, 0, second.output());
    assert.match(second.output(), /SIGHUP: stopping[\s\S]*stopped\./);
    const pid = postmasterPid();
    assert.ok(!pid || !alive(pid), 'no postmaster is left running');
    assert.ok(!existsSync(path.join(home, 'state.json')), 'the state file is gone');
  });
});
