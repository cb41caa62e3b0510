// first: loads pg without its probe for a Cloudflare runtime (see the file)
import '../db/load-pg';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { addKeyToFile, ensureKeyFile, Keyring, tokenSecret } from '../security/keyring';
import path from 'node:path';
import type { Pool } from 'pg';
import { openEnginePool, openPool } from '../db/pool';
import type { PostgresServer } from '../db/postgres';
import { isAlive, provisionPostgres } from '../db/postgres';
import { holdHome } from './home-lock';
import { InvalidDefinitionError, validateDefinition } from '../domain/definition';
import { UnknownEventTypeError } from '../domain/events';
import type * as EngineModule from '../engine';
import { deliver } from '../intake/sign';
import { CheckpointIndex, grantsRolledBack, HeadJournal, secretsRemovedUnsigned, secretsRolledBack, versionsGone, writeCheckpoints } from '../integrity/checkpoints';
import { checkSchema, sealSchema } from '../integrity/schema-seal';
import { checkIndexes } from '../integrity/index-check';
import { auditTrail, operate, OPERATOR_ACTIONS, OperatorActionError, OperatorRequest } from '../operator-service';
import type * as LiveLogModule from '../realtime/live-log';
import type * as RealtimeServerModule from '../realtime/server';
import type { RealtimeServer } from '../realtime/server';
import type * as TokensModule from '../realtime/tokens';
import type * as WorkerProcessModule from '../worker/main';
import { problemsOf, readVerifiedRun, rebuildViews, replayRun, replayRunState, RunVerification, verifyRun, VerifyRunOptions } from '../replay-service';
import { defaultThreads, VerifyThreads } from '../integrity/verify-threads';
import { ChainBreak, checkChain, projectNameProblem, relink } from '../domain/hash-chain';
import type { OperatorAction, RunStatus } from '../domain/events';
import { deleteSecret, listSecrets, putSecret, resealAll, SECRET_NAME, SecretValueError, secretTimes, vaultNames } from '../store/secrets';
import { inProject } from '../db/scope';
import { findProject, findWorkflow, listProjects, NotFoundError, projectContents, projectNamed, publishWorkflow, setAllowPrivateTargets, signProject } from '../store/registry';
import { loadEvents } from '../store/log-read';
import { migrate } from '../db/migrate';

/*
 * meshhook <command> [options]. A small hand parser: each command declares its
 * flags; `--flag value`, `--flag=value` and `--help` work everywhere.
 * Exit codes: 0 ok, 1 the command ran and the answer is "no", 2 usage error.
 */

/*
 * The parts only some commands use are loaded when one of them runs: the
 * engine's HTTP server, the realtime server, supabase-js and the JWT library
 * were most of the CLI's start (about 280 of 300 ms of loading modules), which
 * every `meshhook verify` and `replay` paid for nothing.
 */
const heavy = {
  engine: () => require('../engine') as typeof EngineModule,
  realtimeServer: () => require('../realtime/server') as typeof RealtimeServerModule,
  liveLog: () => require('../realtime/live-log') as typeof LiveLogModule,
  tokens: () => require('../realtime/tokens') as typeof TokensModule,
  workerProcess: () => require('../worker/main') as typeof WorkerProcessModule,
};

export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
  cwd: string;
  env: NodeJS.ProcessEnv;
}

class UsageError extends Error {}
/** a usage problem the command's synopsis would not help with */
class SetupError extends UsageError {}

interface FlagSpec {
  name: string;
  value?: string; // placeholder when the flag takes a value; absent = boolean
  help: string;
}

interface CommandSpec {
  name: string;
  args: string[]; // positional placeholders, '?' suffix = optional
  summary: string;
  flags: FlagSpec[];
  run: (a: Parsed, io: Io) => Promise<number>;
}

interface Parsed {
  positional: string[];
  flags: Record<string, string | boolean>;
}

const DB_FLAG: FlagSpec = { name: 'database-url', value: 'url', help: 'Postgres URL (default: $DATABASE_URL, then <home>/state.json)' };
const SLUG = /^[a-z][a-z0-9-]{0,62}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseArgs(argv: string[], spec: CommandSpec): Parsed {
  const positional: string[] = [];
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h' || a === '--help') {
      flags.help = true;
      continue;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      const f = spec.flags.find((x) => x.name === name);
      if (!f) throw new UsageError(`unknown option --${name} for "${spec.name}"`);
      if (f.value) {
        const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
        if (v === undefined) throw new UsageError(`--${name} needs a value (${f.value})`);
        flags[name] = v;
      } else {
        if (eq > 0) throw new UsageError(`--${name} takes no value`);
        flags[name] = true;
      }
      continue;
    }
    positional.push(a);
  }
  if (flags.help) return { positional, flags };
  const required = spec.args.filter((x) => !x.endsWith('?')).length;
  if (positional.length < required) throw new UsageError(`"${spec.name}" needs ${spec.args.filter((x) => !x.endsWith('?')).map((x) => `<${x}>`).join(' ')}`);
  if (positional.length > spec.args.length) throw new UsageError(`"${spec.name}" takes ${spec.args.length} argument(s), got ${positional.length}`);
  return { positional, flags };
}

function usageOf(spec: CommandSpec): string {
  const args = spec.args.map((a) => (a.endsWith('?') ? `[${a.slice(0, -1)}]` : `<${a}>`)).join(' ');
  const lines = [`usage: meshhook ${spec.name}${args ? ' ' + args : ''}${spec.flags.length ? ' [options]' : ''}`, '', spec.summary];
  if (spec.flags.length) {
    lines.push('', 'options:');
    for (const f of spec.flags) {
      const head = `  --${f.name}${f.value ? ` <${f.value}>` : ''}`;
      lines.push((head.length >= 30 ? `${head}  ` : head.padEnd(30)) + f.help);
    }
  }
  return lines.join('\n');
}

// ───── shared helpers

interface State {
  databaseUrl?: string;
  intakeUrl?: string;
  realtimeUrl?: string;
  pid?: number;
  startedAt?: string;
}

/** Where `up` keeps its Postgres data, keys and state: $MESHHOOK_HOME, else .meshhook in the current directory. */
function homeDir(io: Io): string {
  return io.env.MESHHOOK_HOME ? path.resolve(io.cwd, io.env.MESHHOOK_HOME) : path.join(io.cwd, '.meshhook');
}

function stateFile(io: Io): string {
  return path.join(homeDir(io), 'state.json');
}

function keyFile(io: Io): string {
  return path.join(homeDir(io), 'keyring.json');
}

/** The keyring: MESHHOOK_KEYS / MESHHOOK_KEY_FILE, else the key file `up` made in its home. */
function keyringOf(io: Io): Keyring {
  const fromEnv = Keyring.fromEnv(io.env);
  if (fromEnv) return fromEnv;
  if (existsSync(keyFile(io))) return Keyring.fromFile(keyFile(io));
  throw new SetupError(
    `no keys: run \`meshhook keys init\` to make the key file ${keyFile(io)} (\`meshhook up\` makes it too), or set MESHHOOK_KEYS or MESHHOOK_KEY_FILE`,
  );
}

/**
 * Whether pid is a `meshhook up` still running: not a zombie (killed, its parent has not reaped it yet, and
 * nothing can stop it) and not another program that was given the pid since. Where there is no /proc to ask,
 * any live process counts.
 */
function upIsRunning(pid: number): boolean {
  if (!isAlive(pid)) return false;
  if (!existsSync('/proc/self/stat')) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    if (state === 'Z' || state === 'X') return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('up');
  } catch {
    return false;
  }
}

function readState(io: Io): State {
  try {
    return JSON.parse(readFileSync(stateFile(io), 'utf8')) as State;
  } catch {
    return {};
  }
}

function databaseUrl(a: Parsed, io: Io): string {
  // an empty DATABASE_URL counts as unset, as it does for `up`
  const url = (a.flags['database-url'] as string | undefined) || io.env.DATABASE_URL || readState(io).databaseUrl;
  if (!url) throw new SetupError('no database: start one with `meshhook up`, or pass --database-url / set DATABASE_URL');
  return url;
}

/** The database as the engine sees it: as meshhook_engine, one project at a time. */
async function withPool<T>(a: Parsed, io: Io, fn: (pool: Pool) => Promise<T>, connections = 2): Promise<T> {
  const pool = openEnginePool(databaseUrl(a, io), { max: connections }, () => undefined);
  try {
    return await fn(pool);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ECONNREFUSED') throw new Error(`cannot reach the database (${redact(databaseUrl(a, io))}): is \`meshhook up\` running?`);
    throw e;
  } finally {
    await pool.end().catch(() => undefined);
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable url)';
  }
}

const PROJECT_FLAG: FlagSpec = { name: 'project', value: 'slug', help: 'the project the run belongs to (required: the engine acts for one project at a time)' };

/** The --project a command names, checked to be a slug. */
function projectSlugOf(a: Parsed): string {
  const slug = a.flags.project as string | undefined;
  if (!slug) throw new UsageError('name the project with --project <slug>');
  if (!SLUG.test(slug)) throw new UsageError(`project "${slug.slice(0, 80)}" is not a slug (lower-case letters, digits and -)`);
  return slug;
}

/** The --project a command acts for, resolved to its id; another project's runs are then simply not found. */
async function projectOf(a: Parsed, pool: Pool, io: Io): Promise<{ id: string; slug: string }> {
  const slug = projectSlugOf(a);
  // a slug is only taken for the project the engine named so: one changed in the database refuses (TamperedProjectError)
  const found = await findProject(pool, slug, keyringOf(io).chainKeys());
  if (!found) throw new NotFoundError(`no project ${slug}`);
  return found;
}

/**
 * Apply migrations as the URL's own role (the owner); the engine's role may not change the schema.
 * With the keys at hand the schema is sealed when a migration is applied (verify --all checks it).
 */
async function migrateAsOwner(a: Parsed, io: Io): Promise<void> {
  const owner = openPool(databaseUrl(a, io), { max: 1 }, () => undefined);
  let seal: ReturnType<Keyring['chainKey']> | undefined;
  let keys: ReturnType<Keyring['chainKeys']> | undefined;
  try {
    seal = keyringOf(io).chainKey();
    keys = keyringOf(io).chainKeys();
  } catch {
    seal = undefined;
  }
  try {
    await migrate(owner, { seal, keys });
  } finally {
    await owner.end().catch(() => undefined);
  }
}

