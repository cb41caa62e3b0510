import { ChildProcess, fork } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/*
 * Engine workers run as real child processes (compiled from dist/), so a
 * scenario can kill one with SIGKILL exactly as an out-of-memory killer or a
 * lost machine would: no finally blocks, no goodbye to Postgres.
 */

export const WORKER_ENTRY = path.resolve(__dirname, '..', 'dist', 'worker', 'main.js');

export interface WorkerProcessOptions {
  id: string;
  databaseUrl: string;
  clockOffsetMs: number;
  failpoints?: string;
  failpointLog: string;
  pollMs?: number;
  /** the keyring, as MESHHOOK_KEYS */
  keys: string;
  extraEnv?: Record<string, string>;
}

export interface WorkerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class WorkerProcess {
  readonly child: ChildProcess;
  readonly output: string[] = [];
  /** everything the worker wrote, as one stream (a value split across two writes is whole here) */
  stream = '';
  readonly exited: Promise<WorkerExit>;
  private exit: WorkerExit | null = null;
  private readonly ready: Promise<void>;
  /** the webhook intake the process serves, when started with one (MESHHOOK_INTAKE_PORT) */
  intakeUrl: string | null = null;

  constructor(readonly opts: WorkerProcessOptions) {
    this.child = fork(WORKER_ENTRY, [], {
      env: {
        PATH: process.env.PATH ?? '',
        NODE_OPTIONS: '',
        DATABASE_URL: opts.databaseUrl,
        MESHHOOK_WORKER_ID: opts.id,
        MESHHOOK_POLL_MS: String(opts.pollMs ?? 25),
        MESHHOOK_CLOCK_OFFSET_MS: String(opts.clockOffsetMs),
        MESHHOOK_FAILPOINTS: opts.failpoints ?? '',
        MESHHOOK_FAILPOINT_LOG: opts.failpointLog,
        MESHHOOK_KEYS: opts.keys,
        ...opts.extraEnv,
      },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    let partial = '';
    const collect = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      this.stream += text;
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (line.trim()) this.output.push(line);
    };
    // IPC or signal failures on a dying child are noted, never thrown into whichever step is running
    this.child.on('error', (e) => this.output.push(`[harness] ${e.message}`));
    this.child.stdout!.on('data', collect);
    this.child.stderr!.on('data', collect);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    this.ready = new Promise((resolve, reject) => {
      this.child.on('message', (m: { type?: string; intakeUrl?: string }) => {
        if (m?.type !== 'ready') return;
        this.intakeUrl = m.intakeUrl ?? null;
        resolve();
      });
      void this.exited.then((e) => reject(new Error(`worker ${opts.id} exited before it was ready (${e.signal ?? e.code}): ${this.output.slice(-5).join(' | ')}`)));
    });
    this.ready.catch(() => undefined);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.exit === null;
  }

  get exitStatus(): WorkerExit | null {
    return this.exit;
  }

  async whenReady(timeoutMs = 15_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`worker ${this.opts.id} was not ready within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  setClockOffset(offsetMs: number): void {
    // a worker that has just died (a crash failpoint) may still look connected: the send then fails with
    // EPIPE, which must not become an unhandled 'error'. A dead worker needs no clock; new ones start with it.
    if (this.alive && this.child.connected) this.child.send({ type: 'clock', offsetMs }, (err) => void err);
  }

  /** A real crash: SIGKILL, then wait until the process is gone. */
  async kill(): Promise<WorkerExit> {
    if (this.alive) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** A clean stop; SIGKILL if it does not go within the grace period. */
  async stop(graceMs = 5_000): Promise<WorkerExit> {
    if (!this.alive) return this.exit!;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const e = await this.exited;
    clearTimeout(t);
    return e;
  }
}

/** Fail early, and say why, when the compiled worker is missing or older than its sources. */
export function assertWorkerBuilt(): void {
  if (!existsSync(WORKER_ENTRY)) {
    throw new Error(`${WORKER_ENTRY} is missing: run "npm run build" (npm run acceptance does it for you)`);
  }
  const built = statSync(WORKER_ENTRY).mtimeMs;
  const srcDir = path.resolve(__dirname, '..', 'src');
  const newest = newestMtime(srcDir);
  if (newest > built + 1000) {
    throw new Error('dist/ is older than src/: run "npm run build" (npm run acceptance does it for you)');
  }
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of require('node:fs').readdirSync(dir, { withFileTypes: true }) as import('node:fs').Dirent[]) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

export function readFailpointLog(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}
