import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

/**
 * Write a small file so that, whatever moment the process is killed (or the disk fills, or the machine loses
 * power), the file is either as it was or whole with the new bytes: never empty or cut short. The bytes go to a
 * file of their own beside it, flushed to disk, then take the name in one step (rename, or link when the file
 * must not exist yet), and the directory is flushed so the new name lasts.
 *
 * Written in place (truncate, then write), a kill between the two left the key file empty: `meshhook keys rotate`
 * killed there lost every key, and `up` killed there on its first start could never start again.
 *
 * `exclusive`: only if nothing holds the name yet (false, and nothing changed, when something does).
 */
export function writeFileDurably(file: string, data: string, opts: { mode?: number; exclusive?: boolean } = {}): boolean {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', opts.mode ?? 0o600);
  try {
    try {
      const bytes = Buffer.from(data);
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (opts.exclusive) {
      try {
        linkSync(tmp, file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw e;
      }
    } else {
      renameSync(tmp, file);
    }
  } finally {
    rmSync(tmp, { force: true });
  }
  syncDirectory(path.dirname(file));
  return true;
}

function syncDirectory(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    /* not every platform lets a directory be opened or flushed: the rename stands either way */
  } finally {
    if (fd !== null) closeSync(fd);
  }
}