/** fn for the --project's run; a run not found (or another project's) prints the same one line and gives null. */
async function inRunsProject<T>(a: Parsed, io: Io, pool: Pool, fn: (projectId: string) => Promise<T>): Promise<T | null> {
  try {
    const project = await projectOf(a, pool, io);
    return await fn(project.id);
  } catch (e) {
    if (e instanceof NotFoundError) {
      io.err(e.message);
      return null;
    }
    throw e;
  }
}

function runIdArg(a: Parsed): string {
  const id = a.positional[0];
  if (!UUID.test(id)) throw new UsageError(`"${id}" is not a run id (a UUID)`);
  // as Postgres prints it: the run's chain begins with its id in lower case
  return id.toLowerCase();
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2);
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd());
}

// ───── commands

const up: CommandSpec = {
  name: 'up',
  args: [],
  summary:
    'Start everything: Postgres (embedded, data in .meshhook/pgdata, unless a database URL is given), migrations, the webhook intake and in-process workers. Ctrl-C stops it all.',
  flags: [
    { name: 'port', value: 'n', help: 'intake port (default 8080)' },
    { name: 'host', value: 'addr', help: 'intake address (default 127.0.0.1)' },
    { name: 'workers', value: 'n', help: 'in-process workers (default 2)' },
    { name: 'concurrency', value: 'n', help: 'runs each worker has in flight at once (default 4)' },
    { name: 'pg-port', value: 'n', help: 'port of the embedded Postgres (default: a free one)' },
    { name: 'realtime-port', value: 'n', help: 'port of the live-log server (Supabase Realtime protocol; default 4000, 0 = a free one)' },
    { name: 'no-realtime', help: 'do not start the live-log server (then `meshhook tail` has nothing to follow)' },
    { name: 'quiet', help: 'no info log lines (one per run started, finished, ...); warnings and errors are still printed' },
    { name: 'data-dir', value: 'dir', help: 'where Postgres data, keys and state live (default $MESHHOOK_HOME, then ./.meshhook); other commands find it through MESHHOOK_HOME' },
    DB_FLAG,
  ],
  async run(a, givenIo) {
    const dataDirFlag = a.flags['data-dir'] as string | undefined;
    const io: Io = dataDirFlag ? { ...givenIo, env: { ...givenIo.env, MESHHOOK_HOME: path.resolve(givenIo.cwd, dataDirFlag) } } : givenIo;
    const port = intFlag(a, 'port', 8080);
    if (a.flags['no-realtime'] && a.flags['realtime-port'] !== undefined) throw new UsageError('--realtime-port or --no-realtime, not both');
    const realtimePort = a.flags['no-realtime'] ? null : intFlag(a, 'realtime-port', 4000);
    const workers = intFlag(a, 'workers', 2);
    const concurrency = a.flags.concurrency === undefined ? undefined : positiveIntFlag(a, 'concurrency', 4);
    const given = (a.flags['database-url'] as string | undefined) ?? io.env.DATABASE_URL;
    const previous = readState(io);
    if (previous.pid && previous.pid !== process.pid && upIsRunning(previous.pid)) {
      io.err(`meshhook is already up here (pid ${previous.pid}, intake ${previous.intakeUrl}); stop it first`);
      return 1;
    }
    const home = homeDir(io);
    mkdirSync(home, { recursive: true, mode: 0o700 });
    // the state file names an `up` only once it is up: one starting at the same moment is kept out by this lock
    const held = await holdHome(home);
    if (!held) {
      io.err(`meshhook is already starting or up with its data in ${home} (another process holds it); stop it first`);
      return 1;
    }
    try {
      return await runUp(a, io, home, given, { port, realtimePort, workers, concurrency, quiet: a.flags.quiet === true }, dataDirFlag);
    } finally {
      held.release();
    }
  },
};

interface UpOptions {
  port: number;
  /** null: no live-log server */
  realtimePort: number | null;
  workers: number;
  /** runs in flight a worker (undefined: the Worker's default, 4) */
  concurrency: number | undefined;
  /** info log lines left out */
  quiet: boolean;
}

async function runUp(a: Parsed, io: Io, home: string, given: string | undefined, opts: UpOptions, dataDirFlag: string | undefined): Promise<number> {
  const { port, realtimePort, workers, concurrency, quiet } = opts;
  const log = (e: Record<string, unknown>): void => printLog(e, io, quiet);
  const keyring = io.env.MESHHOOK_KEYS || io.env.MESHHOOK_KEY_FILE ? keyringOf(io) : ensureKeyFile(keyFile(io));
  let pg: PostgresServer | null = null;
  let url: string;
  if (given) {
    url = given;
  } else {
    io.out(`starting embedded Postgres (data in ${path.relative(io.cwd, home) || '.'}/pgdata) ...`);
    pg = await provisionPostgres({ dataDir: path.join(home, 'pgdata'), persistent: true, port: a.flags['pg-port'] ? intFlag(a, 'pg-port', 0) : undefined });
    url = pg.urlFor('postgres');
  }
  let engine;
  try {
    engine = await heavy.engine().startEngine({
      databaseUrl: url,
      keyring,
      workers,
      concurrency,
      intakePort: port,
      intakeHost: a.flags.host as string | undefined,
      // the same journal a worker process keeps (src/worker/main.ts): heads outside the database, as they commit
      headJournal: io.env.MESHHOOK_HEAD_JOURNAL || undefined,
      // journals and checkpoint files to hold runs to (a run rolled back behind one is refused, not carried on)
      checkpoints: io.env.MESHHOOK_CHECKPOINTS
        ? CheckpointIndex.load(io.env.MESHHOOK_CHECKPOINTS.split(',').filter((f) => f && existsSync(path.resolve(io.cwd, f))).map((f) => path.resolve(io.cwd, f)), keyring.chainKeys())
        : null,
      // workflows with a schedule get their runs from the clock too
      schedules: true,
      log,
    });
  } catch (e) {
    await pg?.stop();
    throw e;
  }
  // live logs: fed by logical replication of committed rows, never by the workers themselves
  let realtime: RealtimeServer | null = null;
  if (realtimePort !== null) {
    try {
      realtime = await heavy.realtimeServer().startRealtimeServer({
        databaseUrl: url,
        jwtSecret: tokenSecret(keyring, io.env),
        // a row of the log the engine did not write is never sent to a subscriber
        chainKeys: keyring.chainKeys(),
        port: realtimePort,
        ...(a.flags.host ? { host: a.flags.host as string } : {}),
        log: (e) => {
          if (e.level !== 'debug') log({ ...e, component: 'realtime' });
        },
      });
    } catch (e) {
      io.err(`live logs are off: the live-log server did not start (${(e as Error).message})`);
    }
  }
  const state: State = { databaseUrl: url, intakeUrl: engine.intake.url, realtimeUrl: realtime?.url, pid: process.pid, startedAt: new Date().toISOString() };
  // the state holds the database's password: readable by this user only. Written aside and renamed into
  // place, so a command reading it meanwhile never sees half a file (and falls back to default addresses)
  const stateTmp = `${stateFile(io)}.${process.pid}.tmp`;
  writeFileSync(stateTmp, json(state) + '\n', { mode: 0o600 });
  renameSync(stateTmp, stateFile(io));
  io.out('');
  io.out(
    workers === 0
      ? 'MeshHook Replay is up (no workers: the intake only; `meshhook worker` runs them)'
      : `MeshHook Replay is up (${workers} worker${workers === 1 ? '' : 's'}, ${concurrency ?? 4} run${concurrency === 1 ? '' : 's'} in flight each)`,
  );
  io.out(`  intake:   ${engine.intake.url}/hooks/<project>/<workflow>`);
  if (realtime) io.out(`  live logs: ${realtime.url}  (Supabase Realtime protocol; \`meshhook tail <run-id>\` follows one)`);
  else if (realtimePort === null) io.out('  live logs: off (--no-realtime)');
  io.out(`  database: ${redact(url)}  (full URL in the state file)`);
  io.out(`  state:    ${path.relative(io.cwd, stateFile(io)) || stateFile(io)}`);
  if (dataDirFlag) io.out(`  other commands find this through: export MESHHOOK_HOME=${homeDir(io)}`);
  io.out('');
  io.out('next, in another terminal:');
  io.out('  meshhook publish examples/order-sync.json --project acme --allow-private-targets   # it calls 127.0.0.1');
  io.out(`  meshhook deliver acme order-sync --body '{"order":{"id":"o-1","sum":42}}'`);
  io.out('  meshhook runs --project acme');
  if (realtime) io.out('  meshhook tail <run-id> --project acme');
  io.out('  meshhook verify <run-id> --project acme');
  io.out('Ctrl-C stops everything.');
  let exitCode = 0;
  // a restart of Postgres under way when `up` is told to stop: waited for, so that the stop stops what it started
  let restarting: Promise<unknown> | null = null;
  await new Promise<void>((resolve) => {
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const handlers = signals.map((sig) => [sig, () => done(sig)] as const);
    let watching: NodeJS.Timeout | null = null;
    const done = (sig: string) => {
      io.out(`\n${sig}: stopping ...`);
      for (const [s, h] of handlers) process.off(s, h);
      if (watching) clearInterval(watching);
      resolve();
    };
    for (const [s, h] of handlers) process.on(s, h);
    // the embedded Postgres is ours to keep up: if it dies (killed, out of memory), start it again on the same
    // data (it recovers from its WAL; workers and live logs reconnect on their own) instead of answering 503
    // for ever; if it will not start, stop everything and say so
    if (pg) {
      const server = pg;
      // the postmaster last seen serving the data: while it lives nothing needs reading. A pid file that cannot
      // be read (this process out of file descriptors under a flood of connections) is "cannot tell", never "gone"
      let known = server.pid();
      watching = setInterval(() => {
        if (restarting || (known !== null && isAlive(known))) return;
        let pid: number | null;
        try {
          pid = server.pid();
        } catch {
          return;
        }
        known = pid;
        if (pid !== null && isAlive(pid)) return;
        io.err(`Postgres stopped unexpectedly${pid ? ` (pid ${pid})` : ''}: starting it again on the same data ...`);
        restarting = server.restart().then(
          () => {
            io.err('Postgres is back; workers reconnect on their own');
            try {
              known = server.pid();
            } catch {
              known = null;
            }
            restarting = null;
          },
          (e: unknown) => {
            io.err(`Postgres did not start again: ${(e as Error)?.message ?? String(e)}`);
            exitCode = 1;
            restarting = null;
            done('Postgres lost');
          },
        );
      }, 1000);
      watching.unref();
    }
  });
  // each part stops even if one before it fails (Postgres may have crashed): nothing is left behind
  try {
    await realtime?.close().catch(() => undefined);
    await engine.stop().catch((e: unknown) => io.err(`stopping the engine: ${(e as Error)?.message ?? String(e)}`));
    await restarting;
    if (pg) await pg.stop().catch((e: unknown) => io.err(`stopping Postgres: ${(e as Error)?.message ?? String(e)}`));
  } finally {
    rmSync(stateFile(io), { force: true });
  }
  io.out('stopped.');
  return exitCode;
}


