import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { orderSyncDefinition, startTarget } from './helpers';

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
  opts: { noWrites?: boolean; detached?: boolean } = {},
): { child: ChildProcess; output: () => string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const argv = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('sh', ['-c', `${opts.noWrites ? 'ulimit -f 0; ' : ''}exec ${argv}`], {
    cwd: where,
    env: cleanEnv(where),
    stdio: ['ignore', 'pipe', 'pipe'],
    // its own process group, so that it can be killed with its Postgres at once
    detached: opts.detached === true,
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

describe('a `meshhook worker` beside `up` carries on after `up` is killed and started again', { timeout: 300_000 }, () => {
  async function runStatuses(h: string): Promise<Map<string, string>> {
    const runs = meshhook(h, ['runs', '--project', 'acme', '--json']);
    await runs.exited;
    try {
      return new Map((JSON.parse(runs.output()) as Array<{ runId?: string; id?: string; status: string }>).map((r) => [r.runId ?? r.id ?? '', r.status]));
    } catch {
      return new Map();
    }
  }

  async function delivered(h: string, n: number): Promise<string> {
    const d = meshhook(h, ['deliver', 'acme', 'order-sync', '--body', JSON.stringify({ order: { id: `o-${n}`, sum: n } })]);
    assert.equal((await d.exited).code, 0, d.output());
    const runId = /run ([0-9a-f-]{36}) started/.exec(d.output())?.[1];
    assert.ok(runId, d.output());
    return runId!;
  }

  for (const kill of ['group', 'node'] as const) {
    it(`with \`up --workers 0\` (the intake only), a run delivered after up's ${kill === 'group' ? 'whole process group' : 'node process'} was SIGKILLed and up started again succeeds`, async () => {
      const h = home();
      const target = await startTarget();
      try {
        const start = () => {
          const u = meshhook(h, ['up', '--port', '0', '--no-realtime', '--workers', '0'], { detached: true });
          return until('up', () => /MeshHook Replay is up|meshhook up:/.test(u.output()) || u.child.exitCode !== null).then(() => {
            assert.match(u.output(), /MeshHook Replay is up/, u.output());
            return u;
          });
        };
        const first = await start();
        // the worker finds the database through the state file up wrote, as README's "More workers" says
        const worker = meshhook(h, ['worker', '--poll-ms', '50']);
        await until('the worker', () => /is running against/.test(worker.output()) || worker.child.exitCode !== null);
        assert.match(worker.output(), /is running against/, worker.output());
        writeFileSync(path.join(h, 'order-sync.json'), JSON.stringify(orderSyncDefinition(target.url)));
        const published = meshhook(h, ['publish', path.join(h, 'order-sync.json'), '--project', 'acme', '--allow-private-targets']);
        assert.equal((await published.exited).code, 0, published.output());

        // the control: before the kill the worker carries the run to its end
        const before = await delivered(h, 1);
        let statuses = new Map<string, string>();
        const firstBy = Date.now() + 60_000;
        while (Date.now() < firstBy && (statuses = await runStatuses(h)).get(before) !== 'succeeded') await new Promise((r) => setTimeout(r, 250));
        assert.equal(statuses.get(before), 'succeeded', `the run delivered before the kill: ${worker.output().slice(-2000)}`);

        process.kill(kill === 'group' ? -first.child.pid! : first.child.pid!, 'SIGKILL');
        await first.exited;
        const second = await start();
        const after = await delivered(h, 2);
        // runs finish: the worker started before the restart carries this one on (it ran on a new port, which the
        // worker never learnt of, so the run stayed "running" for ever)
        const secondBy = Date.now() + 90_000;
        while (Date.now() < secondBy && (statuses = await runStatuses(h)).get(after) !== 'succeeded') await new Promise((r) => setTimeout(r, 250));
        assert.equal(statuses.get(after), 'succeeded', `the run delivered after up was started again is ${statuses.get(after)}; the worker said: ${worker.output().slice(-1500)}`);
        assert.equal(target.requests.length, 2, 'one request a run');

        worker.child.kill('SIGTERM');
        assert.equal((await worker.exited).code, 0, worker.output());
        second.child.kill('SIGINT');
        assert.equal((await second.exited).code, 0, second.output());
      } finally {
        await target.close();
      }
    });
  }
});
