import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

/*
 * Kills, round 2: processes killed at moments the first rounds did not reach. Real processes, real signals, real
 * faults (runs the built CLI: `npm run build` first).
 *
 * A write cut short is made deterministic with the file size limit (`ulimit -f 0`): the kernel refuses the first
 * byte written to a file, and a process that does not ignore SIGXFSZ is killed right there, exactly between
 * "the file was opened (and truncated)" and "its bytes are in it".
 */

const BIN = path.resolve(__dirname, '../../bin/meshhook.js');
const homes: string[] = [];
const started: ChildProcess[] = [];

function home(): string {
  const h = mkdtempSync(path.join(os.tmpdir(), 'mh-kills2-'));
  homes.push(h);
  return h;
}

/** this home's own keys and embedded Postgres, whatever the environment says */
function cleanEnv(where: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, MESHHOOK_HOME: where, DATABASE_URL: '' };
  delete env.MESHHOOK_KEYS;
  delete env.MESHHOOK_KEY_FILE;
  return env;
}

/** the CLI, optionally under a file size limit of 0 (every write to a file fails, or kills the writer) */
function meshhook(
  where: string,
  args: string[],
  opts: { noWrites?: boolean } = {},
): { child: ChildProcess; output: () => string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const argv = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('sh', ['-c', `${opts.noWrites ? 'ulimit -f 0; ' : ''}exec ${argv}`], {
    cwd: where,
    env: cleanEnv(where),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => out, exited };
}

async function until(what: string, probe: () => boolean, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function keyIds(file: string): string[] {
  return (JSON.parse(readFileSync(file, 'utf8')) as { keys: Array<{ id: string }> }).keys.map((k) => k.id);
}

after(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const h of homes) {
    try {
      const pid = Number(readFileSync(path.join(h, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid) process.kill(pid, 'SIGINT');
    } catch {
      /* none */
    }
    rmSync(h, { recursive: true, force: true });
  }
});

describe('a key or password file is never left cut short by a kill', { timeout: 300_000 }, () => {
  it('keeps every key when `meshhook keys rotate` is killed as it writes the key file', async () => {
    const h = home();
    const init = meshhook(h, ['keys', 'init']);
    assert.equal((await init.exited).code, 0, init.output());
    const file = path.join(h, 'keyring.json');
    const before = keyIds(file);
    assert.equal(before.length, 1);

    // the control: a rotation that is not interrupted adds a key and keeps the old one (the file is written first;
    // sealing the secrets again with it then needs a database, which this home has none of)
    const control = meshhook(h, ['keys', 'rotate']);
    await control.exited;
    assert.match(control.output(), /new active key/);
    const two = keyIds(file);
    assert.equal(two.length, 2);
    assert.equal(two[1], before[0]);

    // killed by the kernel (SIGXFSZ) at its first byte written: the rotation did not happen, and must not have
    // cost the keys already there (written in place, the file was left empty: every key lost)
    const killed = meshhook(h, ['keys', 'rotate'], { noWrites: true });
    const end = await killed.exited;
    assert.ok(end.code !== 0, `the rotation under a file size limit of 0 failed (${JSON.stringify(end)}): ${killed.output()}`);
    assert.deepEqual(keyIds(file), two, `the key file after the killed rotation: ${JSON.stringify(readFileSync(file, 'utf8'))}`);

    // and the key file still works for the next rotation
    const again = meshhook(h, ['keys', 'rotate']);
    await again.exited;
    assert.match(again.output(), /new active key/);
    assert.deepEqual(keyIds(file).slice(1), two);
  });

  it('a first `up` killed as it writes its key file leaves none, and the next `up` makes one', async () => {
    const h = home();
    // the lock's key is there already, so the first write `up` makes is the key file's
    writeFileSync(path.join(h, '.up-lock-key'), 'k'.repeat(64), { mode: 0o600 });
    const cut = meshhook(h, ['keys', 'init'], { noWrites: true });
    const end = await cut.exited;
    assert.ok(end.code !== 0, `keys init under a file size limit of 0 failed (${JSON.stringify(end)}): ${cut.output()}`);
    // an empty key file would stop every later command ("Unexpected end of JSON input")
    assert.ok(!existsSync(path.join(h, 'keyring.json')), `no key file, rather than a cut one: ${existsSync(path.join(h, 'keyring.json')) ? JSON.stringify(readFileSync(path.join(h, 'keyring.json'), 'utf8')) : ''}`);
    const made = meshhook(h, ['keys', 'init']);
    assert.equal((await made.exited).code, 0, made.output());
    assert.equal(keyIds(path.join(h, 'keyring.json')).length, 1);
  });

  it('`up` cut short as it writes the Postgres password on its first start comes up at the next start', async () => {
    const h = home();
    const init = meshhook(h, ['keys', 'init']);
    assert.equal((await init.exited).code, 0, init.output());
    // the lock's key and the key file are there already, so the first write `up` makes is the password file's
    writeFileSync(path.join(h, '.up-lock-key'), 'k'.repeat(64), { mode: 0o600 });
    const cut = meshhook(h, ['up', '--port', '0', '--no-realtime', '--workers', '0'], { noWrites: true });
    const end = await cut.exited;
    assert.ok(end.code !== 0, `up under a file size limit of 0 failed (${JSON.stringify(end)}): ${cut.output()}`);
    const passwordFile = path.join(h, 'pgdata.password');
    // an empty password file: initdb and every later login use the empty password, which the client refuses
    assert.ok(
      !existsSync(passwordFile) || readFileSync(passwordFile, 'utf8').trim().length >= 24,
      `the password file is whole or not there: ${existsSync(passwordFile) ? JSON.stringify(readFileSync(passwordFile, 'utf8')) : ''}`,
    );

    const next = meshhook(h, ['up', '--port', '0', '--no-realtime', '--workers', '0']);
    await until('the next up', () => /MeshHook Replay is up|meshhook up:/.test(next.output()) || next.child.exitCode !== null);
    assert.match(next.output(), /MeshHook Replay is up/, next.output());
    next.child.kill('SIGINT');
    assert.equal((await next.exited).code, 0, next.output());
  });
});