/**
 * One log line per entry, logfmt-style. Values come from requests, so every
 * one that is not a plain word is written as a JSON string: a line break or a
 * terminal escape in a URL can neither start a forged line nor reach the
 * terminal raw.
 */
/**
 * Characters a terminal acts on or that change how a line reads, besides the C0 controls JSON escapes: the C1 controls
 * (U+009B is CSI, as ESC [ is: "\u009b2J" clears the screen of a terminal that takes 8-bit controls), the line and
 * paragraph separators, and the bidirectional overrides and isolates (U+202E shows the rest of a line reversed).
 * JSON.stringify leaves them all as they are.
 */
const TERMINAL_UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * A line for the terminal: each of those written as a \uXXXX escape (within a JSON string, the same JSON). Every line
 * the CLI writes goes through it: log lines, events (`tail`), reports, errors, which hold what webhooks, targets and
 * requests sent.
 */
export function terminalText(line: string): string {
  return line.replace(TERMINAL_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function formatLogLine(e: Record<string, unknown>, at = new Date()): string {
  const level = String(e.level ?? 'info');
  const { level: _l, msg, ...rest } = e;
  const word = (v: unknown): string => {
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    return /^[A-Za-z0-9_.:/@+-]{1,200}$/.test(s) ? s : JSON.stringify(typeof v === 'string' ? v.slice(0, 500) : s.slice(0, 500));
  };
  const detail = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${word(v)}`)
    .join(' ');
  const message = JSON.stringify(String(msg)).slice(1, -1);
  return terminalText(`${at.toISOString()} ${level.padEnd(5)} ${message}${detail ? '  ' + detail : ''}`);
}

function printLog(e: Record<string, unknown>, io: Io, quiet = false): void {
  const level = String(e.level ?? 'info');
  if (quiet && level !== 'warn' && level !== 'error') return;
  const line = formatLogLine(e);
  if (level === 'warn' || level === 'error') io.err(line);
  else io.out(line);
}

function intFlag(a: Parsed, name: string, fallback: number): number {
  const v = a.flags[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number, not "${String(v)}"`);
  return n;
}

function positiveIntFlag(a: Parsed, name: string, fallback: number): number {
  const n = intFlag(a, name, fallback);
  if (n < 1) throw new UsageError(`--${name} must be at least 1, not "${String(a.flags[name])}"`);
  return n;
}

const workerCmd: CommandSpec = {
  name: 'worker',
  args: [],
  summary:
    "Run a worker on its own, beside `meshhook up`'s or on another machine. It claims the database's due runs and advances them; it is the worker `node dist/worker/main.js` runs, and reads the same MESHHOOK_* settings (the flags win). It neither migrates nor serves webhooks: `up` (or `publish`) migrates, `up` takes webhooks. Ctrl-C or SIGTERM stops it cleanly, after the batches in flight commit.",
  flags: [
    { name: 'concurrency', value: 'n', help: 'runs in flight at once (default $MESHHOOK_CONCURRENCY, then 4)' },
    { name: 'pool-max', value: 'n', help: 'connections to Postgres (default $MESHHOOK_POOL_MAX, then 4)' },
    { name: 'poll-ms', value: 'ms', help: 'how often it looks for due runs when no new run woke it (default $MESHHOOK_POLL_MS, then 50)' },
    { name: 'quiet', help: 'no info log lines; warnings and errors are still printed' },
    DB_FLAG,
  ],
  async run(a, io) {
    const concurrency = a.flags.concurrency === undefined ? undefined : positiveIntFlag(a, 'concurrency', 4);
    const poolMax = a.flags['pool-max'] === undefined ? undefined : positiveIntFlag(a, 'pool-max', 4);
    const pollMs = a.flags['poll-ms'] === undefined ? undefined : positiveIntFlag(a, 'poll-ms', 50);
    const url = databaseUrl(a, io);
    const keyring = keyringOf(io);
    const { startWorkerProcess, workerSettingsFromEnv } = heavy.workerProcess();
    const settings = workerSettingsFromEnv(io.env, {
      databaseUrl: url,
      keyring,
      ...(concurrency !== undefined ? { concurrency } : {}),
      ...(poolMax !== undefined ? { poolMax } : {}),
      ...(pollMs !== undefined ? { pollMs } : {}),
      log: (e) => printLog(e, io, a.flags.quiet === true),
    });
    // a worker only: MESHHOOK_INTAKE_PORT (which makes `node dist/worker/main.js` serve webhooks too) is not for it
    settings.intakePort = undefined;
    // the handlers before the start: a Ctrl-C while it starts stops it as soon as it runs
    let stop!: (why: string) => void;
    const stopped = new Promise<string>((resolve) => (stop = resolve));
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const handlers = signals.map((sig) => [sig, () => stop(sig)] as const);
    for (const [sig, h] of handlers) process.on(sig, h);
    try {
      const running = await startWorkerProcess(settings);
      io.out(`worker ${running.worker.id} is running against ${redact(url)}; Ctrl-C stops it`);
      const why = await stopped;
      await running.stop(why);
      io.out('stopped.');
      return 0;
    } finally {
      for (const [sig, h] of handlers) process.off(sig, h);
    }
  },
};

const publish: CommandSpec = {
  name: 'publish',
  args: ['definition.json'],
  summary: 'Validate a workflow definition and publish it as the next version of its workflow in a project. The signing secret is shown once, when the workflow is created.',
  flags: [
    { name: 'project', value: 'slug', help: 'project to publish into (created if new)' },
    { name: 'allow-private-targets', help: "let the project's http_call steps call private and loopback addresses (off by default; the engine signs the grant)" },
    { name: 'deny-private-targets', help: 'take that leave back from the project' },
    { name: 'json', help: 'print one JSON object (project, workflow, version, hash, signingSecret when the workflow is new, ...) instead of text' },
    DB_FLAG,
  ],
  async run(a, io) {
    const project = a.flags.project as string | undefined;
    if (!project) throw new UsageError('publish needs --project <slug>');
    if (!SLUG.test(project)) throw new UsageError(`project "${project}" is not a slug (lower-case letters, digits and -)`);
    const file = path.resolve(io.cwd, a.positional[0]);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      io.err(`cannot read ${a.positional[0]}: ${(e as Error).message}`);
      return 2;
    }
    try {
      validateDefinition(raw);
    } catch (e) {
      if (!(e instanceof InvalidDefinitionError)) throw e;
      io.err(`${a.positional[0]} is not a valid workflow definition:`);
      for (const p of e.problems) io.err(`  - ${p}`);
      return 2;
    }
    if (a.flags['allow-private-targets'] && a.flags['deny-private-targets']) throw new UsageError('--allow-private-targets or --deny-private-targets, not both');
    // the keys before the database: without them nothing is migrated (the schema would be left unsealed) or written
    const keyring = keyringOf(io);
    await migrateAsOwner(a, io);
    return withPool(a, io, async (pool) => {
      const name = (raw as { name: string }).name;
      const existed = (await findWorkflow(pool, keyring, project, name)) !== null;
      const v = await publishWorkflow(pool, keyring, project, raw);
      const allow = a.flags['allow-private-targets'] ? true : a.flags['deny-private-targets'] ? false : undefined;
      if (allow !== undefined) await setAllowPrivateTargets(pool, keyring.chainKey(), v.projectId, allow);
      if (a.flags.json) {
        io.out(
          json({
            project,
            workflow: v.workflow,
            version: v.version,
            definitionHash: v.definitionHash,
            unchanged: v.unchanged,
            created: !existed,
            ...(existed ? {} : { signingSecret: v.signingSecret }),
            ...(allow !== undefined ? { allowPrivateTargets: allow } : {}),
          }),
        );
        return 0;
      }
      if (allow === false) io.out(`${project}: http_call steps may no longer call private and loopback addresses`);
      if (allow === true) io.out(`${project}: http_call steps may call private and loopback addresses`);
      if (v.unchanged) io.out(`${project}/${v.workflow}: unchanged, still version ${v.version}`);
      else io.out(`published ${project}/${v.workflow} version ${v.version}`);
      io.out(`  hash: ${v.definitionHash}`);
      if (!existed) {
        io.out(`  signing secret: ${v.signingSecret}`);
        io.out('  WARNING: store this secret now; it is shown only this once. Senders sign webhooks with it');
        io.out('           (MeshHook-Signature: t=<unix>,v2=<hex HMAC-SHA256(secret, "<t>.<delivery id>.<project>/<workflow>.<body>")>).');
      }
      return 0;
    });
  },
};

