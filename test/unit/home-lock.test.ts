import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, realpathSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { holdHome } from '../../src/cli/home-lock';

describe("the lock that keeps one `meshhook up` per home", () => {
  it('is held by one process at a time, and free again once released', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'mh-home-'));
    const first = await holdHome(home);
    assert.ok(first);
    assert.equal(await holdHome(home), null, 'a second up on the same home is kept out');
    first.release();
    const again = await holdHome(home);
    assert.ok(again, 'free once released');
    again.release();
  });

  it('cannot be taken by another local user who knows only the home path (Linux: the abstract name is keyed)', { skip: process.platform !== 'linux' && 'abstract socket names are Linux only' }, async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'mh-home-'));
    // what a squatter could compute without reading the home: the name derived from the path alone
    const guess = `\0meshhook-up-${createHash('sha256').update(realpathSync(home)).digest('hex').slice(0, 40)}`;
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(guess, resolve));
    try {
      const held = await holdHome(home);
      assert.ok(held, 'up starts although someone holds the name its path alone would give');
      held.release();
      assert.equal(statSync(path.join(home, '.up-lock-key')).mode & 0o077, 0, 'the key is readable by the home owner only');
    } finally {
      squatter.close();
    }
  });
});
