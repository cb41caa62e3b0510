import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

/*
 * `meshhook up` killed with SIGKILL cannot stop its embedded Postgres; the
 * next `up` on the same data directory must stop the leftover postmaster and
 * start cleanly, and SIGHUP/SIGINT stop everything and leave no state behind.
 * A postmaster killed under a running `up` is started again by it.
 * Real processes, real signals (runs the built CLI: `npm run build` first).
 */

const BIN = path.resolve(__dirname, '../../bin/meshhook.js');
const home = mkdtempSync(path.join(os.tmpdir(), 'mh-up-'));
const started: ChildProcess[] = [];

function up(where = home): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  let out = '';
  const child = spawn(process.execPath, [BIN, 'up', '--port', '0', '--realtime-port', '0', '--workers', '1'], {
    cwd: where,
    env: { ...process.env, MESHHOOK_HOME: where, DATABASE_URL: '' },
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

describe('meshhook up owns its Postgres across kills', { timeout: 540_000 }, () => {
  it('starts again on the same data directory after a SIGKILL, and SIGHUP stops everything', async () => {
    const first = up();
    await until('the first up', () => /MeshHook Replay is up/.test(first.output()));
    const orphan = postmasterPid();
    assert.ok(orphan && alive(orphan), 'the first up started a postmaster');
    // the superuser's password is this data directory's own, not one anyone can read in our source
    const passwordFile = path.join(home, 'pgdata.password');
    assert.equal(statSync(passwordFile).mode & 0o777, 0o600);
    const password = readFileSync(passwordFile, 'utf8').trim();
    assert.ok(password.length >= 24 && password !== 'meshhook');
    const { databaseUrl } = JSON.parse(readFileSync(path.join(home, 'state.json'), 'utf8')) as { databaseUrl: string };
    assert.equal(decodeURIComponent(new URL(databaseUrl).password), password);
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

describe('meshhook up keeps its Postgres running', { timeout: 540_000 }, () => {
  it('starts Postgres again when it is killed under it, and the intake is healthy again', async () => {
    const run = up();
    await until('up', () => /MeshHook Replay is up|meshhook up:/.test(run.output()));
    assert.match(run.output(), /MeshHook Replay is up/, run.output());
    const intake = (JSON.parse(readFileSync(path.join(home, 'state.json'), 'utf8')) as { intakeUrl: string }).intakeUrl;
    assert.equal((await fetch(`${intake}/healthz`)).status, 200, 'healthy before the kill (the control)');
    // its watchdog looks every second: a live Postgres is not taken for a dead one
    await new Promise((r) => setTimeout(r, 1500));
    assert.doesNotMatch(run.output(), /stopped unexpectedly/, run.output());
    const killed = postmasterPid();
    assert.ok(killed && alive(killed));
    process.kill(killed!, 'SIGKILL');
    await until('up to notice', () => /Postgres stopped unexpectedly/.test(run.output()));
    await until('Postgres to come back', () => /Postgres is back|did not start again/.test(run.output()));
    assert.match(run.output(), /Postgres is back/, run.output());
    const now = postmasterPid();
    assert.ok(now && now !== killed && alive(now), 'a new postmaster runs');
    let status = 0;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && (status = await fetch(`${intake}/healthz`).then((r) => r.status, () => 0)) !== 200)
      await new Promise((r) => setTimeout(r, 200));
    assert.equal(status, 200, 'the intake answers healthy again');
    assert.equal(run.child.exitCode, null, 'up is still running');
    run.child.kill('SIGINT');
    assert.equal(await run.exited, 0, run.output());
  });
});

describe('meshhook up is not kept from starting by a process that only looks like it', { timeout: 540_000 }, () => {
  it('starts when the last up is a zombie nobody reaped, or its pid now belongs to another program', async () => {
    // an up whose parent never reaps it (sleep): once SIGKILLed it stays a zombie, alive to kill(pid, 0)
    const parent = spawn('sh', ['-c', `"${process.execPath}" "${BIN}" up --port 0 --realtime-port 0 --workers 1 > "${home}/zombie.log" 2>&1 & exec sleep 120`], {
      cwd: home,
      env: { ...process.env, MESHHOOK_HOME: home, DATABASE_URL: '' },
      stdio: 'ignore',
    });
    started.push(parent);
    const statePid = (): number | undefined => {
      try {
        return (JSON.parse(readFileSync(path.join(home, 'state.json'), 'utf8')) as { pid?: number }).pid;
      } catch {
        return undefined;
      }
    };
    await until('the unreaped up', () => /MeshHook Replay is up/.test(existsSync(path.join(home, 'zombie.log')) ? readFileSync(path.join(home, 'zombie.log'), 'utf8') : ''));
    const zombie = statePid()!;
    process.kill(zombie, 'SIGKILL');
    await until('it to be a zombie', () => /\) Z /.test(readFileSync(`/proc/${zombie}/stat`, 'utf8')));
    assert.ok(alive(zombie), 'a zombie still answers kill(pid, 0): the situation under test');

    const next = up();
    await until('the next up', () => /MeshHook Replay is up|meshhook up:|already up/.test(next.output()));
    assert.match(next.output(), /MeshHook Replay is up/, next.output());
    next.child.kill('SIGINT');
    assert.equal(await next.exited, 0, next.output());

    // a state file left behind whose pid now belongs to another program
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    started.push(other);
    writeFileSync(path.join(home, 'state.json'), JSON.stringify({ pid: other.pid, intakeUrl: 'http://127.0.0.1:9' }));
    const again = up();
    await until('up again', () => /MeshHook Replay is up|meshhook up:|already up/.test(again.output()));
    assert.match(again.output(), /MeshHook Replay is up/, again.output());
    again.child.kill('SIGINT');
    assert.equal(await again.exited, 0, again.output());
    other.kill('SIGKILL');
    parent.kill('SIGKILL');
  });
});

describe('two meshhook up started at the same moment on one home', { timeout: 540_000 }, () => {
  it('one comes up, the other is told so and leaves its Postgres alone', async () => {
    // before the lock both ran initdb into one fresh directory, or the later one stopped the first's Postgres as a
    // leftover: the state file names an up only once it is up
    const fresh = mkdtempSync(path.join(os.tmpdir(), 'mh-up-twice-'));
    try {
      const [a, b] = [up(fresh), up(fresh)];
      const said = (r: ReturnType<typeof up>) => /MeshHook Replay is up|meshhook up:|already starting or up/.test(r.output());
      await until('both to say how they stand', () => said(a) && said(b), 120_000);
      const upOnes = [a, b].filter((r) => /MeshHook Replay is up/.test(r.output()));
      const refused = [a, b].filter((r) => /already starting or up/.test(r.output()));
      assert.equal(upOnes.length, 1, a.output() + '\n----\n' + b.output());
      assert.equal(refused.length, 1, a.output() + '\n----\n' + b.output());
      assert.equal(await refused[0].exited, 1);
      const winner = upOnes[0];
      const intake = (JSON.parse(readFileSync(path.join(fresh, 'state.json'), 'utf8')) as { intakeUrl: string }).intakeUrl;
      assert.equal((await fetch(`${intake}/healthz`)).status, 200, 'the one that came up is healthy: its Postgres was left alone');
      winner.child.kill('SIGINT');
      assert.equal(await winner.exited, 0, winner.output());
      // the lock went with it: the next up on the home starts
      const next = up(fresh);
      await until('the next up', () => said(next));
      assert.match(next.output(), /MeshHook Replay is up/, next.output());
      next.child.kill('SIGINT');
      assert.equal(await next.exited, 0, next.output());
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });
});