const deliverCmd: CommandSpec = {
  name: 'deliver',
  args: ['project', 'workflow'],
  summary: "Sign a JSON body with the workflow's secret (read from the database) and POST it to the intake; prints the run id.",
  flags: [
    { name: 'body', value: 'json|@file', help: 'the webhook body (JSON text, or @path to read it from a file)' },
    { name: 'delivery-id', value: 'id', help: 'MeshHook-Delivery id (default: a fresh one); repeat it to test deduplication' },
    { name: 'url', value: 'url', help: 'intake base URL (default: from .meshhook/state.json, then http://127.0.0.1:8080)' },
    DB_FLAG,
  ],
  async run(a, io) {
    const [project, workflow] = a.positional;
    let body = a.flags.body as string | undefined;
    if (body === undefined) throw new UsageError('deliver needs --body <json>');
    if (body.startsWith('@')) body = readFileSync(path.resolve(io.cwd, body.slice(1)), 'utf8');
    const deliveryId = (a.flags['delivery-id'] as string | undefined) ?? `dlv_${randomUUID()}`;
    const intakeUrl = (a.flags.url as string | undefined) ?? readState(io).intakeUrl ?? 'http://127.0.0.1:8080';
    const wf = await withPool(a, io, (pool) => findWorkflow(pool, keyringOf(io), project, workflow));
    if (!wf) {
      io.err(`no workflow ${project}/${workflow}: publish it first`);
      return 1;
    }
    if (!wf.signingSecret) {
      io.err(`workflow ${project}/${workflow} has no sealed signing secret, so no webhook of it is accepted: publish it again`);
      return 1;
    }
    let res;
    try {
      res = await deliver(intakeUrl, project, workflow, wf.signingSecret, body, { deliveryId });
    } catch (e) {
      io.err(`cannot reach the intake at ${intakeUrl}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
      return 1;
    }
    if (res.status === 202 || res.status === 200) {
      io.out(`run ${res.body.runId} ${res.body.duplicate ? 'already exists for this delivery (duplicate)' : 'started'} (delivery ${deliveryId}, HTTP ${res.status})`);
      return 0;
    }
    const err = res.body?.error;
    io.err(`refused: HTTP ${res.status} ${err?.code ?? ''}${err?.message ? ` - ${err.message}` : ''}`);
    return 1;
  },
};

const RUN_STATUSES: readonly RunStatus[] = ['running', 'waiting', 'paused', 'succeeded', 'failed', 'canceled'];

/** `--status failed,paused` as a list of run states (null: no filter); an unknown state is a usage error. */
function statusFilter(a: Parsed): RunStatus[] | null {
  const v = a.flags.status;
  if (v === undefined) return null;
  const list = String(v)
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  if (list.length === 0) throw new UsageError(`--status needs at least one of ${RUN_STATUSES.join(', ')}`);
  for (const x of list) if (!(RUN_STATUSES as readonly string[]).includes(x)) throw new UsageError(`--status: "${x.slice(0, 40)}" is not a run state (${RUN_STATUSES.join(', ')})`);
  return [...new Set(list)] as RunStatus[];
}

const runs: CommandSpec = {
  name: 'runs',
  args: [],
  summary: 'List recent runs with their status, current step and number of events.',
  flags: [
    PROJECT_FLAG,
    { name: 'limit', value: 'n', help: 'at most n runs, newest first (default 50)' },
    { name: 'status', value: 'list', help: `only runs in these states, comma-separated: ${RUN_STATUSES.join(', ')}` },
    { name: 'workflow', value: 'slug', help: 'only runs of this workflow' },
    { name: 'json', help: 'print the runs as a JSON array (id, project, workflow, version, status, currentStep, events, createdAt)' },
    DB_FLAG,
  ],
  async run(a, io) {
    const limit = intFlag(a, 'limit', 50);
    const statuses = statusFilter(a);
    const workflow = a.flags.workflow === undefined ? null : String(a.flags.workflow);
    if (workflow !== null && !SLUG.test(workflow)) throw new UsageError(`workflow "${workflow.slice(0, 80)}" is not a slug (lower-case letters, digits and -)`);
    const rows = await withPool(a, io, async (pool) => {
      const project = await projectOf(a, pool, io);
      const r = await inProject(pool, project.id, (c) =>
        c.query(
          `SELECT r.id, p.slug AS project, w.slug AS workflow, r.version, r.status, r.current_step, r.last_seq, r.created_at
           FROM runs r JOIN projects p ON p.id = r.project_id JOIN workflows w ON w.id = r.workflow_id
           WHERE r.project_id = $2
             AND ($3::text[] IS NULL OR r.status = ANY ($3::text[]))
             AND ($4::text IS NULL OR w.slug = $4::text)
           ORDER BY r.created_at DESC LIMIT $1`,
          [limit, project.id, statuses, workflow],
        ),
      );
      return r.rows;
    });
    if (a.flags.json) {
      io.out(
        json(
          rows.map((r) => ({
            id: r.id,
            project: r.project,
            workflow: r.workflow,
            version: r.version,
            status: r.status,
            currentStep: r.current_step ?? null,
            events: Number(r.last_seq),
            createdAt: new Date(r.created_at).toISOString(),
          })),
        ),
      );
      return 0;
    }
    if (rows.length === 0) {
      io.out(statuses || workflow ? 'no runs match' : 'no runs yet');
      return 0;
    }
    const cells = [['RUN', 'PROJECT', 'WORKFLOW', 'VERSION', 'STATUS', 'STEP', 'EVENTS']];
    for (const r of rows) cells.push([r.id, r.project, r.workflow, String(r.version), r.status, r.current_step ?? '-', String(r.last_seq)]);
    for (const line of table(cells)) io.out(line);
    return 0;
  },
};

const replay: CommandSpec = {
  name: 'replay',
  args: ['run-id'],
  summary: 'Fold the run log into state again and print the replayed run view and state as JSON.',
  flags: [PROJECT_FLAG, { name: 'events', help: 'include the events themselves' }, DB_FLAG],
  async run(a, io) {
    const runId = runIdArg(a);
    return withPool(a, io, async (pool) => {
      try {
        const project = await projectOf(a, pool, io);
        if (a.flags.events) {
          const r = await replayRun(pool, project.id, runId);
          io.out(json({ view: r.view, state: r.state, eventCount: r.events.length, events: r.events }));
        } else {
          // without the events, the log streams past and is never held whole
          const r = await replayRunState(pool, project.id, runId);
          io.out(json({ view: r.view, state: r.state, eventCount: r.eventCount }));
        }
        return 0;
      } catch (e) {
        if (e instanceof NotFoundError || e instanceof UnknownEventTypeError) {
          io.err(e.message);
          return 1;
        }
        throw e;
      }
    });
  },
};

export function formatVerification(v: RunVerification): string[] {
  const s = v.state;
  const lines: string[] = [];
  lines.push(`run ${v.runId}${s.project ? ` (${s.project}/${s.workflow} v${s.version}, ${s.status})` : ''}`);
  lines.push(v.empty ? '  events:      NONE: the run has no events' : `  events:      ${v.eventCount}`);
  lines.push(v.chainBreak ? `  hash chain:  BROKEN at event ${v.chainBreak.seq}: ${v.chainBreak.reason}` : v.empty ? '  hash chain:  (nothing to check)' : '  hash chain:  ok');
  lines.push(
    v.headProblem
      ? `  head:        NOT OK: ${v.headProblem}`
      : v.unsignedAccepted
        ? '  head:        UNSIGNED, accepted by --allow-unsigned: nothing but the database vouches for this run'
        : '  head:        ok, signed and the last event',
  );
  if (v.checkpointProblem) lines.push(`  checkpoint:  NOT OK: ${v.checkpointProblem}`);
  if (v.divergence) {
    const d = v.divergence;
    lines.push(`  replay:      DIVERGES at event ${d.seq}: ${d.reason}`);
    lines.push(`    expected:  ${d.expected === null ? '(nothing)' : JSON.stringify(d.expected)}`);
    lines.push(`    recorded:  ${d.recorded === null ? '(nothing)' : JSON.stringify(d.recorded)}`);
  } else if (!v.empty) {
    lines.push('  replay:      ok, every decision re-derived from its input');
  }
  if (v.definitionChanged) lines.push('  definition:  differs from the version the run was pinned to');
  if (v.versionProblem) lines.push(`  version:     NOT OK: ${v.versionProblem}`);
  if (v.deliveryProblem) lines.push(`  delivery:    NOT OK: ${v.deliveryProblem}`);
  lines.push(v.viewMatches ? '  run view:    matches the log' : `  run view:    DIFFERS from the log: ${v.viewDifference}`);
  lines.push(v.ok ? 'verified: ok' : 'verified: NOT ok');
  return lines;
}

const CHECKPOINTS_FLAG: FlagSpec = { name: 'checkpoints', value: 'file[,file]', help: 'checkpoint files (meshhook checkpoint, worker head journals) the logs must still reach' };
const UNSIGNED_FLAG: FlagSpec = { name: 'allow-unsigned', help: 'accept runs without a signed head (written by an engine before 0.2)' };

function verifyOptions(a: Parsed, io: Io): VerifyRunOptions {
  const keyring = keyringOf(io);
  const files = typeof a.flags.checkpoints === 'string' ? a.flags.checkpoints.split(',').map((f) => path.resolve(io.cwd, f)) : [];
  const checkpoints = files.length ? CheckpointIndex.load(files, keyring.chainKeys()) : null;
  for (const p of checkpoints?.problems ?? []) io.err(`checkpoint: ${p}`);
  return { keys: keyring.chainKeys(), checkpoints, allowUnsignedHead: a.flags['allow-unsigned'] === true };
}

const verify: CommandSpec = {
  name: 'verify',
  args: ['run-id?'],
  summary:
    "Check that runs are genuine and replay: the hash chain (signed links), the signed head, checkpoints, every decision re-derived against the pinned version, and the stored run view. Exit 0 only when all is good.",
  flags: [
    PROJECT_FLAG,
    { name: 'all', help: 'every run of the project (or of every project, without --project), in one pass' },
    {
      name: 'threads',
      value: 'n',
      help: "with --all: threads beside the main one, each verifying a slice of a large project's runs in the same snapshot (default: one per core beyond the first, at most 3; 0: the main thread alone)",
    },
    CHECKPOINTS_FLAG,
    UNSIGNED_FLAG,
    { name: 'json', help: 'print the report as JSON' },
    DB_FLAG,
  ],
  async run(a, io) {
    if (a.flags.all) return verifyAll(a, io);
    if (!a.positional[0]) throw new UsageError('name a run, or use --all');
    const runId = runIdArg(a);
    const opts = verifyOptions(a, io);
    return withPool(a, io, async (pool) => {
      const v = await inRunsProject(a, io, pool, (projectId) => verifyRun(pool, projectId, runId, opts));
      if (!v) return 1;
      if (a.flags.json) io.out(json({ ...v, state: undefined }));
      else for (const line of formatVerification(v)) io.out(line);
      return v.ok ? 0 : 1;
    });
  },
};

/** verify --all: every run, streamed project by project; one line per bad run, then the figures. */
async function verifyAll(a: Parsed, io: Io): Promise<number> {
  const opts = verifyOptions(a, io);
  const threadCount = a.flags.threads === undefined ? defaultThreads() : intFlag(a, 'threads', 0);
  // (its threads start only when a project is large enough to be cut into slices)
  const threads = VerifyThreads.start(threadCount, {
    connectionString: databaseUrl(a, io),
    chainKeys: keyringOf(io).chainKeyTable(),
    checkpoints: opts.checkpoints?.runs(),
    allowUnsignedHead: opts.allowUnsignedHead,
  });
  try {
    return await verifyAllWith(a, io, opts, threads);
  } finally {
    await threads.close();
  }
}

async function verifyAllWith(a: Parsed, io: Io, opts: VerifyRunOptions, threads: VerifyThreads): Promise<number> {
  return withPool(a, io, async (pool) => {
    const projects = a.flags.project ? [await projectOf(a, pool, io)] : await listProjects(pool, opts.keys ?? undefined);
    const started = performance.now();
    // the indexes are checked by Postgres while node checks the runs' chains (on the pool's other connection)
    const indexCheck = a.flags.project ? null : checkIndexes(pool);
    indexCheck?.catch(() => undefined);
    // and the schema against its seal (a read of the catalogs and hashing in node), read meanwhile on a third
    const schemaCheck = checkSchema(pool, opts.keys!, opts.checkpoints?.seal());
    schemaCheck.catch(() => undefined);
    let runs = 0;
    let events = 0;
    let bad = 0;
    // a project whose name is not the one the engine signed: its runs are still verified, under the name it has now
    let namesBad = 0;
    for (const p of projects) {
      const problem = 'nameProblem' in p ? p.nameProblem : null;
      if (!problem) continue;
      namesBad++;
      if (a.flags.json) io.out(JSON.stringify({ project: p.slug, projectId: p.id, problems: [problem] }));
      else io.out(`NOT ok  ${p.slug}  ${problem}`);
    }
    let unsigned = 0;
    let deliveriesBad = 0;
    let secretsBad = 0;
    let vaultBad = 0;
    const seen = new Set<string>();
    for (const p of projects) {
      const r = await threads.verifyProject(
        pool,
        p.id,
        opts,
        (v) => {
          if (v.ok && v.unsignedAccepted) {
            unsigned++;
            if (a.flags.json) io.out(JSON.stringify({ project: p.slug, runId: v.runId, unsigned: true }));
            else io.out(`UNSIGNED  ${p.slug}  ${v.runId}  accepted by --allow-unsigned: nothing but the database vouches for it`);
          }
          if (v.ok) return;
          if (a.flags.json) io.out(JSON.stringify({ project: p.slug, runId: v.runId, problems: v.problems }));
          else io.out(`NOT ok  ${p.slug}  ${v.runId}  ${v.problems.join('; ')}`);
        },
        // the runs checkpoints saw are looked for among the runs there are
        opts.checkpoints ? (runId) => seen.add(runId) : undefined,
      );
      for (const o of r.orphans) {
        seen.add(o.runId);
        const why = `its log (${o.events} events) is in the database, but the run is not: its row was deleted outside the engine`;
        if (a.flags.json) io.out(JSON.stringify({ project: p.slug, runId: o.runId, problems: [why] }));
        else io.out(`NOT ok  ${p.slug}  ${o.runId}  ${why}`);
      }
      // the engine writes signing secrets only sealed: one in plain text was written by someone else
      const plain = await inProject(pool, p.id, (c) => c.query<{ slug: string }>('SELECT slug FROM workflows WHERE project_id = $1 AND signing_secret IS NOT NULL ORDER BY slug', [p.id]));
      for (const w of plain.rows) {
        secretsBad++;
        const why = `workflow ${w.slug} holds a signing secret in plain text, which the engine never writes: it is not used, and keys rotate will not take it unless told to`;
        if (a.flags.json) io.out(JSON.stringify({ project: p.slug, workflow: w.slug, problems: [why] }));
        else io.out(`NOT ok  ${p.slug}  ${why}`);
      }
      for (const d of r.strayDeliveries) {
        deliveriesBad++;
        const why = `delivery "${d.deliveryId}" of ${d.workflow} is recorded as run ${d.runId}'s, but no run names it: written outside the engine, it would make that webhook count as a re-delivery and never run`;
        if (a.flags.json) io.out(JSON.stringify({ project: p.slug, deliveryId: d.deliveryId, workflow: d.workflow, problems: [why] }));
        else io.out(`NOT ok  ${p.slug}  ${why}`);
      }
      // a log without its run counts as a run, and a bad one
      runs += r.runs + r.orphans.length;
      events += r.events;
      bad += r.bad;
    }
    // a run a checkpoint remembers must still exist (in the projects visited: deleted, or moved away from its project)
    const visited = new Set(projects.map((p) => p.id));
    // without --project every project was visited: a run of a project that is no longer listed went with its project
    const everyProject = !a.flags.project;
    const projectsGone = new Set<string>();
    for (const cp of opts.checkpoints?.runs() ?? []) {
      if (seen.has(cp.runId) || (!visited.has(cp.projectId) && !everyProject)) continue;
      // a run that is gone counts as a run, and a bad one
      runs++;
      bad++;
      if (visited.has(cp.projectId)) io.out(`NOT ok  ${cp.runId}  a checkpoint taken ${cp.at} saw this run at event ${cp.seq}, and it no longer exists`);
      else {
        projectsGone.add(cp.projectId);
        io.out(`NOT ok  ${cp.runId}  a checkpoint taken ${cp.at} saw this run at event ${cp.seq} in project ${cp.projectId}, and neither the run nor its project exists any more (the project was deleted behind the engine's back)`);
      }
    }
    if (everyProject) {
      for (const v of opts.checkpoints?.versions() ?? []) if (!visited.has(v.projectId)) projectsGone.add(v.projectId);
      for (const g of opts.checkpoints?.grants() ?? []) if (!visited.has(g.projectId)) projectsGone.add(g.projectId);
      for (const c of opts.checkpoints?.secrets() ?? []) if (!visited.has(c.projectId)) projectsGone.add(c.projectId);
    }
    for (const id of projectsGone) {
      if (a.flags.json) io.out(JSON.stringify({ projectId: id, problems: ['a checkpoint saw this project, and it no longer exists'] }));
      else io.out(`NOT ok  ${id}  a checkpoint saw this project (its runs, workflows or vault), and it no longer exists: deleted behind the engine's back`);
    }
    let versionsBad = 0;
    let grantsBad = 0;
    let vaultGoneBad = 0;
    // a version a checkpoint saw published must still be there as it was (a version deleted sends new runs to the one before)
    if (opts.checkpoints) {
      const slugOf = new Map(projects.map((p) => [p.id, p.slug]));
      for (const v of await versionsGone(pool, opts.checkpoints, projects.map((p) => p.id))) {
        versionsBad++;
        if (a.flags.json) io.out(JSON.stringify({ project: slugOf.get(v.projectId), workflowId: v.workflowId, version: v.version, problems: [v.problem] }));
        else io.out(`NOT ok  ${slugOf.get(v.projectId)}  ${v.problem}`);
      }
      // a leave to call private addresses the checkpoint saw taken away, back on an old grant
      for (const g of await grantsRolledBack(pool, opts.checkpoints, opts.keys!, projects.map((p) => p.id))) {
        grantsBad++;
        if (a.flags.json) io.out(JSON.stringify({ project: slugOf.get(g.projectId), problems: [g.problem] }));
        else io.out(`NOT ok  ${slugOf.get(g.projectId)}  ${g.problem}`);
      }
      // a vault secret's earlier value written back (the vault's values open only with the whole keyring)
      const keyring = opts.checkpoints.secrets().length || projects.some((p) => opts.checkpoints!.vaultsOf(p.id).length) ? keyringOf(io) : null;
      for (const g of keyring ? await secretsRolledBack(opts.checkpoints, (projectId) => secretTimes(pool, keyring, projectId), projects.map((p) => p.id)) : []) {
        vaultBad++;
        if (a.flags.json) io.out(JSON.stringify({ project: slugOf.get(g.projectId), problems: [g.problem] }));
        else io.out(`NOT ok  ${slugOf.get(g.projectId)}  ${g.problem}`);
      }
      // a vault secret a checkpoint saw, deleted without the owner's signed removal (its calls fail SECRET_MISSING)
      for (const g of await secretsRemovedUnsigned(opts.checkpoints, opts.keys!, (projectId) => vaultNames(pool, projectId), projects.map((p) => p.id))) {
        vaultGoneBad++;
        if (a.flags.json) io.out(JSON.stringify({ project: slugOf.get(g.projectId), secret: g.name, problems: [g.problem] }));
        else io.out(`NOT ok  ${slugOf.get(g.projectId)}  ${g.problem}`);
      }
    }
    // the schema that keeps projects apart and the log whole, against the seal the engine wrote when it migrated
    const schema = await schemaCheck;
    for (const p of schema.problems) {
      if (a.flags.json) io.out(JSON.stringify({ schema: true, sealedAt: schema.sealedAt, problems: [p] }));
      else io.out(`NOT ok  schema  ${p}`);
    }
    const schemaBad = schema.problems.length;
    // every index of the engine's tables against its table: one made to lie changes no sealed object
    const indexes = (await indexCheck) ?? { available: true, problems: [] };
    for (const p of indexes.problems) {
      if (a.flags.json) io.out(JSON.stringify({ index: true, problems: [p] }));
      else io.out(`NOT ok  index  ${p}`);
    }
    if (!indexes.available) io.err('note: amcheck is not installed here, so the indexes were not checked against their tables');
    const indexesBad = indexes.problems.length;
    const ms = performance.now() - started;
    io.out(
      `verified ${runs} runs, ${events} events in ${(ms / 1000).toFixed(2)} s${threads.mostSlices > 1 ? ` (on ${threads.mostSlices} threads)` : ''}: ${runs - bad} ok${unsigned ? ` (${unsigned} of them unsigned, accepted by --allow-unsigned)` : ''}, ${bad} NOT ok` +
        `${versionsBad ? `; ${versionsBad} published version${versionsBad === 1 ? '' : 's'} NOT as a checkpoint saw ${versionsBad === 1 ? 'it' : 'them'}` : ''}` +
        `${grantsBad ? `; ${grantsBad} project${grantsBad === 1 ? "'s" : "s'"} leave to call private addresses NOT as a checkpoint saw it` : ''}` +
        `${projectsGone.size ? `; ${projectsGone.size} project${projectsGone.size === 1 ? '' : 's'} a checkpoint saw NOT in the database` : ''}` +
        `${namesBad ? `; ${namesBad} project name${namesBad === 1 ? '' : 's'} NOT as the engine signed ${namesBad === 1 ? 'it' : 'them'}` : ''}` +
        `${schemaBad ? `; the engine's schema NOT as it sealed it (${schemaBad} difference${schemaBad === 1 ? '' : 's'})` : ''}` +
        `${indexesBad ? `; ${indexesBad} index${indexesBad === 1 ? '' : 'es'} NOT holding what ${indexesBad === 1 ? 'its table holds' : 'their tables hold'}` : ''}` +
        `${deliveriesBad ? `; ${deliveriesBad} delivery record${deliveriesBad === 1 ? '' : 's'} no run names` : ''}` +
        `${secretsBad ? `; ${secretsBad} signing secret${secretsBad === 1 ? '' : 's'} in plain text` : ''}` +
        `${vaultBad ? `; ${vaultBad} vault secret${vaultBad === 1 ? '' : 's'} older than a checkpoint saw` : ''}` +
        `${vaultGoneBad ? `; ${vaultGoneBad} vault secret${vaultGoneBad === 1 ? '' : 's'} a checkpoint saw gone without a signed removal` : ''}`,
    );
    return bad === 0 && projectsGone.size === 0 && deliveriesBad === 0 && secretsBad === 0 && vaultBad === 0 && vaultGoneBad === 0 && versionsBad === 0 && grantsBad === 0 && namesBad === 0 && schemaBad === 0 && indexesBad === 0 && !(opts.checkpoints?.problems.length) ? 0 : 1;
  }, 3);
}

