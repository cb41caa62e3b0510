import { createHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/**
 * One `meshhook up` per home, held for the life of the process. The state file names a running `up` only once it
 * has started, so two started at the same moment both went on: on a fresh home both ran initdb into one directory,
 * and on an existing one the second stopped the first's Postgres as a leftover. The lock is a listening socket:
 * the kernel gives a name to one process only and takes it back the instant that process dies, SIGKILL included,
 * so there is no stale lock to judge. Linux uses the abstract namespace (no file); elsewhere a socket file in the
 * home, which a dead holder leaves behind: it is taken over when nothing answers on it.
 */
export async function holdHome(home: string): Promise<{ release(): void } | null> {
  const real = realpathSync(home);
  const linux = process.platform === 'linux';
  // an abstract name has no owner or permissions: any local user could take a name derived from the path alone and
  // keep `up` from starting. It is derived from a key kept in the home too, which only the home's owner can read
  const address = linux ? `\0meshhook-up-${createHash('sha256').update(`${real}\n${lockKey(real)}`).digest('hex').slice(0, 40)}` : path.join(real, '.up.sock');
  for (let attempt = 0; attempt < 2; attempt++) {
    const server = net.createServer((socket) => socket.destroy());
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(false) : reject(e)));
      server.listen(address, () => resolve(true));
    });
    if (bound) {
      server.unref(); // never what keeps the process alive
      return {
        release() {
          server.close();
          if (!linux) rmSync(address, { force: true });
        },
      };
    }
    if (linux || !(await nobodyAnswers(address))) return null;
    rmSync(address, { force: true }); // left by a holder that died
  }
  return null;
}

function nobodyAnswers(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(address);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED' || e.code === 'ENOENT'));
  });
}

/**
 * The home's lock key: random, readable by the home's owner only, made once. Written whole under a name of its
 * own and linked into place, so two `up`s starting at the same moment on a fresh home read the same key.
 */
function lockKey(home: string): string {
  const file = path.join(home, '.up-lock-key');
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, randomBytes(32).toString('hex'), { mode: 0o600, flag: 'wx' });
  try {
    linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // the other one's key stands
  } finally {
    rmSync(tmp, { force: true });
  }
  return readFileSync(file, 'utf8');
}
