import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { postmasterPidIn } from '../../src/db/postgres';

/*
 * The pid file in a data directory is writable by the database superuser (COPY ... TO PROGRAM runs as the
 * Postgres OS user): the pid it names counts only when that process serves the directory, so a forged file
 * cannot point a root `meshhook up` at another process to signal.
 */
describe('the postmaster pid read from a data directory', { skip: !existsSync('/proc/self/cmdline') && 'no /proc here' }, () => {
  it('is refused when the file names a process that does not serve the directory, and accepted when it does', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mh-pid-'));
    // stands for a postmaster: named postgres, its arguments naming the directory
    const look = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', dir], { argv0: 'postgres', stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 100));
      writeFileSync(path.join(dir, 'postmaster.pid'), `${process.pid}\n${dir}\n`);
      assert.equal(postmasterPidIn(dir), null, 'this test process (alive, but no postmaster of the directory) is refused');
      writeFileSync(path.join(dir, 'postmaster.pid'), `1\n${dir}\n`);
      assert.equal(postmasterPidIn(dir), null, 'init is refused');
      writeFileSync(path.join(dir, 'postmaster.pid'), `${look.pid}\n${dir}\n`);
      assert.equal(postmasterPidIn(dir), look.pid, 'a postgres process of the directory counts (the control)');
      assert.equal(postmasterPidIn(path.join(dir, 'other')), null, 'no pid file: none');
    } finally {
      look.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