const rebuild: CommandSpec = {
  name: 'rebuild',
  args: [],
  summary:
    'Recompute run views from their logs and repair the ones that differ. A run whose log does not verify is reported and refused, never repaired.',
  flags: [
    PROJECT_FLAG,
    { name: 'run', value: 'run-id', help: 'only this run' },
    CHECKPOINTS_FLAG,
    UNSIGNED_FLAG,
    { name: 'force', help: 'also repair when that lowers the last event of a run, or moves a finished run back to unfinished on a head accepted unsigned' },
    DB_FLAG,
  ],
  async run(a, io) {
    const runId = a.flags.run as string | undefined;
    if (runId !== undefined && !UUID.test(runId)) throw new UsageError(`"${runId}" is not a run id (a UUID)`);
    const opts = verifyOptions(a, io);
    return withPool(a, io, async (pool) => {
      const project = await projectOf(a, pool, io);
      const r = await rebuildViews(pool, { ...opts, projectId: project.id, runId, force: a.flags.force === true });
      if (runId && r.runs === 0) {
        // another project's run, or none at all: the same answer, so run ids cannot be probed
        io.err(`run ${runId} not found`);
        return 1;
      }
      io.out(`runs checked: ${r.runs}`);
      io.out(`repaired:     ${r.repaired.length}`);
      for (const id of r.repaired) io.out(`  ${id}`);
      if (r.refused.length > 0) {
        io.out(`refused:      ${r.refused.length}`);
        for (const f of r.refused) io.out(`  ${f.runId}: ${f.reason}`);
      }
      return r.refused.length > 0 ? 1 : 0;
    });
  },
};

