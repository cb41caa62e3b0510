import { createHash } from 'node:crypto';
import { realpathSync, rmSync } from 'node:fs';
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
  const address = linux ? `\0meshhook-up-${createHash('sha256').update(real).digest('hex').slice(0, 40)}` : path.join(real, '.up.sock');
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
