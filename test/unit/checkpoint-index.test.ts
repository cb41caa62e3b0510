import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { appendFileSync, closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { checkpointLine, CheckpointIndex, holdingOwnJournal } from '../../src/integrity/checkpoints';
import { Keyring } from '../../src/security/keyring';

const KEYS = Keyring.generate('k-cp');
const head = (runId: string, seq: number) => ({ projectId: randomUUID(), runId, seq, hash: 'a'.repeat(64) });

describe('checkpoint files', () => {
  it('a journal is read line by line: one longer than a string can hold (512 MiB) still loads at start', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mh-cp-'));
    const file = path.join(dir, 'journal.jsonl');
    try {
      const [first, last] = [randomUUID(), randomUUID()];
      writeFileSync(file, checkpointLine(KEYS.chainKey(), head(first, 3), new Date()));
      // a hole (read as zeros, no disk written) makes the file 600 MiB: a line of damage, then a genuine line
      const fd = openSync(file, 'r+');
      ftruncateSync(fd, 600 * 1024 * 1024);
      closeSync(fd);
      appendFileSync(file, '\n' + checkpointLine(KEYS.chainKey(), head(last, 7), new Date()));
      assert.ok(statSync(file).size > 512 * 1024 * 1024);
      const index = holdingOwnJournal(null, file, KEYS.chainKeys())!;
      assert.equal(index.of(first)?.seq, 3);
      assert.equal(index.of(last)?.seq, 7);
      assert.equal(index.problems.length, 1, index.problems.join('; '));
      assert.match(index.problems[0], /journal\.jsonl:2: not a checkpoint line/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lines across read chunks, a damaged line and a last line cut short read as before', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mh-cp-'));
    const file = path.join(dir, 'cp.jsonl');
    try {
      const runs = Array.from({ length: 6000 }, () => randomUUID());
      const lines = runs.map((r, i) => checkpointLine(KEYS.chainKey(), head(r, i + 1), new Date()));
      writeFileSync(file, lines.slice(0, 10).join('') + 'garbage\n' + lines.slice(10).join('') + lines[0].slice(0, 40));
      const index = CheckpointIndex.load([file], KEYS.chainKeys());
      for (const [i, r] of runs.entries()) assert.equal(index.of(r)?.seq, i + 1);
      assert.deepEqual(index.problems, [`${file}:11: not a checkpoint line`]);
      assert.equal(index.lines, 6002);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