const exportHistory: CommandSpec = {
  name: 'export-history',
  args: ['run-id'],
  summary:
    'Write a finished run as a golden history: its pinned definition and every event, after verifying it. Saved under features/fixtures/histories, it holds every later engine to the same decisions.',
  flags: [
    PROJECT_FLAG,
    { name: 'name', value: 'name', help: "the history's name (default <workflow>-<status>-<first 8 of the run id>)" },
    { name: 'description', value: 'text', help: 'what the run shows, in a sentence' },
    { name: 'out', value: 'file', help: 'write the history here instead of to standard output' },
    {
      name: 'sign-with',
      value: 'key-file',
      help: "link the chain again under this keyring so a suite holding it can check the chain (the suite's is features/fixtures/keyring.json); the history says so",
    },
    DB_FLAG,
  ],
  async run(a, io) {
    const runId = runIdArg(a);
    const name = a.flags.name as string | undefined;
    if (name !== undefined && !SLUG.test(name)) throw new UsageError(`--name "${name}" is not a slug (lower-case letters, digits and -)`);
    const signWith = a.flags['sign-with'] as string | undefined;
    const fixtureKeys = signWith ? Keyring.fromFile(path.resolve(io.cwd, signWith)) : null;
    const opts = verifyOptions(a, io);
    return withPool(a, io, async (pool) => {
      const read = await inRunsProject(a, io, pool, (projectId) => readVerifiedRun(pool, projectId, runId, opts));
      if (!read) return 1;
      const { verification: v, definition } = read;
      if (!v.ok) {
        io.err(`run ${runId} does not verify, and only a genuine run becomes a golden history:`);
        for (const p of problemsOf(v)) io.err(`  - ${p}`);
        return 1;
      }
      if (!['succeeded', 'failed', 'canceled'].includes(v.state.status)) {
        io.err(`run ${runId} is ${v.state.status}: export it once it has finished`);
        return 1;
      }
      const started = read.events[0].data as { engine?: { version?: string } };
      const recordedBy = `meshhook-replay ${started.engine?.version ?? 'before 0.2 (no version recorded)'}`;
      const events = fixtureKeys ? relink(runId, read.events, fixtureKeys.chainKey()) : read.events;
      const kids = [...new Set(read.events.map((e) => e.kid ?? 'none'))].join(', ');
      const history = {
        name: name ?? `${definition.name}-${v.state.status}-${runId.slice(0, 8)}`,
        description: (a.flags.description as string | undefined) ?? `A ${v.state.status} run of ${definition.name}, exported from run ${runId}.`,
        recordedWith: recordedBy,
        provenance: fixtureKeys
          ? `exported by meshhook export-history after it verified under key ${kids}; the chain was linked again under key ${fixtureKeys.activeId}, content and order unchanged`
          : `exported by meshhook export-history after it verified under key ${kids}`,
        runId,
        definition,
        events,
      };
      const text = json(history) + '\n';
      const out = a.flags.out as string | undefined;
      if (out) {
        writeFileSync(path.resolve(io.cwd, out), text);
        io.out(`wrote ${out}: ${events.length} events, ${v.state.status}, ${recordedBy}`);
      } else {
        io.out(text.trimEnd());
      }
      return 0;
    });
  },
};

const checkpoint: CommandSpec = {
  name: 'checkpoint',
  args: [],
  summary:
    "Append every run's signed head, each workflow's latest signed version and each project's leave to call private addresses to a file outside the database, so that `verify --checkpoints` notices a later rollback of the database, a version deleted or an old grant written back. Run it often (cron), keep the file where the database's admins cannot write.",
  flags: [{ name: 'out', value: 'file', help: 'the checkpoint file to append to (default <home>/checkpoints.jsonl)' }, DB_FLAG],
  async run(a, io) {
    const file = path.resolve(io.cwd, (a.flags.out as string | undefined) ?? path.join(homeDir(io), 'checkpoints.jsonl'));
    const keyring = keyringOf(io);
    return withPool(a, io, async (pool) => {
      const r = await writeCheckpoints(pool, keyring.chainKey(), keyring.chainKeys(), await listProjects(pool), file, new Date(), (projectId) => secretTimes(pool, keyring, projectId));
      io.out(`checkpointed ${r.written} runs and the latest version of every workflow to ${file}`);
      for (const f of r.refused) io.out(`NOT checkpointed ${f.runId}: ${f.reason}`);
      return r.refused.length ? 1 : 0;
    });
  },
};

// ───── operator actions

const ACTION_SUMMARIES: Record<OperatorAction, string> = {
  cancel: 'Cancel a running, waiting or paused run. A request already sent may still take effect at the target.',
  pause: 'Pause a run: workers leave it alone (a step in flight finishes and is recorded) until it is unpaused.',
  unpause: 'Let a paused run go on where it stopped.',
  retry:
    'Run a failed step again, or a step waiting for its next attempt now. Same execution: the idempotency key stays, so a target that honours it does not do the work twice.',
  resume:
    'Run a run again from a chosen step: earlier steps keep their recorded outputs, this step and every later one run again as a new execution, with new idempotency keys.',
  skip: 'Mark the step the run is at (failed, waiting or in flight) as done, with an output you give, and go on with the next step.',
  patch: "Change the run's input with a JSON merge patch, for the steps that have not run yet (or that a retry or resume runs again).",
};

function actionCommand(action: OperatorAction): CommandSpec {
  const flags: FlagSpec[] = [PROJECT_FLAG, { name: 'reason', value: 'text', help: 'why (required; recorded in the run log)' }, { name: 'by', value: 'name', help: 'who acts (default: $MESHHOOK_OPERATOR, then $USER)' }];
  if (action === 'retry' || action === 'skip') flags.push({ name: 'step', value: 'step', help: 'the step (default: the failed step, or the one the run is at)' });
  if (action === 'resume') flags.push({ name: 'step', value: 'step', help: 'the step to run again from (required)' });
  if (action === 'skip') flags.push({ name: 'output', value: 'json', help: 'the output the skipped step stands for (required)' });
  if (action === 'patch') flags.push({ name: 'patch', value: 'json', help: 'a JSON merge patch of the input, e.g. {"order":{"sum":40}} (required)' });
  flags.push({ name: 'journal', value: 'file', help: "append the head the action commits to this journal outside the database, as workers do, so that verify --checkpoints notices the action rolled back (default: $MESHHOOK_HEAD_JOURNAL)" });
  flags.push(DB_FLAG);
  return {
    name: action,
    args: ['run-id'],
    summary: ACTION_SUMMARIES[action],
    flags,
    async run(a, io) {
      const runId = runIdArg(a);
      const reason = a.flags.reason as string | undefined;
      if (!reason) throw new UsageError(`${action} needs --reason "<why>"`);
      const parseJson = (name: string): unknown => {
        const raw = a.flags[name];
        if (typeof raw !== 'string') return undefined;
        try {
          return JSON.parse(raw);
        } catch (e) {
          throw new UsageError(`--${name} is not JSON: ${(e as Error).message}`);
        }
      };
      const req: OperatorRequest = {
        action,
        by: (a.flags.by as string | undefined) ?? io.env.MESHHOOK_OPERATOR ?? io.env.USER ?? 'operator',
        reason,
        step: a.flags.step as string | undefined,
        output: parseJson('output'),
        patch: parseJson('patch'),
      };
      if (action === 'resume' && !req.step) throw new UsageError('resume needs --step <step>');
      if (action === 'skip' && req.output === undefined) throw new UsageError('skip needs --output <json>');
      if (action === 'patch' && req.patch === undefined) throw new UsageError('patch needs --patch <json>');
      const keyring = keyringOf(io);
      return withPool(a, io, async (pool) => {
        try {
          const project = await projectOf(a, pool, io);
          const journalFile = (a.flags.journal as string | undefined) || io.env.MESHHOOK_HEAD_JOURNAL || undefined;
          const journal = journalFile ? new HeadJournal(path.resolve(io.cwd, journalFile), keyring.chainKey()) : null;
          const r = await operate(pool, { keyring, journal }, project.id, runId, req);
          io.out(`${action}: recorded as event ${r.recorded[0].seq} (${r.recorded.map((e) => e.type).join(', ')}); the run is now ${r.state.status}`);
          if (r.journalProblem) io.err(`warning: the action is recorded, but its head could not be written to ${journalFile}: ${r.journalProblem}`);
          return 0;
        } catch (e) {
          if (e instanceof OperatorActionError || e instanceof NotFoundError) {
            io.err(`refused, nothing changed: ${e.message}`);
            return 1;
          }
          throw e;
        }
      });
    },
  };
}

const history: CommandSpec = {
  name: 'history',
  args: ['run-id'],
  summary:
    "A run's audit trail, in order: its start, every operator action (who, when, why, what it led to) and how it finished. Verified first: a trail the engine did not write is shown under NOT VERIFIED, with exit 1.",
  flags: [PROJECT_FLAG, { name: 'json', help: 'print the trail as JSON' }, DB_FLAG],
  async run(a, io) {
    const runId = runIdArg(a);
    return withPool(a, io, async (pool) => {
      const project = await projectOf(a, pool, io);
      // a trail is only worth reading if the engine wrote it: checked as verify checks it, before it is shown
      let v: RunVerification;
      try {
        v = await verifyRun(pool, project.id, runId, { keys: keyringOf(io).chainKeys() });
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
        io.err(`run ${runId} not found`);
        return 1;
      }
      const events = await loadEvents(pool, project.id, runId);
      if (events.length === 0) {
        io.err(`run ${runId} not found`);
        return 1;
      }
      const trail = auditTrail(events);
      const warning = v.ok
        ? null
        : `NOT VERIFIED: ${problemsOf(v).join('; ')}. This is what the database holds, not what the engine recorded (meshhook verify ${runId} says more).`;
      if (a.flags.json) {
        io.out(json(trail));
        if (warning) io.err(warning);
        return warning ? 1 : 0;
      }
      if (warning) io.out(warning);
      for (const t of trail) {
        const who = t.by ? ` by ${JSON.stringify(t.by)}` : '';
        const why = t.reason ? `: ${JSON.stringify(t.reason)}` : '';
        const step = t.step ? ` step ${t.step}` : '';
        const detail = t.detail && Object.keys(t.detail as object).length ? `  ${JSON.stringify(t.detail)}` : '';
        io.out(`#${String(t.seq).padEnd(4)} ${t.at}  ${t.what}${step}${who}${why}${detail}`);
      }
      return warning ? 1 : 0;
    });
  },
};

const tail: CommandSpec = {
  name: 'tail',
  args: ['run-id'],
  summary:
    "Follow a run's live log through Supabase Realtime (supabase-js, as a dashboard would): what the run log already holds first, then each event as it commits. Stops when the run finishes unless --follow.",
  flags: [
    PROJECT_FLAG,
    { name: 'url', value: 'url', help: 'the live-log server (default: the one `meshhook up` started, then MESHHOOK_REALTIME_URL)' },
    { name: 'follow', help: 'keep following after the run finishes (an operator may act on it again)' },
    { name: 'json', help: 'one JSON object per event' },
    DB_FLAG,
  ],
  async run(a, io) {
    const runId = runIdArg(a);
    const url = (a.flags.url as string | undefined) ?? readState(io).realtimeUrl ?? io.env.MESHHOOK_REALTIME_URL;
    if (!url) throw new SetupError('no live-log server: start one with `meshhook up` (without --no-realtime), or pass --url / set MESHHOOK_REALTIME_URL');
    return withPool(a, io, async (pool) => {
      const project = await projectOf(a, pool, io);
      if ((await loadEvents(pool, project.id, runId)).length === 0) {
        io.err(`run ${runId} not found`);
        return 1;
      }
      const keyring = keyringOf(io);
      const secret = tokenSecret(keyring, io.env);
      const { LiveLog, openRealtimeClient } = heavy.liveLog();
      // the first link of the log that does not hold: what comes from it on is not shown (the live-log server sends
      // no row whose link does not hold either), and tail ends with 1
      let broken: ChainBreak | null = null;
      let stop: () => void = () => undefined;
      const { signAnonKey, signProjectToken } = heavy.tokens();
      const client = await openRealtimeClient({
        url,
        anonKey: await signAnonKey({ secret }),
        // a short-lived project token, renewed at each heartbeat
        accessToken: () => signProjectToken({ secret, projectId: project.id, ttlSec: 600, claims: { sub: `project:${project.slug}` } }),
      });
      const live = new LiveLog({
        client,
        scope: { runId },
        ownsClient: true,
        // what the run log holds beyond what has arrived: the same read any other command makes
        // only as far as its links hold: an event a superuser inserted (the log takes any next event) was shown as the
        // run's own, a forged RunFinished and all, while the live-log server refused to send it
        catchUp: async (known) => {
          const events = await loadEvents(pool, project.id, runId);
          const semantics = (events[0]?.data as { engine?: { semantics?: number } } | undefined)?.engine?.semantics ?? 1;
          const breaks = checkChain(runId, events, keyring.chainKeys(), { requireKeyed: semantics >= 2 });
          if (breaks && !broken) {
            broken = breaks;
            stop();
          }
          return events
            .slice(0, breaks ? breaks.seq - 1 : events.length)
            .filter((e) => e.seq > (known.get(runId) ?? 0))
            .map((e) => ({ runId, seq: e.seq, type: e.type, data: e.data, hash: e.hash }));
        },
      });
      let printed = 0;
      let finished = false;
      const print = (): void => {
        // in seq order, never past a hole: a late event waits for the catch-up that fills it
        for (const e of live.eventsOf(runId)) {
          if (e.seq !== printed + 1) {
            if (e.seq <= printed) continue;
            break;
          }
          printed = e.seq;
          if (a.flags.json) io.out(JSON.stringify({ seq: e.seq, type: e.type, data: e.data, via: e.via }));
          else io.out(tailLine(e));
          if (e.type === 'RunFinished') finished = true;
        }
      };
      const stopped = new Promise<string>((resolve) => {
        const onInt = () => resolve('SIGINT');
        process.once('SIGINT', onInt);
        stop = () => {
          process.off('SIGINT', onInt);
          resolve('done');
        };
      });
      const off = live.onChange(() => {
        print();
        if (finished && !a.flags.follow) stop();
      });
      try {
        await live.ready(15_000);
      } catch (e) {
        off();
        await live.close();
        io.err(`the live log refused to open: ${live.lastError ?? (e as Error).message}`);
        return 1;
      }
      print();
      if (!(finished && !a.flags.follow) && !broken) await stopped;
      off();
      await live.close();
      const at = broken as ChainBreak | null;
      if (at) {
        io.err(`run ${runId}: event ${at.seq} is not as the engine wrote it (${at.reason}): the log is shown up to it; \`meshhook verify ${runId}\` names it`);
        return 1;
      }
      return 0;
    });
  },
};

/** One event for a terminal: sequence, type, step, and a short, escaped view of the data. */
function tailLine(e: { seq: number; type: string; data: unknown }): string {
  const data = (e.data ?? {}) as Record<string, unknown>;
  const step = typeof data.step === 'string' ? data.step : '';
  const detail = JSON.stringify(e.data ?? null);
  return `#${String(e.seq).padEnd(4)} ${e.type.padEnd(22)} ${JSON.stringify(step).slice(1, -1).padEnd(12)} ${detail.length > 140 ? detail.slice(0, 139) + '…' : detail}`;
}

// ───── secrets, tokens, keys

const secrets: CommandSpec = {
  name: 'secrets',
  args: ['set|list|rm', 'name?'],
  summary:
    "A project's vault. set reads the value from --value or standard input; values are sealed with the keyring before they reach the database and are never printed. http_call steps use one as a header: {\"secret\": \"<name>\", \"prefix\": \"Bearer \"}. rm records the removal signed with the keys, so verify --all --checkpoints tells it from a secret deleted behind the engine's back.",
  flags: [PROJECT_FLAG, { name: 'value', value: 'text', help: 'the value (set); prefer standard input, which keeps it out of the shell history' }, DB_FLAG],
  async run(a, io) {
    const [verb, name] = a.positional;
    if (!['set', 'list', 'rm'].includes(verb)) throw new UsageError(`secrets ${verb}: use set, list or rm`);
    if (verb !== 'list' && !name) throw new UsageError(`secrets ${verb} needs a name`);
    return withPool(a, io, async (pool) => {
      const project = await projectOf(a, pool, io);
      if (verb === 'list') {
        const list = await listSecrets(pool, project.id);
        if (list.length === 0) io.out(`${project.slug} has no secrets`);
        for (const s of list) io.out(`${s.name}  (sealed with key ${s.keyId ?? '?'}, ${s.updatedAt})`);
        return 0;
      }
      if (verb === 'rm') {
        // signed (the chain key): a secret deleted behind the engine's back is then told from one its owner removed
        const gone = await deleteSecret(pool, keyringOf(io).chainKey(), project.id, name);
        io.out(gone ? `removed ${name}` : `${project.slug} has no secret ${name}${SECRET_NAME.test(name) ? ' (its removal is recorded as yours: verify --checkpoints does not name it gone)' : ''}`);
        return gone ? 0 : 1;
      }
      const value = typeof a.flags.value === 'string' ? a.flags.value : readFileSync(0, 'utf8').replace(/\r?\n$/, '');
      try {
        const r = await putSecret(pool, keyringOf(io), project.id, name, value);
        io.out(`${r} ${project.slug}/${name} (sealed; the value is not shown again)`);
        return 0;
      } catch (e) {
        if (e instanceof SecretValueError) {
          io.err(e.message);
          return 2;
        }
        throw e;
      }
    });
  },
};

const signProjectCmd: CommandSpec = {
  name: 'sign-project',
  args: [],
  summary:
    "Sign a project's name, which every other command then requires (for projects made before names were signed). Without --id it shows what the project called --project holds; run it again with the id it showed, once you have checked that is your project, to sign.",
  flags: [
    { name: 'project', value: 'slug', help: 'the project, by the name it has in the database now' },
    { name: 'id', value: 'uuid', help: 'the project id the first call showed: sign the name for that project only' },
    DB_FLAG,
  ],
  async run(a, io) {
    const slug = projectSlugOf(a);
    const id = a.flags.id as string | undefined;
    if (id !== undefined && !UUID.test(id)) throw new UsageError(`--id "${id.slice(0, 80)}" is not a project id (a UUID)`);
    const keyring = keyringOf(io);
    return withPool(a, io, async (pool) => {
      const found = await projectNamed(pool, slug);
      if (!found) throw new NotFoundError(`no project ${slug}`);
      const problem = projectNameProblem(keyring.chainKeys(), found.id, slug, found.signature);
      if (!problem) {
        io.out(`${slug} is ${found.id}; its name is signed already`);
        return 0;
      }
      if (id === undefined) {
        io.out(problem);
        io.out(`the project called ${slug} in the database is ${found.id}, and holds:`);
        const contents = await projectContents(pool, found.id);
        if (contents.length === 0) io.out('  no workflows');
        for (const w of contents) {
          const renamed = w.publishedAs !== null && w.publishedAs !== w.workflow ? ` (published as "${w.publishedAs}")` : '';
          io.out(`  ${w.workflow}${renamed}: ${w.runs} run${w.runs === 1 ? '' : 's'}`);
        }
        io.out(`if that is your ${slug}, sign its name: meshhook sign-project --project ${slug} --id ${found.id}`);
        return 1;
      }
      if (id !== found.id) {
        io.err(`the project called ${slug} is ${found.id}, not ${id}: nothing signed`);
        return 1;
      }
      if (!(await signProject(pool, keyring.chainKey(), found.id, slug))) {
        io.err(`project ${found.id} is no longer called ${slug}: nothing signed`);
        return 1;
      }
      io.out(`signed: ${slug} is ${found.id}`);
      return 0;
    });
  },
};

const sealSchemaCmd: CommandSpec = {
  name: 'seal-schema',
  args: [],
  summary:
    "Seal the engine's schema as it is now (row-level security, policies, grants, triggers, constraints, the engine's roles and settings, schemas, the SQL functions and operators of public), so that verify --all names what changes after. Migrations seal it themselves; this is for a schema migrated without the keys, or printed differently after a Postgres upgrade. Without --confirm it only shows what differs from the last seal.",
  flags: [{ name: 'confirm', help: 'seal it: every difference it showed is one you made or checked' }, DB_FLAG],
  async run(a, io) {
    const keyring = keyringOf(io);
    // as the URL's own role (the owner): the engine's role may read the seals, not write them
    const owner = openPool(databaseUrl(a, io), { max: 1 }, () => undefined);
    try {
      const check = await checkSchema(owner, keyring.chainKeys());
      if (!check.problems.length) {
        io.out(`the engine's schema is as it was sealed at ${check.sealedAt}: nothing to seal`);
        return 0;
      }
      io.out(check.sealedAt ? `since the seal of ${check.sealedAt}:` : 'not sealed:');
      for (const p of check.problems) io.out(`  ${p}`);
      if (!a.flags.confirm) {
        io.out('if every change above is one you made or checked, seal the schema as it is now: meshhook seal-schema --confirm');
        return 1;
      }
      const { rows } = await owner.query<{ last: string | null }>('SELECT max(name) AS last FROM schema_migrations');
      await sealSchema(owner, keyring.chainKey(), rows[0].last ?? '');
      io.out(`sealed with key ${keyring.chainKey().kid}: verify --all checks the schema against what it is now`);
      return 0;
    } finally {
      await owner.end().catch(() => undefined);
    }
  },
};

const token: CommandSpec = {
  name: 'token',
  args: [],
  summary: "A project token (a JWT): reads that project's runs over HTTP (Authorization: Bearer) and follows their live logs. Prints the token only.",
  flags: [PROJECT_FLAG, { name: 'ttl', value: 'duration', help: 'how long it is valid: 30m, 12h, 7d (default 1h)' }, DB_FLAG],
  async run(a, io) {
    const ttl = parseTtl((a.flags.ttl as string | undefined) ?? '1h');
    return withPool(a, io, async (pool) => {
      const project = await projectOf(a, pool, io);
      io.out(await heavy.tokens().signProjectToken({ secret: tokenSecret(keyringOf(io), io.env), projectId: project.id, ttlSec: ttl, claims: { sub: `project:${project.slug}` } }));
      return 0;
    });
  },
};

function parseTtl(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (!m) throw new UsageError(`--ttl is a number and a unit: 90s, 30m, 12h or 7d, not "${text}"`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's']!;
}

const keys: CommandSpec = {
  name: 'keys',
  args: ['init|rotate'],
  summary:
    "Make (init) or rotate the engine's keys, which the database never holds. init makes the key file (<home>/keyring.json, or the one MESHHOOK_KEY_FILE names) with one fresh key, as `meshhook up` does, so that publish and the other commands can run against a database of your own; it leaves an existing file as it is. rotate puts a new key first in the key file and makes it active (new secrets, links, heads and tokens use it), then seals every sealed secret again with it; old keys stay readable, so old links and heads still verify.",
  flags: [
    {
      name: 'adopt-plain-signing-secrets',
      help: 'also seal signing secrets stored in plain text with no sealed one beside them (left by an engine from before sealed secrets); without it they are listed, not taken: someone with the database could have written them',
    },
    DB_FLAG,
  ],
  async run(a, io) {
    if (a.positional[0] === 'init') return keysInit(a, io);
    if (a.positional[0] !== 'rotate') throw new UsageError(`keys ${a.positional[0]}: use init or rotate`);
    if (io.env.MESHHOOK_KEYS) {
      io.err('MESHHOOK_KEYS is set: rotate by putting a new "<id>:<base64 key>" first in it, then run `meshhook keys rotate` with MESHHOOK_KEY_FILE unset');
    }
    const file = io.env.MESHHOOK_KEY_FILE ?? keyFile(io);
    if (!io.env.MESHHOOK_KEYS) {
      const id = addKeyToFile(file);
      io.out(`new active key ${id} in ${file}`);
    }
    const keyring = keyringOf(io);
    return withPool(a, io, async (pool) => {
      const r = await resealAll(pool, keyring, await listProjects(pool), { adoptPlain: a.flags['adopt-plain-signing-secrets'] === true });
      io.out(`sealed ${r.resealed} secrets again with key ${keyring.activeId}`);
      for (const w of r.plainBesideSealed) io.err(`warning: ${w} has a signing secret in plain text beside its sealed one: ignored (the engine writes none; someone with the database may have)`);
      for (const w of r.plainOnly)
        io.err(`warning: ${w} has its signing secret only in plain text: not sealed, so its webhooks are refused; if it is yours (left by an engine from before sealed secrets), run keys rotate --adopt-plain-signing-secrets`);
      return 0;
    });
  },
};

function keysInit(a: Parsed, io: Io): number {
  if (a.flags['adopt-plain-signing-secrets']) throw new UsageError('--adopt-plain-signing-secrets goes with keys rotate');
  if (io.env.MESHHOOK_KEYS) {
    const keyring = Keyring.parse(io.env.MESHHOOK_KEYS);
    io.out(`MESHHOOK_KEYS is set (active key ${keyring.activeId}): the commands use those keys; no key file made`);
    return 0;
  }
  const file = io.env.MESHHOOK_KEY_FILE ? path.resolve(io.cwd, io.env.MESHHOOK_KEY_FILE) : keyFile(io);
  const existed = existsSync(file);
  if (!existed) mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const keyring = ensureKeyFile(file);
  io.out(existed ? `${file} exists already (active key ${keyring.activeId}): left as it is` : `made ${file} with key ${keyring.activeId} (mode 0600; keep it, and a copy off the database host: without it nothing sealed opens and no run verifies)`);
  return 0;
}

export const COMMANDS: CommandSpec[] = [
  up,
  workerCmd,
  publish,
  deliverCmd,
  runs,
  replay,
  verify,
  rebuild,
  checkpoint,
  ...OPERATOR_ACTIONS.map(actionCommand),
  history,
  exportHistory,
  tail,
  secrets,
  token,
  keys,
  signProjectCmd,
  sealSchemaCmd,
];

function mainUsage(): string {
  return [
    'usage: meshhook <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(16)}${c.summary.split('. ')[0].replace(/\.$/, '')}`),
    '',
    'meshhook <command> --help shows a command\'s options.',
  ].join('\n');
}

/**
 * Standard output, a line at a time but written once a turn of the event loop: `up` logs a line or more for every
 * event of every run, and a write for each line cost the intake and the workers a system call each (about 3 % of
 * up's CPU end to end). Whatever is pending goes out before the process exits (writes to pipes and files are
 * synchronous there).
 */
const stdoutLines = (() => {
  let pending: string[] = [];
  const flush = (): void => {
    if (pending.length === 0) return;
    const text = pending.join('\n') + '\n';
    pending = [];
    process.stdout.write(text);
  };
  process.once('exit', flush);
  return (line: string): void => {
    if (pending.push(line) === 1) setImmediate(flush);
  };
})();

/** Run one CLI invocation; resolves to the exit code. */
export async function runCli(argv: string[], io: Partial<Io> = {}): Promise<number> {
  const out = io.out ?? stdoutLines;
  const err = io.err ?? ((l: string) => process.stderr.write(l + '\n'));
  const full: Io = {
    // (a line break within a line is the CLI's own: values from outside are JSON-escaped or slugs)
    out: (l) => out(terminalText(l)),
    err: (l) => err(terminalText(l)),
    cwd: io.cwd ?? process.cwd(),
    env: io.env ?? process.env,
  };
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const spec = rest[0] ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    full.out(spec ? usageOf(spec) : mainUsage());
    return name ? 0 : 2;
  }
  const spec = COMMANDS.find((c) => c.name === name);
  if (!spec) {
    full.err(`unknown command "${name}"\n\n${mainUsage()}`);
    return 2;
  }
  try {
    const parsed = parseArgs(rest, spec);
    if (parsed.flags.help) {
      full.out(usageOf(spec));
      return 0;
    }
    return await spec.run(parsed, full);
  } catch (e) {
    if (e instanceof UsageError) {
      full.err(e instanceof SetupError ? e.message : `${e.message}\n\n${usageOf(spec)}`);
      return 2;
    }
    full.err(`meshhook ${name}: ${e instanceof Error ? e.message : e === undefined ? 'failed without a reason' : String(e)}`);
    return 1;
  }
}

export function main(argv = process.argv.slice(2)): void {
  // `meshhook runs | head`: the reader has all it wanted, which is no failure
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit(process.exitCode ?? 0);
  });
  runCli(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e: Error) => {
      process.stderr.write(`${e.stack ?? e.message}\n`);
      process.exitCode = 1;
    },
  );
}

if (require.main === module) main();
